"""A class on one laptop (issue 20): sixty phones join and vote, the teacher's tally follows, and
the race is measured with the phones connected and without them.

The app runs as `ATOM_CLASS=1 make run` runs it (class mode, its Streamlit options) against the
bundled demo engine (two llama.cpp processes on this machine's CPU, as a teacher's laptop runs
its models), or the LM Studio double with --double or when the engine is not installed. The
teacher is a real Chromium (presenter mode, races from the chat box); the students are light
clients speaking Streamlit's own websocket protocol (tests/fixtures/st_client.py: real Streamlit
sessions, without a browser each), plus a few real Chromium contexts of a phone's size.

Printed:
- join and vote: every student's session joined (with the QR code's link) and voted, how long
  it took from the first connection, and whether every vote was counted exactly once (the
  stored round: one vote per student, changed votes replaced, the tally equal to what was cast);
- the delay from the last vote to the teacher's tally showing it (goal <= 1 s);
- the app's CPU and memory per connected student, idle between rounds;
- the race with the students connected / the same race with none (TTFT and decode tok/s as
  ATOM measured them, median over alternating trials; goal within 5 %).

    python bench/bench_class.py [--students 60] [--browsers 3] [--trials 4] [--double]
    python bench/bench_class.py --why [--students 20]

--why measures what one phone's look for the teacher's next step costs the app with Streamlit's
defaults and with the options class mode sets (atom_core/launch/class_mode.py), students
connected and idle, no race: the reason class mode sets them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from atom_core.arena import classroom  # noqa: E402
from atom_core.arena.rounds import ArenaRound  # noqa: E402
from atom_core.history import open_store  # noqa: E402
from atom_core.launch import demo  # noqa: E402
from atom_core.launch.class_mode import CLASS_OPTIONS  # noqa: E402
from tests.fixtures.browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_FLAGS,
    ask,
    start_app,
    start_double,
    stop,
    wait_idle,
)
from tests.fixtures.st_client import LightSession, Loop  # noqa: E402

KEY = "bench-teacher-key"
REPLY = ("Light bends as it passes through the air, and the short blue waves scatter the most, "
         "so the sky looks blue from everywhere under it. ") * 3


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def choice_for(i: int, n_slots: int) -> str:
    """What student i votes first: spread over the responses, Tie and All bad."""
    labels = [f"Response {p + 1}" for p in range(n_slots)] + ["Tie", "All bad"]
    return labels[i % len(labels)]


async def join_and_vote(url: str, code: str, n: int, offset: int, n_slots: int,
                        acks: dict[int, float]) -> list[LightSession]:
    sessions = [LightSession(url, page="vote", query=f"code={code}") for _ in range(n)]

    async def one(i: int, s: LightSession) -> None:
        await s.connect()
        await s.wait_for_text("Which answer is better?", timeout=120)
        await s.click(choice_for(offset + i, n_slots))
        await s.wait_for_text("Your vote:", timeout=120)
        acks[offset + i] = time.monotonic()

    await asyncio.gather(*(one(i, s) for i, s in enumerate(sessions)))
    return sessions


async def change_votes(sessions: list[LightSession], offset: int, n_slots: int,
                       changed: dict[int, str]) -> None:
    async def one(i: int, s: LightSession) -> None:
        label = choice_for(offset + i + 1, n_slots)
        await s.click(label)
        await s.wait_for_text(f"Your vote: {label}.", timeout=120)
        changed[offset + i] = label

    await asyncio.gather(*(one(i, s) for i, s in enumerate(sessions)))


async def reconnect(sessions: list[LightSession]) -> list[LightSession]:
    """New connections for the same students (their ids are in the address they keep)."""
    fresh = [LightSession(f"http://{s.ws_url.split('/')[2]}", page="vote", query=s.query_seen)
             for s in sessions]
    await asyncio.gather(*(s.connect() for s in fresh))
    await asyncio.gather(*(s.wait_for_text("Class vote", timeout=120) for s in fresh))
    return fresh


async def close_all(sessions: list[LightSession]) -> None:
    await asyncio.gather(*(s.close() for s in sessions))


def wait_round(store: Any, session: classroom.ClassSession, after: str | None,
               timeout: float = 600) -> ArenaRound:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # The stored state, unsettled (RoundWatch): this process races nothing, so an
        # ArenaRound would read any running round as one left behind by a process that died.
        w = store.last(classroom.RoundWatch)
        if w is not None and w.id != after and w.state == "done":
            rnd = classroom.class_round(store, session)
            assert rnd is not None
            return rnd
        time.sleep(0.2)
    raise TimeoutError("the race did not finish")


def race(teacher: Any, store: Any, session: classroom.ClassSession, prompt: str) -> ArenaRound:
    before = classroom.class_round(store, session)
    ask(teacher, prompt)
    rnd = wait_round(store, session, before.id if before else None)
    wait_idle(teacher, 120_000)
    return rnd


def figures(rnd: ArenaRound) -> tuple[float, float]:
    """(median TTFT s, median decode tok/s) over the round's slots."""
    ms = [s.metrics for s in rnd.slots if s.metrics is not None]
    ttft = [m.ttft_s for m in ms if m.ttft_s is not None]
    tps = [m.decode_tps for m in ms if m.decode_tps is not None]
    return statistics.median(ttft), statistics.median(tps)


def idle_cpu(pid: int, seconds: float) -> float:
    """The app's CPU over `seconds`, in % of one core."""
    c0, t0 = cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_s(pid) - c0) / (time.monotonic() - t0)


async def idle_students(url: str, code: str, n: int) -> list[LightSession]:
    sessions = [LightSession(url, page="vote", query=f"code={code}") for _ in range(n)]
    await asyncio.gather(*(s.connect() for s in sessions))
    await asyncio.gather(*(s.wait_for_text("You're in", timeout=300) for s in sessions))
    return sessions


def why(n: int, idle_s: float) -> None:
    """App CPU per phone look, Streamlit's defaults vs class mode's options."""
    from tests.fixtures.browser import free_port

    double = start_double()
    loop = Loop()
    print(f"{n} students connected and idle, {idle_s:.0f} s; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'Streamlit options':<44} {'looks/s':>8} {'CPU %core':>10} {'ms/look':>8}")
    try:
        for label, options in (("defaults (GC after each run, file watcher)", []),
                               ("class mode's", [f"--{k}={v}" for k, v in CLASS_OPTIONS.items()
                                                 if k != "server.address"])):
            tmp = Path(tempfile.mkdtemp(prefix="atom-bench-why-"))
            store = open_store(tmp / "data")
            session = classroom.start_class(store)
            app = start_app(double.url, tmp / "data", tmp, {"ATOM_CLASS": "1"}, options,
                            port=free_port())
            try:
                sessions = loop.run(idle_students(app.url, session.code, n), timeout=900)
                time.sleep(2)
                ticks0 = sum(x.fragment_runs for x in sessions)
                c0, t0 = cpu_s(app.process.pid), time.monotonic()
                time.sleep(idle_s)
                wall = time.monotonic() - t0
                used = cpu_s(app.process.pid) - c0
                looks = sum(x.fragment_runs for x in sessions) - ticks0
                print(f"{label:<44} {looks / wall:>8.1f} {100 * used / wall:>10.1f} "
                      f"{1000 * used / max(1, looks):>8.1f}")
                loop.run(close_all(sessions))
            finally:
                stop(app.process)
    finally:
        loop.close()
        stop(double.process)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--students", type=int, default=60)
    ap.add_argument("--browsers", type=int, default=3, help="of the students, real Chromium")
    ap.add_argument("--trials", type=int, default=4, help="races per condition")
    ap.add_argument("--double", action="store_true", help="the LM Studio double, not the engine")
    ap.add_argument("--idle-s", type=float, default=15.0)
    ap.add_argument("--why", action="store_true", help="Streamlit's defaults vs class mode's")
    args = ap.parse_args()
    if args.why:
        why(args.students, args.idle_s)
        return
    if not Path(CHROMIUM).exists():
        print(f"no chromium at {CHROMIUM}: the class benchmark needs it (make browser)")
        return
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="atom-bench-class-"))
    use_engine = not args.double and demo.engine_installed() and demo.model_ready()
    engine: Any = None
    double: Any = None
    if use_engine:
        engine = demo.DemoEngine.start(log_dir=tmp)
        env = engine.app_env({})
        server = env.pop("ATOM_SERVER_URL")
        what = f"the demo engine ({demo.LABEL}, two processes)"
    else:
        double = start_double()
        double.set_config({"models": [
            {"key": k, "loaded": True, "ttft_ms": 300, "token_gap_ms": 25, "reply": REPLY}
            for k in ("qwen/qwen3-4b", "google/gemma-3-1b")]})
        server, env = double.url, {}
        what = "the LM Studio double (timed replies: the race costs no CPU)"
    data = tmp / "data"
    store = open_store(data)
    session = classroom.start_class(store)
    env.update({"ATOM_CLASS": "1", "ATOM_TEACHER_KEY": KEY})
    options = [f"--{k}={v}" for k, v in CLASS_OPTIONS.items() if k != "server.address"]
    app = start_app(server, data, tmp, env, options)
    pid = app.process.pid
    loop = Loop()
    n_light = args.students - args.browsers
    print(f"ATOM class benchmark: {args.students} students ({n_light} light websocket clients, "
          f"{args.browsers} Chromium phones), the teacher in Chromium, models: {what}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start.")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            teacher = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
            teacher.goto(f"{app.url}/?teacher={KEY}")
            teacher.wait_for_selector("[data-testid=stSidebar]", timeout=120_000)
            wait_idle(teacher, 120_000)
            teacher.goto(f"{app.url}/arena")
            teacher.wait_for_selector("[data-testid=stChatInputTextArea]", timeout=120_000)
            wait_idle(teacher, 120_000)
            box = teacher.locator("[data-testid=stCheckbox]").filter(has_text="Presenter")
            box.locator("label").click()
            teacher.wait_for_selector("text=Students join at", timeout=60_000)
            wait_idle(teacher, 60_000)
            rnd = race(teacher, store, session, "Warm-up: say hello.")
            n_slots = len(rnd.slots)
            time.sleep(2)
            base_cpu = idle_cpu(pid, args.idle_s)
            base_rss = rss_mb(pid)

            # -- join and vote --------------------------------------------------------------
            acks: dict[int, float] = {}
            cpu0 = cpu_s(pid)
            t0 = time.monotonic()
            light = loop.start(join_and_vote(app.url, session.code, n_light, args.browsers,
                                             n_slots, acks))
            phones = []
            for _ in range(args.browsers):
                ctx = browser.new_context(viewport={"width": 390, "height": 844},
                                          is_mobile=True, has_touch=True)
                pg = ctx.new_page()
                pg.goto(f"{app.url}/vote?code={session.code}")
                phones.append(pg)
            for i, pg in enumerate(phones):
                pg.wait_for_selector("text=Which answer is better?", timeout=120_000)
                wait_idle(pg, 60_000)
                pg.get_by_role("button", name=choice_for(i, n_slots), exact=True).click()
                pg.wait_for_selector("text=Your vote:", timeout=120_000)
                acks[i] = time.monotonic()
            sessions = light.result(300)
            t_all = max(acks.values()) - t0
            t_light = max(acks[i] for i in range(args.browsers, args.students)) - t0
            t_browsers = max((acks[i] for i in range(args.browsers)), default=t0) - t0
            join_cpu = cpu_s(pid) - cpu0
            teacher.wait_for_selector(f"text={args.students} votes in", timeout=60_000)
            tally_delay = time.monotonic() - max(acks.values())
            changed: dict[int, str] = {}
            n_change = min(10, len(sessions))
            loop.run(change_votes(sessions[:n_change], args.browsers, n_slots, changed))
            stored = classroom.class_round(store, session)
            assert stored is not None
            expected = {i: choice_for(i, n_slots) for i in range(args.students)}
            expected.update(changed)
            want = classroom.Tally(
                responses=tuple(sum(1 for c in expected.values() if c == f"Response {p + 1}")
                                for p in range(n_slots)),
                tie=sum(1 for c in expected.values() if c == "Tie"),
                all_bad=sum(1 for c in expected.values() if c == "All bad"))
            voters = [v.voter for v in stored.votes]
            exact = (len(voters) == len(set(voters)) == args.students
                     and classroom.tally(stored) == want)
            for pg in phones:
                pg.context.close()
            print(f"joined and voted: {len(acks)} in {t_all:.2f} s (light clients "
                  f"{t_light:.2f} s, Chromium phones {t_browsers:.2f} s; app CPU "
                  f"{join_cpu:.2f} s); counted exactly once: {exact}; tally "
                  f"{tally_delay:.2f} s after the last vote", flush=True)

            # -- idle cost per student -------------------------------------------------------
            time.sleep(3)
            with_cpu = idle_cpu(pid, args.idle_s)
            with_rss = rss_mb(pid)
            per_cpu = (with_cpu - base_cpu) / len(sessions)
            per_rss = (with_rss - base_rss) / args.students
            print(f"idle CPU {base_cpu:.1f} % -> {with_cpu:.1f} % of a core; RSS {base_rss:.0f}"
                  f" -> {with_rss:.0f} MB", flush=True)

            # -- the race, with the students connected and with none ---------------------------
            runs: dict[str, list[tuple[float, float]]] = {"none": [], "with": []}
            # CPU per second of race: the app's, and this benchmark's own (the light clients,
            # which on a real class run on the phones, not on the laptop)
            cpu: dict[str, list[tuple[float, float]]] = {"none": [], "with": []}
            connected = True
            for trial in range(args.trials):
                for cond in ("with", "none") if trial % 2 == 0 else ("none", "with"):
                    if cond == "none" and connected:
                        loop.run(close_all(sessions))
                        connected = False
                    elif cond == "with" and not connected:
                        sessions = loop.run(reconnect(sessions))
                        connected = True
                    time.sleep(3)  # every phone has drawn what it shows
                    app0, own0, t0 = cpu_s(pid), time.process_time(), time.monotonic()
                    rnd = race(teacher, store, session, f"Trial {trial} ({cond}): why is the "
                               "sky blue? Answer in three sentences.")
                    wall = time.monotonic() - t0
                    cpu[cond].append(((cpu_s(pid) - app0) / wall,
                                      (time.process_time() - own0) / wall))
                    runs[cond].append(figures(rnd))
                    print(f"race {trial} {cond}: TTFT {runs[cond][-1][0]:.3f} s, "
                          f"{runs[cond][-1][1]:.1f} tok/s", flush=True)
                    time.sleep(3)
            if connected:
                loop.run(close_all(sessions))
            loop.close()
            browser.close()
    finally:
        stop(app.process)
        if engine is not None:
            engine.stop()
        if double is not None:
            stop(double.process)

    def med(cond: str, k: int) -> float:
        return statistics.median(r[k] for r in runs[cond])

    print(f"\n{'measure':<58} {'value':>12}")
    print(f"{'students who joined and voted (of ' + str(args.students) + ')':<58} "
          f"{len(acks):>12}")
    print(f"{'first connection -> last vote saved (s, goal <= 5)':<58} {t_all:>12.2f}")
    print(f"{'  of which the light clients / the Chromium phones (s)':<58} "
          f"{f'{t_light:.2f} / {t_browsers:.2f}':>12}")
    print(f"{'  app CPU over it (s; per student: one join, one vote)':<58} {join_cpu:>12.2f}")
    print(f"{'every vote counted exactly once (10 changed their vote)':<58} "
          f"{'yes' if exact else 'NO':>12}")
    print(f"{'last vote -> the teacher tally shows it (s, goal <= 1)':<58} {tally_delay:>12.2f}")
    print(f"{'app CPU idle, no student (% of one core)':<58} {base_cpu:>12.1f}")
    print(f"{'app CPU idle, per connected student (% of one core)':<58} {per_cpu:>12.2f}")
    print(f"{'app memory per student (MB, RSS ' + f'{base_rss:.0f} -> {with_rss:.0f})':<58} "
          f"{per_rss:>12.2f}")
    print(f"\n{'race (median of ' + str(args.trials) + ')':<34} {'TTFT s':>9} {'tok/s':>9}")
    for cond, label in (("none", "no student connected"),
                        ("with", f"{len(sessions)} students connected")):
        print(f"{label:<34} {med(cond, 0):>9.3f} {med(cond, 1):>9.1f}")
    print(f"{'with ÷ none':<34} {med('with', 0) / med('none', 0):>9.3f} "
          f"{med('with', 1) / med('none', 1):>9.3f}")
    spread = {c: (min(r[1] for r in runs[c]), max(r[1] for r in runs[c])) for c in runs}
    print(f"tok/s range over the trials: none {spread['none'][0]:.1f}-{spread['none'][1]:.1f}, "
          f"with {spread['with'][0]:.1f}-{spread['with'][1]:.1f}")

    def cpu_med(cond: str, k: int) -> float:
        return 100 * statistics.median(c[k] for c in cpu[cond])

    print(f"app CPU during a race (% of one core): none {cpu_med('none', 0):.1f}, with "
          f"{cpu_med('with', 0):.1f}; the students' extra: "
          f"{(cpu_med('with', 0) - cpu_med('none', 0)) / 2:.1f} % of this {os.cpu_count()}-core "
          f"machine (the benchmark's own clients: {cpu_med('with', 1):.1f} % of one core, "
          "which on a real class the phones spend)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
