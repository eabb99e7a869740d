"""What the Settings page keeps, in the data folder beside the history, and the data tools.

    <data_dir>/settings.json   server profiles (no tokens), idle TTL, auto-unload, sampling
                               presets, system prompt templates, per-model presets   (mode 0600)
    <data_dir>/tokens.json     {"tokens": {server URL: API token}}                  (mode 0600)

Tokens live in their own file so that nothing that reads, shows, logs or exports settings ever
holds one; `SettingsStore.token()` is the only way out, and `mask_token()` is how a page shows
one. A token belongs to a server's URL, not to a profile's name: a profile whose URL changes (or
an imported profile that reuses a name) never inherits a token meant for another server. Files
from before that keyed tokens by profile name; they are read as the URL that profile had then.
Both files are written atomically (temp file, fsync, os.replace), mode 0600, in a 0700
folder. A damaged settings file is moved aside with a warning, never silently emptied.

Data tools: `export_everything()` (conversations with their messages, every record table, and
the settings without tokens, as one JSON document), `import_everything()` (merges such a
document back, skipping what is already there), `delete_history()`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import Settings, normalize_base_url
from ..errors import AtomError
from ..history.tinydb_store import HistoryStore, atomic_write_json
from ..server.client import ServerStatus
from ..types import SamplingOptions

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "EXPORT_FORMAT",
    "PRESET_BOUNDS",
    "AppSettings",
    "ImportReport",
    "PromptTemplate",
    "SamplingPreset",
    "ServerProfile",
    "SettingsStore",
    "check_server_url",
    "connection_report",
    "delete_history",
    "export_everything",
    "import_everything",
    "initial_server_url",
    "mask_token",
    "open_settings",
    "server_token",
]

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
TOKENS_FILE = "tokens.json"
EXPORT_FORMAT = "atom-export"
EXPORT_VERSION = 1
# Record tables that describe this machine's live state, not history: not exported or imported.
LOCAL_TABLES = frozenset({"downloads"})
NAME_CHARS = 60

# (min, max) for each preset field: the same bounds as the Chat page's inputs, so a preset can
# always be put into them.
PRESET_BOUNDS: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "top_k": (0, 500),
    "max_tokens": (1, 131072),
    "repeat_penalty": (0.5, 2.0),
    "seed": (0, 2**31 - 1),
}
_INT_FIELDS = frozenset({"top_k", "max_tokens", "seed"})
_TABLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerProfile:
    """A named server. Its token, if any, is kept apart (see SettingsStore.token)."""

    name: str
    url: str  # normalized base URL
    has_token: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingPreset:
    """Named sampling settings. None leaves a setting to the model's default."""

    name: str
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    repeat_penalty: float | None = None
    seed: int | None = None

    def options(self) -> SamplingOptions:
        return SamplingOptions(**{k: v for k, v in self.values().items()})

    def values(self) -> dict[str, Any]:
        """The sampling fields, by name (None included)."""
        return {k: getattr(self, k) for k in PRESET_BOUNDS}

    def summary(self) -> str:
        labels = {"temperature": "temperature", "top_p": "top P", "top_k": "top K",
                  "max_tokens": "max tokens", "repeat_penalty": "repeat penalty", "seed": "seed"}
        parts = [f"{labels[k]} {v:g}" for k, v in self.values().items() if v is not None]
        return " · ".join(parts) or "model defaults"


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptTemplate:
    name: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AppSettings:
    """Everything settings.json holds (never a token)."""

    profiles: tuple[ServerProfile, ...] = ()
    default_profile: str | None = None
    ttl_seconds: int | None = None  # sent as `ttl` on chat requests (JIT loads only)
    auto_unload: bool = False  # unload the previous chat model when the picked model changes
    auto_unload_any: bool = False  # ... even instances ATOM did not load itself
    presets: tuple[SamplingPreset, ...] = ()
    default_preset: str | None = None
    model_presets: Mapping[str, str] = field(default_factory=dict)  # model key -> preset name
    templates: tuple[PromptTemplate, ...] = ()
    loaded_by_atom: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # url -> ids

    def profile(self, name: str | None) -> ServerProfile | None:
        return next((p for p in self.profiles if p.name == name), None)

    def default(self) -> ServerProfile | None:
        return self.profile(self.default_profile)

    def preset(self, name: str | None) -> SamplingPreset | None:
        return next((p for p in self.presets if p.name == name), None)

    def template(self, name: str | None) -> PromptTemplate | None:
        return next((t for t in self.templates if t.name == name), None)

    def preset_uses(self, name: str) -> str:
        """Where a preset applies: "every model (default), test/alpha" or ""."""
        uses = ["every model (default)"] if name == self.default_preset else []
        return ", ".join(uses + [m for m, p in self.model_presets.items() if p == name])

    def preset_for(self, model: str | None) -> SamplingPreset | None:
        """The model's own preset if it has one, else the default preset, else None."""
        own = self.preset(self.model_presets.get(model or ""))
        return own or self.preset(self.default_preset)


def mask_token(token: str | None) -> str:
    """A token as pages may show it: 'sk-lm-••••••••e4'. Never more than the last two
    characters of the secret part."""
    if not token:
        return ""
    prefix = "sk-lm-" if token.startswith("sk-lm-") else ""
    tail = token[-2:] if len(token) - len(prefix) >= 12 else ""
    return f"{prefix}{'•' * 8}{tail}"


def initial_server_url(environ: Mapping[str, str], settings: AppSettings, fallback: str) -> str:
    """The server a new session starts on: ATOM_SERVER_URL if set, else the default profile's,
    else `fallback`. (The sidebar's box still switches it for the session.)"""
    if environ.get("ATOM_SERVER_URL", "").strip():
        return normalize_base_url(environ["ATOM_SERVER_URL"])
    default = settings.default()
    return default.url if default else normalize_base_url(fallback)


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


def _name(value: str, what: str) -> str:
    name = " ".join(str(value or "").split())
    if not name:
        raise ValueError(f"Give the {what} a name.")
    if len(name) > NAME_CHARS:
        raise ValueError(f"A {what} name can be at most {NAME_CHARS} characters.")
    return name


def check_server_url(url: str) -> str:
    """The normalized URL of a server ATOM may talk to (http or https, a host, maybe a port),
    or ValueError with a sentence. The Settings form and imports both use it."""
    raw = str(url or "").strip()
    if not raw:
        raise ValueError("Enter the server's URL, for example http://localhost:1234.")
    normalized = normalize_base_url(raw)
    if not re.match(r"^https?://[^/\s:]+(:\d{1,5})?(/\S*)?$", normalized):
        raise ValueError(f"“{raw}” is not a server URL. Use one like http://localhost:1234.")
    return normalized


def make_preset(name: str, **values: Any) -> SamplingPreset:
    """A checked preset: each value None or within PRESET_BOUNDS (ValueError otherwise)."""
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if key not in PRESET_BOUNDS:
            raise ValueError(f"Unknown preset setting {key!r}.")
        if value is None or value == "":
            clean[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key} must be a number.")
        low, high = PRESET_BOUNDS[key]
        if not low <= value <= high:
            raise ValueError(f"{key} must be between {low:g} and {high:g}.")
        if key in _INT_FIELDS:
            if value != int(value):
                raise ValueError(f"{key} must be a whole number.")
            clean[key] = int(value)
        else:
            clean[key] = float(value)
    return SamplingPreset(name=_name(name, "preset"), **clean)


# -- the store ---------------------------------------------------------------------------------


def _write_private_json(path: Path, data: object) -> None:
    """The store's atomic write (temp file, fsync, os.replace): mkstemp creates the temp file
    mode 0600, and the rename keeps it; the folder is made 0700 like the store's."""
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)  # the umask may have widened mkdir's mode
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
        self._lock = threading.RLock()
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

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            raw = self._read(self.settings_path)
            yield raw
            _write_private_json(self.settings_path, raw)
            self._cache = None

    def _edit_tokens(self, change: Callable[[dict[str, str]], None]) -> None:
        with self._lock:
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
            settings = self._parse(raw, set(tokens))
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

    @staticmethod
    def _parse(raw: Mapping[str, Any], with_tokens: set[str]) -> AppSettings:
        def items(key: str) -> list[dict[str, Any]]:
            value = raw.get(key)
            return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []

        profiles = tuple(
            ServerProfile(name=str(p["name"]), url=str(p["url"]),
                          has_token=normalize_base_url(str(p["url"])) in with_tokens)
            for p in items("profiles") if p.get("name") and p.get("url")
        )
        presets = []
        for p in items("presets"):
            with contextlib.suppress(ValueError, TypeError):
                presets.append(make_preset(str(p.get("name", "")),
                                           **{k: p.get(k) for k in PRESET_BOUNDS}))
        templates = tuple(PromptTemplate(name=str(t["name"]), text=str(t.get("text", "")))
                          for t in items("templates") if t.get("name"))
        ttl = raw.get("ttl_seconds")
        loaded = raw.get("loaded_by_atom") if isinstance(raw.get("loaded_by_atom"), dict) else {}
        model_presets = raw.get("model_presets")
        return AppSettings(
            profiles=profiles,
            default_profile=raw.get("default_profile") or None,
            ttl_seconds=int(ttl) if isinstance(ttl, int) and ttl > 0 else None,
            auto_unload=bool(raw.get("auto_unload")),
            auto_unload_any=bool(raw.get("auto_unload_any")),
            presets=tuple(presets),
            default_preset=raw.get("default_preset") or None,
            model_presets={str(k): str(v) for k, v in (model_presets or {}).items()}
            if isinstance(model_presets, dict) else {},
            templates=templates,
            loaded_by_atom={str(k): tuple(map(str, v)) for k, v in (loaded or {}).items()
                            if isinstance(v, list)},
        )

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
        name = _name(name, "server")
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

    def set_ttl(self, seconds: int | None) -> None:
        if seconds is not None and not 1 <= int(seconds) <= 7 * 24 * 3600:
            raise ValueError("The idle TTL must be between 1 second and 7 days.")
        with self._editing() as raw:
            raw["ttl_seconds"] = int(seconds) if seconds else None

    def set_auto_unload(self, on: bool, *, any_instance: bool = False) -> None:
        with self._editing() as raw:
            raw["auto_unload"] = bool(on)
            raw["auto_unload_any"] = bool(on and any_instance)

    def save_preset(self, preset: SamplingPreset, *, replaces: str | None = None) -> None:
        preset = make_preset(preset.name, **preset.values())  # checked again: callers vary
        old = replaces or preset.name
        with self._editing() as raw:
            presets = [p for p in raw.get("presets") or [] if isinstance(p, dict)]
            if preset.name != old and any(p.get("name") == preset.name for p in presets):
                raise ValueError(f"There is already a preset called “{preset.name}”.")
            entry = asdict(preset)
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
        name = _name(name, "template")
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
        s = self.load()
        return {
            "profiles": [{"name": p.name, "url": p.url} for p in s.profiles],
            "default_profile": s.default_profile,
            "ttl_seconds": s.ttl_seconds,
            "auto_unload": s.auto_unload,
            "auto_unload_any": s.auto_unload_any,
            "presets": [asdict(p) for p in s.presets],
            "default_preset": s.default_preset,
            "model_presets": dict(s.model_presets),
            "templates": [asdict(t) for t in s.templates],
        }

    def merge(self, doc: Mapping[str, Any]) -> int:
        """Adds the profiles, presets, templates and per-model presets of an export that are not
        here yet (by name); scalar settings only where none is set. Returns how many were added.
        Any token in `doc` is ignored."""
        self._bind_tokens_to_urls()  # before a profile of a reused name exists
        incoming = self._parse(doc, set())
        checked = []
        for p in incoming.profiles:
            with contextlib.suppress(ValueError):  # not http(s): skipped like a bad record
                checked.append(ServerProfile(name=p.name, url=check_server_url(p.url)))
        incoming = replace(incoming, profiles=tuple(checked))
        added = 0
        with self._editing() as raw:
            for key, values in (("profiles", [{"name": p.name, "url": p.url}
                                              for p in incoming.profiles]),
                                ("presets", [asdict(p) for p in incoming.presets]),
                                ("templates", [asdict(t) for t in incoming.templates])):
                have = [x for x in raw.get(key) or [] if isinstance(x, dict)]
                names = {x.get("name") for x in have}
                new = [v for v in values if v["name"] not in names]
                raw[key] = have + new
                added += len(new)
            mapping = dict(raw.get("model_presets") or {})
            for model, preset in incoming.model_presets.items():
                if model not in mapping:
                    mapping[model] = preset
                    added += 1
            raw["model_presets"] = mapping
            # Never the default server: that choice sends every new chat (and its token) there,
            # so an imported file doesn't get to make it; the user picks it in Settings.
            for key, value in (("ttl_seconds", incoming.ttl_seconds),
                               ("default_preset", incoming.default_preset)):
                if value and not raw.get(key):
                    raw[key] = value
        return added

    def forget_everything(self) -> None:
        """Deletes settings.json and tokens.json."""
        with self._lock:
            for path in (self.settings_path, self.tokens_path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            self._cache = None


def server_token(settings: SettingsStore, env: Settings, url: str) -> str | None:
    """The token to send to a server: the one saved in Settings for exactly its URL, else the
    environment's (ATOM_API_TOKEN / LM_API_TOKEN) when this is ATOM_SERVER_URL; else none.
    An extra server (ATOM_EXTRA_SERVERS) or a saved server without a token gets no token."""
    return settings.token_for_url(url) or env.token_for(url)


def _tokens_by_url(raw_tokens: object, raw_settings: Mapping[str, Any]) -> dict[str, str]:
    """tokens.json's tokens keyed by server URL (older files keyed them by profile name)."""
    if not isinstance(raw_tokens, dict):
        return {}
    tokens = {str(k): str(v) for k, v in raw_tokens.items() if isinstance(v, str) and v}
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


# -- export / import / delete of the whole history ---------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportReport:
    conversations_added: int = 0
    conversations_skipped: int = 0  # already here (same messages)
    records_added: int = 0
    records_skipped: int = 0  # already here (same id)
    settings_added: int = 0
    problems: tuple[str, ...] = ()  # parts that could not be imported, one sentence each

    @property
    def sentence(self) -> str:
        s = (f"Imported {self.conversations_added} conversation(s), {self.records_added} "
             f"record(s) and {self.settings_added} setting(s).")
        skipped = self.conversations_skipped + self.records_skipped
        if skipped:
            s += f" Skipped {skipped} already here."
        return s


def _table_names(store: HistoryStore) -> list[str]:
    # HistoryStore has no table listing; the TinyDB layout keeps one folder per table.
    folder = Path(store.data_dir) / "tables"
    try:
        return sorted(n for n in os.listdir(folder) if _TABLE_NAME.match(n)
                      and (folder / n).is_dir())
    except FileNotFoundError:
        return []


def _fingerprint(system_prompt: str, messages: list[Mapping[str, Any]]) -> str:
    """What makes two conversations the same for an import: system prompt and every message's
    role, text and reasoning (not ids, titles or times, which differ after an import)."""
    body = [system_prompt, [[m.get("role"), m.get("content"), m.get("reasoning") or ""]
                            for m in messages]]
    return hashlib.sha256(json.dumps(body, ensure_ascii=False).encode()).hexdigest()


def export_everything(store: HistoryStore, settings: SettingsStore | None = None) -> dict[str, Any]:
    """Every conversation with its messages, every record table (runs, votes, ...) and the
    settings (never a token) as one JSON-able document."""
    conversations = []
    for c in reversed(store.list_conversations()):  # oldest first: an import keeps the order
        conversations.append({
            "id": c.id, "title": c.title, "model": c.model, "system_prompt": c.system_prompt,
            "created": c.created, "updated": c.updated,
            "messages": [
                {"role": m.role, "content": m.content, "reasoning": m.reasoning,
                 "model": m.model, "metrics": m.metrics, "state": m.state, "error": m.error,
                 "created": m.created}
                for m in store.messages(c.id)
            ],
        })
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "conversations": conversations,
        "tables": {t: store.records(t) for t in _table_names(store) if t not in LOCAL_TABLES},
        "settings": settings.export_dict() if settings is not None else {},
    }


def export_json(store: HistoryStore, settings: SettingsStore | None = None) -> str:
    return json.dumps(export_everything(store, settings), ensure_ascii=False, indent=1)


_MESSAGE_FIELDS = ("role", "content", "reasoning", "model", "metrics", "state", "error")


def import_everything(
    store: HistoryStore, settings: SettingsStore | None, data: str | bytes | Mapping[str, Any]
) -> ImportReport:
    """Merges an export back in: conversations whose messages are already here, and records
    whose id is already here, are skipped, so importing the same file twice adds nothing.
    Raises ValueError with a sentence when `data` is not an ATOM export."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError:
            raise ValueError("That file is not JSON; choose a file ATOM exported.") from None
    if not isinstance(data, Mapping) or data.get("format") != EXPORT_FORMAT:
        raise ValueError("That file is not an ATOM export (it has no \"format\": "
                         f"\"{EXPORT_FORMAT}\").")
    if int(data.get("version") or 0) > EXPORT_VERSION:
        raise ValueError("That export was written by a newer ATOM; upgrade ATOM to import it.")
    problems: list[str] = []
    known = {_fingerprint(c.system_prompt, [asdict(m) for m in store.messages(c.id)])
             for c in store.list_conversations()}
    added = skipped = 0
    for conv in data.get("conversations") or []:
        if not isinstance(conv, Mapping) or not isinstance(conv.get("messages", []), list):
            problems.append("A conversation entry was not readable and was left out.")
            continue
        messages = [m for m in conv.get("messages") or [] if isinstance(m, Mapping)]
        print_ = _fingerprint(str(conv.get("system_prompt") or ""), messages)
        if print_ in known:
            skipped += 1
            continue
        try:
            _import_conversation(store, conv, messages)
        except (ValueError, TypeError, AtomError) as e:
            problems.append(f"“{conv.get('title', '?')}” was left out: {e}")
            continue
        known.add(print_)
        added += 1
    rec_added = rec_skipped = 0
    tables = data.get("tables")
    if not isinstance(tables, Mapping):
        tables = {}
    for table, records in tables.items():
        if table in LOCAL_TABLES or not _TABLE_NAME.match(str(table)) or not isinstance(
                records, list):
            problems.append(f"Table “{table}” was left out.")
            continue
        have = {r.get("id") for r in store.records(table)}
        for record in records:
            if not isinstance(record, Mapping):
                continue
            record = dict(record)
            record.setdefault("id", "imp-" + hashlib.sha256(json.dumps(
                record, sort_keys=True, default=str).encode()).hexdigest()[:16])
            if record["id"] in have:
                rec_skipped += 1
                continue
            try:
                store.append(table, record)
            except (ValueError, TypeError) as e:
                problems.append(f"A record of “{table}” was left out: {e}")
                continue
            have.add(record["id"])
            rec_added += 1
    settings_added = 0
    if settings is not None and isinstance(data.get("settings"), Mapping):
        settings_added = settings.merge(data["settings"])
    return ImportReport(conversations_added=added, conversations_skipped=skipped,
                        records_added=rec_added, records_skipped=rec_skipped,
                        settings_added=settings_added, problems=tuple(problems))


def _import_conversation(store: HistoryStore, conv: Mapping[str, Any],
                         messages: list[Mapping[str, Any]]) -> None:
    for m in messages:  # check all first: never leave half a conversation behind
        if m.get("role") not in ("user", "assistant", "system"):
            raise ValueError(f"a message has an unknown role {m.get('role')!r}")
        if not isinstance(m.get("content", ""), str):
            raise ValueError("a message's text is not text")
    created = store.create_conversation(
        title=str(conv.get("title") or "Imported chat"), model=str(conv.get("model") or ""),
        system_prompt=str(conv.get("system_prompt") or ""))
    try:
        for m in messages:
            kwargs = {k: m[k] for k in _MESSAGE_FIELDS if k in m and m[k] is not None}
            store.add_message(created.id, **kwargs)
    except (ValueError, TypeError):
        store.delete_conversation(created.id)
        raise


def delete_history(store: HistoryStore) -> None:
    """Deletes every conversation, message, run and record in the store's folder (settings and
    tokens stay: see SettingsStore.forget_everything). Holds the store's inter-process write lock
    (store.lock) meanwhile, so no write from this or another ATOM process lands half way."""
    folder = Path(store.data_dir)
    if not folder.is_dir():
        return
    fd = os.open(folder / "store.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        for name in ("conversations", "index", "tables"):
            shutil.rmtree(folder / name, ignore_errors=True)
    finally:
        os.close(fd)
