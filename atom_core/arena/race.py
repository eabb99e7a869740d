"""The race: one prompt to two to four models at the same moment.

A race goes: `setup.plan_loads()` decides which models must be loaded first and
`setup.start_load()` loads them (load time kept apart, never counted in TTFT); then `ArenaRace`
streams every slot at once through `measure.runner.FanOut`, saves the round as it goes (like
`chat.ChatTurn`) and on `finish()` writes the final `rounds.ArenaRound` to the "arena_rounds"
table and one row per slot to the runs table (source "arena"). Votes update the round's record
(`rounds.record_vote`); `leaderboard.leaderboard()` turns the votes into ratings.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..measure import hardware
from ..measure.runner import FanOut, Slot
from ..metrics import GenerationMetrics
from ..runs import RunRecord, reply_state
from ..server.routes import server_stat_fields
from ..types import (
    ChatMessage,
    ModelInfo,
)
from .rounds import (
    ArenaRound,
    SlotResult,
    SlotState,
    blind_order,
    model_facts,
    racing,
)
from .setup import SLOT_LABELS, ClientFor, Prepared, SlotSetup

if TYPE_CHECKING:
    from ..history import HistoryStore

MIN_SLOTS, MAX_SLOTS = 2, 4


# -- the race -----------------------------------------------------------------------------------


def _metrics_record(m: GenerationMetrics) -> GenerationMetrics:
    # Kept for the Stats page's token timeline; 0.1 ms is finer than any token gap and keeps a
    # 4-slot round of 256-token replies near 10 KB.
    return dataclasses.replace(m, token_offsets_ms=tuple(round(t, 1) for t in m.token_offsets_ms))


class ArenaRace:
    """One race, from start to saved round. Mirrors `chat.ChatTurn`:

    `start()` saves the round (state "running") and starts every slot at the same moment;
    `poll()` collects what arrived and saves progress every `save_every_s`; `stop()` ends every
    upstream request; `finish()` (call it in `finally:`) writes the final round and one runs row
    per slot whose request went out. Slots whose load failed start with that error."""

    def __init__(self, *, store: HistoryStore, client_for: ClientFor, prompt: str,
                 system_prompt: str, setups: Sequence[SlotSetup], prepared: Prepared,
                 models: Mapping[int, ModelInfo | None] | None = None, blind: bool = False,
                 order: Sequence[int] | None = None, save_every_s: float = 1.0,
                 images: Sequence[str] = (), class_id: str | None = None) -> None:
        if not MIN_SLOTS <= len(setups) <= MAX_SLOTS:
            raise ValueError(f"a race needs {MIN_SLOTS} to {MAX_SLOTS} slots")
        self.store = store
        self._client_for = client_for
        self.prompt = prompt
        self.system_prompt = system_prompt
        self.setups = list(setups)
        self.prepared = prepared
        self._models = models or {}
        self.blind = blind
        self.images = tuple(images)  # data URLs sent with the prompt (vision models)
        self.class_id = class_id  # a class round: the phones of this class vote on it
        self.order = tuple(order) if order else (blind_order(len(setups)) if blind
                                                 else tuple(range(len(setups))))
        self._save_every_ns = int(save_every_s * 1e9)
        self._last_save_ns = 0
        self._run: FanOut | None = None
        self.round_id = ""
        self.ts = time.time()
        self.finished = False
        self.result: ArenaRound | None = None

    @property
    def slots(self) -> list[Slot]:
        assert self._run is not None, "start() first"
        return self._run.slots

    @property
    def done(self) -> bool:
        return self._run is not None and self._run.all_done

    def _factory(self, i: int) -> Callable[[], Any]:
        error = self.prepared.errors[i]
        setup = self.setups[i]
        target = self.prepared.targets[i]

        def make() -> Any:
            if error is not None:
                raise error
            return self._client_for(setup.server).stream_route(
                setup.route, target, [ChatMessage("user", self.prompt, images=self.images)],
                options=setup.options,
                system_prompt=self.system_prompt or None, reasoning=setup.reasoning)
        return make

    def start(self) -> ArenaRace:
        self.round_id = self.store.add(self.snapshot("running"))  # the store assigns the id
        racing(self.round_id, True)  # other browsers show it as running, not as died
        self._last_save_ns = time.perf_counter_ns()
        self._run = FanOut([self._factory(i) for i in range(len(self.setups))]).start()
        return self

    def poll(self, timeout: float = 0.05) -> set[int]:
        """Applies what arrived (waiting up to `timeout`); returns the slots that changed."""
        assert self._run is not None, "start() first"
        changed = self._run.poll(timeout)
        now = time.perf_counter_ns()
        if changed and now - self._last_save_ns >= self._save_every_ns:
            self.store.update(ArenaRound, self.round_id, slots=self.snapshot("running").slots)
            self._last_save_ns = now
        return changed

    def stop(self) -> None:
        if self._run is not None:
            self._run.cancel()

    def snapshot(self, state: Literal["running", "done"] = "running",
                 run_ids: Sequence[str] = ()) -> ArenaRound:
        """The round as it stands (every slot's text and metrics so far)."""
        results = []
        for i, s in enumerate(self.setups):
            slot = self._run.slots[i] if self._run is not None else None
            reply = slot.reply if slot is not None else None
            metrics = None
            if reply is not None and reply.t_request_ns:
                metrics = _metrics_record(reply.metrics())
            if slot is None or not slot.done:
                slot_state: SlotState = "running"
            else:
                slot_state = reply_state(slot.error, slot.cancelled)
            results.append(SlotResult(
                label=SLOT_LABELS[i], server=s.server, model=s.model,
                target=self.prepared.targets[i], contestant=s.contestant,
                options=s.options.to_request(), load_config=s.load_config.to_request(),
                instance_config=self.prepared.instance_configs[i],
                model_info=model_facts(self._models.get(i)), load_s=self.prepared.load_s[i],
                route=s.route, reasoning_setting=s.reasoning,
                content=reply.content if reply else "", reasoning=reply.reasoning if reply else "",
                metrics=metrics, state=slot_state,
                error=slot.error.sentence if slot is not None and slot.error else "",
                run_id=run_ids[i] if i < len(run_ids) else "",
            ))
        return ArenaRound(id=self.round_id, ts=self.ts, prompt=self.prompt,
                          system_prompt=self.system_prompt, slots=tuple(results),
                          blind=self.blind, order=self.order,
                          notes=tuple(self.prepared.notes), state=state,
                          machine_id=hardware.session_machine_id(), class_id=self.class_id)

    def finish(self) -> ArenaRound | None:
        """Ends the race (cancelling what still runs) and saves it. Idempotent."""
        if self.finished or self._run is None:
            return self.result
        self.finished = True
        try:
            return self._save_final()
        finally:
            racing(self.round_id, False)

    def _save_final(self) -> ArenaRound:
        assert self._run is not None
        if not self._run.all_done:
            self._run.cancel()
        run_ids = []
        for i, slot in enumerate(self._run.slots):
            reply = slot.reply
            if not reply.t_request_ns:  # no request went out (load failed): not a run
                run_ids.append("")
                continue
            run_ids.append(self.store.add_run(RunRecord.measured(
                source="arena", server=self.setups[i].server, model=self.setups[i].model,
                metrics=reply.metrics(), error=slot.error, cancelled=slot.cancelled,
                round_id=self.round_id, slot=SLOT_LABELS[i],
                contestant=self.setups[i].contestant, route=self.setups[i].route,
                reasoning_setting=self.setups[i].reasoning, response_id=reply.response_id,
                **server_stat_fields(reply.server_stats),
                # its own window: a slot that ended early is recorded when the last one ends
                **hardware.window_fields(reply.t_request_ns, reply.t_end_ns))))
        final = self.snapshot("done", run_ids)
        kept = ("id", "vote", "votes", "revealed")  # a Reveal from another browser stays
        self.result = self.store.update(ArenaRound, self.round_id, **{
            f.name: getattr(final, f.name) for f in dataclasses.fields(final)
            if f.name not in kept})
        return self.result
