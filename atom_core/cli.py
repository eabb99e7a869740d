"""Command line: `python -m atom_core models|chat ...`, the same core as the app, no browser."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import images
from .arena import judge, judge_totals
from .arena.promptsets import PromptItem, PromptSetError, check_results, load_prompt_file
from .chat import BLANK_PROMPT, blank_prompt, measured, reply_run, reply_text
from .config import settings_from_env
from .errors import AtomError
from .measure import hardware
from .measure.loadrun import LoadJob, LoadRecord, LoadSummary, run_load, summarize
from .measure.sweep import LevelResult, SweepTarget, new_sweep_id, verdict
from .metrics import (
    NO_VALUE,
    TTFT_P50,
    GenerationMetrics,
    format_seconds,
    format_size,
    metrics_dict,
)
from .server.client import LMStudioClient
from .server.routes import REASONING_LEVELS, ROUTES, STATEFUL_ROUTES
from .server.streaming import ReplyBuffer
from .settings.store import initial_server_url, open_settings, server_token, stream_limits
from .types import ChatMessage, ModelInfo, SamplingOptions
from .url import ServerURL
from .words import plural

if TYPE_CHECKING:
    from .history import HistoryStore


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = _parser()
    args = parser.parse_args(argv)
    settings = settings_from_env()
    saved = open_settings(settings.data_dir)
    # The app's rule: --server, else ATOM_SERVER_URL, else the default server saved in Settings,
    # else localhost:1234; with that server's own token.
    try:  # where a URL enters: checked as the Settings form checks it
        server = (ServerURL.checked(args.server) if args.server
                  else initial_server_url(settings, saved.load()))
        judge_url = ServerURL.checked(args.judge_server) if getattr(
            args, "judge_server", None) else None
    except ValueError as e:
        print(f"error: {e}", file=err)
        return 2
    token = server_token(saved, settings, server)
    limits = stream_limits(settings, saved.load())  # the environment, else Settings
    if getattr(args, "stall_timeout", None):
        limits = dataclasses.replace(limits, stall_timeout_s=args.stall_timeout)
    if getattr(args, "request_deadline", None):
        limits = dataclasses.replace(limits, request_deadline_s=args.request_deadline)
    try:
        with contextlib.ExitStack() as clients:
            client = clients.enter_context(LMStudioClient(server, token=token, limits=limits))
            if args.command == "models":
                return _models(client, args, out)
            if args.command == "chat":
                return _chat(client, args, out, err)
            if args.command == "bench":
                judge_client = client
                if judge_url is not None:
                    # the judge's own server, with the token saved for THAT server only
                    if judge_url != server:
                        judge_token = server_token(saved, settings, judge_url)
                        judge_client = clients.enter_context(
                            LMStudioClient(judge_url, token=judge_token, limits=limits))
                with hardware.in_flight():  # sample the machine for the whole bench
                    return _bench(client, args, out, err, judge_client=judge_client)
    except AtomError as e:
        print(f"error: {e.sentence}", file=err)
        return 1
    parser.print_help(err)
    return 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m atom_core",
        description="ATOM from the command line. Reads ATOM_SERVER_URL, ATOM_API_TOKEN "
        "(or LM_API_TOKEN) and ATOM_DATA_DIR, like the app.",
    )
    p.add_argument("--server", help="server URL (default: $ATOM_SERVER_URL, else the default "
                   "server saved in the app's Settings, else localhost:1234)")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("models", help="list the server's models")
    m.add_argument("--json", action="store_true", help="one JSON document instead of a table")

    c = sub.add_parser("chat", help="stream one reply to stdout, then its metrics to stderr")
    c.add_argument("prompt")
    c.add_argument("--model", required=True, help="model key (see `models`)")
    c.add_argument("--system", help="system prompt")
    c.add_argument("--temperature", type=float)
    c.add_argument("--top-p", type=float)
    c.add_argument("--top-k", type=int)
    c.add_argument("--max-tokens", type=int)
    c.add_argument("--seed", type=int)
    c.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    c.add_argument("--ttl", type=int, help="idle TTL in seconds for a model this request loads")
    c.add_argument("--route", choices=ROUTES, default="completions",
                   help="chat route: completions (/v1/chat/completions, default), native "
                   "(LM Studio's /api/v1/chat), responses (/v1/responses), messages "
                   "(Anthropic /v1/messages)")
    c.add_argument("--previous", metavar="RESP_ID",
                   help="continue from this response id (native and responses routes)")
    c.add_argument("--reasoning", choices=REASONING_LEVELS,
                   help="reasoning effort, where the route and model take it")
    c.add_argument("--json", action="store_true", help="print the reply and metrics as JSON")
    c.add_argument("--no-record", action="store_true", help="do not add this run to the history")
    c.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="a PNG, JPEG or WebP to send with the prompt (repeatable; vision models "
                   "only; resized to 1,024 px on its longest side)")

    b = sub.add_parser(
        "bench",
        help="many requests, K in flight: one record per request, then a summary per model",
    )
    b.add_argument("--models", required=True, help="comma-separated model keys (1 to 4)")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the prompt to send")
    src.add_argument("--prompts", help="a prompt set: plain lines, CSV (a `prompt` column) or "
                     "JSON, optionally with checks: contains, regex, json, max_latency_s")
    b.add_argument("--repeat", type=int, default=1, help="send each prompt N times per model")
    b.add_argument("--concurrency", default="1",
                   help="requests in flight per model: K, or levels like 1,2,4,8 for a sweep "
                   "(up to 1024)")
    b.add_argument("--shared", action="store_true",
                   help="share the K in flight between all models (default: each model gets "
                   "its own K)")
    b.add_argument("--stall-timeout", type=float,
                   help="end a reply as stalled after this many seconds without a token "
                   "(default: $ATOM_STALL_TIMEOUT_S or 60)")
    b.add_argument("--request-deadline", type=float,
                   help="end any request after this many seconds (default: "
                   "$ATOM_REQUEST_DEADLINE_S or 1800)")
    b.add_argument("--requests", type=int,
                   help="requests per model at each level (default: prompts x repeat)")
    b.add_argument("--max-tokens", type=int, default=128)
    b.add_argument("--temperature", type=float)
    b.add_argument("--seed", type=int)
    b.add_argument("--system", help="system prompt")
    b.add_argument("--warmup", action="store_true",
                   help="one untimed request per model first (loads it, warms caches)")
    b.add_argument("--target-tps", type=float, default=10.0,
                   help="sweep verdict: tok/s each request must still get (default 10)")
    b.add_argument("--target-ttft", type=float, default=2.0,
                   help="sweep verdict: TTFT p90 limit in seconds (default 2)")
    b.add_argument("--route", choices=ROUTES, default="completions",
                   help="chat route each request takes (default: completions)")
    b.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    b.add_argument("--no-record", action="store_true", help="do not add the runs to the history")
    b.add_argument("--judge", metavar="JUDGE_KEY",
                   help="a model that scores each prompt's answers blind, in both orders "
                   "(adds a `judge` object to each record and prints the judge's summary)")
    b.add_argument("--judge-server", metavar="URL",
                   help="the server the judge model runs on (default: --server); its token "
                   "is the one saved in Settings for that URL")
    return p


def _models(client: LMStudioClient, args: argparse.Namespace, out: TextIO) -> int:
    listing = client.list_models()
    if args.json:
        doc = {
            "server": client.base_url,
            "dialect": listing.dialect.value,
            "route": listing.route,
            "loaded_only": listing.loaded_only,
            "models": [m.to_dict() for m in listing.models],
        }
        print(json.dumps(doc, indent=2), file=out)
        return 0
    print(f"{listing.dialect.label} at {client.base_url} ({listing.route})", file=out)
    if listing.loaded_only:
        print("note: this server's list may show only loaded models", file=out)
    rows: list[tuple[str, ...]] = [("", "KEY", "TYPE", "PARAMS", "QUANT", "SIZE", "CONTEXT")]
    rows += [_model_row(m) for m in listing.models]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)
    return 0


def _model_row(m: ModelInfo) -> tuple[str, ...]:
    mark = "●" if m.is_loaded else ("?" if not m.load_state_known else " ")
    size = format_size(m.size_bytes)
    return (mark, m.key, m.type, m.params or "", m.quantization or "", size,
            str(m.max_context or ""))


def _chat(client: LMStudioClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    options = SamplingOptions(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_tokens=args.max_tokens,
        seed=args.seed,
        stop=tuple(args.stop),
    )
    if args.previous and args.route not in STATEFUL_ROUTES:
        print(f"error: --previous needs a stateful route ({', '.join(sorted(STATEFUL_ROUTES))})",
              file=err)
        return 2
    pictures = _images_for_chat(client, args, err)
    if pictures is None:
        return 2
    if blank_prompt(args.prompt, pictures):
        print(f"error: {BLANK_PROMPT}", file=err)
        return 2
    reply = ReplyBuffer()
    error: AtomError | None = None
    stream = client.stream_route(
        args.route, args.model, [ChatMessage("user", args.prompt, images=pictures)],
        options=options, system_prompt=args.system, ttl=args.ttl,
        previous_response_id=args.previous, reasoning=args.reasoning,
    )
    in_reasoning = False
    shown = {"reasoning": "", "content": ""}  # what was printed: from the first non-space
    try:
        with stream:
            for event in stream:
                reply.add(event)
                if args.json or event.kind not in shown:
                    continue
                text = event.text if shown[event.kind] else reply_text(event.text)
                if not text:
                    continue
                shown[event.kind] += text
                if event.kind == "reasoning":
                    if not in_reasoning:
                        err.write("[reasoning] ")
                        in_reasoning = True
                    err.write(text)
                    err.flush()
                else:
                    if in_reasoning:
                        err.write("\n")
                        in_reasoning = False
                    out.write(text)
                    out.flush()
    except AtomError as e:
        error = e
    finally:
        reply.timed_by(stream)
    figures = reply.metrics() if measured(reply, error) else None
    if not args.no_record and reply.t_request_ns:
        from .history import open_store  # only when recording: keeps `models` free of I/O

        store = open_store()
        hardware.start_session(store)
        store.add_run(reply_run(
            reply=reply, error=error, source="cli", server=client.base_url, model=args.model,
            route=args.route, response_id=reply.response_id,
            previous_response_id=args.previous))
    if args.json:
        doc = {"model": args.model, "route": args.route, "content": reply_text(reply.content),
               "reasoning": reply_text(reply.reasoning), "response_id": reply.response_id,
               "error": error.sentence if error else None, "metrics": metrics_dict(figures)}
        print(json.dumps(doc, indent=2), file=out)
    else:
        if shown["content"]:
            out.write("\n")
        if figures is not None:
            print(_metrics_block(figures), file=err)
        if reply.response_id:
            print(f"response id: {reply.response_id}", file=err)
        if error:
            print(f"error: {error.sentence}", file=err)
    return 1 if error else 0


def _metrics_block(m: GenerationMetrics) -> str:
    answer = (f" · first answer {format_seconds(m.first_answer_s)} "
              f"(thinking {format_seconds(m.thinking_s)})" if m.thinking_s is not None else "")
    tps = f"{m.decode_tps:.1f}" if m.decode_tps is not None else NO_VALUE
    return (
        f"--\nTTFT {format_seconds(m.ttft_s)}{answer} · decode {tps} tok/s · "
        f"{m.output_tokens} tokens ({m.tokens_source}) · ITL p50 {format_seconds(m.itl_p50_s)} "
        f"p95 {format_seconds(m.itl_p95_s)} · end-to-end {format_seconds(m.e2e_s)} · "
        f"finish {m.finish_reason or '-'}"
    )


def _bench(client: LMStudioClient, args: argparse.Namespace, out: TextIO, err: TextIO,
           *, judge_client: LMStudioClient | None = None) -> int:
    if args.judge_server and not args.judge:
        print("error: --judge-server needs --judge (the judge model's key)", file=err)
        return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not 1 <= len(models) <= 4:
        print("error: give one to four models, e.g. --models a,b", file=err)
        return 2
    try:
        levels = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    except ValueError:
        print("error: --concurrency takes a number or a list like 1,2,4,8", file=err)
        return 2
    if not levels or min(levels) < 1:
        print("error: --concurrency must be 1 or more", file=err)
        return 2
    try:
        if args.prompt is not None and blank_prompt(args.prompt):
            print(f"error: {BLANK_PROMPT}", file=err)
            return 2
        items = [PromptItem(prompt=args.prompt)] if args.prompt else list(
            load_prompt_file(args.prompts).items)
    except PromptSetError as e:
        print(f"error: {e.sentence}", file=err)
        return 2
    prompts = [item.prompt for item in items]
    options = SamplingOptions(max_tokens=args.max_tokens, temperature=args.temperature,
                              seed=args.seed)
    per_model = args.requests or len(prompts) * max(1, args.repeat)
    if args.warmup:
        for model in models:
            print(f"warming up {model}...", file=err)
            client.chat(model, [ChatMessage("user", "Hello")],
                        options=SamplingOptions(max_tokens=8))
    store = None
    if not args.no_record:
        from .history import open_store

        store = open_store()
        hardware.start_session(store)  # the machine, once; every run below names it
    failures = 0
    sweep_tag = {"sweep_id": new_sweep_id()} if len(levels) > 1 else {}
    by_level: dict[str, list[LevelResult]] = {m: [] for m in models}
    verdicts: list[judge.JudgeVerdict] = []
    for level in levels:
        jobs = [
            LoadJob(model=model, prompt=prompts[i % len(prompts)],
                    system_prompt=items[i % len(prompts)].system or args.system,
                    options=options, route=args.route,
                    tags={"concurrency": level, "prompt_index": i % len(prompts),
                          "repeat": i // len(prompts), "route": args.route, **sweep_tag})
            for i in range(per_model) for model in models
        ]
        started = time.perf_counter()
        records = []
        pending: list[tuple[LoadRecord, dict[str, object]]] = []
        checked: list[tuple[str, list[dict[str, object]]]] = []
        if not args.json:
            each = "shared by all models" if args.shared or len(models) == 1 else "per model"
            print(f"== concurrency {level} ({each}): {plural(len(jobs), 'request')}", file=out)
        for record in run_load(jobs, client=client, concurrency=level, shared=args.shared):
            records.append(record)
            failures += not record.ok
            run = record.as_run("sweep" if len(levels) > 1 else "cli")
            run_row = run.to_record()
            if store is not None:
                store.add_run(run)
            if args.judge:  # printed once the judge has read every answer to its prompt
                pending.append((record, hardware.json_fields(run_row)))
                continue
            checks = check_results(items[int(record.job.tags["prompt_index"])], record.content,
                                   record.metrics.e2e_s, record.ok)
            checked.append((record.job.model, checks))
            _print_record(record, args.json, out, checks, hardware.json_fields(run_row))
        for record, hw, obj in _judge_level(judge_client or client, args.judge, pending, items,
                                            store, verdicts):
            score = obj["score"] if obj else None
            checks = check_results(items[int(record.job.tags["prompt_index"])], record.content,
                                   record.metrics.e2e_s, record.ok, judge_score=score)
            checked.append((record.job.model, checks))
            _print_record(record, args.json, out, checks, {**hw, "judge": obj})
        wall = time.perf_counter() - started
        for summary in summarize(records, wall_s=wall, order=models):
            _print_summary(summary, level, wall, args.json, out)
            by_level[summary.model].append(LevelResult.from_summary(level, summary, wall))
        if any(c for _, c in checked):
            _print_checks(checked, models, level, args.json, out)
    if len(levels) > 1:
        target = SweepTarget(min_tps_per_user=args.target_tps, max_ttft_p90_s=args.target_ttft)
        for model, results in by_level.items():
            v = verdict(results, target, model=model if len(models) > 1 else None,
                        shared_by=len(models) if args.shared else 1)
            print(json.dumps({"type": "verdict", "model": model, "shared": args.shared,
                              **v.to_dict()}) if args.json
                  else f"== {model}: {v.sentence}", file=out)
    if args.judge:
        _print_judge_summary(verdicts, args.json, out, (judge_client or client).base_url)
    return 1 if failures else 0


def _print_checks(checked: list[tuple[str, list[dict[str, object]]]], models: list[str],
                  level: int, as_json: bool, out: TextIO) -> None:
    """Pass/fail of the prompt set's checks, per model."""
    for model in models:
        results = [c for m, cs in checked if m == model for c in cs]
        by_check: dict[str, list[bool]] = {}
        for c in results:
            by_check.setdefault(str(c["check"]), []).append(bool(c["passed"]))
        passed = sum(1 for c in results if c["passed"])
        if as_json:
            print(json.dumps({"type": "checks", "concurrency": level, "model": model,
                              "passed": passed, "failed": len(results) - passed,
                              "by_check": [{"check": k, "passed": sum(v), "total": len(v)}
                                           for k, v in by_check.items()]}), file=out)
            continue
        detail = ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in by_check.items())
        print(f"-- checks {model}: {passed}/{len(results)} passed ({detail})", file=out)


def _print_record(record: LoadRecord, as_json: bool, out: TextIO,
                  checks: list[dict[str, object]] | None = None,
                  hw: dict[str, object] | None = None) -> None:
    row = {**record.row(), **(hw or {})}
    if checks:
        row["checks"] = checks
    if as_json:
        print(json.dumps({"type": "record", **row}), file=out)
        return
    if not record.ok:
        print(f"{row['model']:<28} FAILED  {row['error'] or 'cancelled'}", file=out)
        return
    marks = "".join(f"  {'pass' if c['passed'] else 'FAIL'} {c['check']}" for c in checks or [])
    sec = {k: format_seconds(row[k]) for k in ("ttft_s", "first_answer_s", "e2e_s", "itl_p50_s",
                                               "itl_p95_s")}
    answer = f"  answer {sec['first_answer_s']}" if row.get("thinking_s") is not None else ""
    print(
        f"{row['model']:<28} ttft {sec['ttft_s']}{answer}  e2e {sec['e2e_s']}  "
        f"{row['output_tokens']:>5} tok  {row['tokens_per_s'] or 0:>7.1f} tok/s  "
        f"itl p50 {sec['itl_p50_s']} p95 {sec['itl_p95_s']}{marks}",
        file=out,
    )


def _print_summary(s: LoadSummary, level: int, wall: float, as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps({"type": "summary", "concurrency": level, "wall_s": round(wall, 3),
                          **s.row()}), file=out)
        return
    tps = f"{s.tokens_per_s_p50:.1f}" if s.tokens_per_s_p50 is not None else NO_VALUE
    agg = f"{s.aggregate_tokens_per_s:.1f}" if s.aggregate_tokens_per_s is not None else NO_VALUE
    answer = (f" · first answer p50 {format_seconds(s.first_answer_p50_s)}"
              if s.thinking_p50_s is not None else "")
    active = f"{s.active_s:.1f}" if s.active_s is not None else f"{wall:.1f}"
    empty = (f" ({s.empty} {'reply' if s.empty == 1 else 'replies'} without a single token)"
             if s.empty else "")
    print(
        f"-- {s.model}: {s.ok}/{s.requests} ok{empty} · {TTFT_P50.label} "
        f"{format_seconds(s.ttft_p50_s)} p90 {format_seconds(s.ttft_p90_s)}{answer} · "
        f"{tps} tok/s per request · {agg} tok/s aggregate over its {active} s "
        f"(concurrency {level})",
        file=out,
    )
    if s.pool_waited:
        print(f"   note: {plural(s.pool_waited, 'request')} waited on ATOM's side before "
              f"being sent (for a connection, or a busy client; up to "
              f"{format_seconds(s.pool_wait_max_s)}); that wait is not in TTFT", file=out)


def _judge_level(client: LMStudioClient, judge_model: str | None,
                 pending: list[tuple[LoadRecord, dict[str, object]]], items: list[PromptItem],
                 store: HistoryStore | None, verdicts: list[judge.JudgeVerdict],
                 ) -> list[tuple[LoadRecord, dict[str, object], dict[str, Any] | None]]:
    """--judge: every prompt's answers (one per model, per repeat) judged blind in both orders;
    each record with its `judge` object (None when it had nothing to judge)."""
    groups: dict[tuple[object, object], list[LoadRecord]] = {}
    for record, _ in pending:
        groups.setdefault((record.job.tags["prompt_index"], record.job.tags["repeat"]),
                          []).append(record)
    objects: dict[int, dict[str, Any]] = {}
    for (index, repeat), group in groups.items():
        answers = {r.job.model: r.content for r in group if r.ok and r.content.strip()}
        if judge_model is None or len(answers) < 2:
            continue
        item = items[int(str(index))]
        verdict, per = judge.judge_named(
            client=client, judge_model=judge_model, prompt=item.prompt, answers=answers,
            store=store, reference=item.reference,
            rubric=judge.REFERENCE_RUBRIC if item.reference else judge.DEFAULT_RUBRIC,
            tags={"prompt_index": index, "repeat": repeat})
        verdicts.append(verdict)
        for r in group:
            if r.job.model in per:
                objects[id(r)] = per[r.job.model]
    return [(record, hw, objects.get(id(record))) for record, hw in pending]


def _print_judge_summary(verdicts: list[judge.JudgeVerdict], as_json: bool, out: TextIO,
                         judge_server: str) -> None:
    summaries = judge_totals.judge_summaries(verdicts)
    scores = judge_totals.model_scores(verdicts)
    if as_json:
        for s in summaries:
            print(json.dumps({"type": "judge", "judge_model": s.judge_model,
                              "judge_server": judge_server,
                              "verdicts": s.verdicts, "pairs": s.pairs,
                              "disagreements": s.disagreements,
                              "disagreement_rate": s.disagreement_rate,
                              "unreadable": s.unreadable, "models": scores}), file=out)
        if not summaries:
            print(json.dumps({"type": "judge", "judge_server": judge_server, "verdicts": 0,
                              "models": []}), file=out)
        return
    if not summaries:
        print("== judge: nothing to judge (a prompt needs two complete answers)", file=out)
    for s in summaries:
        print(f"== {judge_totals.summary_line(s)} (judged on {judge_server})", file=out)
    for m in scores:
        score = f"{m['score_mean']:.1f}" if m["score_mean"] is not None else "-"
        print(f"-- {m['model']}: judge score {score} · agreed wins {m['wins']}, "
              f"ties {m['ties']}, losses {m['losses']}", file=out)


def _images_for_chat(client: LMStudioClient, args: argparse.Namespace,
                     err: TextIO) -> tuple[str, ...] | None:
    """chat --image: the images as data URLs, or None (after one sentence on stderr) when a
    file can't be used or the model can't read images. Nothing is sent in that case."""
    if not args.image:
        return ()
    urls = []
    for path in args.image:
        try:
            raw = Path(path).read_bytes()
            urls.append(images.prepare_image(raw, name=Path(path).name).data_url)
        except OSError as e:
            print(f"error: can't read {path}: {e.strerror or e}", file=err)
            return None
        except images.ImageError as e:
            print(f"error: {e.sentence}", file=err)
            return None
    refusal = images.vision_refusal(args.model, client.list_models().get(args.model))
    if refusal is not None:
        print(f"error: {refusal}", file=err)
        return None
    return tuple(urls)
