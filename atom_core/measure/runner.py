"""Runs one or more chat streams in worker threads; the caller's thread collects the results.

Streamlit may only be called from the script thread, and a script blocked inside an HTTP read
cannot notice Stop. So workers only read HTTP and put timestamped events on a queue; the script
thread drains it with a short timeout, redraws, and stays responsive. Cancelling (Stop, a new
prompt, leaving the `with` block) makes every worker leave its stream, which closes the upstream
response so the server stops generating.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from ..errors import AtomError, ServerError
from ..server.streaming import ReplyBuffer, SSEStream
from ..types import StreamEvent

StreamFactory = Callable[[], SSEStream]  # ChatStream or another route's stream


@dataclass(slots=True)
class Slot:
    """One stream's state as seen from the caller's thread."""

    index: int
    reply: ReplyBuffer = field(default_factory=ReplyBuffer)
    error: AtomError | None = None
    done: bool = False
    cancelled: bool = False  # ended by cancel() before the server finished
    t_start_ns: int = 0  # when the worker was started (for "waiting 1.2 s" before any token)

    @property
    def ok(self) -> bool:
        return self.done and self.error is None and not self.cancelled


@dataclass(frozen=True, slots=True)
class _Started:
    t_request_ns: int


@dataclass(frozen=True, slots=True)
class _Ended:
    t_request_ns: int
    t_end_ns: int
    error: AtomError | None
    cancelled: bool


_Message = StreamEvent | _Started | _Ended


class FanOut:
    """Runs N streams at the same moment. Use as a context manager; `poll()` from one thread.

        with FanOut([lambda: client.stream_chat(...), ...]) as run:
            while not run.all_done:
                for i in run.poll(0.1):
                    draw(run.slots[i])
    """

    def __init__(self, factories: Sequence[StreamFactory]) -> None:
        self._factories = list(factories)
        self.slots = [Slot(i) for i in range(len(self._factories))]
        self._queue: queue.Queue[tuple[int, _Message]] = queue.Queue()
        self._cancel = threading.Event()
        self._threads: list[threading.Thread] = []
        self._streams: dict[int, SSEStream] = {}  # open streams, for cancel() to abort

    def start(self) -> FanOut:
        now = time.perf_counter_ns()
        for i, factory in enumerate(self._factories):
            self.slots[i].t_start_ns = now
            t = threading.Thread(
                target=self._work, args=(i, factory), name=f"atom-stream-{i}", daemon=True
            )
            self._threads.append(t)
        for t in self._threads:  # start together, after the setup above, for a fair race
            t.start()
        return self

    def __enter__(self) -> FanOut:
        return self.start() if not self._threads else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()

    @property
    def all_done(self) -> bool:
        return all(s.done for s in self.slots)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Asks every worker to leave its stream (closing its response) and marks unfinished
        slots as cancelled. Safe to call more than once; returns without waiting."""
        self._cancel.set()
        for stream in list(self._streams.values()):
            stream.abort()  # wakes a worker still waiting for its first token
        self.poll(0)  # keep whatever already arrived
        now = time.perf_counter_ns()
        for s in self.slots:
            if not s.done:
                s.done = s.cancelled = True
                s.reply.t_end_ns = s.reply.t_end_ns or now

    def poll(self, timeout: float) -> set[int]:
        """Applies queued events to the slots; waits up to `timeout` seconds for the first.

        Returns the indexes of slots that changed."""
        changed: set[int] = set()
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return changed
        while True:
            self._apply(*item)
            changed.add(item[0])
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return changed

    def join(self, timeout: float | None = None) -> None:
        """Waits for the worker threads (tests and the CLI; pages never block on this)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _apply(self, index: int, message: _Message) -> None:
        slot = self.slots[index]
        if slot.done and slot.cancelled:
            if isinstance(message, StreamEvent):
                slot.reply.add(message)  # arrived before the worker saw the cancel
            return
        if isinstance(message, _Started):
            slot.reply.t_request_ns = message.t_request_ns
        elif isinstance(message, _Ended):
            slot.reply.t_request_ns = message.t_request_ns or slot.reply.t_request_ns
            slot.reply.t_end_ns = message.t_end_ns
            slot.error = message.error
            slot.cancelled = message.cancelled
            slot.done = True
        else:
            slot.reply.add(message)

    def _work(self, index: int, factory: StreamFactory) -> None:
        put = self._queue.put
        error: AtomError | None = None
        stream: SSEStream | None = None
        try:
            stream = factory()
            self._streams[index] = stream
            if self._cancel.is_set():  # cancelled before this worker got going
                return
            with stream:
                announced = False
                for event in stream:
                    if not announced:
                        put((index, _Started(stream.t_request_ns)))
                        announced = True
                    put((index, event))
                    if self._cancel.is_set():
                        break
        except AtomError as e:
            # A connection broken by cancel() is the cancel, not a server fault.
            error = None if self._cancel.is_set() else e
        except Exception as e:  # a bug must show as a slot error, not kill the page silently
            error = ServerError(f"Unexpected error while streaming: {e!r}", detail=repr(e))
        finally:
            self._streams.pop(index, None)
            put(
                (
                    index,
                    _Ended(
                        t_request_ns=stream.t_request_ns if stream else 0,
                        t_end_ns=(stream.t_end_ns if stream else 0) or time.perf_counter_ns(),
                        error=error,
                        cancelled=self._cancel.is_set()
                        and error is None
                        and not (stream is not None and stream.finished),
                    ),
                )
            )
