"""How quick is a page switch in ATOM, next to an empty Streamlit app of the same shape?

    python bench/bench_pages.py [--rounds 6] [--runs 20000] [--conversations 200] [--races 3]
                                [--busy] [--quiet-and-busy]

In one run it starts, as real processes:
- an empty app of ATOM's shape: app.py with st.navigation over five trivial pages, its own page
  links (`.st-key-atom_nav`), a sidebar with a text input and a selectbox, ATOM's .streamlit
  config;
- ATOM against the LM Studio test double (three loaded models), on a realistic history
  (RUNS runs over 20 models, CONVERSATIONS chats with token timelines);
and drives headless Chromium through page switches, clicking the sidebar links, the two apps
interleaved (one switch in one, the same switch in the other), ROUNDS rounds of five pages.

A switch is timed in the page, from the click to the page's content settled: the script not
running AND the page's own content present (for Stats, its plotly charts drawn). It prints per
page the first visit, median and p90 seconds, ATOM's ratio to the empty app, how many script
runs a switch started, and the websocket bytes it brought; for Stats, how long its charts came
after the script's end. Then it times Enter -> the Arena's vote bar against the slowest reply
(the double's own log). `--busy` keeps both cores busy (one spinning process per core) for the
whole run; `--quiet-and-busy` runs everything twice, quiet then busy.

Prints figures; asserts nothing (goal: every page <= 1.5x the empty app). Needs Debian's chromium
and Playwright; without them it says so and exits 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from tests.fixtures.browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_FLAGS,
    App,
    Double,
    start_app,
    start_double,
    stop,
)
from tests.fixtures.realistic_runs import build_history  # noqa: E402

PAGES = ["Chat", "Arena", "Stats", "Models", "Settings"]
STATS_CHARTS = 2  # the speed map and the open chart tab's chart (the TTFT box)
SHOTS = ROOT / "test-output" / "bench"
TAIL_S = 0.6  # after a page settles, how long a second script run is still counted

# -- the empty app --------------------------------------------------------------------------------

EMPTY_APP = '''
import streamlit as st

st.set_page_config(page_title="Empty", page_icon=":material/bolt:", layout="wide")
PAGES = [st.Page(f"pages/{name}.py", title=name.title(), url_path=name)
         for name in ("chat", "arena", "stats", "models", "settings")]
with st.sidebar:
    with st.container(key="atom_nav"):
        for page in PAGES:
            st.page_link(page)
    st.markdown("### Empty")
    st.text_input("Server", value="http://localhost:1234")
    st.selectbox("Model", ["alpha", "beta", "gamma"], key="model")
st.navigation(PAGES).run()
'''

EMPTY_PAGE = '''
import streamlit as st

with st.container(key="page_{name}"):
    st.subheader("{title}")
    st.write("An empty page.")
'''


def write_empty_app(folder: Path) -> Path:
    (folder / "pages").mkdir(parents=True)
    (folder / ".streamlit").mkdir()
    shutil.copyfile(ROOT / ".streamlit" / "config.toml", folder / ".streamlit" / "config.toml")
    (folder / "app.py").write_text(EMPTY_APP)
    for name in PAGES:
        (folder / "pages" / f"{name.lower()}.py").write_text(
            EMPTY_PAGE.format(name=name.lower(), title=name))
    return folder


# -- what "the page is there" means, per app and page: (CSS selector, text it contains) -----------

Check = tuple[str, str]
ATOM_CONTENT: dict[str, list[Check]] = {
    "Chat": [("[data-testid=stChatInputTextArea][placeholder='Message the model']", ""),
             ("[data-testid=stChatMessage]", "")],
    "Arena": [("[data-testid=stChatInputTextArea][placeholder^='Ask every model']", ""),
              ("[data-testid=stMarkdownContainer]", "Which answer is better?")],
    "Stats": [("[data-testid=stMetric]", "Runs")],
    "Models": [("input[placeholder^='Name, publisher']", ""), ("[data-testid=stDataFrame]", "")],
    "Settings": [("[data-testid=stTab]", "Chat defaults"),
                 ("[data-testid=stCaptionContainer]", "default server is where")],
}


def content_for(app: str, page: str) -> list[Check]:
    return ATOM_CONTENT[page] if app == "atom" else [(f".st-key-page_{page.lower()}", "")]


# Installed before the click: times, in the browser, the click -> content present and the script
# not running (idle) -> charts drawn (settled); counts script runs started until TAIL_S after.
WATCH = """(spec) => {
  const b = window.__bench = {t0: null, runs: 0, done: false};
  const app = document.querySelector('[data-testid=stApp]');
  const state = () => app.getAttribute('data-test-script-state');
  new MutationObserver(() => {
    if (b.t0 === null) return;
    if (state() === 'running') b.runs += 1;
    if (state() === 'notRunning' && b.settled === undefined) b.end = performance.now() - b.t0;
  })
    .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
  document.addEventListener('click', () => { b.t0 = performance.now(); },
                            {capture: true, once: true});
  const present = ([sel, text]) => Array.from(document.querySelectorAll(sel))
    .some(e => !text || e.innerText.includes(text));
  const tick = () => {
    if (b.t0 === null) return;
    const now = performance.now() - b.t0;
    const idle = state() === 'notRunning' && spec.content.every(present);
    if (idle && b.idle === undefined) b.idle = now;
    if (!idle && b.settled === undefined) b.idle = undefined;  // a second run: not yet
    const charts = document.querySelectorAll('.js-plotly-plot .main-svg').length;
    if (b.idle !== undefined && charts >= spec.charts && b.settled === undefined) {
      b.settled = now;
    }
    if (b.settled !== undefined && now - b.settled > spec.tail) {
      b.done = true; clearInterval(b.timer);
    }
  };
  b.timer = setInterval(tick, 5);
}"""


@dataclass
class Switch:
    app: str
    page: str
    first: bool
    seconds: float  # click -> settled
    charts_after_s: float  # the script's end -> settled: charts still drawing after it
    runs: int
    ws_bytes: int


@dataclass
class Tab:
    """One app open in its own browser context."""

    name: str
    app: App
    pg: Any
    received: list[int] = field(default_factory=lambda: [0])
    visited: set[str] = field(default_factory=set)

    def listen(self) -> None:
        def on_ws(ws: Any) -> None:
            ws.on("framereceived", lambda payload: self.count(payload))

        self.pg.on("websocket", on_ws)

    def count(self, payload: str | bytes) -> None:
        self.received[0] += len(payload)

    def switch(self, page: str, timeout_s: float = 90) -> Switch:
        charts = STATS_CHARTS if self.name == "atom" and page == "Stats" else 0
        self.pg.bring_to_front()
        self.pg.evaluate(WATCH, {"content": content_for(self.name, page), "charts": charts,
                                 "tail": TAIL_S * 1000})
        self.received[0] = 0
        self.pg.locator(".st-key-atom_nav a").filter(has_text=page).first.click()
        b = wait_done(self.pg, f"{self.name} {page}", timeout_s)
        first = page not in self.visited
        self.visited.add(page)
        return Switch(self.name, page, first, b["settled"] / 1000,
                      max(0.0, b["settled"] - (b.get("end") or 0)) / 1000, b["runs"],
                      self.received[0])


def wait_done(pg: Any, what: str, timeout_s: float) -> dict[str, Any]:
    """The watcher's figures once it is done; on a timeout, what it saw and a screenshot."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        pg.wait_for_function("() => window.__bench.done", timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        SHOTS.mkdir(parents=True, exist_ok=True)
        shot = SHOTS / f"timeout-{what.replace(' ', '-')}.png"
        pg.screenshot(path=str(shot), full_page=True)
        raise RuntimeError(f"{what} never settled: {pg.evaluate('() => window.__bench')}; "
                           f"see {shot}") from None
    return dict(pg.evaluate("() => window.__bench"))


# -- the run --------------------------------------------------------------------------------------

def three_models() -> dict[str, Any]:
    """Three loaded models with replies of about 1-1.5 s, different enough to tell apart."""
    def model(key: str, ttft: int, gap: int) -> dict[str, Any]:
        return {"key": key, "display_name": key.split("/")[1], "params_string": "4B",
                "size_bytes": 2_500_000_000, "loaded": True, "ttft_ms": ttft,
                "token_gap_ms": gap, "reply_tokens": 40}

    return {"models": [model("qwen/qwen3-4b", 300, 30), model("google/gemma-3-1b", 150, 20),
                       model("meta/llama-3.2-3b", 220, 25)]}


@contextmanager
def busy_cores(on: bool) -> Iterator[None]:
    """One spinning process per core while the block runs (the machine ATOM's users have:
    a model answering on the same laptop)."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(os.cpu_count() or 2)] if on else []
    try:
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def race(tab: Tab, double: Double, prompt: str) -> tuple[float, float, float]:
    """(Enter -> vote bar drawn and idle, the slowest reply as the double saw it, the last
    reply's end -> vote bar), seconds."""
    pg = tab.pg
    pg.bring_to_front()
    double.reset()
    box = pg.locator("[data-testid=stChatInputTextArea]")
    box.fill(prompt)
    pg.evaluate(WATCH, {"content": [("[data-testid=stMarkdownContainer]",
                                     "Which answer is better?"),
                                    ("[data-testid=stChatMessage]", prompt)],
                        "charts": 0, "tail": 0})
    pg.evaluate("() => document.addEventListener('keydown', () => "
                "{ window.__bench.t0 = performance.now(); }, {capture: true, once: true})")
    entered = time.time()
    box.press("Enter")
    b = wait_done(pg, "arena race", 120)
    shown_at = entered + b["settled"] / 1000
    log = double.chat_requests()
    slowest = max(r["ended_at"] - r["received_at"] for r in log)
    return b["settled"] / 1000, slowest, shown_at - max(r["ended_at"] for r in log)


def run(args: argparse.Namespace, busy: bool) -> tuple[list[Switch], list[tuple[float, ...]]]:
    from playwright.sync_api import sync_playwright

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="atom-bench-pages-")))
        data = tmp / "data"
        print(f"Seeding {args.runs:,} runs and {args.conversations} conversations...",
              flush=True)
        build_history(data, runs=args.runs, conversations=args.conversations,
                      end=time.time() - 3600)
        double = start_double(three_models(), tmp)
        stack.callback(stop, double.process)
        empty = start_app("http://127.0.0.1:9", tmp / "empty-data", tmp,
                          app_dir=write_empty_app(tmp / "empty"))
        stack.callback(stop, empty.process)
        (tmp / "atom-log").mkdir()
        atom = start_app(double.url, data, tmp / "atom-log")
        stack.callback(stop, atom.process)
        stack.enter_context(busy_cores(busy))
        p = stack.enter_context(sync_playwright())
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        stack.callback(browser.close)
        tabs = []
        for name, app in (("empty", empty), ("atom", atom)):
            pg = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
            tab = Tab(name, app, pg)
            tab.listen()
            pg.goto(app.url)
            pg.wait_for_selector(".st-key-atom_nav a", timeout=60_000)
            pg.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]",
                                 timeout=60_000)
            tab.visited.add("Chat")
            tabs.append(tab)
        switches = [tab.switch("Arena") for tab in tabs[:1]]
        # ATOM's first Arena visit shows no round yet: it is timed on its content without one.
        ATOM_CONTENT["Arena"], arena_round = ATOM_CONTENT["Arena"][:1], ATOM_CONTENT["Arena"]
        switches.append(tabs[1].switch("Arena"))
        ATOM_CONTENT["Arena"] = arena_round
        races = [race(tabs[1], double, f"Race {i}: why is the sky blue?")
                 for i in range(args.races)]
        order = PAGES[2:] + PAGES[:2]  # from Arena on: Stats, Models, Settings, Chat, Arena
        for n in range(args.rounds):
            for page in order:
                for tab in tabs if n % 2 == 0 else tabs[::-1]:
                    switches.append(tab.switch(page))
            print(f"  round {n + 1}/{args.rounds} done", flush=True)
        return switches, races


# -- the table ------------------------------------------------------------------------------------

def p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[-1] if len(xs) > 1 else xs[0]


def report(switches: list[Switch], races: list[tuple[float, ...]], label: str) -> None:
    print(f"\n### Page switches, {label}: click -> content settled (s)\n")
    print("| page | empty median | empty p90 | ATOM first | ATOM median | ATOM p90 | ratio "
          "(median) | ATOM runs/switch | ATOM KB/switch | charts after script (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for page in PAGES:
        e = [s.seconds for s in switches if s.app == "empty" and s.page == page and not s.first]
        a = [s for s in switches if s.app == "atom" and s.page == page]
        warm = [s for s in a if not s.first]
        first = next((s.seconds for s in a if s.first), None)
        if not e or not warm:
            continue
        am = statistics.median(s.seconds for s in warm)
        lag = (f"{statistics.median(s.charts_after_s for s in warm):.2f} "
               f"(first {next(s.charts_after_s for s in a if s.first):.2f})"
               if page == "Stats" and any(s.first for s in a) else "")
        print(f"| {page} | {statistics.median(e):.2f} | {p90(e):.2f} | "
              f"{'' if first is None else f'{first:.2f}'} | {am:.2f} | "
              f"{p90([s.seconds for s in warm]):.2f} | {am / statistics.median(e):.1f}x | "
              f"{statistics.median(s.runs for s in warm):.0f} | "
              f"{statistics.median(s.ws_bytes for s in warm) / 1024:.0f} | {lag} |")
    if races:
        print(f"\n### Arena, {label}: Enter -> vote bar (s)\n")
        print("| race | Enter -> vote bar | slowest reply | vote bar after the last reply ended |")
        print("|---|---|---|---|")
        for i, (shown, slowest, after) in enumerate(races):
            print(f"| {i + 1} | {shown:.2f} | {slowest:.2f} | {after:.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="page-switch rounds (five pages each)")
    ap.add_argument("--runs", type=int, default=20_000, help="runs in the seeded history")
    ap.add_argument("--conversations", type=int, default=200)
    ap.add_argument("--races", type=int, default=3, help="arena races timed Enter -> vote bar")
    ap.add_argument("--busy", action="store_true", help="keep every core busy while measuring")
    ap.add_argument("--quiet-and-busy", action="store_true", help="run quiet, then busy")
    args = ap.parse_args()
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("NOTE: Playwright is not installed: page-switch benchmark NOT run.")
        return 0
    if not Path(CHROMIUM).exists():
        print(f"NOTE: no chromium at {CHROMIUM}: page-switch benchmark NOT run.")
        return 0
    modes = [False, True] if args.quiet_and_busy else [args.busy]
    for busy in modes:
        load = os.getloadavg()[0]
        label = "both cores busy" if busy else f"no extra load (load average {load:.1f} at start)"
        print(f"== {label}", flush=True)
        switches, races = run(args, busy)
        report(switches, races, label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
