"""Arena rounds as stored: `ArenaRound` (one prompt raced by 2-4 slots) in the "arena_rounds"
table, read leniently (`read_rounds` skips and counts a row it cannot read), votes and reveals.

Several browsers can show one round (a presenter's screen and a second browser). A round's true
state is what is stored, and each browser draws it as that browser may see it (`seen_by`):
- every browser session votes for itself: its vote is kept with its anonymous id (`Vote.voter`),
  a later vote from the same session replaces its earlier one, and only that session sees the
  vote as its own;
- a blind round's names show to a session once it has voted, or to everyone once anyone presses
  Reveal; another session's vote never reveals them (it would spoil a vote not yet cast);
- the Leaderboard counts one vote per round (`ArenaRound.vote`): the vote of the first session to
  vote on it (which may change it). The other sessions' votes are kept with the round, for a
  class tally to count (issue 20), but are not battles of their own;
- a round whose race runs in this process reads as running (`racing`): another browser shows
  that it races (not its replies, which show when it is done), and no one votes before it ends.
`state_key` changes whenever any of that does: a browser watching it redraws only then."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..history import HistoryStore

import functools
import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..metrics import GenerationMetrics, metrics_dict
from ..records import stored_record
from ..types import (
    ModelInfo,
)
from .ratings import Outcome

ROUNDS_TABLE = "arena_rounds"


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotResult:
    """One slot of a round: who raced, with what, and what came back."""

    label: str  # "A".."D"
    server: str
    model: str  # model key
    target: str  # what was sent as `model` (an instance id when the arena loaded one)
    contestant: str
    options: dict[str, Any] = field(default_factory=dict)
    load_config: dict[str, Any] = field(default_factory=dict)  # what the user asked for
    instance_config: dict[str, Any] = field(default_factory=dict)  # what it was loaded with
    model_info: dict[str, Any] = field(default_factory=dict)  # quantization, params, size...
    load_s: float | None = None  # explicit load before the race; never part of TTFT
    route: str = "completions"  # the chat route the slot talked over
    reasoning_setting: str | None = None  # the reasoning setting asked for (None: default)
    content: str = ""
    reasoning: str = ""
    # stored as GenerationMetrics.to_dict() (with the token timeline at 0.1 ms), read back
    # leniently (GenerationMetrics.read)
    metrics: GenerationMetrics | None = None
    state: SlotState = "running"
    error: str = ""
    run_id: str = ""

    def to_record(self) -> dict[str, Any]:
        return {**asdict(replace(self, metrics=None)), "metrics": metrics_dict(self.metrics)}

    @classmethod
    def from_record(cls, s: Mapping[str, Any]) -> SlotResult:
        known = {k: v for k, v in s.items() if k in cls.__dataclass_fields__}
        known["metrics"] = GenerationMetrics.read(s.get("metrics"))
        return cls(**known)


@dataclass(frozen=True, slots=True, kw_only=True)
class Vote:
    outcome: Outcome
    winner: int | None = None  # slot index
    blind: bool = True  # cast before the names were shown (to the one who cast it)
    ts: float = 0.0
    # the anonymous id of the browser session that cast it ("": cast before votes were
    # attributed, in a session that has ended)
    voter: str = ""


@stored_record
@dataclass(frozen=True, slots=True, kw_only=True)
class ArenaRound:
    """One prompt raced by 2-4 slots, as stored in the "arena_rounds" table."""

    TABLE: ClassVar[str] = ROUNDS_TABLE

    id: str
    ts: float
    prompt: str
    system_prompt: str
    slots: tuple[SlotResult, ...]
    blind: bool = False
    order: tuple[int, ...] = ()  # display position -> slot index (shuffled when blind)
    notes: tuple[str, ...] = ()
    state: Literal["running", "done"] = "done"
    # the round's vote, the one the Leaderboard counts: the first voting session's; in a view
    # (`seen_by`), the viewing session's own vote
    vote: Vote | None = None
    votes: tuple[Vote, ...] = ()  # every session's own vote, in the order first cast
    revealed: bool = False  # Reveal pressed: names shown to every browser
    # the "machines" table's id of the machine ATOM raced on (reports name it); None: not
    # recorded (rounds from before machines were recorded per session)
    machine_id: str | None = None
    # the class session whose phones vote on it (atom_core/arena/classroom.py); None: a round
    # of the browsers in front of ATOM, as before classes
    class_id: str | None = None

    def __post_init__(self) -> None:
        if self.vote is not None and not self.votes:  # saved before each session's vote was kept
            object.__setattr__(self, "votes", (self.vote,))

    @property
    def hidden(self) -> bool:
        """Names stay hidden: a blind round nobody has voted on or revealed yet (in a view from
        `seen_by`: that the viewing session has not voted on, nor anyone revealed)."""
        return self.blind and self.vote is None and not self.revealed

    def vote_of(self, voter: str) -> Vote | None:
        """The vote this browser session cast on the round, if any."""
        return next((v for v in self.votes if v.voter == voter), None)

    def seen_by(self, voter: str) -> ArenaRound:
        """The round as one browser session may see it: `vote` is that session's own vote
        (None if it has not voted), so `hidden`, the titles and the vote line are its own;
        `votes` still holds everyone's."""
        return replace(self, vote=self.vote_of(voter))

    def others_votes(self, voter: str) -> tuple[Vote, ...]:
        """The votes cast on the round by every other browser session."""
        return tuple(v for v in self.votes if v.voter != voter)

    def counts(self, voter: str) -> bool:
        """Whether this session's vote is the one the Leaderboard counts for the round."""
        return self.vote is not None and self.vote.voter == voter

    @property
    def positions(self) -> tuple[int, ...]:
        return self.order or tuple(range(len(self.slots)))

    def title_at(self, position: int) -> str:
        """The column title at a display position: "Response 2" when blind, else "Model A"."""
        if self.blind:
            return f"Response {position + 1}"
        return f"Model {self.slots[self.positions[position]].label}"

    def subtitle_at(self, position: int) -> str:
        """Who wrote it, once that may be shown: "qwen3-4b", or "Model A · qwen3-4b" in a
        revealed blind round; "" while hidden."""
        if self.hidden:
            return ""
        slot = self.slots[self.positions[position]]
        name = slot.contestant
        return f"Model {slot.label} · {name}" if self.blind else name

    def short_label(self, slot_index: int) -> str:
        """How a vote button names a slot: by position when hidden."""
        if self.hidden:
            return f"Response {self.positions.index(slot_index) + 1}"
        return f"Model {self.slots[slot_index].label}"

    def to_record(self) -> dict[str, Any]:
        d = asdict(self)
        d["slots"] = [s.to_record() for s in self.slots]
        d["order"] = list(self.order)
        d["notes"] = list(self.notes)
        d["vote"] = asdict(self.vote) if self.vote else None
        d["votes"] = [asdict(v) for v in self.votes]
        return d

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> ArenaRound:
        """The round a stored row holds, checked (check_round_record) and settled: a round
        left "running" by a process that died reads as done, its unfinished slots as
        interrupted. Raises ValueError for a row that does not read as a round, so
        `store.read(ArenaRound)` skips and counts it and `store.get` gives None."""
        r = check_round_record(d)
        if r.state == "running" and r.id not in _RACING:
            r = replace(r, state="done", slots=tuple(
                replace(s, state="interrupted") if s.state == "running" else s
                for s in r.slots))
        return r

    @classmethod
    def build(cls, d: Mapping[str, Any]) -> ArenaRound:
        """The round a row holds, field by field, unchecked (check_round_record checks it)."""
        slots = tuple(SlotResult.from_record(s) for s in d.get("slots") or [])
        vote = d.get("vote")
        counted = Vote(**vote) if isinstance(vote, dict) else None
        votes = tuple(Vote(**v) for v in d.get("votes") or () if isinstance(v, dict))
        return cls(
            id=str(d.get("id") or ""), ts=float(d.get("ts") or 0.0),
            prompt=str(d.get("prompt") or ""), system_prompt=str(d.get("system_prompt") or ""),
            slots=slots, blind=bool(d.get("blind")), order=tuple(d.get("order") or ()),
            notes=tuple(d.get("notes") or ()), state=d.get("state") or "done",
            vote=counted, votes=votes, revealed=bool(d.get("revealed")),
            machine_id=d["machine_id"] if isinstance(d.get("machine_id"), str) else None,
            class_id=d["class_id"] if isinstance(d.get("class_id"), str) else None,
        )

    @classmethod
    def check_import(cls, row: Mapping[str, Any]) -> None:
        """Raises ValueError when an imported row does not read as a round (strict)."""
        check_round_record(row, strict=True)

    @property
    def vote_sentence(self) -> str:
        return self.sentence(self.vote) if self.vote is not None else ""

    def sentence(self, v: Vote) -> str:
        """A vote in words, names included: "Model B (qwen3-4b) wins", "Tie", "All bad"."""
        if v.outcome == "tie":
            return "Tie"
        if v.outcome == "all_bad":
            return "All bad"
        assert v.winner is not None
        s = self.slots[v.winner]
        return f"Model {s.label} ({s.model}) wins"


def blind_order(n: int, rng: random.Random | None = None) -> tuple[int, ...]:
    """A shuffled display order for a blind round."""
    order = list(range(n))
    (rng or random.Random()).shuffle(order)
    return tuple(order)


def model_facts(info: ModelInfo | None) -> dict[str, Any]:
    """The model metadata a round keeps (and a report prints)."""
    if info is None:
        return {}
    return {"display_name": info.display_name, "publisher": info.publisher,
            "architecture": info.architecture, "quantization": info.quantization,
            "bits_per_weight": info.bits_per_weight, "params": info.params,
            "size_bytes": info.size_bytes, "max_context": info.max_context,
            "format": info.format}


@functools.cache
def _round_type() -> Any:
    from pydantic import TypeAdapter  # here: only reading rounds needs it

    return TypeAdapter(ArenaRound)


def check_round_record(d: Mapping[str, Any], *, strict: bool = False) -> ArenaRound:
    """The round a stored record holds, checked against ArenaRound's field types (pydantic;
    `strict` for imports, where the record is JSON) and its own consistency. Raises
    ValueError (pydantic's ValidationError is one) when the record does not read as a round."""
    if not isinstance(d, Mapping):
        raise ValueError("an arena round must be a record")
    # A slot's metrics are checked as an object and read leniently (GenerationMetrics.read:
    # missing or odd fields None), on import too: the typed field is not what pydantic checks.
    checked = dict(d)
    slots = d.get("slots")
    if isinstance(slots, list | tuple) and all(isinstance(s, Mapping) for s in slots):
        if any(not isinstance(s.get("metrics"), Mapping | None) for s in slots):
            raise ValueError("a slot's metrics are not an object")
        checked["slots"] = [{**s, "metrics": None} for s in slots]
    if strict:
        _round_type().validate_json(json.dumps(checked), strict=True)
    else:
        _round_type().validate_python(checked)
    r = ArenaRound.build(d)
    if r.order and sorted(r.order) != list(range(len(r.slots))):
        raise ValueError("its display order does not match its slots")
    for v in (r.vote, *r.votes):
        if v is not None and v.winner is not None and not 0 <= v.winner < len(r.slots):
            raise ValueError("its vote names a slot it does not have")
    return r


def read_rounds(store: HistoryStore) -> tuple[list[ArenaRound], int]:
    """(every saved round that reads as one, oldest first by its time; how many records did
    not): `store.read(ArenaRound)`, settled as ArenaRound.from_record says."""
    rounds = store.read(ArenaRound)
    return sorted(rounds, key=lambda r: r.ts), rounds.skipped


def load_rounds(store: HistoryStore) -> list[ArenaRound]:
    """Every saved round that reads as one, oldest first (see read_rounds)."""
    return read_rounds(store)[0]


def get_round(store: HistoryStore, round_id: str) -> ArenaRound | None:
    """The saved round with this id, or None (none saved, or its record does not read as a
    round). Reads one record."""
    return store.get(ArenaRound, round_id)


def current_round(store: HistoryStore, wanted: str | None) -> ArenaRound | None:
    """The round the Race view shows: `wanted` (this session's last), else with none wanted
    the newest saved one. Reads one record, not every round: the view calls it on every rerun.
    An unreadable record never raises: a wanted one gives None; if the newest is unreadable,
    the newest readable round (read_rounds, which skips and counts such rows)."""
    if wanted is not None:
        return get_round(store, wanted)
    if (r := store.last(ArenaRound)) is not None:
        return r
    rounds = load_rounds(store)  # none saved, or the newest does not read: every round read
    return rounds[-1] if rounds else None


_RACING: set[str] = set()  # ids of the rounds whose race runs in this process now
_VOTING = threading.Lock()  # one vote at a time: reading the votes and writing them is one step


def racing(round_id: str, running: bool) -> None:
    """Marks a round as being raced in this process (ArenaRace.start) or no longer (finish):
    other browsers then read it as running, not as left behind by a process that died."""
    if running:
        _RACING.add(round_id)
    else:
        _RACING.discard(round_id)


class VotingClosed(Exception):
    """A class round's voting was closed (Close voting & reveal) before this vote landed."""


def record_vote(store: HistoryStore, rnd: ArenaRound, outcome: Outcome,
                winner: int | None = None, voter: str = "", *,
                counts: bool = True) -> ArenaRound:
    """Saves one browser session's vote on a round (replacing that session's earlier vote) and
    returns the round as that session now sees it (`seen_by`: its vote, names shown). It is the
    round's counted vote if no other session voted first. Reads the stored round afresh, so a
    vote from another browser meanwhile is kept, never overwritten.

    `counts=False` is a student's vote on a class round: kept with the others, never the
    round's counted vote (the class's verdict is, at close: `close_voting`); it raises
    VotingClosed once the stored round is closed."""
    if outcome == "win" and (winner is None or not 0 <= winner < len(rnd.slots)):
        raise ValueError("a win needs the winning slot's index")
    with _VOTING:
        now = get_round(store, rnd.id) or rnd
        if not counts and now.revealed:
            raise VotingClosed
        vote = Vote(outcome=outcome, winner=winner if outcome == "win" else None,
                    blind=now.seen_by(voter).hidden, ts=time.time(), voter=voter)
        votes = list(now.votes)
        mine = next((i for i, v in enumerate(votes) if v.voter == voter), None)
        if mine is None:
            votes.append(vote)
        else:
            votes[mine] = vote
        if not counts:
            store.update(ArenaRound, rnd.id, votes=tuple(votes))
            return replace(now, votes=tuple(votes)).seen_by(voter)
        counted = vote if now.vote is None or now.counts(voter) else now.vote
        store.update(ArenaRound, rnd.id, vote=counted, votes=tuple(votes))
    return replace(now, vote=counted, votes=tuple(votes)).seen_by(voter)


def close_voting(store: HistoryStore, rnd: ArenaRound,
                 decide: Callable[[ArenaRound], Vote | None]) -> ArenaRound:
    """Closes a class round: reveals it to every browser and stores `decide(round)` (the class's
    verdict) as its counted vote, in one step under the vote lock, so every vote saved before
    is in the verdict and none lands after. Returns the round as stored."""
    with _VOTING:
        now = get_round(store, rnd.id) or rnd
        counted = decide(now)
        store.update(ArenaRound, rnd.id, revealed=True, vote=counted)
    return replace(now, revealed=True, vote=counted)


def reveal(store: HistoryStore, rnd: ArenaRound) -> ArenaRound:
    """Shows a blind round's names to every browser."""
    store.update(ArenaRound, rnd.id, revealed=True)
    return replace(rnd, revealed=True)


def state_key(rnd: ArenaRound | None) -> str:
    """Changes whenever what any browser shows of the round changes: which round it is, whether
    it still races, its votes and its reveal. Cheap: a browser compares it every second (the
    page's round watcher). A racing round's growing replies are left out on purpose: a browser
    redrawing the page with each saved chunk would compete with the models for the machine
    the race is measured on; the replies show once the race is done."""
    if rnd is None:
        return ""
    shown = [rnd.id, rnd.state, str(rnd.revealed)]
    # A class round's votes come from the phones, many a second: the teacher's tally follows
    # them by itself (pages/parts/arena_class.py), so the page is not redrawn for each.
    votes = (rnd.vote,) if rnd.class_id else (rnd.vote, *rnd.votes)
    shown += [f"{v.voter}:{v.outcome}:{v.winner}:{v.ts}" for v in votes if v]
    return "|".join(shown)


SlotState = Literal["running", "complete", "stopped", "interrupted", "error"]
