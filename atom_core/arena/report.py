"""Self-contained reports of an Arena round or a prompt-set run: Markdown, HTML (one file, inline
style, nothing fetched), and the raw records as CSV and JSON.

Each report holds the prompt(s), every reply, the stats table, the vote, the load configs, the
model metadata (quantization, parameters, size) and the machine that produced the numbers (as
recorded for the session, from the "machines" table: CPU, cores, RAM, GPUs, OS; never its host
name). API tokens are never part of any of it.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from ..history.export import csv_cell
from ..measure.card import machine_facts
from ..measure.hardware import MachineInfo
from ..metrics import (
    DECODE_P50,
    E2E_P50,
    FIRST_ANSWER_P50,
    NO_VALUE,
    THINKING_P50,
    TTFT_P50,
    GenerationMetrics,
    format_seconds,
    format_size,
)
from ..render import plain_label, safe_markdown
from ..words import plural
from .promptsets import PromptSetRecord, PromptSetRunSpec, check_rows, summary_rows
from .results import HELP, stat_rows
from .rounds import ArenaRound, SlotResult


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%d-%H%M%S")


def filename(kind: str, ts: float, ext: str) -> str:
    """'atom-arena-20261125-132210.md'."""
    return f"atom-{kind}-{_stamp(ts)}.{ext}"



def _kv(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items()) if d else "server default"


def _md_cell(v: Any) -> str:
    # a cell may hold a model name: no image loads from it (bold best values stay bold)
    return safe_markdown(str(v if v is not None else "")).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
           "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return out


def _quote(text: str) -> list[str]:
    """Untrusted text (replies, reasoning, prompts) as a Markdown quote that loads nothing in a
    previewer: images become links, raw HTML shows as text (render.safe_markdown)."""
    safe = safe_markdown(text or "(no text)")
    return ["> " + line if line else ">" for line in safe.splitlines()]


# -- the machine ----------------------------------------------------------------------------------

Machines = Mapping[str, MachineInfo]  # the "machines" table by id (hardware.machines(store))
MACHINE_HEADER = ["Machine id", "CPU", "Cores", "Threads", "RAM", "GPU", "OS"]


def _on_this_machine(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def servers_elsewhere(servers: Iterable[str]) -> list[str]:
    """The servers (in order, once each) that are not on the machine ATOM ran on: the
    recorded machine is ATOM's, so their own hardware is not in the report."""
    return [u for u in dict.fromkeys(servers) if u and not _on_this_machine(u)]


def machine_row(machine_id: str, machines: Machines) -> list[Any]:
    m = machines.get(machine_id)
    if m is None:
        return [machine_id, "not in this ATOM's machines table", "", "", "", "", ""]
    ram = f"{m.ram_total_mb / 1024:.0f} GB" if m.ram_total_mb else ""
    return [machine_id, m.cpu_model, m.cpu_cores or "", m.cpu_threads or "", ram,
            m.gpu_label, m.os]


def machine_notes(machine_ids: Sequence[str], servers: Iterable[str]) -> list[str]:
    """What a reader must know beside the machine table: none recorded, several, or a server
    that ran elsewhere."""
    notes = []
    if not machine_ids:
        notes.append("The machine was not recorded (saved before ATOM recorded the machine "
                     "of each session).")
    elif len(machine_ids) > 1:
        notes.append("These numbers come from more than one machine (the run was resumed "
                     "elsewhere): compare them with care.")
    away = servers_elsewhere(servers)
    if away and machine_ids:
        notes.append(f"The model server{'s' if len(away) > 1 else ''} {', '.join(away)} "
                     f"{'are' if len(away) > 1 else 'is'} not on this machine: the hardware "
                     "above is the machine ATOM measured from, not the server's.")
    return notes


def machine_json(machine_ids: Sequence[str], machines: Machines,
                 servers: Iterable[str]) -> list[dict[str, Any]]:
    """Each machine as the benchmark card shares it (no host name), with its one-line label
    and the servers that were not on it."""
    away = servers_elsewhere(servers)
    out = []
    for mid in machine_ids:
        m = machines.get(mid)
        facts: dict[str, Any] = {"id": mid} if m is None else {**machine_facts(m),
                                                               "label": m.label}
        out.append({**facts, "servers_elsewhere": away})
    return out


def _machine_label(machine_id: str | None, machines: Machines) -> str:
    m = machines.get(machine_id or "")
    return m.label if m is not None else (machine_id or "")


def _machine_markdown(machine_ids: Sequence[str], machines: Machines,
                      servers: Iterable[str]) -> list[str]:
    lines = ["## Machine", ""]
    if machine_ids:
        lines += _md_table(MACHINE_HEADER, [machine_row(i, machines) for i in machine_ids])
        lines.append("")
    lines += [f"*{n}*" for n in machine_notes(machine_ids, servers)]
    return lines


def _machine_html(machine_ids: Sequence[str], machines: Machines,
                  servers: Iterable[str]) -> str:
    parts = ["<h2>Machine</h2>"]
    if machine_ids:
        parts.append(_html_table(MACHINE_HEADER, [machine_row(i, machines)
                                                  for i in machine_ids]))
    parts += [f"<p class=note>{_h(n)}</p>" for n in machine_notes(machine_ids, servers)]
    return "".join(parts)


def round_machine_ids(rnd: ArenaRound) -> list[str]:
    return [rnd.machine_id] if rnd.machine_id else []


def run_machine_ids(run: PromptSetRunSpec, records: Sequence[PromptSetRecord]) -> list[str]:
    """The machines a prompt-set run's records came from (a resume may be elsewhere), in
    order; the run's own when its records name none."""
    ids = [r.machine_id for r in records if r.machine_id]
    return list(dict.fromkeys(ids)) or ([run.machine_id] if run.machine_id else [])


# -- one round ------------------------------------------------------------------------------------


class HiddenRound(ValueError):
    """A report asked of a blind round nobody has voted on or revealed: it would name the
    models (and their speeds) before the vote."""


def _refuse_hidden(rnd: ArenaRound) -> None:
    if rnd.hidden:
        raise HiddenRound("This blind round has no vote or reveal yet: its report would name "
                          "the models. Vote or reveal first.")


def _model_rows(rnd: ArenaRound) -> list[list[Any]]:
    rows = []
    for s in rnd.slots:
        info = s.model_info
        rows.append([
            f"Model {s.label}", s.model, s.server, info.get("quantization") or "",
            info.get("params") or "", format_size(info.get("size_bytes")), info.get("format") or "",
            info.get("max_context") or "", _kv(s.instance_config), _kv(s.options),
            format_seconds(s.load_s) if s.load_s is not None else "",
        ])
    return rows


MEASURES = (("ttft", "TTFT"), ("first_answer", "First answer"), ("tps", "Decode tok/s"),
            ("e2e", "End-to-end"), ("load", "Load time"))


def measure_notes() -> list[tuple[str, str]]:
    """(name, explanation) for the "How ATOM measures" list. The page's help texts open with
    their own label ("First answer: from sending..."), which is said once here, not twice:
    ("First answer", "from sending..."), ("TTFT (time to first token)", "from sending...")."""
    out = []
    for key, name in MEASURES:
        text = HELP[key]
        label, colon, rest = text.partition(": ")
        if colon and len(label.split()) <= 4:  # a label ("Time to first token"), not a sentence
            if label.casefold() != name.casefold():
                name = f"{name} ({label[0].lower()}{label[1:]})"
            text = rest
        out.append((name, text))
    return out


MODEL_HEADER = ["Slot", "Model", "Server", "Quantization", "Params", "Size", "Format",
                "Max context", "Load config", "Sampling", "Load time"]


def _stats(rnd: ArenaRound, mark: str = "**") -> list[list[str]]:
    out = []
    for row in stat_rows(rnd):
        cells = [f"{mark}{c}{mark}" if i in row.best else c for i, c in enumerate(row.cells)]
        out.append([row.name, *cells])
    return out


def round_markdown(rnd: ArenaRound, machines: Machines | None = None) -> str:
    """The round as Markdown; `machines` (the machines table) names the machine it ran on.
    Every round_* report raises HiddenRound for a blind round not yet voted on or revealed."""
    _refuse_hidden(rnd)
    lines = [f"# ATOM Arena round, {_when(rnd.ts)}", ""]
    if rnd.blind:
        shown = ", ".join(f"Response {p + 1} = Model {rnd.slots[i].label}"
                          for p, i in enumerate(rnd.positions))
        lines += [f"Blind round: replies were shown in a shuffled order ({shown}).", ""]
    lines += [f"**Vote:** {rnd.vote_sentence or 'none yet'}"
              + (" (cast blind)" if rnd.vote and rnd.vote.blind else ""), ""]
    if rnd.system_prompt:
        lines += ["## System prompt", "", *_quote(rnd.system_prompt), ""]
    lines += ["## Prompt", "", *_quote(rnd.prompt), ""]
    lines += ["## Results", "", "Best value in bold (among replies that completed).", ""]
    lines += _md_table(["", *(f"Model {s.label}" for s in rnd.slots)], _stats(rnd))
    lines += ["", "## Models", ""]
    lines += _md_table(MODEL_HEADER, _model_rows(rnd))
    lines += ["", *_machine_markdown(round_machine_ids(rnd), machines or {},
                                     (s.server for s in rnd.slots))]
    for s in rnd.slots:
        lines += ["", f"## Model {s.label}: {plain_label(s.model)}", ""]
        if s.contestant != s.model:
            lines += [f"Contestant: {plain_label(s.contestant)}", ""]
        if s.state != "complete":
            lines += [f"*{_state_note(s)}*", ""]
        if s.reasoning:
            lines += ["Reasoning:", "", *_quote(s.reasoning), "", "Reply:", ""]
        lines += _quote(s.content)
    if rnd.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in rnd.notes)]
    lines += ["", "## How ATOM measures", "",
              *(f"- **{name}**: {text}" for name, text in measure_notes()), ""]
    return "\n".join(lines)


def _state_note(s: SlotResult) -> str:
    if s.state == "error":
        return f"Failed: {s.error}"
    return {"stopped": "Stopped before the end.",
            "interrupted": "Interrupted: the reply broke off.",
            "running": "Still running when saved."}.get(s.state, s.state)


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,sans-serif;color:#1f2330;max-width:1200px;
margin:2rem auto;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:14px}
th,td{border:1px solid #d8dbe4;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f4f5f9}td.best{background:#dcfce7;font-weight:600}
.replies{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:1rem}
.reply{border:1px solid #d8dbe4;border-radius:8px;padding:.75rem}
.reply pre,.prompt{white-space:pre-wrap;font:inherit;margin:0}
.prompt{background:#f4f5f9;border-radius:8px;padding:.75rem}
.note{color:#92400e}.muted{color:#6b7280;font-size:13px}
"""


def _h(v: Any) -> str:
    return html.escape(str(v if v is not None else ""))


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]],
                best: Sequence[frozenset[int]] | None = None) -> str:
    head = "".join(f"<th>{_h(h)}</th>" for h in header)
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, value in enumerate(row):
            is_best = best is not None and c >= 1 and (c - 1) in best[r]
            cells.append(f"<td class=best>{_h(value)}</td>" if is_best else f"<td>{_h(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>")


def round_html(rnd: ArenaRound, machines: Machines | None = None) -> str:
    _refuse_hidden(rnd)
    rows = stat_rows(rnd)
    parts = [f"<h1>ATOM Arena round, {_h(_when(rnd.ts))}</h1>",
             f"<p><b>Vote:</b> {_h(rnd.vote_sentence or 'none yet')}"
             + (" (cast blind)" if rnd.vote and rnd.vote.blind else "") + "</p>"]
    if rnd.system_prompt:
        parts.append(f"<h2>System prompt</h2><div class=prompt>{_h(rnd.system_prompt)}</div>")
    parts.append(f"<h2>Prompt</h2><div class=prompt>{_h(rnd.prompt)}</div>")
    parts.append("<h2>Results</h2><p class=muted>Best value highlighted (among replies that "
                 "completed).</p>")
    parts.append(_html_table(["", *(f"Model {s.label}" for s in rnd.slots)],
                             [[r.name, *r.cells] for r in rows], [r.best for r in rows]))
    parts.append("<h2>Replies</h2><div class=replies>")
    for s in rnd.slots:
        note = f"<p class=note>{_h(_state_note(s))}</p>" if s.state != "complete" else ""
        reasoning = (f"<details><summary>Reasoning</summary><pre>{_h(s.reasoning)}</pre>"
                     "</details>") if s.reasoning else ""
        parts.append(f"<div class=reply><h3>Model {_h(s.label)}: {_h(s.model)}</h3>"
                     f"<p class=muted>{_h(s.contestant)}</p>{note}{reasoning}"
                     f"<pre>{_h(s.content or '(no text)')}</pre></div>")
    parts.append("</div><h2>Models</h2>")
    parts.append(_html_table(MODEL_HEADER, _model_rows(rnd)))
    parts.append(_machine_html(round_machine_ids(rnd), machines or {},
                               (s.server for s in rnd.slots)))
    if rnd.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_h(n)}</li>" for n in rnd.notes)
                     + "</ul>")
    parts.append("<h2>How ATOM measures</h2><ul>" + "".join(
        f"<li><b>{_h(name)}</b>: {_h(text)}</li>" for name, text in measure_notes())
        + "</ul>")
    return _page(f"ATOM Arena round {_when(rnd.ts)}", "".join(parts))


ROUND_COLUMNS = ["round_id", "ts", "prompt", "system_prompt", "blind", "vote", "slot", "model",
                 "contestant", "server", "route", "reasoning_setting", "state", "error", "ttft_s",
                 "first_answer_s", "thinking_s", "decode_tps",
                 "output_tokens", "tokens_source", "e2e_s", "finish_reason", "load_s",
                 "quantization", "params", "size_bytes", "load_config", "options",
                 "machine_id", "machine", "reasoning", "content"]


# A slot's figures in a round's rows, in column order (GenerationMetrics' attributes).
_ROUND_MEASURED = ("ttft_s", "first_answer_s", "thinking_s", "decode_tps", "output_tokens",
                   "tokens_source", "e2e_s", "finish_reason")


def round_rows(rnd: ArenaRound, machines: Machines | None = None) -> list[dict[str, Any]]:
    _refuse_hidden(rnd)
    machine = _machine_label(rnd.machine_id, machines or {})
    rows = []
    for s in rnd.slots:
        m = s.metrics
        rows.append({
            "round_id": rnd.id, "ts": rnd.ts, "prompt": rnd.prompt,
            "system_prompt": rnd.system_prompt, "blind": rnd.blind, "vote": rnd.vote_sentence,
            "slot": s.label, "model": s.model, "contestant": s.contestant, "server": s.server,
            "route": s.route, "reasoning_setting": s.reasoning_setting,
            "state": s.state, "error": s.error,
            **{k: getattr(m, k) if m else None for k in _ROUND_MEASURED}, "load_s": s.load_s,
            "quantization": s.model_info.get("quantization"),
            "params": s.model_info.get("params"), "size_bytes": s.model_info.get("size_bytes"),
            "load_config": json.dumps(s.instance_config), "options": json.dumps(s.options),
            "machine_id": rnd.machine_id, "machine": machine, "reasoning": s.reasoning,
            "content": s.content,
        })
    return rows


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    w.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def round_csv(rnd: ArenaRound, machines: Machines | None = None) -> str:
    """One row per slot."""
    return _csv(round_rows(rnd, machines), ROUND_COLUMNS)


def round_json(rnd: ArenaRound, machines: Machines | None = None) -> str:
    """The whole round record, as stored, plus the machine it ran on (`machine`: the card's
    facts and label; None when not recorded)."""
    _refuse_hidden(rnd)
    found = machine_json(round_machine_ids(rnd), machines or {},
                         (s.server for s in rnd.slots))
    doc = {**rnd.to_record(), "machine": found[0] if found else None}
    return json.dumps(doc, indent=2, ensure_ascii=False)


# -- a prompt-set run -----------------------------------------------------------------------------


def _run_tables(run: PromptSetRunSpec, records: Sequence[PromptSetRecord]
                ) -> tuple[list[str], list[list[Any]], list[dict[str, Any]]]:
    summary = summary_rows(run, records)
    reasoned = any(s["thinking_p50_s"] is not None for s in summary)
    header = ["Slot", "Contestant", "Requests", "OK", "Failed", TTFT_P50.label,
              *([FIRST_ANSWER_P50.label, THINKING_P50.label] if reasoned else []),
              DECODE_P50.label, E2E_P50.label, "Checks passed"]
    rows = [[s["slot"], s["contestant"], s["requests"], s["ok"], s["failed"],
             format_seconds(s["ttft_p50_s"]),
             *([format_seconds(s["first_answer_p50_s"]), format_seconds(s["thinking_p50_s"])]
               if reasoned else []),
             f"{s['tps_p50']:.1f}" if s["tps_p50"] is not None else NO_VALUE,
             format_seconds(s["e2e_p50_s"]),
             f"{s['checks_passed']}/{s['checks_total']}" if s["checks_total"] else "–"]
            for s in summary]
    return header, rows, check_rows(run, records)


SLOT_HEADER = ["Slot", "Model", "Server", "Sent as", "Route", "Reasoning", "Sampling",
               "Quantization", "Params", "Size", "Format", "Max context", "Load config",
               "Load time"]


def _slot_rows(run: PromptSetRunSpec) -> list[list[Any]]:
    rows = []
    for s in run.slots:
        info = s.model_info
        rows.append([
            f"Model {s.label}", s.model, s.server, s.target, s.route,
            s.reasoning or "model default", _kv(s.options), info.get("quantization") or "",
            info.get("params") or "", format_size(info.get("size_bytes")), info.get("format") or "",
            info.get("max_context") or "", _loaded_config(s.instance_config, s.load_config),
            format_seconds(s.load_s) if s.load_s is not None else ""])
    return rows


def _loaded_config(loaded: Mapping[str, Any], asked: Mapping[str, Any]) -> str:
    """What an instance was loaded with, as the server said; else what the slot asked for;
    else that the server did not say (a run saved before runs kept it, or a server that does
    not report its instances)."""
    if loaded:
        return _kv(loaded)
    return f"asked {_kv(asked)}" if asked else "not reported"


def _settings_line(run: PromptSetRunSpec) -> str:
    st = run.settings
    return (f"{plural(st.repeats, 'repeat')}, {st.concurrency} in flight, seed {st.seed}, "
            f"temperature {st.temperature if st.temperature is not None else 'default'}, "
            f"max tokens {st.max_tokens or 'no limit'}, "
            f"warm-up {'on' if st.warmup else 'off'}, "
            f"order {'shuffled' if st.shuffle else 'as listed'}")


def run_markdown(run: PromptSetRunSpec, records: Sequence[PromptSetRecord],
                 machines: Machines | None = None) -> str:
    pset = run.prompt_set
    header, rows, checks = _run_tables(run, records)
    lines = [f"# ATOM prompt-set run: {pset.name}", "",
             f"{_when(run.created)} · {plural(len(pset.items), 'prompt')} · "
             f"{_settings_line(run)}", "", "## Summary", ""]
    lines += _md_table(header, rows)
    if checks:
        lines += ["", "## Checks (passed/total over repeats)", ""]
        lines += _md_table(list(checks[0]), [list(c.values()) for c in checks])
    lines += ["", "## Slots", ""]
    lines += _md_table(SLOT_HEADER, _slot_rows(run))
    lines += ["", *_machine_markdown(run_machine_ids(run, records), machines or {},
                                     (s.server for s in run.slots))]
    for p, item in enumerate(pset.items):
        lines += ["", f"## Prompt {p + 1}" + (f": {item.name}" if item.name else ""), "",
                  *_quote(item.prompt)]
        for r in records:
            if r.prompt_index != p:
                continue
            head = f"**Model {r.label}** ({plain_label(r.model)}), repeat {r.repeat + 1}"
            if r.ok:
                head += f" · {_times(r.metrics)}"
            else:
                head += f" · failed: {r.error or 'cancelled'}"
            lines += ["", head, "", *_quote(r.content)]
    return "\n".join(lines) + "\n"


def _times(m: GenerationMetrics | None) -> str:
    """'TTFT 420 ms · 2.10 s total' (a stored run's metrics)."""
    return (f"TTFT {format_seconds(m.ttft_s if m else None)} · "
            f"{format_seconds(m.e2e_s if m else None)} total")


def run_html(run: PromptSetRunSpec, records: Sequence[PromptSetRecord],
             machines: Machines | None = None) -> str:
    pset = run.prompt_set
    header, rows, checks = _run_tables(run, records)
    parts = [f"<h1>ATOM prompt-set run: {_h(pset.name)}</h1>",
             f"<p class=muted>{_h(_when(run.created))} · {plural(len(pset.items), 'prompt')} · "
             f"{_h(_settings_line(run))}</p>", "<h2>Summary</h2>", _html_table(header, rows)]
    if checks:
        parts += ["<h2>Checks (passed/total over repeats)</h2>",
                  _html_table(list(checks[0]), [list(c.values()) for c in checks])]
    parts += ["<h2>Slots</h2>", _html_table(SLOT_HEADER, _slot_rows(run))]
    parts.append(_machine_html(run_machine_ids(run, records), machines or {},
                               (s.server for s in run.slots)))
    for p, item in enumerate(pset.items):
        parts.append(f"<h2>Prompt {p + 1}{': ' + _h(item.name) if item.name else ''}</h2>"
                     f"<div class=prompt>{_h(item.prompt)}</div><div class=replies>")
        for r in records:
            if r.prompt_index != p:
                continue
            status = _times(r.metrics) if r.ok else f"failed: {r.error or 'cancelled'}"
            marks = " ".join(("✔ " if c["passed"] else "✘ ") + c["check"] for c in r.checks)
            parts.append(f"<div class=reply><h3>Model {_h(r.label)} · repeat "
                         f"{r.repeat + 1}</h3><p class=muted>{_h(r.model)} · "
                         f"{_h(status)}</p><p class=muted>{_h(marks)}</p>"
                         f"<pre>{_h(r.content or '(no text)')}</pre></div>")
        parts.append("</div>")
    return _page(f"ATOM prompt-set run {pset.name}", "".join(parts))


RUN_COLUMNS = ["run_id", "prompt_index", "prompt", "slot", "label", "model", "contestant",
               "route", "reasoning_setting", "repeat", "ok", "error", "ttft_s",
               "first_answer_s", "thinking_s", "decode_tps", "output_tokens", "e2e_s",
               "finish_reason", "checks_passed", "checks_total", "checks", "machine_id",
               "machine", "reasoning", "content"]


_MEASURED = ("ttft_s", "first_answer_s", "thinking_s", "decode_tps", "output_tokens", "e2e_s",
             "finish_reason")  # a record's metrics, as columns (RUN_COLUMNS)


def run_rows(run: PromptSetRunSpec, records: Sequence[PromptSetRecord],
             machines: Machines | None = None) -> list[dict[str, Any]]:
    items = run.prompt_set.items
    out = []
    for r in records:
        m = r.metrics
        mid = r.machine_id if r.machine_id is not None else run.machine_id
        slot = run.slots[r.slot] if 0 <= r.slot < len(run.slots) else None
        checks = r.checks
        out.append({
            "run_id": r.run_id, "prompt_index": r.prompt_index,
            "prompt": items[r.prompt_index].prompt, "slot": r.slot,
            "label": r.label, "model": r.model, "contestant": r.contestant,
            "route": slot.route if slot else None,
            "reasoning_setting": slot.reasoning if slot else None, "repeat": r.repeat,
            "ok": r.ok, "error": r.error,
            **{k: getattr(m, k) if m else None for k in _MEASURED},
            "checks_passed": sum(1 for c in checks if c["passed"]), "checks_total": len(checks),
            "checks": "; ".join(("pass " if c["passed"] else "FAIL ") + c["check"]
                                for c in checks),
            "machine_id": mid, "machine": _machine_label(mid, machines or {}),
            "reasoning": r.reasoning, "content": r.content,
        })
    return out


def run_csv(run: PromptSetRunSpec, records: Sequence[PromptSetRecord],
            machines: Machines | None = None) -> str:
    return _csv(run_rows(run, records, machines), RUN_COLUMNS)


def run_json(run: PromptSetRunSpec, records: Sequence[PromptSetRecord],
             machines: Machines | None = None) -> str:
    """The run, its records and the machines they came from (the card's facts and label)."""
    found = machine_json(run_machine_ids(run, records), machines or {},
                         (s.server for s in run.slots))
    return json.dumps({"run": run.to_record(), "records": [r.to_record() for r in records],
                       "machines": found},
                      indent=2, ensure_ascii=False)
