"""Prompt sets and their checks: what a paste or a file holds (`parse_prompt_set`).

A prompt set comes in one of three forms:

- plain lines: one prompt per non-empty line;
- CSV with a header row: a `prompt` column, and optionally `name`, `system`, `contains`,
  `regex`, `json` (true/yes/1), `max_latency_s`, `reference` (an answer for the judge to
  compare against) and `judge` (the lowest judge score, 1-10, that passes);
- JSON: a list of strings or of objects, or `{"name": ..., "prompts": [...]}`. An object has
  `prompt` and optionally `name`, `system` and checks, either flat or under `"checks"`:
  `{"contains": "Paris" | [...], "regex": "..." | [...], "json": true, "max_latency_s": 2.5,
  "judge": 7}`, and `reference` beside `prompt`.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import re2

from ..errors import AtomError

if TYPE_CHECKING:
    pass

CheckKind = Literal["contains", "regex", "json", "max_latency", "judge"]


class PromptSetError(AtomError):
    """A prompt set that cannot be read; the sentence says where and why."""


# -- checks ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """One pass/fail test of a reply."""

    kind: CheckKind
    value: str | float | bool = True

    @property
    def label(self) -> str:
        if self.kind == "contains":
            return f"contains “{self.value}”"
        if self.kind == "regex":
            return f"matches /{self.value}/"
        if self.kind == "json":
            return "valid JSON"
        if self.kind == "judge":
            return f"judge score ≥ {self.value:g}" if isinstance(self.value, float) else \
                f"judge score ≥ {self.value}"
        return f"latency ≤ {self.value:g} s" if isinstance(self.value, float) else \
            f"latency ≤ {self.value} s"

    def passes(self, content: str, e2e_s: float | None, ok: bool,
               judge_score: float | None = None) -> bool:
        """A failed or cut request fails every check; a judge check fails without a score."""
        if not ok:
            return False
        if self.kind == "judge":
            return judge_score is not None and judge_score >= float(self.value)
        if self.kind == "contains":
            return str(self.value).casefold() in content.casefold()
        if self.kind == "regex":
            found = reply_pattern(str(self.value))
            return found is not None and found.search(content) is not None
        if self.kind == "json":
            return _is_json(content)
        return e2e_s is not None and e2e_s <= float(self.value)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Check:
        return cls(kind=d["kind"], value=d.get("value", True))


@functools.lru_cache(maxsize=256)
def reply_pattern(pattern: str) -> Any:
    """`pattern` compiled by RE2 (linear time in the reply), or None if RE2 cannot take it.

    A prompt set's regex is written by someone else and runs on every reply: with Python's
    backtracking `re`, `^(\\w+\\s?)*;$` on a 60-word reply never finished and froze the app
    (issue 23; bench/bench_regex.py). RE2 never backtracks, so it has no backreferences or
    lookaround, and its `\\w`, `\\d` and `\\b` are ASCII."""
    options = re2.Options()
    options.log_errors = False  # a refused pattern is our sentence, not a line on stderr
    try:
        return re2.compile(pattern, options)
    except re2.error:
        return None


def _is_json(text: str) -> bool:
    """Valid JSON, also when the model wrapped it in a ```json fence."""
    body = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, flags=re.DOTALL)
    if fenced:
        body = fenced.group(1)
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


# -- prompt sets ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptItem:
    prompt: str
    name: str = ""
    system: str | None = None
    checks: tuple[Check, ...] = ()
    reference: str | None = None  # an answer for the judge to compare against (optional)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "name": self.name, "system": self.system,
                "checks": [c.to_dict() for c in self.checks], "reference": self.reference}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PromptItem:
        return cls(prompt=str(d["prompt"]), name=str(d.get("name") or ""),
                   system=d.get("system") or None,
                   checks=tuple(Check.from_dict(c) for c in d.get("checks") or []),
                   reference=d.get("reference") or None)


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptSet:
    name: str
    items: tuple[PromptItem, ...]

    @property
    def check_count(self) -> int:
        return sum(len(i.checks) for i in self.items)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "items": [i.to_dict() for i in self.items]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PromptSet:
        return cls(name=str(d.get("name") or ""),
                   items=tuple(PromptItem.from_dict(i) for i in d.get("items") or []))


Format = Literal["lines", "csv", "json"]


def detect_format(text: str, filename: str | None = None) -> Format:
    """By file extension, else by content: JSON if it starts with [ or {, CSV if the first line
    is a header naming a `prompt` column, else plain lines."""
    ext = Path(filename).suffix.lower() if filename else ""
    if ext == ".json":
        return "json"
    if ext == ".csv":
        return "csv"
    if ext in (".txt", ".md"):
        return "lines"
    head = text.lstrip()
    if head[:1] in ("[", "{"):
        return "json"
    first = head.splitlines()[0] if head else ""
    try:
        cells = next(csv.reader([first]))
    except (csv.Error, StopIteration):
        cells = []
    if len(cells) > 1 and "prompt" in (c.strip().lower() for c in cells):
        return "csv"
    return "lines"


def parse_prompt_set(text: str, *, filename: str | None = None, name: str = "",
                     fmt: Format | None = None) -> PromptSet:
    """Reads a prompt set (formats in the module docstring). Raises PromptSetError."""
    fmt = fmt or detect_format(text, filename)
    label = filename or "the pasted text"
    default_name = name or (Path(filename).stem if filename else "")
    if fmt == "lines":
        items = [PromptItem(prompt=line.strip()) for line in text.splitlines() if line.strip()]
        set_name = default_name
    elif fmt == "csv":
        items, set_name = _from_csv(text, label), default_name
    else:
        items, set_name = _from_json(text, label, default_name)
    if not items:
        raise PromptSetError(f"No prompts found in {label}.")
    return PromptSet(name=set_name or "Prompt set", items=tuple(items))


def load_prompt_file(path: str | Path) -> PromptSet:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise PromptSetError(f"Can't read {p}: {e.strerror or e}.") from e
    return parse_prompt_set(text, filename=p.name)


_TRUE = {"1", "true", "yes", "y", "on"}


def _from_csv(text: str, label: str) -> list[PromptItem]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
    if "prompt" not in columns:
        raise PromptSetError(f"{label} has no “prompt” column in its header row.")
    items = []
    for line, row in enumerate(reader, start=2):
        def cell(key: str, row: dict[str, Any] = row) -> str:
            raw = row.get(columns[key]) if key in columns else None
            return str(raw or "").strip()

        prompt = cell("prompt")
        if not prompt:
            continue
        checks: list[Check] = []
        if cell("contains"):
            checks.append(Check("contains", cell("contains")))
        if cell("regex"):
            checks.append(Check("regex", _regex(cell("regex"), label, line)))
        if cell("json").lower() in _TRUE:
            checks.append(Check("json"))
        if cell("max_latency_s"):
            checks.append(Check("max_latency", _seconds(cell("max_latency_s"), label, line)))
        if cell("judge"):
            checks.append(Check("judge", _judge_score(cell("judge"), label, line)))
        items.append(PromptItem(prompt=prompt, name=cell("name"), system=cell("system") or None,
                                checks=tuple(checks), reference=cell("reference") or None))
    return items


def _from_json(text: str, label: str, default_name: str) -> tuple[list[PromptItem], str]:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise PromptSetError(f"{label} is not valid JSON ({e}).") from e
    name = default_name
    if isinstance(doc, dict):
        name = str(doc.get("name") or name)
        doc = doc.get("prompts", doc.get("items"))
    if not isinstance(doc, list):
        raise PromptSetError(f"{label}: expected a list of prompts, or an object with "
                             "“prompts”.")
    items = []
    for n, entry in enumerate(doc, start=1):
        if isinstance(entry, str):
            if entry.strip():
                items.append(PromptItem(prompt=entry.strip()))
            continue
        if not isinstance(entry, dict) or not str(entry.get("prompt") or "").strip():
            raise PromptSetError(f"{label}: prompt {n} needs a “prompt” text.")
        spec = {**entry, **(entry.get("checks") or {})}
        checks: list[Check] = []
        for value in _as_list(spec.get("contains")):
            checks.append(Check("contains", str(value)))
        for value in _as_list(spec.get("regex")):
            checks.append(Check("regex", _regex(str(value), label, n)))
        if spec.get("json") is True or str(spec.get("json")).lower() in _TRUE:
            checks.append(Check("json"))
        latency = spec.get("max_latency_s", spec.get("max_latency"))
        if latency is not None:
            checks.append(Check("max_latency", _seconds(str(latency), label, n)))
        if spec.get("judge") not in (None, "", False):
            checks.append(Check("judge", _judge_score(str(spec["judge"]), label, n)))
        reference = entry.get("reference")
        items.append(PromptItem(prompt=str(entry["prompt"]).strip(),
                                name=str(entry.get("name") or entry.get("id") or ""),
                                system=entry.get("system") or None, checks=tuple(checks),
                                reference=str(reference).strip() or None
                                if reference is not None else None))
    return items, name


def _as_list(v: Any) -> list[Any]:
    if v is None or v == "":
        return []
    return list(v) if isinstance(v, list | tuple) else [v]


def _regex(pattern: str, label: str, where: int) -> str:
    try:
        re.compile(pattern)
    except re.error as e:
        raise PromptSetError(f"{label}, prompt {where}: the regex /{pattern}/ is not valid "
                             f"({e}).") from e
    if reply_pattern(pattern) is None:
        raise PromptSetError(
            f"{label}, prompt {where}: ATOM cannot run the regex /{pattern}/: checks use a "
            "regex engine that cannot freeze on a long reply (RE2), and it has no "
            "backreferences (\\1), lookarounds ((?=…), (?<!…)) or patterns this large; "
            "rewrite it without them.")
    return pattern


def _seconds(raw: str, label: str, where: int) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise PromptSetError(f"{label}, prompt {where}: max latency “{raw}” is not a number of "
                             "seconds.") from None
    if value <= 0:
        raise PromptSetError(f"{label}, prompt {where}: max latency must be above 0 s.")
    return value


def _judge_score(raw: str, label: str, where: int) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise PromptSetError(f"{label}, prompt {where}: the judge check “{raw}” is not a score "
                             "from 1 to 10.") from None
    if not 1 <= value <= 10:
        raise PromptSetError(f"{label}, prompt {where}: the judge check needs a score from 1 "
                             "to 10.")
    return value


def check_results(item: PromptItem, content: str, e2e_s: float | None,
                  ok: bool, judge_score: float | None = None) -> list[dict[str, Any]]:
    """Pass/fail of each check. Judge checks are left out when no judge scored the reply."""
    return [{"check": c.label, "passed": c.passes(content, e2e_s, ok, judge_score)}
            for c in item.checks if c.kind != "judge" or judge_score is not None]
