"""A chat conversation's logic: building requests from history, and one reply turn that streams,
saves itself as it goes, and always ends in a recorded state."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import AtomError
from .measure.runner import FanOut, Slot
from .metrics import GenerationMetrics
from .runs import reply_state, run_record
from .types import ChatMessage, SamplingOptions

if TYPE_CHECKING:
    from .history.tinydb_store import HistoryStore, Message
    from .server.client import LMStudioClient

TITLE_CHARS = 48


def auto_title(first_prompt: str) -> str:
    """A conversation title from its first message: first line, cut at a word boundary."""
    line = " ".join(first_prompt.strip().split())
    if len(line) <= TITLE_CHARS:
        return line or "New chat"
    cut = line[:TITLE_CHARS].rsplit(" ", 1)[0]
    return (cut or line[:TITLE_CHARS]) + "…"


def history_for_request(
    messages: Sequence[Message],
    images_for: Callable[[Message], tuple[str, ...]] | None = None,
) -> list[ChatMessage]:
    """The messages to send: user and assistant turns, in order. Failed replies with no text are
    left out (the model never said them); stopped or cut replies are sent as far as they got,
    because the user saw them. `images_for` gives a user message's images as data URLs
    (atom_core.images.images_loader)."""
    out: list[ChatMessage] = []
    for m in messages:
        if m.role not in ("user", "assistant"):
            continue
        if m.role == "assistant" and not m.content.strip():
            continue
        pictures = images_for(m) if images_for is not None and m.role == "user" else ()
        out.append(ChatMessage("user" if m.role == "user" else "assistant", m.content,
                               images=pictures))
    return out


class ChatTurn:
    """One assistant reply in a stored conversation.

    `start()` saves an empty assistant message in state "interrupted" at once, so that if the
    process dies mid-reply the history still shows what was happening; while streaming, `poll()`
    saves the text every `save_every_s`; `finish()` writes the final state (complete, stopped,
    interrupted or error), the metrics, and one row in the runs table. Call `finish()` in a
    `finally:` so Stop (which raises inside the page) still saves.
    """

    def __init__(
        self,
        *,
        store: HistoryStore,
        client: LMStudioClient,
        conversation_id: str,
        model: str,
        history: Sequence[ChatMessage],
        options: SamplingOptions | None = None,
        system_prompt: str | None = None,
        ttl: int | None = None,
        source: str = "chat",
        save_every_s: float = 1.0,
    ) -> None:
        self.store = store
        self.client = client
        self.conversation_id = conversation_id
        self.model = model
        self._history = list(history)
        self._options = options
        self._system_prompt = system_prompt
        self._ttl = ttl
        self._source = source
        self._save_every_ns = int(save_every_s * 1e9)
        self._last_save_ns = 0
        self._saved_len = 0
        self._run: FanOut | None = None
        self.message_id = ""
        self.finished = False

    @property
    def slot(self) -> Slot:
        assert self._run is not None, "start() first"
        return self._run.slots[0]

    @property
    def done(self) -> bool:
        return self._run is not None and self._run.all_done

    @property
    def error(self) -> AtomError | None:
        return self.slot.error

    def start(self) -> ChatTurn:
        message = self.store.add_message(
            self.conversation_id,
            role="assistant",
            content="",
            model=self.model,
            state="interrupted",
        )
        self.message_id = message.id
        self._last_save_ns = time.perf_counter_ns()
        self._run = FanOut(
            [
                lambda: self.client.stream_chat(
                    self.model,
                    self._history,
                    options=self._options,
                    system_prompt=self._system_prompt,
                    ttl=self._ttl,
                )
            ]
        ).start()
        return self

    def poll(self, timeout: float = 0.05) -> bool:
        """Collects what arrived (waiting up to `timeout`); saves progress now and then.
        Returns True when something changed."""
        assert self._run is not None, "start() first"
        changed = bool(self._run.poll(timeout))
        now = time.perf_counter_ns()
        reply = self.slot.reply
        grown = len(reply.content) + len(reply.reasoning) != self._saved_len
        if grown and now - self._last_save_ns >= self._save_every_ns:
            self.store.update_message(
                self.conversation_id,
                self.message_id,
                content=reply.content,
                reasoning=reply.reasoning,
            )
            self._saved_len = len(reply.content) + len(reply.reasoning)
            self._last_save_ns = now
        return changed

    def stop(self) -> None:
        """Ends the upstream request now; keeps what arrived."""
        if self._run is not None:
            self._run.cancel()

    def finish(self) -> Message | None:
        """Ends the turn (cancelling it if still running) and saves its final state. Idempotent."""
        if self.finished or self._run is None:
            return None
        self.finished = True
        if not self._run.all_done:
            self._run.cancel()
        slot = self.slot
        reply = slot.reply
        metrics = reply.metrics()
        state = reply_state(slot.error, slot.cancelled)
        message = self.store.update_message(
            self.conversation_id,
            self.message_id,
            content=reply.content,
            reasoning=reply.reasoning,
            metrics=metrics.to_dict() if reply.t_request_ns else None,
            state=state,
            error=slot.error.sentence if slot.error else "",
        )
        if reply.t_request_ns:  # a request went out: it counts as a run, failed or not
            self.store.add_run(
                run_record(
                    source=self._source,
                    server=self.client.base_url,
                    model=self.model,
                    metrics=metrics,
                    error=slot.error,
                    cancelled=slot.cancelled,
                    conversation_id=self.conversation_id,
                    message_id=self.message_id,
                )
            )
        return message


def metrics_line(metrics: dict[str, Any] | None) -> str:
    """The stats caption under a stored reply."""
    if not metrics:
        return ""
    return GenerationMetrics.from_dict(metrics).summary()
