"""What the Settings page keeps, in the data folder beside the history, and the data tools.

    <data_dir>/settings.json   server profiles (no tokens), idle TTL, auto-unload, sampling
                               presets, system prompt templates, per-model presets   (mode 0600)
    <data_dir>/tokens.json     {"tokens": {server URL: API token}}                  (mode 0600)

What settings.json holds is one pydantic model, AppSettings (model.py): read leniently from the
file, dumped for an export, checked strictly on import; `SettingsStore.update()` saves any of its
Saved settings. Lists (profiles, presets, templates) are edited here, entry by entry.

Tokens live in their own file so that nothing that reads, shows, logs or exports settings ever
holds one; `SettingsStore.token()` is the only way out, and `mask_token()` is how a page shows
one. A token belongs to a server's URL, not to a profile's name: a profile whose URL changes (or
an imported profile that reuses a name) never inherits a token meant for another server. Files
from before that keyed tokens by profile name; they are read as the URL that profile had then.
Both files are written atomically (temp file, fsync, os.replace), mode 0600, in a 0700
folder. A damaged settings file is moved aside with a warning, never silently emptied.

Every change is a read-modify-write of the current file under a thread lock and the
cross-process lock (atom_core.files.FolderLock, held on ``settings.lock``), so two app processes
(or the app and the command line) editing at once keep every edit.

Whole-history export, import and delete live in atom_core.history.backup; this module gives them
the settings part (`SettingsStore.export_dict()`, `SettingsStore.merge()`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import Settings, StreamLimits, normalize_base_url
from ..files import FolderLock, atomic_write_json, private_dir, remove_temp_files
from ..server.client import ServerStatus
from ..url import ServerURL
from .model import (
    MAX_TTL_SECONDS,
    PRESET_BOUNDS,
    AppSettings,
    PromptTemplate,
    SamplingPreset,
    ServerProfile,
    check_name,
    make_preset,
    saved_field,
)

__all__ = [
    "LIMIT_BOUNDS",
    "MAX_TTL_SECONDS",
    "PRESET_BOUNDS",
    "AppSettings",
    "PromptTemplate",
    "SamplingPreset",
    "ServerProfile",
    "SettingsStore",
    "check_server_url",
    "connection_report",
    "initial_server_url",
    "make_preset",
    "mask_token",
    "open_settings",
    "server_token",
]

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
TOKENS_FILE = "tokens.json"
LOCK_FILE = "settings.lock"


def mask_token(token: str | None) -> str:
    """A token as pages may show it: 'sk-lm-••••••••e4'. Never more than the last two
    characters of the secret part."""
    if not token:
        return ""
    prefix = "sk-lm-" if token.startswith("sk-lm-") else ""
    tail = token[-2:] if len(token) - len(prefix) >= 12 else ""
    return f"{prefix}{'•' * 8}{tail}"


def initial_server_url(config: Settings, saved: AppSettings) -> ServerURL:
    """The server a new session starts on: ATOM_SERVER_URL if set, else the default profile's,
    else the configured default. (The sidebar's box still switches it for the session.)"""
    if config.server_url_set:
        return config.server_url
    default = saved.default()
    return ServerURL(default.url) if default else config.server_url


def connection_report(status: ServerStatus, *, token_sent: bool) -> tuple[bool, str]:
    """(ok, sentence) for a "test connection": reachability, auth, dialect and model count."""
    if status.error is not None:
        if not status.reachable:
            return False, status.error.sentence
        return False, f"Reachable, but: {status.error.sentence}"
    assert status.dialect is not None
    auth = "token accepted" if token_sent else "no token needed"
    loaded = f", {status.loaded_count} loaded" if status.dialect.knows_load_state else ""
    return True, (f"Reachable · {auth} · {status.dialect.label} · {status.model_count} models "
                  f"({status.llm_count} LLMs{loaded}).")


# -- validation --------------------------------------------------------------------------------


def check_server_url(url: str) -> ServerURL:
    """The URL of a server ATOM may talk to (http or https, a host, maybe a port), or
    ValueError with a sentence. The Settings form and imports both use it."""
    return ServerURL.checked(url)


# -- the store ---------------------------------------------------------------------------------


def _write_private_json(path: Path, data: object) -> None:
    """The store's atomic write (temp file, fsync, os.replace): mkstemp creates the temp file
    mode 0600, and the rename keeps it; the folder is made 0700 like the store's."""
    private_dir(path.parent)
    atomic_write_json(path, data)


class SettingsStore:
    """settings.json and tokens.json in one data folder. Thread-safe; get one per folder with
    `open_settings()`. Every change is read-modify-write of the current file, so two browser
    sessions editing different things do not undo each other."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.settings_path = self.data_dir / SETTINGS_FILE
        self.tokens_path = self.data_dir / TOKENS_FILE
        self.warnings: list[str] = []
        self._write_lock = FolderLock(self.data_dir, LOCK_FILE, on_enter=self._clean_once)
        self._lock = self._write_lock.thread
        self._cleaned = False
        # (files' stat keys, settings, tokens): re-read only when a file changed on disk
        self._cache: tuple[tuple[tuple[int, int, int], ...], AppSettings, dict[str, str]] | None \
            = None

    def __repr__(self) -> str:
        return f"SettingsStore({str(self.data_dir)!r})"

    # -- raw files -----------------------------------------------------------------------------

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_bytes() or b"{}")
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return data
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            aside = path.with_name(f"{path.name}.corrupt-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            sentence = (f"ATOM's {path.name} was damaged ({exc}); it was moved aside to "
                        f"{aside} and ATOM started that file afresh.")
            log.warning("%s", sentence)
            if sentence not in self.warnings:
                self.warnings.append(sentence)
            return {}

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        """The thread lock and the cross-process lock, for one read-modify-write."""
        return self._write_lock.held()

    def _clean_once(self) -> None:
        """The first write of this instance removes temp files that killed writes left."""
        if not self._cleaned:
            remove_temp_files(self.data_dir, recursive=False,
                              targets=frozenset({SETTINGS_FILE, TOKENS_FILE}))
            self._cleaned = True

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        with self._writing():
            raw = self._read(self.settings_path)
            yield raw
            _write_private_json(self.settings_path, raw)
            self._cache = None

    def _edit_tokens(self, change: Callable[[dict[str, str]], None]) -> None:
        with self._writing():
            tokens = dict(self._read(self.tokens_path).get("tokens") or {})
            change(tokens)
            _write_private_json(self.tokens_path, {"tokens": tokens})
            self._cache = None

    def _bind_tokens_to_urls(self) -> None:
        """Rewrites an older tokens.json (keyed by profile name) keyed by URL, with the URLs the
        profiles have now, before anything changes a profile; tokens of no profile are dropped."""
        with self._lock:
            raw = self._read(self.tokens_path).get("tokens")
            if isinstance(raw, dict) and any("://" not in str(k) for k in raw):
                tokens = _tokens_by_url(raw, self._read(self.settings_path))
                _write_private_json(self.tokens_path, {"tokens": tokens})
                self._cache = None

    def _tokens(self) -> dict[str, str]:
        return self._current()[1]

    # -- reading -------------------------------------------------------------------------------

    def load(self) -> AppSettings:
        """The current settings (re-read when either file changed on disk)."""
        return self._current()[0]

    def _current(self) -> tuple[AppSettings, dict[str, str]]:
        with self._lock:
            key = self._stat_key()
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1], self._cache[2]
            raw = self._read(self.settings_path)
            tokens = _tokens_by_url(self._read(self.tokens_path).get("tokens"), raw)
            settings = AppSettings.read(raw, set(tokens))
            self._cache = (self._stat_key(), settings, tokens)
            return settings, tokens

    def _stat_key(self) -> tuple[tuple[int, int, int], ...]:
        out = []
        for path in (self.settings_path, self.tokens_path):
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except FileNotFoundError:
                out.append((0, 0, 0))
        return tuple(out)

    def token(self, profile_name: str) -> str | None:
        """The token saved for the profile's server URL, or None. Never log or show it."""
        profile = self.load().profile(profile_name)
        return self.token_for_url(profile.url) if profile else None

    def token_for_url(self, url: str) -> str | None:
        """The token saved for exactly this server URL, or None."""
        return self._tokens().get(normalize_base_url(url))

    # -- server profiles ---------------------------------------------------------------------

    def save_profile(
        self,
        name: str,
        url: str,
        *,
        token: str | None = None,
        clear_token: bool = False,
        replaces: str | None = None,
    ) -> ServerProfile:
        """Adds or changes a profile. `token` None keeps the saved one; `clear_token` removes
        it. `replaces` renames an existing profile (its token and default flag move along)."""
        name = check_name(name, "server")
        url = check_server_url(url)
        self._bind_tokens_to_urls()
        old = replaces or name
        old_url = getattr(self.load().profile(old), "url", None)
        with self._editing() as raw:
            profiles = [p for p in raw.get("profiles") or [] if isinstance(p, dict)]
            if name != old and any(p.get("name") == name for p in profiles):
                raise ValueError(f"There is already a server called “{name}”.")
            entry = {"name": name, "url": url}
            at = next((i for i, p in enumerate(profiles) if p.get("name") == old), None)
            if at is None:
                profiles.append(entry)
            else:
                profiles[at] = entry
            raw["profiles"] = profiles
            if raw.get("default_profile") == old or not raw.get("default_profile"):
                raw["default_profile"] = name

        urls_in_use = {p.url for p in self.load().profiles}

        def change(tokens: dict[str, str]) -> None:
            if old_url and old_url != url and old_url not in urls_in_use:
                tokens.pop(old_url, None)  # no profile is left for that server
            if token and token.strip():
                tokens[url] = token.strip()
            elif clear_token:
                tokens.pop(url, None)

        self._edit_tokens(change)
        self._cache = None
        return ServerProfile(name=name, url=url, has_token=self.token_for_url(url) is not None)

    def delete_profile(self, name: str) -> None:
        self._bind_tokens_to_urls()
        gone = getattr(self.load().profile(name), "url", None)
        with self._editing() as raw:
            raw["profiles"] = [p for p in raw.get("profiles") or []
                               if isinstance(p, dict) and p.get("name") != name]
            if raw.get("default_profile") == name:
                raw["default_profile"] = raw["profiles"][0]["name"] if raw["profiles"] else None

        left = {p.url for p in self.load().profiles}

        def drop(tokens: dict[str, str]) -> None:
            if gone and gone not in left:
                tokens.pop(gone, None)

        self._edit_tokens(drop)
        self._cache = None

    def set_default_profile(self, name: str | None) -> None:
        with self._editing() as raw:
            if name is not None and not any(
                isinstance(p, dict) and p.get("name") == name for p in raw.get("profiles") or []
            ):
                raise ValueError(f"There is no server called “{name}”.")
            raw["default_profile"] = name

    # -- chat defaults ---------------------------------------------------------------------------

    def update(self, **values: Any) -> None:
        """Saves any of AppSettings' Saved settings (None forgets one). Raises ValueError with a
        sentence for a value of the wrong type or out of bounds, TypeError for a name that is
        not a Saved setting; nothing is saved then."""
        clean = {}
        for key, value in values.items():
            try:
                adapter, saved = saved_field(key)
            except KeyError:
                raise TypeError(f"not a saved setting: {key}") from None
            try:
                value = adapter.validate_python(value)
            except ValueError:
                raise ValueError(f"The {saved.what} is not a value it can have.") from None
            if (sentence := saved.problem(value)) is not None:
                raise ValueError(sentence)
            clean[key] = adapter.dump_python(value, mode="json")
        with self._editing() as raw:
            raw.update(clean)

    def set_ttl(self, seconds: int | None) -> None:
        self.update(ttl_seconds=None if seconds is None else int(seconds))

    def set_stream_limits(self, **seconds: float | None) -> None:
        """Saves any of stall_timeout_s, first_token_timeout_s and request_deadline_s (None
        forgets it). Raises ValueError with a sentence for a value out of bounds."""
        for key in seconds:
            if key not in LIMIT_BOUNDS:
                raise TypeError(f"not a stream limit: {key}")
        self.update(**{k: float(v) if v is not None else None for k, v in seconds.items()})

    def set_auto_unload(self, on: bool, *, any_instance: bool = False) -> None:
        self.update(auto_unload=bool(on), auto_unload_any=bool(on and any_instance))

    def save_preset(self, preset: SamplingPreset, *, replaces: str | None = None) -> None:
        preset = make_preset(preset.name, **preset.values())  # checked again: callers vary
        old = replaces or preset.name
        with self._editing() as raw:
            presets = [p for p in raw.get("presets") or [] if isinstance(p, dict)]
            if preset.name != old and any(p.get("name") == preset.name for p in presets):
                raise ValueError(f"There is already a preset called “{preset.name}”.")
            entry = preset.entry()
            at = next((i for i, p in enumerate(presets) if p.get("name") == old), None)
            if at is None:
                presets.append(entry)
            else:
                presets[at] = entry
            raw["presets"] = presets
            if old != preset.name:
                _rename_refs(raw, old, preset.name)

    def delete_preset(self, name: str) -> None:
        with self._editing() as raw:
            raw["presets"] = [p for p in raw.get("presets") or []
                              if isinstance(p, dict) and p.get("name") != name]
            _rename_refs(raw, name, None)

    def set_default_preset(self, name: str | None) -> None:
        with self._editing() as raw:
            raw["default_preset"] = name or None

    def set_model_preset(self, model: str, preset: str | None) -> None:
        """Which preset Chat starts with for `model` (None: the default preset)."""
        with self._editing() as raw:
            mapping = dict(raw.get("model_presets") or {})
            if preset:
                mapping[model] = preset
            else:
                mapping.pop(model, None)
            raw["model_presets"] = mapping

    def save_template(self, name: str, text: str, *, replaces: str | None = None) -> None:
        name = check_name(name, "template")
        if not str(text or "").strip():
            raise ValueError("A system prompt template needs some text.")
        old = replaces or name
        with self._editing() as raw:
            templates = [t for t in raw.get("templates") or [] if isinstance(t, dict)]
            if name != old and any(t.get("name") == name for t in templates):
                raise ValueError(f"There is already a template called “{name}”.")
            entry = {"name": name, "text": str(text)}
            at = next((i for i, t in enumerate(templates) if t.get("name") == old), None)
            if at is None:
                templates.append(entry)
            else:
                templates[at] = entry
            raw["templates"] = templates

    def delete_template(self, name: str) -> None:
        with self._editing() as raw:
            raw["templates"] = [t for t in raw.get("templates") or []
                                if isinstance(t, dict) and t.get("name") != name]

    # -- instances ATOM loaded (so auto-unload touches only those) ------------------------------

    def note_loaded(self, url: str, instance_id: str) -> None:
        self._note(url, instance_id, add=True)

    def note_unloaded(self, url: str, instance_id: str) -> None:
        self._note(url, instance_id, add=False)

    def _note(self, url: str, instance_id: str, *, add: bool) -> None:
        url = normalize_base_url(url)
        with self._editing() as raw:
            mapping = dict(raw.get("loaded_by_atom") or {})
            ids = [i for i in mapping.get(url) or [] if i != instance_id]
            if add:
                ids.append(instance_id)
            mapping[url] = ids
            raw["loaded_by_atom"] = {k: v for k, v in mapping.items() if v}

    def loaded_by_atom(self, url: str) -> set[str]:
        return set(self.load().loaded_by_atom.get(normalize_base_url(url), ()))

    # -- export, import, forget ------------------------------------------------------------------

    def export_dict(self) -> dict[str, Any]:
        """Settings for an export: no token, nothing about this machine's live state."""
        return self.load().export_dict()

    def check_import(self, doc: object) -> list[str]:
        """The problems of an export's settings part, one sentence each ([] if it can be
        merged): AppSettings.check_import, URLs as the Settings form checks them."""
        return AppSettings.check_import(doc, check_url=check_server_url)

    def merge(self, doc: Mapping[str, Any]) -> int:
        """Adds the profiles, presets, templates and per-model presets of an export that are not
        here yet (by name); scalar settings only where none is set. Returns how many were added.
        Any token in `doc` is ignored. Never the default server: that choice sends every new
        chat (and its token) there, so an imported file doesn't get to make it."""
        self._bind_tokens_to_urls()  # before a profile of a reused name exists
        incoming = AppSettings.read(doc)
        checked = []
        for p in incoming.profiles:
            with contextlib.suppress(ValueError):  # not http(s): skipped like a bad record
                checked.append(ServerProfile(name=p.name, url=check_server_url(p.url)))
        incoming = incoming.model_copy(update={"profiles": tuple(checked)})
        with self._editing() as raw:
            return incoming.merged_into(raw)

    def forget_everything(self) -> None:
        """Deletes settings.json and tokens.json."""
        if not self.data_dir.is_dir():
            return
        with self._writing():
            for path in (self.settings_path, self.tokens_path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            self._cache = None


# Each saved stream limit: (lowest, highest, what the sentence calls it), from AppSettings.
LIMIT_BOUNDS: dict[str, tuple[float, float, str]] = {
    key: (float(saved.low or 0), float(saved.high or 0), saved.what)
    for key in ("stall_timeout_s", "first_token_timeout_s", "request_deadline_s")
    for saved in [saved_field(key)[1]]
}


def stream_limits(env: Settings, saved: AppSettings) -> StreamLimits:
    """When streamed replies are given up: a variable set in the environment wins, then what
    Settings saved, then the default."""
    chosen = {k: getattr(saved, k) for k in LIMIT_BOUNDS
              if getattr(saved, k) is not None and k not in env.limits_set}
    return replace(env.limits, **chosen)


def server_token(settings: SettingsStore, env: Settings, url: ServerURL) -> str | None:
    """The token to send to a server: the one saved in Settings for exactly its URL, else the
    environment's (ATOM_API_TOKEN / LM_API_TOKEN) when this is ATOM_SERVER_URL; else none.
    An extra server (ATOM_EXTRA_SERVERS) or a saved server without a token gets no token."""
    return settings.token_for_url(url) or env.token_for(url)


def _tokens_by_url(raw_tokens: object, raw_settings: Mapping[str, Any]) -> dict[str, str]:
    """tokens.json's tokens keyed by server URL (older files keyed them by profile name)."""
    if not isinstance(raw_tokens, dict):
        return {}
    # keyed as ServerURL spells a URL (older files: as they were typed, or by profile name)
    tokens = {(ServerURL(k) if "://" in str(k) else str(k)): str(v)
              for k, v in raw_tokens.items() if isinstance(v, str) and v}
    _rekey_by_url(tokens, raw_settings)
    return tokens


def _rekey_by_url(tokens: dict[str, str], raw_settings: Mapping[str, Any]) -> None:
    """In place: a token still keyed by a profile name moves to that profile's URL; one whose
    profile is gone is dropped, so it can never attach to a later profile of the same name."""
    profiles = raw_settings.get("profiles") if isinstance(raw_settings, Mapping) else None
    urls = {str(p.get("name")): normalize_base_url(str(p.get("url")))
            for p in profiles or [] if isinstance(p, dict) and p.get("name") and p.get("url")}
    for key in [k for k in tokens if "://" not in k]:
        value = tokens.pop(key)
        if key in urls:
            tokens.setdefault(urls[key], value)


def _rename_refs(raw: dict[str, Any], old: str, new: str | None) -> None:
    """Points the default preset and per-model presets at a renamed (or deleted) preset."""
    if raw.get("default_preset") == old:
        raw["default_preset"] = new
    mapping = {m: (new if p == old else p) for m, p in (raw.get("model_presets") or {}).items()}
    raw["model_presets"] = {m: p for m, p in mapping.items() if p}


_SETTINGS: dict[Path, SettingsStore] = {}
_SETTINGS_LOCK = threading.Lock()


def open_settings(data_dir: str | Path) -> SettingsStore:
    """The process-wide SettingsStore for `data_dir` (one lock per folder)."""
    key = Path(data_dir).expanduser().resolve()
    with _SETTINGS_LOCK:
        found = _SETTINGS.get(key)
        if found is None:
            found = _SETTINGS[key] = SettingsStore(key)
        return found
