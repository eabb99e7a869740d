"""Command line: `python -m atom_core models|chat ...`, the same core as the app, no browser."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from .client import LMStudioClient
from .config import settings_from_env
from .errors import AtomError
from .metrics import format_seconds
from .runs import run_record
from .streaming import ReplyBuffer
from .types import ChatMessage, ModelInfo, SamplingOptions


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = _parser()
    args = parser.parse_args(argv)
    settings = settings_from_env()
    server = args.server or settings.server_url
    try:
        with LMStudioClient(server, token=settings.api_token) as client:
            if args.command == "models":
                return _models(client, args, out)
            if args.command == "chat":
                return _chat(client, args, out, err)
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
    p.add_argument("--server", help="server URL (default: $ATOM_SERVER_URL or localhost:1234)")
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
    c.add_argument("--json", action="store_true", help="print the reply and metrics as JSON")
    c.add_argument("--no-record", action="store_true", help="do not add this run to the history")
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
    size = f"{m.size_bytes / 1e9:.1f} GB" if m.size_bytes else ""
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
    reply = ReplyBuffer()
    error: AtomError | None = None
    stream = client.stream_chat(
        args.model, [ChatMessage("user", args.prompt)], options=options,
        system_prompt=args.system, ttl=args.ttl,
    )
    in_reasoning = False
    try:
        with stream:
            for event in stream:
                reply.add(event)
                if args.json:
                    continue
                if event.kind == "reasoning":
                    if not in_reasoning:
                        err.write("[reasoning] ")
                        in_reasoning = True
                    err.write(event.text)
                    err.flush()
                elif event.kind == "content":
                    if in_reasoning:
                        err.write("\n")
                        in_reasoning = False
                    out.write(event.text)
                    out.flush()
    except AtomError as e:
        error = e
    finally:
        reply.t_request_ns, reply.t_end_ns = stream.t_request_ns, stream.t_end_ns
    metrics = reply.metrics()
    if not args.no_record and reply.t_request_ns:
        from .store import open_store  # only when recording: keeps `models` free of disk I/O

        open_store().add_run(run_record(source="cli", server=client.base_url, model=args.model,
                                        reply=reply, error=error))
    if args.json:
        doc = {"model": args.model, "content": reply.content, "reasoning": reply.reasoning,
               "error": error.sentence if error else None, "metrics": metrics.to_dict()}
        print(json.dumps(doc, indent=2), file=out)
    else:
        out.write("\n")
        print(_metrics_block(metrics.to_dict()), file=err)
        if error:
            print(f"error: {error.sentence}", file=err)
    return 1 if error else 0


def _metrics_block(m: dict[str, object]) -> str:
    def sec(v: object) -> str:
        return format_seconds(float(v)) if isinstance(v, int | float) else "-"

    tps = m.get("decode_tps")
    return (
        f"--\nTTFT {sec(m['ttft_s'])} · decode "
        f"{f'{tps:.1f}' if isinstance(tps, float) else '-'} tok/s · "
        f"{m['output_tokens']} tokens ({m['tokens_source']}) · ITL p50 {sec(m['itl_p50_s'])} "
        f"p95 {sec(m['itl_p95_s'])} · end-to-end {sec(m['e2e_s'])} · "
        f"finish {m['finish_reason'] or '-'}"
    )
