"""A chat conversation's logic: building requests from history, and one reply turn that streams,
saves itself as it goes, and always ends in a recorded state."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import AtomError, BadRequest
from .measure.runner import FanOut, Slot
from .records import stored_record
from .runs import RunRecord, reply_state
from .server.routes import REASONING_LEVELS, ROUTES, STATEFUL_ROUTES, server_stat_fields
from .types import ChatMessage, SamplingOptions

if TYPE_CHECKING:
    from .history import HistoryStore, Message
    from .server.client import LMStudioClient
    from .server.streaming import ReplyBuffer, SSEStream

TITLE_CHARS = 48

# A run that measured nothing: its figures stay empty (None), not 0 tokens in 9 ms.
_NOT_MEASURED = dict.fromkeys(
    ("ttft_s", "decode_tps", "e2e_s", "itl_p50_s", "itl_p95_s", "output_tokens", "prompt_tokens",
     "reasoning_tokens", "tokens_source", "finish_reason", "first_answer_s", "thinking_s",
     "pool_wait_s", "cpu_percent_mean", "cpu_percent_peak", "ram_used_mb_peak", "gpu_util_mean",
     "gpu_util_peak", "vram_used_mb_peak", "hw_samples"))


def reply_text(text: str) -> str:
    """A reply as it is stored and printed: from its first non-space character. Models start
    with the space their first token carries (" Rome, ..."); that token still counts in the
    measurements, which come from the stream, not from this text."""
    return text.lstrip()


def measured(reply: ReplyBuffer, error: AtomError | None) -> bool:
    """Whether a reply measured a generation. One that failed before its first token did not
    (say a route the server lacks): its few milliseconds are the error's round trip, so it
    shows its error sentence without figures and its run is kept without any."""
    return error is None or bool(reply.token_times_ns)


def reply_run(*, reply: ReplyBuffer, error: AtomError | None, cancelled: bool = False,
              source: str, server: str, model: str, **fields: Any) -> RunRecord:
    """The runs-table row of one reply: measured, or (failed before any token) a failed run
    with its error and no figures, so that Stats counts the failure and measures nothing."""
    record = RunRecord.measured(source=source, server=server, model=model,
                                metrics=reply.metrics(), error=error, cancelled=cancelled,
                                **fields, **server_stat_fields(reply.server_stats))
    if not measured(reply, error):
        record = record.replace(**_NOT_MEASURED)
    return record


BLANK_PROMPT = "Type a message first: one of only spaces or line breaks is not sent."


def blank_prompt(prompt: str | None, images: Sequence[object] = ()) -> bool:
    """A message with no words and no picture: nothing to send (models were asked to answer
    whitespace before, and a chat was made for it)."""
    return prompt is not None and not prompt.strip() and not images


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


# One record per conversation that left the default route: which route it uses and, on a
# stateful route, the id of the last reply the server stored (the next turn continues from it).
ROUTE_TABLE = "chat_routes"
STATE_LOST_NOTE = ("The server no longer had this conversation's stored state, so the whole "
                   "history was sent instead.")


@stored_record
@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationRoute:
    """The chat route a conversation talks over, and where a stateful route left off, as the
    "chat_routes" table keeps it (one row per conversation, under the conversation's id)."""

    TABLE: ClassVar[str] = ROUTE_TABLE

    route: str = "completions"
    response_id: str | None = None  # the last stored reply's id (native / responses)
    full_history: bool = False  # send the whole history even on a stateful route
    request_bytes: int | None = None  # the last turn's request body size
    reasoning: str | None = None  # off/on/low/medium/high on routes that take it; None: default
    id: str = field(default="", compare=False)  # the conversation's id ("" before it is saved)

    @property
    def continues_from(self) -> str | None:
        """The id the next turn sends as `previous_response_id`, if any."""
        if self.route in STATEFUL_ROUTES and not self.full_history:
            return self.response_id
        return None

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "route": self.route, "response_id": self.response_id,
                "full_history": self.full_history, "request_bytes": self.request_bytes,
                "reasoning": self.reasoning}

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> ConversationRoute:
        """Reads a stored row leniently: an unknown route reads as chat completions, a response
        id that is not one as none, odd fields as their defaults."""
        route, rid, size = row.get("route"), row.get("response_id"), row.get("request_bytes")
        return cls(id=str(row.get("id") or ""),
                   route=route if route in ROUTES else "completions",
                   response_id=rid if isinstance(rid, str) and rid.startswith("resp_") else None,
                   full_history=row.get("full_history") is True,
                   request_bytes=size if isinstance(size, int) and not isinstance(size, bool)
                   else None,
                   reasoning=row.get("reasoning") if row.get("reasoning") in REASONING_LEVELS
                   else None)

    @classmethod
    def check_import(cls, row: Mapping[str, Any]) -> None:
        """Raises ValueError when an imported row does not read as a conversation's route
        (strict: a route ATOM knows, a reasoning setting it knows, each field of its type)."""
        size = row.get("request_bytes")
        if not (isinstance(row.get("id"), str) and row.get("route", "completions") in ROUTES
                and isinstance(row.get("response_id"), str | None)
                and isinstance(row.get("full_history", False), bool)
                and (size is None or (isinstance(size, int) and not isinstance(size, bool)))
                and row.get("reasoning") in (None, *REASONING_LEVELS)):
            raise ValueError("a conversation's route is not one ATOM knows")


def conversation_route(store: HistoryStore, conversation_id: str) -> ConversationRoute:
    """The conversation's route (chat completions unless one was chosen)."""
    return store.get(ConversationRoute, conversation_id) or ConversationRoute()


def set_conversation_route(store: HistoryStore, conversation_id: str, *,
                           route: str | None = None, response_id: str | None = None,
                           full_history: bool | None = None, forget_response: bool = False,
                           request_bytes: int | None = None, reasoning: str | None = None,
                           default_reasoning: bool = False) -> ConversationRoute:
    """Changes the fields given. Picking another route forgets the stored response id (a
    server's id means nothing on another route)."""
    current = conversation_route(store, conversation_id)
    if route is not None and route not in ROUTES:
        raise ValueError(f"unknown chat route {route!r}")
    changes: dict[str, Any] = {}
    if route is not None and route != current.route:
        changes.update(route=route, response_id=None)
    if response_id is not None:
        changes["response_id"] = response_id
    if forget_response:
        changes["response_id"] = None
    if full_history is not None:
        changes["full_history"] = full_history
    if request_bytes is not None:
        changes["request_bytes"] = request_bytes
    if reasoning is not None:
        if reasoning not in REASONING_LEVELS:
            raise ValueError(f"unknown reasoning setting {reasoning!r}")
        changes["reasoning"] = reasoning
    if default_reasoning:
        changes["reasoning"] = None
    if not changes:
        return current
    if current.id:
        store.update(ConversationRoute, conversation_id, **changes)
    else:
        store.add(replace(current, id=conversation_id, **changes))
    return conversation_route(store, conversation_id)


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
        route: str = "completions",
        previous_response_id: str | None = None,
        reasoning: str | None = None,
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
        self._saved = threading.Event()  # set once finish() has written the final state
        self.route = route
        self.previous_response_id = previous_response_id  # None after a fallback to history
        self.note = ""  # a sentence for the user about how this turn was sent, if any
        self.request_bytes: int | None = None  # the request body's size, once built
        self.reasoning = reasoning

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
        self._send()
        return self

    def _send(self) -> None:
        self._run = FanOut([self._stream]).start()

    def _stream(self) -> SSEStream:
        stream = self.client.stream_route(
            self.route,
            self.model,
            self._history,
            options=self._options,
            system_prompt=self._system_prompt,
            ttl=self._ttl,
            previous_response_id=self.previous_response_id,
            reasoning=self.reasoning,
        )
        self.request_bytes = stream.request_bytes
        return stream

    def _state_lost(self) -> bool:
        """The server refused the stored id before answering anything: it no longer has it."""
        slot = self.slot
        err = slot.error
        return (slot.done and self.previous_response_id is not None and not slot.reply.tokens
                and isinstance(err, BadRequest) and "previous_response_id" in (
                    err.param + err.sentence))

    def poll(self, timeout: float = 0.05) -> bool:
        """Collects what arrived (waiting up to `timeout`); saves progress now and then.
        Returns True when something changed."""
        assert self._run is not None, "start() first"
        changed = bool(self._run.poll(timeout))
        if self._state_lost():  # resend the whole history once, and say so
            self.previous_response_id = None
            self.note = STATE_LOST_NOTE
            self._send()
            return True
        now = time.perf_counter_ns()
        reply = self.slot.reply
        grown = len(reply.content) + len(reply.reasoning) != self._saved_len
        if grown and now - self._last_save_ns >= self._save_every_ns:
            self.store.update_message(
                self.conversation_id,
                self.message_id,
                content=reply_text(reply.content),
                reasoning=reply_text(reply.reasoning),
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
        if self._run is None:
            self._saved.set()  # never started: nothing to save
        if self.finished or self._run is None:
            return None
        self.finished = True
        try:
            return self._save_final()
        finally:
            self._saved.set()

    def wait_saved(self, timeout: float) -> bool:
        """Waits until finish() has saved the final state (True), or `timeout` seconds (False).

        For the page's next run: a click while a reply streams (Stop, a model pick) starts that
        run at once on a new thread while the old one is still unwinding into finish(), so the
        next run would otherwise read the reply as start() left it ("interrupted")."""
        return self._saved.wait(timeout)

    def _save_final(self) -> Message | None:
        assert self._run is not None
        if not self._run.all_done:
            self._run.cancel()
        slot = self.slot
        reply = slot.reply
        state = reply_state(slot.error, slot.cancelled)
        shows_figures = bool(reply.t_request_ns) and measured(reply, slot.error)
        message = self.store.update_message(
            self.conversation_id,
            self.message_id,
            content=reply_text(reply.content),
            reasoning=reply_text(reply.reasoning),
            metrics=reply.metrics() if shows_figures else None,
            state=state,
            error=slot.error.sentence if slot.error else "",
        )
        if reply.t_request_ns:  # a request went out: it counts as a run, failed or not
            self.store.add_run(
                reply_run(
                    reply=reply,
                    error=slot.error,
                    cancelled=slot.cancelled,
                    source=self._source,
                    server=self.client.base_url,
                    model=self.model,
                    conversation_id=self.conversation_id,
                    message_id=self.message_id,
                    route=self.route,
                    response_id=reply.response_id,
                    previous_response_id=self.previous_response_id,
                    request_bytes=self.request_bytes,
                    reasoning_setting=self.reasoning if self.route in STATEFUL_ROUTES else None,
                )
            )
        if self.route in STATEFUL_ROUTES and reply.response_id and state == "complete":
            set_conversation_route(self.store, self.conversation_id, route=self.route,
                                   response_id=reply.response_id,
                                   request_bytes=self.request_bytes)
        elif self.note:
            set_conversation_route(self.store, self.conversation_id, forget_response=True)
        elif self.request_bytes is not None and self.route != "completions":
            set_conversation_route(self.store, self.conversation_id,
                                   request_bytes=self.request_bytes)
        return message
