"""A class votes from its phones (issue 20): the class session, join codes, one vote per student,
the tally, the verdict the Leaderboard counts, and who gets in where. Votes are pinned, so every
count here is exact."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from atom_core import arena, network
from atom_core.arena import classroom
from atom_core.arena.classroom import ClassSession, JoinThrottle, VoteLimiter
from atom_core.arena.rounds import ArenaRound, SlotResult, Vote, get_round, racing
from atom_core.config import settings_from_env
from atom_core.history import HistoryStore
from atom_core.history.memory_store import MemoryHistoryStore
from atom_core.history.tinydb_store import TinyDBHistoryStore


@pytest.fixture(params=["tinydb", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> HistoryStore:
    if request.param == "tinydb":
        return TinyDBHistoryStore(tmp_path / "data", shard_rows=3, durable=False)
    return MemoryHistoryStore()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def slot(label: str, model: str) -> SlotResult:
    return SlotResult(label=label, server="s", model=model, target=model, contestant=model,
                      content=f"answer of {model}", state="complete")


def class_round(store: HistoryStore, session: ClassSession, *, order: tuple[int, ...] = (2, 0, 1),
                state: str = "done") -> ArenaRound:
    """Three slots A, B, C (models a, b, c) shown in `order`: Response 1 is slot order[0]."""
    rec = ArenaRound(id="x", ts=2000.0, prompt="Why?", system_prompt="",
                     slots=(slot("A", "a"), slot("B", "b"), slot("C", "c")), blind=True,
                     order=order, state=state, class_id=session.id).to_record()
    del rec["id"]
    rnd = get_round(store, store.append(arena.ROUNDS_TABLE, rec))
    assert rnd is not None
    return rnd


def students(session: ClassSession, n: int) -> list[str]:
    return [classroom.new_student(session) for _ in range(n)]


def vote_all(store: HistoryStore, session: ClassSession, rnd: ArenaRound,
             choices: list[tuple[str, int | None]], ids: list[str]) -> None:
    limiter = VoteLimiter()
    for student, (outcome, winner) in zip(ids, choices, strict=True):
        assert classroom.cast(store, session, rnd, student, outcome, winner, limiter) == ""


# -- the tally ---------------------------------------------------------------------------------


def test_the_tally_counts_each_student_once_by_display_position(store: HistoryStore) -> None:
    session = classroom.start_class(store)
    rnd = class_round(store, session)  # Response 1 = C, Response 2 = A, Response 3 = B
    ids = students(session, 7)
    vote_all(store, session, rnd, [("win", 2), ("win", 2), ("win", 0), ("win", 1),
                                   ("tie", None), ("all_bad", None), ("all_bad", None)], ids)
    t = classroom.tally(get_round(store, rnd.id))
    assert t.responses == (2, 1, 1) and t.tie == 1 and t.all_bad == 2 and t.total == 7
    assert t.rows() == [("Response 1", 2), ("Response 2", 1), ("Response 3", 1), ("Tie", 1),
                        ("All bad", 2)]


def test_a_changed_vote_replaces_the_earlier_one_never_adds(store: HistoryStore) -> None:
    session = classroom.start_class(store)
    rnd = class_round(store, session)
    me, other = students(session, 2)
    limiter = VoteLimiter()
    assert classroom.cast(store, session, rnd, me, "win", 0, limiter) == ""
    assert classroom.cast(store, session, rnd, other, "win", 0, limiter) == ""
    assert classroom.cast(store, session, rnd, me, "tie", None, limiter) == ""
    assert classroom.cast(store, session, rnd, me, "win", 1, limiter) == ""
    stored = get_round(store, rnd.id)
    assert stored is not None
    assert len(stored.votes) == 2
    assert classroom.tally(stored).responses == (0, 1, 1)  # A (Response 2) once, B once
    assert stored.vote is None  # a student's vote is never the round's counted vote
    mine = stored.vote_of(me)
    assert mine is not None and (mine.outcome, mine.winner) == ("win", 1)


def test_sixty_students_voting_at_once_are_each_counted_exactly_once(tmp_path: Path) -> None:
    store = TinyDBHistoryStore(tmp_path / "data", durable=False)
    session = classroom.start_class(store)
    rnd = class_round(store, session)
    ids = students(session, 60)
    limiter = VoteLimiter()
    errors: list[str] = []

    def vote(i: int) -> None:
        errors.append(classroom.cast(store, session, rnd, ids[i], "win", i % 3, limiter))

    threads = [threading.Thread(target=vote, args=(i,)) for i in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [""] * 60
    stored = get_round(store, rnd.id)
    assert stored is not None
    assert sorted(v.voter for v in stored.votes) == sorted(ids)
    assert classroom.tally(stored).responses == (20, 20, 20)


# -- closing and the verdict -------------------------------------------------------------------


@pytest.mark.parametrize(("choices", "expected"), [
    ([("win", 1), ("win", 1), ("win", 2), ("tie", None)], ("win", 1)),
    ([("win", 1), ("win", 2)], ("tie", None)),  # two choices share the most: a tie
    ([("all_bad", None), ("all_bad", None), ("win", 0)], ("all_bad", None)),
    ([("tie", None), ("win", 0), ("tie", None)], ("tie", None)),
])
def test_the_verdict_is_the_choice_with_the_most_votes(
        store: HistoryStore, choices: list[tuple[str, int | None]],
        expected: tuple[str, int | None]) -> None:
    session = classroom.start_class(store)
    rnd = class_round(store, session)
    vote_all(store, session, rnd, choices, students(session, len(choices)))
    verdict = classroom.verdict(get_round(store, rnd.id))
    assert verdict is not None
    assert (verdict.outcome, verdict.winner, verdict.voter) == (*expected, classroom.CLASS_VOTER)


def test_close_stores_the_verdict_reveals_and_refuses_later_votes(store: HistoryStore) -> None:
    session = classroom.start_class(store)
    rnd = class_round(store, session)
    ids = students(session, 4)
    vote_all(store, session, rnd, [("win", 0), ("win", 0), ("win", 1), ("tie", None)], ids[:4])
    closed = classroom.close(store, rnd)
    stored = get_round(store, rnd.id)
    assert stored is not None and stored.revealed and closed.revealed
    assert stored.vote is not None and (stored.vote.outcome, stored.vote.winner) == ("win", 0)
    assert not stored.hidden
    assert classroom.stage(stored) == "closed"
    late = classroom.cast(store, session, stored, ids[3], "win", 2, VoteLimiter())
    assert late == "Voting on this round has closed."
    assert classroom.tally(get_round(store, rnd.id)).total == 4
    assert classroom.result_sentence(stored) == (
        "The class chose Response 2 (Model A · a): 2 of 4 votes.")


def test_a_round_nobody_voted_on_counts_nowhere(store: HistoryStore) -> None:
    session = classroom.start_class(store)
    rnd = class_round(store, session)
    classroom.close(store, rnd)
    stored = get_round(store, rnd.id)
    assert stored is not None and stored.revealed and stored.vote is None
    assert arena.leaderboard([stored]) == []
    assert classroom.result_sentence(stored) == "Nobody voted on this round."


def test_no_vote_while_the_models_answer_or_from_another_class(store: HistoryStore) -> None:
    session = classroom.start_class(store)
    me = classroom.new_student(session)
    rnd = class_round(store, session, state="running")
    racing(rnd.id, True)  # its race runs in this process
    try:
        running = get_round(store, rnd.id)
        assert running is not None and classroom.stage(running) == "racing"
        assert "still answering" in classroom.cast(store, session, running, me, "tie", None,
                                                   VoteLimiter())
    finally:
        racing(rnd.id, False)
    other = classroom.start_class(store)  # a new class: the old one's students are not its
    rnd = class_round(store, other)
    assert "not part of the class" in classroom.cast(store, other, rnd, me, "tie", None,
                                                     VoteLimiter())
    assert get_round(store, rnd.id).votes == ()


# -- the Leaderboard counts a class round once ----------------------------------------------------


def test_the_leaderboard_counts_a_class_round_as_one_vote(store: HistoryStore) -> None:
    session = classroom.start_class(store)
    rnd = class_round(store, session, order=(0, 1, 2))
    # 5 votes for A, 4 for B, 1 for C: one round won by A, not 5 + 4 + 1 battles
    vote_all(store, session, rnd, [("win", 0)] * 5 + [("win", 1)] * 4 + [("win", 2)],
             students(session, 10))
    classroom.close(store, rnd)
    single = ArenaRound(id="s1", ts=3000.0, prompt="p", system_prompt="",
                        slots=(slot("A", "a"), slot("B", "b")),
                        vote=Vote(outcome="win", winner=1, ts=3000.0, voter="me"))
    rounds = [get_round(store, rnd.id), single]
    board = {r.contestant: r.record for r in arena.leaderboard(rounds)}
    assert board["a"].rounds_won == 1 and board["a"].battles == 3
    assert (board["a"].wins, board["a"].losses) == (2, 1)  # beat b and c (class), lost to b
    assert (board["b"].wins, board["b"].losses) == (1, 1)
    assert (board["c"].wins, board["c"].losses) == (0, 1)
    only_class = classroom.rounds_of_kind(rounds, "class")
    only_single = classroom.rounds_of_kind(rounds, "single")
    assert [r.id for r in only_class] == [rnd.id] and [r.id for r in only_single] == ["s1"]
    assert len(classroom.rounds_of_kind(rounds, "all")) == 2


def test_a_class_round_keeps_its_class_through_a_save(store: HistoryStore) -> None:
    session = classroom.start_class(store)
    rnd = class_round(store, session)
    assert ArenaRound.from_record(rnd.to_record()).class_id == session.id
    assert arena.rounds.check_round_record(rnd.to_record()).class_id == session.id


# -- what redraws what ----------------------------------------------------------------------------


def test_student_votes_redraw_no_page_but_the_phone_that_cast_them(store: HistoryStore) -> None:
    session = classroom.start_class(store)
    rnd = class_round(store, session)
    me, other = students(session, 2)
    page = arena.state_key(rnd)

    def phone() -> str | None:
        return classroom.phone_key(classroom.newest_watch(store, session), me, live=False)

    before = phone()
    classroom.cast(store, session, rnd, other, "tie", None, VoteLimiter())
    assert arena.state_key(get_round(store, rnd.id)) == page  # the tally follows by itself
    assert phone() == before
    classroom.cast(store, session, rnd, me, "tie", None, VoteLimiter())
    mine = phone()
    assert mine not in (before, None)
    closed = classroom.close(store, rnd)
    assert arena.state_key(closed) != page  # the reveal redraws every screen
    assert phone() not in (mine, None)


def test_a_race_starting_redraws_no_phone_unless_the_class_sees_it_live(
        store: HistoryStore) -> None:
    session = classroom.start_class(store)
    me = classroom.new_student(session)
    rnd = class_round(store, session, state="running")
    record = classroom.newest_watch(store, session)
    assert classroom.phone_key(record, me, live=False) is None  # until its replies are in
    live = classroom.phone_key(record, me, live=True)
    store.update_record(arena.ROUNDS_TABLE, rnd.id, {"slots": [  # the race saved progress
        {**s, "content": s["content"] + " more"} for s in rnd.to_record()["slots"]]})
    grown = classroom.newest_watch(store, session)
    assert classroom.phone_key(grown, me, live=True) not in (live, None)
    store.update_record(arena.ROUNDS_TABLE, rnd.id, {"state": "done"})
    done = classroom.phone_key(classroom.newest_watch(store, session), me, live=False)
    assert done is not None and done.endswith("|done|")


def test_phones_follow_the_newest_round_of_their_class_only(store: HistoryStore) -> None:
    session = classroom.start_class(store)
    assert classroom.class_round(store, session) is None
    rnd = class_round(store, session)
    now = classroom.class_round(store, session)
    assert now is not None and now.id == rnd.id
    store.append(arena.ROUNDS_TABLE, {**rnd.to_record(), "id": "solo", "class_id": None})
    assert classroom.class_round(store, session) is None  # the teacher raced outside the class


# -- the class session and students ----------------------------------------------------------------


def test_a_class_session_survives_a_restart_and_so_do_its_students(tmp_path: Path) -> None:
    first = TinyDBHistoryStore(tmp_path / "data", durable=False)
    session = classroom.start_class(first)
    assert len(session.code) == classroom.CODE_DIGITS and session.code.isdigit()
    me = classroom.new_student(session)
    again = classroom.active_class(TinyDBHistoryStore(tmp_path / "data", durable=False))
    assert again == session
    assert classroom.is_student(again, me)
    nonce, tag = me.split("-")
    assert not classroom.is_student(again, f"{nonce}-{'0' * len(tag)}")  # a forged id
    assert not classroom.is_student(again, "") and not classroom.is_student(again, "x-y-z")
    classroom.end_class(first, session)
    assert classroom.active_class(first) is None
    newer = classroom.start_class(first)
    assert not classroom.is_student(newer, me)  # ids are per class
    live = classroom.set_live(first, newer, True)
    assert classroom.active_class(first) == live and live.live
    assert "secret" not in repr(live) and live.secret not in repr(live)


def test_starting_a_class_ends_the_one_before(store: HistoryStore) -> None:
    first = classroom.start_class(store)
    second = classroom.start_class(store)
    ended = [ClassSession.from_record(d) for d in store.records(classroom.CLASSES_TABLE)]
    assert ended[0] is not None and ended[0].ended is not None
    assert classroom.active_class(store) == second != first


def test_wrong_join_codes_get_a_sentence_and_are_slowed_after_a_few(
        store: HistoryStore) -> None:
    session = classroom.start_class(store)
    clock = Clock()
    throttle = JoinThrottle(clock)
    wrong = "0000" if session.code != "0000" else "1111"
    for _ in range(classroom.FREE_TRIES):
        joined = classroom.join(session, wrong, "10.0.0.5", throttle)
        assert joined.student is None and "not this class's code" in joined.sentence
    slowed = classroom.join(session, session.code, "10.0.0.5", throttle)
    assert slowed.student is None and slowed.sentence.startswith("Too many wrong codes")
    other = classroom.join(session, f" {session.code[:2]} {session.code[2:]} ", "10.0.0.6",
                           throttle)
    assert other.student is not None and classroom.is_student(session, other.student)
    clock.t += 2.0
    assert classroom.join(session, wrong, "10.0.0.5", throttle).student is None
    clock.t += 3.0
    assert throttle.wait_s("10.0.0.5") == pytest.approx(1.0)  # 4 s after the 4th wrong try
    clock.t += 1.0
    assert classroom.join(session, session.code, "10.0.0.5", throttle).student is not None
    assert throttle.wait_s("10.0.0.5") == 0.0
    assert "No class is running" in classroom.join(None, "1234", "x", throttle).sentence


def test_votes_are_rate_limited_per_student(store: HistoryStore) -> None:
    session = classroom.start_class(store)
    rnd = class_round(store, session)
    me, other = students(session, 2)
    clock = Clock()
    limiter = VoteLimiter(clock)
    said = [classroom.cast(store, session, rnd, me, "tie", None, limiter)
            for _ in range(classroom.VOTE_BURST + 1)]
    assert said[:-1] == [""] * classroom.VOTE_BURST
    assert said[-1].startswith("Too many votes")
    assert classroom.cast(store, session, rnd, other, "tie", None, limiter) == ""
    clock.t += classroom.VOTE_REFILL_S
    assert classroom.cast(store, session, rnd, me, "win", 0, limiter) == ""


# -- who gets in where ----------------------------------------------------------------------------


def test_class_mode_and_the_teacher_key_come_from_the_environment() -> None:
    s = settings_from_env({"ATOM_CLASS": "1", "ATOM_TEACHER_KEY": " k3y "})
    assert s.class_mode and s.teacher_key == "k3y" and "k3y" not in repr(s)
    plain = settings_from_env({})
    assert not plain.class_mode and plain.teacher_key is None


def test_class_mode_admits_this_machines_lan_names_and_nothing_else(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network, "lan_names", lambda: frozenset({"atom-box", "atom-box.local"}))
    monkeypatch.setattr(network, "lan_addresses", lambda: ("192.168.1.20", "fd00::2"))
    plain = settings_from_env({"ATOM_ALLOWED_HOSTS": "projector.lan"})
    klass = settings_from_env({"ATOM_CLASS": "1", "ATOM_ALLOWED_HOSTS": "projector.lan"})
    for host in ("192.168.1.20:8501", "atom-box.local:8501", "ATOM-BOX", "[fd00::2]:8501"):
        assert network.host_admitted(host, klass), host
        assert not network.host_admitted(host, plain), host
    for settings in (plain, klass):
        assert network.host_admitted("localhost:8501", settings)
        assert network.host_admitted("projector.lan", settings)
        assert not network.host_admitted("evil.example:8501", settings)  # DNS rebinding
    assert network.student_address(8501) == "http://192.168.1.20:8501/vote"
    assert network.base_url(8501, "fd00::2") == "http://[fd00::2]:8501"


def test_lan_addresses_leave_out_loopback_and_put_the_classroom_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    from types import SimpleNamespace

    import psutil

    def addr(family: Any, address: str) -> Any:
        return SimpleNamespace(family=family, address=address)

    monkeypatch.setattr(psutil, "net_if_addrs", lambda: {
        "lo": [addr(socket.AF_INET, "127.0.0.1"), addr(socket.AF_INET6, "::1")],
        "docker0": [addr(socket.AF_INET, "172.17.0.1")],
        "wlan0": [addr(socket.AF_INET6, "fe80::1%wlan0"), addr(socket.AF_INET6, "2001:db8::5"),
                  addr(socket.AF_INET, "192.168.1.20")],
        "eth1": [addr(socket.AF_INET, "10.1.2.3")],
    })
    monkeypatch.setattr(psutil, "net_if_stats", lambda: {
        n: SimpleNamespace(isup=n != "eth1") for n in ("lo", "docker0", "wlan0", "eth1")})
    network.lan_addresses.cache_clear()
    try:
        assert network.lan_addresses() == ("192.168.1.20", "2001:db8::5", "172.17.0.1")
    finally:
        network.lan_addresses.cache_clear()


def test_class_mode_start_listens_on_the_network_and_prints_the_two_links(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from atom_core.launch import class_mode

    monkeypatch.setattr(network, "lan_addresses", lambda: ("192.168.1.20",))
    said: list[str] = []
    args, env = class_mode.prepare(["--server.headless=true"], {"PATH": "/bin"}, said.append,
                                   port_is_free=lambda port: port != 8501)
    assert "--server.address=0.0.0.0" in args and "--server.port=8502" in args
    assert "--runner.postScriptGC=false" in args and "--server.fileWatcherType=none" in args
    key = env["ATOM_TEACHER_KEY"]
    assert len(key) >= 16 and env["PATH"] == "/bin"
    assert said == [f"Class mode. Teacher (keep this link to yourself): "
                    f"http://192.168.1.20:8502/?teacher={key}",
                    "Students open: http://192.168.1.20:8502/vote"]
    # What ARGS and the environment set wins; a new key only when none is given.
    args, env = class_mode.prepare(["--server.port", "9000", "--server.address=127.0.0.1"],
                                   {"ATOM_TEACHER_KEY": "mine"}, said.append)
    assert args.count("--server.address=0.0.0.0") == 0 and "--server.port=9000" not in args
    assert env["ATOM_TEACHER_KEY"] == "mine" and said[-2].endswith(":9000/?teacher=mine")
    assert class_mode.prepare([], {}, said.append, port_is_free=lambda port: True)[1][
        "ATOM_TEACHER_KEY"] != key
