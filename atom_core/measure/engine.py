"""The load engine: many streamed requests at once on one asyncio loop over httpx.AsyncClient.

A thread per stream does not keep up at hundreds of streams on a small machine: the client
becomes the bottleneck it is measuring. One event loop does (the design of vLLM's
`bench serve`). This module runs that loop in a thread of its own, so callers stay synchronous:
`loadrun.run_load` hands it jobs and reads finished records from a queue.

Rules that keep the figures honest:
- Each server gets connections for every request that may be in flight to it (`K x lanes`),
  so no request waits on the client for a connection; they are spread over AsyncClients of at
  most SHARD connections (ShardedPool), because httpcore's pool work grows with its size.
- TTFT starts when the request is sent: when httpcore has written its headers and starts on
  its body (server.sse.StreamClock). Any wait before that, for a connection, for connecting,
  or for a loop busy with other streams, is recorded apart (`pool_wait_s`), never in TTFT.
- A stream ends as stalled when no token arrives for the stall timeout, however many keep-alive
  comments the server sends; the whole request has a deadline too (config.StreamLimits).
- A pool timeout is a client-side error (ClientPoolTimeout), never "the server did not answer".

The streams are server.async_stream.AsyncChatStream: ChatStream's decoder, clock and frames on
an AsyncClient, their events collected in a ReplyBuffer, so a record from here and one from
Chat are measured by the same code.

Routes: chat completions (the default, and what benches and sweeps use) run on the loop. A job
on another chat route (LoadJob.route: native, responses, messages) runs that route's
synchronous SSEStream (client.stream_route) in a worker thread of the engine's own pool, one
thread per worker so K stays K; the loop's watcher applies the same stall rules to it
(SSEStream.check_stall) and aborts it on cancel. Those requests go over a synchronous client
whose pool is sized like the loop's (`K x lanes` per server; LMStudioClient.with_pool), not
the caller's client with its default pool of 32, so at K > 32 they do not queue on ATOM's
side either; their pool wait is timed by SSEStream the same way.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from ..errors import AtomError, ServerError
from ..server.async_stream import AsyncChatStream
from ..server.streaming import ReplyBuffer, SSEStream
from ..types import ChatMessage
from .jobs import LoadJob

if TYPE_CHECKING:
    from ..server.client import LMStudioClient

# How often the loop looks at the caller's cancel flag.
CANCEL_POLL_S = 0.05
# Most connections one AsyncClient of the engine holds (ShardedPool).
SHARD = 32
# Streams started before the loop gets a turn to read (hundreds starting at once would
# otherwise keep first tokens waiting behind their connection work).
START_BATCH = 32


@dataclass(slots=True)
class Outcome:
    """What one request came to, before it becomes a LoadRecord."""

    job: LoadJob
    server: str
    reply: ReplyBuffer
    error: AtomError | None
    cancelled: bool
    started_at: float  # wall clock when ATOM asked to send
    t_call_ns: int  # perf_counter_ns when ATOM asked to send (before any pool wait)


def lane_key(job: LoadJob, shared: bool) -> tuple[str, str]:
    """Which lane of K a job runs in: one per (server, model), or one for all when shared."""
    return ("", "") if shared else (job.server, job.model)


def plan_lanes(jobs: Sequence[LoadJob], shared: bool) -> dict[tuple[str, str], deque[LoadJob]]:
    """Jobs split into lanes, each keeping the jobs' order."""
    lanes: dict[tuple[str, str], deque[LoadJob]] = {}
    for job in jobs:
        lanes.setdefault(lane_key(job, shared), deque()).append(job)
    return lanes


def pool_sizes(jobs: Sequence[LoadJob], concurrency: int, shared: bool,
               base_url_for: Callable[[str], str]) -> dict[str, int]:
    """Connections each server's pool needs so that no request waits on the client: K for
    every lane that sends to it (at most its number of jobs)."""
    sizes: dict[str, int] = {}
    for (_server, _model), lane in plan_lanes(jobs, shared).items():
        per_server: dict[str, int] = {}
        for job in lane:
            url = base_url_for(job.server)
            per_server[url] = per_server.get(url, 0) + 1
        for url, n in per_server.items():
            sizes[url] = sizes.get(url, 0) + min(concurrency, n)
    return sizes


class ShardedPool:
    """The connections to one server, spread over AsyncClients of at most SHARD connections.

    httpcore's pool walks every connection it holds on each request and each response closed:
    one pool of 1,024 spent over a second of CPU on that alone while a K = 1,024 run started
    (requests waiting to be written, first tokens waiting to be read). Each request takes the
    least busy client; a client holds `ceil(size / clients)` connections and a spare for a
    retry, so while at most `size` requests are in flight none waits for a connection."""

    def __init__(self, make: Callable[[int], httpx.AsyncClient], size: int) -> None:
        n = max(1, -(-size // SHARD))
        per = -(-max(1, size) // n)
        self.clients = [make(per + 2) for _ in range(n)]
        self.in_flight = [0] * n

    def acquire(self) -> int:
        """The index of the client with the fewest requests in flight, counted in."""
        counts = self.in_flight
        i = counts.index(min(counts))
        counts[i] += 1
        return i

    def release(self, i: int) -> None:
        self.in_flight[i] -= 1

    async def aclose(self) -> None:
        for http in self.clients:
            await http.aclose()


class LoadEngine:
    """Runs jobs with K in flight per lane on an asyncio loop in its own thread.

    `put(outcome)` is called from the loop's thread for every finished request and `put(None)`
    once at the end; setting `cancel` ends the run (streams in flight close their responses).
    """

    def __init__(
        self,
        jobs: Sequence[LoadJob],
        *,
        client_for: Callable[[str], LMStudioClient],
        concurrency: int,
        shared: bool,
        cancel: threading.Event,
        put: Callable[[Outcome | None], None],
        transport_for: Callable[[str], httpx.AsyncBaseTransport | None] | None = None,
    ) -> None:
        self._jobs = list(jobs)
        self._client_for = client_for
        self._concurrency = concurrency
        self._shared = shared
        self._cancel = cancel
        self._put = put
        self._transport_for = transport_for
        self._thread: threading.Thread | None = None
        self._active: set[AsyncChatStream] = set()
        self._threaded: set[SSEStream] = set()  # other routes' streams, read in threads
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> LoadEngine:
        self._thread = threading.Thread(target=self._main, name="atom-load-engine", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        finally:
            self._put(None)

    async def _run(self) -> None:
        clients: dict[str, LMStudioClient] = {}
        for job in self._jobs:
            if job.server not in clients:
                clients[job.server] = self._client_for(job.server)
        sizes = pool_sizes(self._jobs, self._concurrency, self._shared,
                           lambda s: clients[s].base_url)
        https: dict[str, ShardedPool] = {}
        for client in clients.values():
            if client.base_url not in https:
                transport = self._transport_for(client.base_url) if self._transport_for else None
                https[client.base_url] = ShardedPool(
                    functools.partial(client.async_http, transport=transport),
                    sizes.get(client.base_url, 1))
        lanes = plan_lanes(self._jobs, self._shared)
        n_workers = sum(min(self._concurrency, len(lane)) for lane in lanes.values())
        # other routes: a synchronous client per server with a connection for each worker
        threaded = [job for job in self._jobs if job.route != "completions"]
        route_clients: dict[str, LMStudioClient] = {}
        if threaded:
            self._executor = ThreadPoolExecutor(max_workers=max(1, n_workers),
                                                thread_name_prefix="atom-load-route")
            need = pool_sizes(threaded, self._concurrency, self._shared,
                              lambda s: clients[s].base_url)
            for server, client in clients.items():
                if client.base_url in need:
                    route_clients[server] = client.with_pool(need[client.base_url] + 4)
        try:
            workers: list[asyncio.Future[None]] = []
            watcher = asyncio.ensure_future(self._watch_cancel(workers))
            for lane in lanes.values():
                for _ in range(min(self._concurrency, len(lane))):
                    workers.append(asyncio.ensure_future(
                        self._worker(lane, clients, https, route_clients)))
                    if len(workers) % START_BATCH == 0:
                        # let the loop read what has arrived before starting more streams
                        await asyncio.sleep(0)
                        if self._cancel.is_set():
                            break
            await asyncio.gather(*workers, return_exceptions=True)
            watcher.cancel()
        finally:
            for pool in https.values():
                await pool.aclose()
            if self._executor is not None:
                for stream in list(self._threaded):
                    stream.abort()
                self._executor.shutdown(wait=True)
            for server, route_client in route_clients.items():
                if route_client is not clients[server]:
                    clients[server].learn_routes(route_client)
                    route_client.close()

    async def _watch_cancel(self, workers: Sequence[asyncio.Future[None]]) -> None:
        """Ends everything when the caller cancels; ends stalled streams on the way."""
        while not self._cancel.is_set():
            await asyncio.sleep(CANCEL_POLL_S)
            now = time.perf_counter_ns()
            end_stalled(self._active, now)
            for stream in list(self._threaded):
                stream.check_stall(now)
        for stream in list(self._threaded):
            stream.abort()  # wakes a thread blocked on a read
        for w in workers:
            w.cancel()

    async def _worker(self, lane: deque[LoadJob], clients: dict[str, LMStudioClient],
                      https: dict[str, ShardedPool],
                      route_clients: dict[str, LMStudioClient]) -> None:
        while lane and not self._cancel.is_set():
            job = lane.popleft()
            client = clients[job.server]
            if job.route != "completions" and self._executor is not None:
                loop = asyncio.get_running_loop()
                outcome = await loop.run_in_executor(
                    self._executor, run_one_threaded, job, route_clients.get(job.server, client),
                    self._cancel, self._threaded)
            else:
                pool = https[client.base_url]
                member = pool.acquire()
                try:
                    outcome = await run_one(job, client, pool.clients[member],
                                            cancel=self._cancel, active=self._active)
                finally:
                    pool.release(member)
            self._put(outcome)


def run_one_threaded(job: LoadJob, client: LMStudioClient, cancel: threading.Event | None = None,
                     active: set[SSEStream] | None = None) -> Outcome:
    """One request on `job.route` over the synchronous client (client.stream_route), measured
    by the same SSEStream as Chat: stall rules, pool-wait timing. `active` is the engine's set
    of such streams, which its watcher checks for stalls and aborts on cancel. Never raises for
    a failed request."""
    reply = ReplyBuffer()
    error: AtomError | None = None
    started = time.time()
    stream: SSEStream | None = None
    try:
        stream = client.stream_route(job.route, job.model, [ChatMessage("user", job.prompt)],
                                     options=job.options, system_prompt=job.system_prompt,
                                     reasoning=job.reasoning)
        if active is not None:
            active.add(stream)
        with stream:
            for event in stream:
                reply.add(event)
                if cancel is not None and cancel.is_set():
                    break
    except AtomError as e:
        error = e
    except Exception as e:  # a bug must become a failed record, not a dead worker
        error = ServerError(f"Unexpected error: {e!r}", detail=repr(e))
    finally:
        if stream is not None:
            reply.timed_by(stream)
            if active is not None:
                active.discard(stream)
    finished = stream is not None and stream.finished
    cancelled = error is None and not finished
    if cancel is not None and cancel.is_set() and error is not None and not finished:
        error, cancelled = None, True  # a stream cut by the cancel is the cancel
    return Outcome(job=job, server=client.base_url, reply=reply, error=error,
                   cancelled=cancelled, started_at=started,
                   t_call_ns=stream.t_call_ns if stream is not None else 0)


def end_stalled(streams: set[AsyncChatStream], now_ns: int) -> list[AsyncChatStream]:
    """Cancels every stream that has stalled (StallWatch's rules), marking it so its request
    ends as StreamStalled rather than cancelled. Returns the streams it ended."""
    ended = []
    for stream in list(streams):
        watch = stream.watch
        if watch is None or stream.stalled is not None or stream.task is None:
            continue
        stalled = watch.stalled(now_ns, stream.base_url)
        if stalled is not None:
            stream.stalled = stalled
            stream.task.cancel()
            ended.append(stream)
    return ended


async def run_one(job: LoadJob, client: LMStudioClient, http: httpx.AsyncClient, *,
                  cancel: threading.Event | None = None,
                  active: set[AsyncChatStream] | None = None) -> Outcome:
    """One streamed request, measured. Never raises for a failed request (the error is on the
    outcome); a cancelled task ends the request and returns it as cancelled, or as stalled
    when the engine's watcher cancelled it for that. `active` is the watcher's set of open
    streams."""
    reply = ReplyBuffer()
    started = time.time()
    body = client.chat_body(job.model, [ChatMessage("user", job.prompt)], options=job.options,
                            system_prompt=job.system_prompt)
    stream = AsyncChatStream(http, body, base_url=client.base_url, model=job.model,
                             limits=client.limits)
    stream.task = asyncio.current_task()
    error: AtomError | None = None
    cancelled = False
    if active is not None:
        active.add(stream)
    try:
        await stream.read_into(reply.add)
    except asyncio.CancelledError:
        if stream.stalled is not None:
            error = stream.stalled
            if stream.task is not None:
                stream.task.uncancel()  # the worker goes on to its next job
        else:
            cancelled = True
    except AtomError as e:
        error = e
    except Exception as e:  # a bug must become a failed record, not a dead worker
        error = ServerError(f"Unexpected error: {e!r}", detail=repr(e))
    finally:
        if active is not None:
            active.discard(stream)
    if error is None and not cancelled and not stream.finished:
        cancelled = True
    if cancel is not None and cancel.is_set() and error is not None and not stream.finished:
        error, cancelled = None, True  # a stream cut by the cancel is the cancel
    stream.end()  # a request cancelled before it was sent ends here
    reply.timed_by(stream)
    return Outcome(job=job, server=client.base_url, reply=reply, error=error,
                   cancelled=cancelled, started_at=started, t_call_ns=stream.t_call_ns)
