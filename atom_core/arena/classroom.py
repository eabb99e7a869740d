"""A class votes from its phones: the class session, joining, one vote per student, the tally.

How a class round goes (issue 20):
- The teacher turns on Class in the Arena's presenter mode: `start_class` stores a class
  session (the "arena_classes" table) with a short join code and a secret. Its rounds carry
  its id (`ArenaRound.class_id`).
- A phone opens /vote and types the code once (`Classroom.join`): it gets an anonymous student
  id, signed with the class's secret (`<nonce>-<tag>`), which the page keeps in its address.
  Nothing is written on a join, and after an app restart the same id still checks out
  (`is_student`): a phone that reconnects is the same student, its vote still its own.
- A student's vote is one `rounds.Vote` in the round's `votes` (voter = the student id, the
  choice, the time), saved with the round. A later vote from the same student replaces the
  earlier one (`rounds.record_vote(..., counts=False)`); no vote lands once the round is closed.
- `tally` counts them; "Close voting & reveal" (`rounds.close_class_round`) stores the class's
  verdict as the round's vote and reveals the names to every phone, in one step.

The Leaderboard counts a class round once: the class's verdict (`verdict`), as one vote. Thirty
students judging the same two replies are thirty opinions about one pair of answers, not thirty
independent comparisons of the models: counting each would let one lesson outweigh every round
a single user ever voted on, and make the bootstrap intervals (resampled by round) too narrow.
The verdict is the choice with the most votes; when several choices share the most, a tie.

Wrong join codes are slowed (`JoinThrottle`: a few free tries per address, then a wait that
doubles) and votes are rate-limited per student (`VoteLimiter`). Both live in this process only:
a restart forgets them, which costs nothing but a few free tries.

No Streamlit here: pages/vote.py and pages/parts/arena_class.py draw it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..records import stored_record
from .ratings import Outcome
from .rounds import (
    ROUNDS_TABLE,
    ArenaRound,
    Vote,
    VotingClosed,
    close_voting,
    record_vote,
)

if TYPE_CHECKING:
    from ..history import HistoryStore

CLASSES_TABLE = "arena_classes"
CODE_DIGITS = 4  # typed once on a phone; wrong codes are slowed, so four digits are enough
FREE_TRIES = 3  # wrong join codes from one address before each further try must wait
MAX_WAIT_S = 60.0
VOTE_BURST = 5  # votes (changes included) a student may cast at once...
VOTE_REFILL_S = 2.0  # ...and one more every this many seconds

Clock = Callable[[], float]
Stage = Literal["waiting", "racing", "voting", "closed"]


# -- the class session ----------------------------------------------------------------------------


@stored_record
@dataclass(frozen=True, slots=True, kw_only=True)
class ClassSession:
    """One class, from Class on to Class off, as stored in the "arena_classes" table."""

    TABLE: ClassVar[str] = CLASSES_TABLE

    id: str
    code: str  # the join code on the projector
    secret: str = field(repr=False)  # signs the student ids; never shown
    started: float
    ended: float | None = None
    live: bool = False  # the phones show the replies while the models write them

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> ClassSession:
        """Raises KeyError, TypeError or ValueError for a row that is not a class session."""
        return cls(id=str(d["id"]), code=str(d["code"]), secret=str(d["secret"]),
                   started=float(d.get("started") or 0.0),
                   ended=float(d["ended"]) if d.get("ended") is not None else None,
                   live=bool(d.get("live")))

    @classmethod
    def check_import(cls, row: Mapping[str, Any]) -> None:
        """An imported session needs its id, code and secret as text (strict)."""
        if not all(isinstance(row.get(k), str) and row[k] for k in ("id", "code", "secret")):
            raise ValueError("a class session needs its id, code and secret")
        cls.from_record(row)


def start_class(store: HistoryStore, *, now: float | None = None) -> ClassSession:
    """Starts a class session (ending any other first) with a fresh join code and secret."""
    if (running := active_class(store)) is not None:
        end_class(store, running)
    session = ClassSession(
        id="", code="".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS)),
        secret=secrets.token_hex(16), started=time.time() if now is None else now)
    return replace(session, id=store.add(session))  # the store assigns the id


def active_class(store: HistoryStore) -> ClassSession | None:
    """The class session running now (the newest one, if it has not ended), else None."""
    session = store.last(ClassSession)
    return session if session is not None and session.ended is None else None


def end_class(store: HistoryStore, session: ClassSession, *, now: float | None = None) -> None:
    """Class off: phones are told the class has ended; its rounds stay, marked as its."""
    store.update(ClassSession, session.id, ended=time.time() if now is None else now)


def set_live(store: HistoryStore, session: ClassSession, live: bool) -> ClassSession:
    """Whether the phones show the replies while the models write them (else once done)."""
    return store.update(ClassSession, session.id, live=live)


def join_link(address: str, session: ClassSession) -> str:
    """The QR code's link: the phones' address with the code, so a scan joins without typing."""
    return f"{address}?code={session.code}"


def qr_png(text: str, scale: int = 10) -> bytes:
    """A QR code of `text` as PNG bytes, drawn here (segno: pure Python, no web service)."""
    import io

    import segno  # here: only a class's join panel draws one

    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=scale, border=2)
    return out.getvalue()


# -- students -------------------------------------------------------------------------------------


def _tag(session: ClassSession, nonce: str) -> str:
    return hmac.new(session.secret.encode(), nonce.encode(), hashlib.sha256).hexdigest()[:12]


def new_student(session: ClassSession) -> str:
    """A new anonymous student id for this class: `<nonce>-<tag>`, the tag signed with the
    class's secret, so `is_student` needs no stored list."""
    nonce = secrets.token_hex(6)
    return f"{nonce}-{_tag(session, nonce)}"


def is_student(session: ClassSession, student: str | None) -> bool:
    """Whether `student` is an id this class gave out (false for any other class's)."""
    if not student or student.count("-") != 1:
        return False
    nonce, tag = student.split("-")
    return len(nonce) == 12 and hmac.compare_digest(tag, _tag(session, nonce))


def code_matches(session: ClassSession, typed: str) -> bool:
    """Whether the typed join code is the class's (spaces ignored)."""
    return hmac.compare_digest("".join(typed.split()).encode(), session.code.encode())


@dataclass(frozen=True, slots=True)
class Joined:
    """What a join attempt gave: a student id, or the sentence to show instead."""

    student: str | None = None
    sentence: str = ""


class JoinThrottle:
    """Slows wrong join codes per client address: FREE_TRIES free, then each further try must
    wait 2, 4, 8 … seconds (at most MAX_WAIT_S) after the last wrong one. Thread-safe."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._wrong: dict[str, tuple[int, float]] = {}  # address -> (wrong tries, last at)

    def wait_s(self, address: str) -> float:
        """Seconds this address must still wait before its next try counts (0: it may try)."""
        with self._lock:
            n, last = self._wrong.get(address, (0, 0.0))
        if n < FREE_TRIES:
            return 0.0
        return max(0.0, last + min(MAX_WAIT_S, 2.0 ** (n - FREE_TRIES + 1)) - self._clock())

    def failed(self, address: str) -> None:
        with self._lock:
            n, _ = self._wrong.get(address, (0, 0.0))
            self._wrong[address] = (n + 1, self._clock())

    def forget(self, address: str) -> None:
        with self._lock:
            self._wrong.pop(address, None)


def join(session: ClassSession | None, typed: str, address: str,
         throttle: JoinThrottle) -> Joined:
    """A phone types the join code: a new student id, or one sentence saying why not."""
    if session is None:
        return Joined(sentence="No class is running now: wait for your teacher to start one.")
    if (wait := throttle.wait_s(address)) > 0:
        return Joined(sentence=f"Too many wrong codes from this device: try again in "
                      f"{max(1, round(wait))} s.")
    if not code_matches(session, typed):
        throttle.failed(address)
        return Joined(sentence="That is not this class's code. Type the code shown on the "
                      "teacher's screen.")
    throttle.forget(address)
    return Joined(student=new_student(session))


class VoteLimiter:
    """At most VOTE_BURST votes at once per student, then one per VOTE_REFILL_S seconds (a
    token bucket). Thread-safe."""

    def __init__(self, clock: Clock = time.monotonic, burst: int = VOTE_BURST,
                 refill_s: float = VOTE_REFILL_S) -> None:
        self._clock, self._burst, self._refill_s = clock, burst, refill_s
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, float]] = {}  # student -> (tokens, at)

    def allow(self, student: str) -> bool:
        now = self._clock()
        with self._lock:
            tokens, at = self._tokens.get(student, (float(self._burst), now))
            tokens = min(float(self._burst), tokens + (now - at) / self._refill_s)
            if tokens < 1.0:
                self._tokens[student] = (tokens, now)
                return False
            self._tokens[student] = (tokens - 1.0, now)
            return True


# -- a class round --------------------------------------------------------------------------------


def class_round(store: HistoryStore, session: ClassSession | None) -> ArenaRound | None:
    """The round the phones show: the newest round, if it is this class's (one record read)."""
    if session is None:
        return None
    rnd = store.last(ArenaRound)
    return rnd if rnd is not None and rnd.class_id == session.id else None


def stage(rnd: ArenaRound | None) -> Stage:
    if rnd is None:
        return "waiting"
    if rnd.revealed:
        return "closed"
    return "racing" if rnd.state == "running" else "voting"


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundWatch:
    """What a phone's watcher reads of the newest round every tick: a view of part of the
    stored row (store.last(RoundWatch)), read without ArenaRound's checks, which cost more
    than sixty phones ticking every second should (bench/bench_class.py)."""

    TABLE: ClassVar[str] = ROUNDS_TABLE

    id: str
    class_id: str | None
    state: str
    revealed: bool
    votes: tuple[Mapping[str, Any], ...]  # every session's vote, as stored
    slots: tuple[tuple[int, str], ...]  # per slot: characters of its reply so far, its state

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> RoundWatch:
        class_id = d.get("class_id")
        return cls(id=str(d.get("id")), class_id=class_id if isinstance(class_id, str) else None,
                   state=str(d.get("state")), revealed=bool(d.get("revealed")),
                   votes=tuple(v for v in d.get("votes") or () if isinstance(v, Mapping)),
                   slots=tuple((len(s.get("content") or ""), str(s.get("state")))
                               for s in d.get("slots") or () if isinstance(s, Mapping)))


def newest_watch(store: HistoryStore, session: ClassSession | None) -> RoundWatch | None:
    """The newest round (RoundWatch: what a phone's watcher reads every tick) if it is this
    class's; `class_round` reads it as a round to draw."""
    if session is None:
        return None
    watch = store.last(RoundWatch)
    return watch if watch is not None and watch.class_id == session.id else None


def phone_key(watch: RoundWatch | None, student: str, live: bool) -> str | None:
    """Changes whenever what one phone shows changes: the round, its stage, this student's own
    vote, the replies so far when the class sees them live; from the stored row, unchecked.

    None while a race runs and the class does not see it live: nothing to redraw until its
    replies are in. Sixty phones redrawing as a race starts would take the machine from the
    models just when their time to first token is measured. Other students' votes are left out
    too: a phone never shows them before the reveal."""
    if watch is None:
        return ""
    running = watch.state == "running" and not watch.revealed
    if running and not live:
        return None
    mine = next((f"{v.get('outcome')}:{v.get('winner')}:{v.get('ts')}"
                 for v in watch.votes if v.get("voter") == student), "")
    shown = [watch.id, "closed" if watch.revealed else watch.state, mine]
    if running:
        shown += [f"{chars}:{state}" for chars, state in watch.slots]
    return "|".join(shown)


def choice_label(rnd: ArenaRound, outcome: Outcome, winner: int | None) -> str:
    """A choice as a phone names it: "Response 2", "Tie", "All bad" (by display position)."""
    if outcome == "tie":
        return "Tie"
    if outcome == "all_bad":
        return "All bad"
    assert winner is not None
    return f"Response {rnd.positions.index(winner) + 1}"


def cast(store: HistoryStore, session: ClassSession | None, rnd: ArenaRound, student: str,
         outcome: Outcome, winner: int | None, limiter: VoteLimiter) -> str:
    """A student votes (or changes their vote) on a class round. Returns "" when it was saved,
    else the one sentence to show. The stored round is checked under the vote lock, so a vote
    never lands after Close voting & reveal."""
    if session is None or rnd.class_id != session.id or not is_student(session, student):
        return "This vote is not part of the class running now: reload the page."
    if rnd.state == "running":
        return "The models are still answering: vote once every reply is in."
    if not limiter.allow(student):
        return "Too many votes at once: wait a few seconds, then vote again."
    try:
        record_vote(store, rnd, outcome, winner, voter=student, counts=False)
    except VotingClosed:
        return "Voting on this round has closed."
    return ""


# -- the tally ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Tally:
    """The class's votes on a round: one per student (a changed vote counts once, as changed)."""

    responses: tuple[int, ...]  # votes per display position (Response 1, 2, …)
    tie: int = 0
    all_bad: int = 0

    @property
    def total(self) -> int:
        return sum(self.responses) + self.tie + self.all_bad

    def rows(self) -> list[tuple[str, int]]:
        """(label, votes) per choice, in the order of the phone's buttons."""
        return [*((f"Response {i + 1}", n) for i, n in enumerate(self.responses)),
                ("Tie", self.tie), ("All bad", self.all_bad)]


def tally(rnd: ArenaRound) -> Tally:
    """Counts the students' votes by display position. Votes without a voter (cast before votes
    were attributed) and a win naming no slot of the round are not a student's and are left out."""
    counts = [0] * len(rnd.slots)
    tie = all_bad = 0
    for v in _student_votes(rnd.votes):
        if v.outcome == "tie":
            tie += 1
        elif v.outcome == "all_bad":
            all_bad += 1
        elif v.winner is not None and 0 <= v.winner < len(rnd.slots):
            counts[rnd.positions.index(v.winner)] += 1
    return Tally(responses=tuple(counts), tie=tie, all_bad=all_bad)


def _student_votes(votes: Sequence[Vote]) -> list[Vote]:
    latest: dict[str, Vote] = {}
    for v in votes:
        if v.voter and v.voter != CLASS_VOTER:
            latest[v.voter] = v  # one per student; record_vote keeps one anyway
    return list(latest.values())


CLASS_VOTER = "class"  # the voter of a class round's verdict (the vote the Leaderboard counts)


def verdict(rnd: ArenaRound, *, ts: float | None = None) -> Vote | None:
    """The class's result as one vote: the choice with the most votes; a tie when several
    choices share the most; None when nobody voted (the round then counts nowhere)."""
    t = tally(rnd)
    if t.total == 0:
        return None
    choices: list[tuple[int, Outcome, int | None]] = [
        (n, "win", rnd.positions[i]) for i, n in enumerate(t.responses)]
    choices += [(t.tie, "tie", None), (t.all_bad, "all_bad", None)]
    top = max(n for n, _, _ in choices)
    leaders = [(o, w) for n, o, w in choices if n == top]
    outcome, winner = leaders[0] if len(leaders) == 1 else ("tie", None)
    return Vote(outcome=outcome, winner=winner, blind=True,
                ts=time.time() if ts is None else ts, voter=CLASS_VOTER)


def close(store: HistoryStore, rnd: ArenaRound) -> ArenaRound:
    """Close voting & reveal: the class's verdict becomes the round's counted vote and every
    phone is shown which model was which (rounds.close_voting)."""
    return close_voting(store, rnd, verdict)


def result_sentence(rnd: ArenaRound) -> str:
    """The class's result in words, names included (say it once the round is revealed):
    "The class chose Response 2 (Model B · qwen3-4b): 18 of 30 votes."."""
    t = tally(rnd)
    v = verdict(rnd)
    if v is None:
        return "Nobody voted on this round."
    votes = f"{t.total} vote" + ("" if t.total == 1 else "s")
    if v.outcome == "tie":
        return f"The class called it a tie ({votes})."
    if v.outcome == "all_bad":
        return f"The class found every answer bad ({t.all_bad} of {votes})."
    assert v.winner is not None
    position = rnd.positions.index(v.winner)
    slot = rnd.slots[v.winner]
    return (f"The class chose Response {position + 1} (Model {slot.label} · {slot.contestant}):"
            f" {t.responses[position]} of {votes}.")


# -- which rounds the Leaderboard counts ----------------------------------------------------------

RoundKind = Literal["all", "single", "class"]


def rounds_of_kind(rounds: Sequence[ArenaRound], kind: RoundKind) -> list[ArenaRound]:
    """The Leaderboard's filter: every round, single-user rounds only, or class rounds only."""
    if kind == "single":
        return [r for r in rounds if not r.class_id]
    if kind == "class":
        return [r for r in rounds if r.class_id]
    return list(rounds)
