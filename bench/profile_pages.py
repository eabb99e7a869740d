"""Where a page switch's time goes, per page: the server's script, the websocket, the browser.

    python bench/profile_pages.py [--rounds 5] [--runs 20000] [--conversations 200] [--busy]

Starts ATOM as bench/bench_pages.py does (the LM Studio double with three loaded models, a
realistic history) with a profiling hook in its process (a sitecustomize on PYTHONPATH, this
file's HOOK): every script run is timed and run under cProfile, and every ForwardMsg it sends is
sized by what it carries (plotly figure, dataframe, markdown, ...). Headless Chromium clicks
through the five pages; per switch it reads, over the Chrome DevTools protocol, how long the
browser's main thread spent on tasks, script, style and layout (Performance.getMetrics), and
in the page the click -> last websocket message -> content settled times.

Prints per page (medians over the rounds after the first visit): click -> settled, the script's
wall time on the server, the browser's task time, websocket bytes by kind, and the functions of
ATOM and the libraries where the script spent its time. Asserts nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from typing import Any  # noqa: E402

from bench.bench_pages import (  # noqa: E402
    PAGES,
    STATS_CHARTS,
    WATCH,
    busy_cores,
    content_for,
    three_models,
    wait_done,
    write_empty_app,
)
from tests.fixtures.browser import CHROMIUM, CHROMIUM_FLAGS, start_app, start_double, stop  # noqa: E402
from tests.fixtures.realistic_runs import build_history  # noqa: E402

# Loaded into the app's process as sitecustomize: one JSON line per script run.
HOOK = r'''
import cProfile, json, os, pstats, threading, time
from streamlit.runtime.scriptrunner import script_runner as _sr

_OUT = os.environ["ATOM_PROFILE_OUT"]
_ROOT = os.environ["ATOM_PROFILE_ROOT"]
_local = threading.local()
_orig_run, _orig_enqueue = _sr.ScriptRunner._run_script, _sr.ScriptRunner._enqueue_forward_msg

def _kind(msg):
    t = msg.WhichOneof("type")
    if t != "delta":
        return t
    d = msg.delta
    which = d.WhichOneof("type")
    if which == "new_element":
        return d.new_element.WhichOneof("type")
    return which

def _enqueue(self, msg):
    sizes = getattr(_local, "sizes", None)
    if sizes is not None:
        k = _kind(msg)
        n, b = sizes.get(k, (0, 0))
        sizes[k] = (n + 1, b + msg.ByteSize())
    return _orig_enqueue(self, msg)

def _area(filename, name):
    if filename == "~": return "builtin " + name[:40]
    if "/streamlit/" in filename: return "streamlit"
    for lib in ("pandas", "pyarrow", "plotly", "numpy", "httpx", "httpcore", "tinydb", "json",
                "narwhals", "pydantic", "altair"):
        if f"/{lib}/" in filename or f"/{lib}." in filename: return lib
    if filename.startswith(_ROOT):
        rel = filename[len(_ROOT) + 1:]
        parts = rel.split("/")
        return "/".join(parts[:2]) if parts[0] == "atom_core" and len(parts) > 2 else rel
    return "other " + (filename.rsplit("/", 2)[-2] if filename.count("/") > 1 else filename)

def _run(self, rerun_data):
    _local.sizes = {}
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    try:
        return _orig_run(self, rerun_data)
    finally:
        prof.disable()
        wall = time.perf_counter() - t0
        sizes, _local.sizes = _local.sizes, None
        st = pstats.Stats(prof)
        areas, funcs, page = {}, [], ""
        for (fn, line, name), (cc, nc, tt, ct, callers) in st.stats.items():
            a = _area(fn, name)
            areas[a] = areas.get(a, 0.0) + tt
            if fn.startswith(_ROOT) and "/.venv" not in fn:
                rel = fn[len(_ROOT) + 1:]
                funcs.append((f"{rel}:{name}", ct, nc))
                if rel.startswith("pages/") and not rel.startswith("pages/parts/") \
                        and name == "<module>":
                    page = rel
        funcs.sort(key=lambda f: -f[1])
        with open(_OUT, "a") as out:
            out.write(json.dumps({"page": page, "wall": wall, "t_end": time.time(),
                                  "fragment": bool(rerun_data.fragment_id_queue),
                                  "areas": areas, "funcs": funcs[:60], "sizes": sizes}) + "\n")

_sr.ScriptRunner._run_script = _run
_sr.ScriptRunner._enqueue_forward_msg = _enqueue
'''

# In the page, before Streamlit's own code: every websocket message's arrival time and size.
WS_LOG = """(() => {
  const Orig = window.WebSocket;
  window.__ws = [];
  window.WebSocket = function (...args) {
    const ws = new Orig(...args);
    ws.addEventListener('message', (e) => {
      const n = e.data.byteLength ?? e.data.size ?? e.data.length ?? 0;
      window.__ws.push([performance.now(), n]);
    });
    return ws;
  };
  window.WebSocket.prototype = Orig.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();"""

METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")


def metrics(cdp: Any) -> dict[str, float]:
    got = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return {k: float(got.get(k, 0.0)) for k in METRICS}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    rows: list[dict[str, Any]] = []
    cpu: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="atom-prof-pages-")))
        print(f"Seeding {args.runs:,} runs and {args.conversations} conversations...",
              flush=True)
        build_history(tmp / "data", runs=args.runs, conversations=args.conversations,
                      end=time.time() - 3600)
        hook = tmp / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(HOOK)
        out = tmp / "runs.jsonl"
        double = start_double(three_models(), tmp)
        stack.callback(stop, double.process)
        (tmp / "log").mkdir()
        app_dir = write_empty_app(tmp / "empty") if args.empty else ROOT
        atom = start_app(double.url, tmp / "data", tmp / "log", app_dir=app_dir, extra_env={
            "PYTHONPATH": str(hook), "ATOM_PROFILE_OUT": str(out),
            "ATOM_PROFILE_ROOT": str(app_dir)})
        stack.callback(stop, atom.process)
        stack.enter_context(busy_cores(args.busy))
        p = stack.enter_context(sync_playwright())
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        stack.callback(browser.close)
        ctx = browser.new_context(viewport={"width": 1360, "height": 900})
        ctx.add_init_script(WS_LOG)
        pg = ctx.new_page()
        cdp = ctx.new_cdp_session(pg)
        cdp.send("Performance.enable")
        pg.goto(atom.url)
        pg.wait_for_selector(".st-key-atom_nav a", timeout=60_000)
        pg.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]",
                             timeout=60_000)
        visited = {"Chat"}
        order = PAGES[1:] + PAGES[:1]
        for n in range(args.rounds):
            for page in order:
                content = content_for("empty" if args.empty else "atom", page)
                if page == "Arena" and not args.empty:  # no round raced in this run
                    content = content[:1]
                charts = STATS_CHARTS if page == "Stats" and not args.empty else 0
                time.sleep(1.0)  # the last switch's stragglers (fragments) end first
                pg.evaluate(WATCH, {"content": content, "charts": charts, "tail": 300})
                pg.evaluate("() => { window.__ws = []; }")
                profiling = page in args.cpu_profile and page in visited
                if profiling:
                    cdp.send("Profiler.enable")
                    cdp.send("Profiler.setSamplingInterval", {"interval": 500})
                    cdp.send("Profiler.start")
                before = metrics(cdp)
                mark = out.stat().st_size if out.exists() else 0
                pg.locator(".st-key-atom_nav a").filter(has_text=page).first.click()
                b = wait_done(pg, page, 90)
                after = metrics(cdp)
                if profiling:
                    cpu[page].append(cdp.send("Profiler.stop")["profile"])
                ws = pg.evaluate("() => window.__ws")
                t0 = b["t0"] if "t0" in b else None
                with out.open() as f:
                    f.seek(mark)
                    runs = [json.loads(line) for line in f if line.strip()]
                full = [r for r in runs if not r["fragment"]]
                rows.append({
                    "page": page, "first": page not in visited, "settled": b["settled"] / 1000,
                    "script_end": (b.get("end") or 0) / 1000,
                    "ws_msgs": len(ws), "ws_bytes": sum(n for _, n in ws),
                    "last_msg": (max(t for t, _ in ws) - t0) / 1000 if ws and t0 else None,
                    "first_msg": (min(t for t, _ in ws) - t0) / 1000 if ws and t0 else None,
                    "browser": {k: after[k] - before[k] for k in METRICS},
                    "runs": full, "fragments": len(runs) - len(full),
                })
                visited.add(page)
                if args.shots and n == args.rounds - 1:
                    Path(args.shots).mkdir(parents=True, exist_ok=True)
                    pg.screenshot(path=str(Path(args.shots) / f"{page.lower()}.png"))
            print(f"  round {n + 1}/{args.rounds} done", flush=True)
    for page, profiles in cpu.items():
        cpu_report(page, profiles)
        if args.json:
            Path(args.json).with_suffix(f".{page}.cpuprofile.json").write_text(json.dumps(profiles))
    return rows


def cpu_report(page: str, profiles: list[dict[str, Any]]) -> None:
    """The browser's main-thread time by JS function (self time), per switch."""
    self_ms: dict[str, float] = defaultdict(float)
    for prof in profiles:
        nodes = {n["id"]: n for n in prof["nodes"]}
        deltas = prof["timeDeltas"]
        for sample, dt in zip(prof["samples"], deltas[1:] + [0], strict=True):
            f = nodes[sample]["callFrame"]
            where = f["url"].rsplit("/", 1)[-1][:30]
            self_ms[f"{f['functionName'] or '(anon)'} {where}"] += dt / 1000 / len(profiles)
    print(f"\n#### {page}: browser main thread by JS function, self ms per switch")
    for name, ms in sorted(self_ms.items(), key=lambda p: -p[1])[:25]:
        print(f"    {ms:7.1f}  {name}")


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def report(rows: list[dict[str, Any]], label: str) -> None:
    print(f"\n### Where a switch's time goes, {label} (medians of warm switches, ms)\n")
    print("| page | click -> settled | click -> first ws msg | click -> last ws msg | "
          "script wall (server) | browser tasks | of which script | style | layout | "
          "ws msgs | ws KB | script runs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for page in PAGES:
        warm = [r for r in rows if r["page"] == page and not r["first"]]
        if not warm:
            continue
        walls = [sum(x["wall"] for x in r["runs"]) for r in warm]
        print(f"| {page} | {med([r['settled'] for r in warm]) * 1000:.0f} | "
              f"{med([r['first_msg'] or 0 for r in warm]) * 1000:.0f} | "
              f"{med([r['last_msg'] or 0 for r in warm]) * 1000:.0f} | "
              f"{med(walls) * 1000:.0f} | "
              f"{med([r['browser']['TaskDuration'] for r in warm]) * 1000:.0f} | "
              f"{med([r['browser']['ScriptDuration'] for r in warm]) * 1000:.0f} | "
              f"{med([r['browser']['RecalcStyleDuration'] for r in warm]) * 1000:.0f} | "
              f"{med([r['browser']['LayoutDuration'] for r in warm]) * 1000:.0f} | "
              f"{med([r['ws_msgs'] for r in warm]):.0f} | "
              f"{med([r['ws_bytes'] for r in warm]) / 1024:.1f} | "
              f"{med([len(r['runs']) for r in warm]):.0f} |")
    for page in PAGES:
        warm = [r for r in rows if r["page"] == page and not r["first"]]
        runs = [x for r in warm for x in r["runs"]]
        if not runs:
            continue
        n = len(warm)
        areas: dict[str, float] = defaultdict(float)
        funcs: dict[str, float] = defaultdict(float)
        sizes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for x in runs:
            for a, t in x["areas"].items():
                areas[a] += t / n
            for name, ct, _ in x["funcs"]:
                funcs[name] += ct / n
            for k, (c, bts) in x["sizes"].items():
                sizes[k][0] += c
                sizes[k][1] += bts
        print(f"\n#### {page}: own time by area (ms per switch, cProfile: slower than real)")
        print(", ".join(f"{a} {t * 1000:.0f}" for a, t in
                        sorted(areas.items(), key=lambda p: -p[1])[:12]))
        print(f"{page}: ForwardMsgs per switch by kind (count, KB): " + ", ".join(
            f"{k} {c / n:.0f}/{b / n / 1024:.1f}" for k, (c, b) in
            sorted(sizes.items(), key=lambda p: -p[1][1])[:10]))
        print(f"{page}: ATOM functions, cumulative ms per switch:")
        for name, t in sorted(funcs.items(), key=lambda p: -p[1])[:18]:
            print(f"    {t * 1000:7.1f}  {name}")
    firsts = [r for r in rows if r["first"]]
    if firsts:
        print("\nFirst visits (ms): " + ", ".join(
            f"{r['page']} {r['settled'] * 1000:.0f} (script "
            f"{sum(x['wall'] for x in r['runs']) * 1000:.0f}, browser tasks "
            f"{r['browser']['TaskDuration'] * 1000:.0f})" for r in firsts))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20_000)
    ap.add_argument("--conversations", type=int, default=200)
    ap.add_argument("--busy", action="store_true")
    ap.add_argument("--empty", action="store_true", help="profile the empty app instead")
    ap.add_argument("--cpu-profile", nargs="*", default=[], metavar="PAGE",
                    help="also take a JS CPU profile of these pages' warm switches")
    ap.add_argument("--json", help="also write every switch's figures to this file")
    ap.add_argument("--shots", help="a screenshot of each page's last switch in this folder")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"NOTE: no chromium at {CHROMIUM}: NOT run.")
        return 0
    load = os.getloadavg()[0]
    rows = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows))
    what = ("the empty app, " if args.empty else "") + (
        "both cores busy" if args.busy else "no extra load")
    report(rows, f"{what}, load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
