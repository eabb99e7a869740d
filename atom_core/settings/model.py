"""What settings.json holds, as one pydantic model: AppSettings.

One model serves every use: the store reads the file into it (`AppSettings.read`, lenient: a
value of the wrong type or out of bounds, hand-edited or from an older file, is left out, never
a crash), an export is its dump (`export_dict`, without this machine's live state), an import is
checked against it (`check_import`, strict, one sentence per problem) and merged by it
(`merged_into`). A saved scalar setting is one field whose `Saved` says its bounds and what a
sentence calls it; `SettingsStore.update` sets any of them. A new saved setting is that field and
the widget that edits it.

Lists of named things (server profiles, presets, templates) are merged by name on import; maps
(model -> preset) by key. Tokens are never here: see store.py.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, TypeAdapter

from ..config import normalize_base_url
from ..history.backup import validation_sentences
from ..types import SamplingOptions

__all__ = [
    "MAX_TTL_SECONDS",
    "NAME_CHARS",
    "PRESET_BOUNDS",
    "AppSettings",
    "Local",
    "PromptTemplate",
    "SamplingPreset",
    "Saved",
    "ServerProfile",
    "check_name",
    "make_preset",
]

MAX_TTL_SECONDS = 7 * 24 * 3600  # the Settings and Chat pages' TTL inputs stop here
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


@dataclass(frozen=True, slots=True)
class Saved:
    """A saved scalar setting's checks: what a sentence calls it and its bounds (inclusive;
    None: no bound). `between` words the bounds when seconds is not the unit; `clamp` reads a
    value above `high` as `high` (instead of leaving it out); `imported` False keeps an
    import's value out (a choice only the user makes here)."""

    what: str
    low: float | None = None
    high: float | None = None
    between: str = ""
    clamp: bool = False
    imported: bool = True

    def problem(self, value: object) -> str | None:
        """The sentence for a value out of bounds ("The stall timeout must be between 1 and
        3600 seconds."), or None."""
        if self.low is None or self.high is None or not isinstance(value, int | float):
            return None
        if self.low <= value <= self.high:
            return None
        words = self.between or f"{self.low:g} and {self.high:g} seconds"
        return f"The {self.what} must be between {words}."


@dataclass(frozen=True, slots=True)
class Local:
    """A field of this machine's live state: never exported, never imported."""


def check_name(value: object, what: str) -> str:
    """A name as the forms keep it (whitespace collapsed), or ValueError with a sentence."""
    name = " ".join(str(value or "").split())
    if not name:
        raise ValueError(f"Give the {what} a name.")
    if len(name) > NAME_CHARS:
        raise ValueError(f"A {what} name can be at most {NAME_CHARS} characters.")
    return name


_FROZEN = ConfigDict(frozen=True, extra="ignore")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class ServerProfile(BaseModel):
    """A named server. Its token, if any, is kept apart (see SettingsStore.token)."""

    model_config = _FROZEN

    name: str
    url: str  # normalized base URL
    has_token: bool = False

    @classmethod
    def read(cls, d: Mapping[str, Any]) -> ServerProfile | None:
        name, url = _text(d.get("name")), _text(d.get("url"))
        return cls(name=name, url=url) if name and url else None

    def entry(self) -> dict[str, Any]:
        """As the file and an export keep it (never whether it has a token)."""
        return {"name": self.name, "url": self.url}


class SamplingPreset(BaseModel):
    """Named sampling settings. None leaves a setting to the model's default."""

    model_config = _FROZEN

    name: str
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    repeat_penalty: float | None = None
    seed: int | None = None

    @classmethod
    def read(cls, d: Mapping[str, Any]) -> SamplingPreset | None:
        try:
            return make_preset(str(d.get("name", "")), **{k: d.get(k) for k in PRESET_BOUNDS})
        except (ValueError, TypeError):
            return None

    def entry(self) -> dict[str, Any]:
        return self.model_dump()

    def options(self) -> SamplingOptions:
        return SamplingOptions(**self.values())

    def values(self) -> dict[str, Any]:
        """The sampling fields, by name (None included)."""
        return {k: getattr(self, k) for k in PRESET_BOUNDS}

    def summary(self) -> str:
        labels = {"temperature": "temperature", "top_p": "top P", "top_k": "top K",
                  "max_tokens": "max tokens", "repeat_penalty": "repeat penalty", "seed": "seed"}
        parts = [f"{labels[k]} {v:g}" for k, v in self.values().items() if v is not None]
        return " · ".join(parts) or "model defaults"


class PromptTemplate(BaseModel):
    model_config = _FROZEN

    name: str
    text: str

    @classmethod
    def read(cls, d: Mapping[str, Any]) -> PromptTemplate | None:
        name = _text(d.get("name"))
        return cls(name=name, text=str(d.get("text", ""))) if name else None

    def entry(self) -> dict[str, Any]:
        return self.model_dump()


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
    return SamplingPreset(name=check_name(name, "preset"), **clean)


_LIMIT = "seconds"


class AppSettings(BaseModel):
    """Everything settings.json holds (never a token)."""

    model_config = _FROZEN

    profiles: tuple[ServerProfile, ...] = ()
    default_profile: Annotated[str | None, Saved("default server", imported=False)] = None
    # sent as `ttl` on chat requests (JIT loads only)
    ttl_seconds: Annotated[int | None, Saved("idle TTL", 1, MAX_TTL_SECONDS,
                                             between="1 second and 7 days", clamp=True)] = None
    # unload the previous chat model when the picked model changes ...
    auto_unload: Annotated[bool, Saved("auto-unload", imported=False)] = False
    # ... even instances ATOM did not load itself
    auto_unload_any: Annotated[bool, Saved("auto-unload of any model", imported=False)] = False
    presets: tuple[SamplingPreset, ...] = ()
    default_preset: Annotated[str | None, Saved("default preset")] = None
    model_presets: dict[str, str] = {}  # model key -> preset name
    templates: tuple[PromptTemplate, ...] = ()
    loaded_by_atom: Annotated[dict[str, tuple[str, ...]], Local()] = {}  # url -> instance ids
    # When a streamed reply is given up (seconds; None: the environment's or the default).
    stall_timeout_s: Annotated[float | None, Saved("stall timeout", 1.0, 3600.0)] = None
    first_token_timeout_s: Annotated[float | None, Saved("first-token limit", 1.0, 86400.0)] = None
    request_deadline_s: Annotated[float | None, Saved("whole-request limit", 1.0, 86400.0)] = None

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

    # -- the file, an export, an import ---------------------------------------------------------

    @classmethod
    def read(cls, raw: Mapping[str, Any],
             with_tokens: Collection[str] = frozenset()) -> AppSettings:
        """The settings a file holds, read leniently: a value of the wrong type or out of bounds
        is left out (a list or a map keeps its good entries), never a crash on every visit.
        `with_tokens`: the server URLs a token is saved for (ServerProfile.has_token)."""
        values: dict[str, Any] = {}
        for name, field in _fields().items():
            if name in raw and (value := field.read(raw[name])) is not None:
                values[name] = value
        if "loaded_by_atom" in values:  # keyed as ServerURL spells a URL (older files: as typed)
            values["loaded_by_atom"] = {normalize_base_url(k): v
                                        for k, v in values["loaded_by_atom"].items()}
        settings = cls(**values)
        if with_tokens:
            settings = settings.model_copy(update={"profiles": tuple(
                p.model_copy(update={"has_token": normalize_base_url(p.url) in with_tokens})
                for p in settings.profiles)})
        return settings

    def export_dict(self) -> dict[str, Any]:
        """For an export: no token, nothing about this machine's live state."""
        return {name: field.dump(getattr(self, name)) for name, field in _fields().items()
                if not field.local}

    @staticmethod
    def check_import(doc: object, *, check_url: Callable[[str], object]) -> list[str]:
        """The problems of an export's settings part, one sentence each ([] if it can be
        merged): the shape against these fields' types (strict), names and URLs as the forms
        check them (`check_url`), every Saved setting's bounds."""
        if not isinstance(doc, Mapping):
            return ["The settings could not be read (not a set of named settings)."]
        shape = {k: v for k, v in doc.items() if k in _fields() and not _fields()[k].local}
        try:
            parsed = _import_type().validate_json(json.dumps(shape), strict=True)
        except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            return validation_sentences(exc, "The settings")
        problems: list[str] = []

        def check(where: str, action: Callable[..., object], *args: Any, **kwargs: Any) -> None:
            try:
                action(*args, **kwargs)
            except ValueError as e:
                problems.append(f"{where}: {e}")

        for i, p in enumerate(parsed.profiles, 1):
            check(f"Server profile {i}", check_name, p.name, "server")
            check(f"Server profile {i}", check_url, p.url)
        for i, preset in enumerate(parsed.presets, 1):
            check(f"Preset {i}", make_preset, preset.name, **preset.values())
        for i, t in enumerate(parsed.templates, 1):
            check(f"Template {i}", check_name, t.name, "template")
        for name, field in _fields().items():
            if field.saved is not None and (sentence := field.saved.problem(getattr(parsed, name))):
                problems.append(sentence.replace("The ", "The settings' ", 1))
        return problems

    def merged_into(self, raw: dict[str, Any]) -> int:
        """Adds to a file's `raw` settings what these have and it does not: named entries (by
        name) and map entries (by key); a Saved setting only where the file has none, and only
        if it may be imported. Returns how many were added."""
        added = 0
        for name, field in _fields().items():
            mine = getattr(self, name)
            if field.local:
                continue
            if field.named:
                have = [x for x in raw.get(name) or [] if isinstance(x, dict)]
                names = {x.get("name") for x in have}
                new = [x.entry() for x in mine if x.name not in names]
                raw[name] = have + new
                added += len(new)
            elif field.mapping:
                have_map = dict(raw.get(name) or {})
                for key, value in mine.items():
                    if key not in have_map:
                        have_map[key] = field.dump({key: value})[key]
                        added += 1
                raw[name] = have_map
            elif field.saved is not None and field.saved.imported and mine and not raw.get(name):
                raw[name] = mine
        return added


# -- how each field is read, dumped and merged: from its type, never from its name --------------


@dataclass(frozen=True, slots=True)
class _Field:
    adapter: TypeAdapter[Any]
    saved: Saved | None
    local: bool
    item: Any  # a named list's item type (ServerProfile, ...; its read() and entry()), or None
    value: TypeAdapter[Any] | None  # a map's value type
    flag: bool  # a bool: read as the file's truth value

    @property
    def named(self) -> bool:
        return self.item is not None

    @property
    def mapping(self) -> bool:
        return self.value is not None

    def read(self, value: object) -> Any:
        """The value as these settings keep it, or None to leave the field at its default."""
        if self.item is not None:
            if not isinstance(value, list):
                return None
            return tuple(x for x in (self.item.read(v) for v in value if isinstance(v, dict))
                         if x is not None)
        if self.value is not None:
            if not isinstance(value, dict):
                return None
            out = {}
            for key, entry in value.items():
                try:
                    got = self.value.validate_json(json.dumps(entry), strict=True)
                except (TypeError, ValueError):
                    continue
                if got:
                    out[str(key)] = got
            return out
        if self.flag:
            return bool(value)
        if value == "":
            return None
        try:
            got = self.adapter.validate_json(json.dumps(value), strict=True)
        except (TypeError, ValueError):
            return None
        saved = self.saved
        if saved is not None and saved.problem(got) is not None:
            if saved.clamp and saved.high is not None and got > saved.high:
                return type(got)(saved.high)
            return None
        return got

    def dump(self, value: Any) -> Any:
        if self.item is not None:
            return [x.entry() for x in value]
        return self.adapter.dump_python(value, mode="json")


@functools.cache
def _fields() -> dict[str, _Field]:
    out = {}
    for name, info in AppSettings.model_fields.items():
        annotation = info.annotation
        saved = next((m for m in info.metadata if isinstance(m, Saved)), None)
        args = get_args(annotation)
        item = args[0] if get_origin(annotation) is tuple and args \
            and isinstance(args[0], type) and issubclass(args[0], BaseModel) else None
        value = TypeAdapter(args[1]) if get_origin(annotation) is dict else None
        out[name] = _Field(adapter=TypeAdapter(annotation), saved=saved,
                           local=any(isinstance(m, Local) for m in info.metadata),
                           item=item, value=value, flag=annotation is bool)
    return out


@functools.cache
def _import_type() -> TypeAdapter[AppSettings]:
    return TypeAdapter(AppSettings)


def saved_field(name: str) -> tuple[TypeAdapter[Any], Saved]:
    """(type, checks) of a Saved setting; KeyError for a name that is not one."""
    field = _fields()[name]
    if field.saved is None:
        raise KeyError(name)
    return field.adapter, field.saved
