"""HTTP client for LM Studio 0.4 (native /api/v1 routes) and any OpenAI-compatible server.

One `LMStudioClient` per server. It is safe to share between threads (httpx.Client is), which the
arena relies on. It remembers which dialect the server speaks after the first listing.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ..config import StreamLimits, settings_from_env
from ..errors import (
    AtomError,
    BadRequest,
    NotSupported,
    RequestTimeout,
    ServerError,
    ServerUnreachable,
)
from ..types import (
    ChatMessage,
    Dialect,
    DownloadJob,
    LoadConfig,
    LoadResult,
    ModelList,
    SamplingOptions,
    to_float,
    to_int,
)
from ..url import ServerURL
from . import routes
from .demo_model import describe_models
from .http_errors import cap, error_for_response, from_transport, is_error_body
from .listing import list_models
from .streaming import ChatStream, ReplyBuffer, SSEStream, send_retrying_stale, stream_timeout

S = TypeVar("S", bound=SSEStream)

# Connecting is quick or never; reading a chat stream may wait minutes while a big prompt is
# processed on a slow machine, and loading a large model can take minutes too.
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=10.0)
STREAM_READ_TIMEOUT = 300.0
LOAD_TIMEOUT = 900.0
# Enough connections for a 4-slot arena plus listing and polling at the same time. Load runs
# ask for more (`max_connections`): K in flight needs K connections, or requests queue on the
# client and that wait would look like the server's.
DEFAULT_MAX_CONNECTIONS = 32
MAX_CONNECTIONS = 4096


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default TLS context, built once: loading the CA bundle takes about 30 ms, which a
    bench run would otherwise pay for every client it opens."""
    return httpx.create_ssl_context()


def pool_limits(max_connections: int) -> httpx.Limits:
    """Connection limits for `max_connections` requests in flight at once (all kept alive, so
    the next request of a load run does not pay for a new connection)."""
    n = max(1, min(int(max_connections), MAX_CONNECTIONS))
    return httpx.Limits(max_connections=n, max_keepalive_connections=n)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStatus:
    """What the sidebar shows: can we talk to the server, what is it, what has it got."""

    base_url: ServerURL
    reachable: bool
    dialect: Dialect | None = None
    model_count: int = 0
    llm_count: int = 0
    loaded_count: int = 0
    error: AtomError | None = None
    models: ModelList | None = None

    @property
    def sentence(self) -> str:
        if self.error is not None:
            return self.error.sentence
        assert self.dialect is not None
        loaded = f", {self.loaded_count} loaded" if self.dialect.knows_load_state else ""
        noun = "model" if self.llm_count == 1 else "models"
        return f"{self.dialect.label} · {self.llm_count} {noun}{loaded}"


class LMStudioClient:
    """Talks to one server. Raises the errors in `atom_core.errors`, never raw httpx errors."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        limits: StreamLimits | None = None,
    ) -> None:
        settings = settings_from_env() if base_url is None or limits is None else None
        if base_url is None:
            assert settings is not None
            base_url, token = settings.server_url, token or settings.api_token
        self.base_url = ServerURL(base_url)  # the same object when given a ServerURL
        self.token = token or None
        self.dialect: Dialect | None = None
        self.limits = limits or (settings.limits if settings else StreamLimits())
        self.max_connections = max_connections
        self._route_errors: dict[str, NotSupported] = {}  # chat routes this server lacks
        self._routes_probed: set[str] = set()
        self._headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._timeout = timeout
        self._transport = transport
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=self._headers,
            timeout=timeout,
            transport=transport,
            limits=pool_limits(max_connections),
            verify=tls_context(),
        )

    def with_pool(self, max_connections: int) -> LMStudioClient:
        """A client for the same server, token, timeouts and limits whose connection pool holds
        at least `max_connections` (the load engine's threaded routes: K in flight over the
        synchronous client must not queue on its default pool of 32). Returns this client when
        its pool is big enough already; otherwise a new one, which the caller closes."""
        if self.max_connections >= max_connections:
            return self
        other = LMStudioClient(self.base_url, token=self.token, timeout=self._timeout,
                               transport=self._transport, max_connections=max_connections,
                               limits=self.limits)
        other.dialect = self.dialect
        return other

    @property
    def route_errors(self) -> Mapping[str, NotSupported]:
        """The chat routes a request found this server lacks, with the error it raised."""
        return dict(self._route_errors)

    def learn_routes(self, other: LMStudioClient) -> None:
        """Remembers the chat routes `other` (a with_pool twin) found this server lacks."""
        if other.base_url == self.base_url:
            self._route_errors.update(other.route_errors)

    def async_http(
        self, max_connections: int, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> httpx.AsyncClient:
        """An asyncio client for the same server and token, with a pool of `max_connections`
        (the load engine's; the caller closes it)."""
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=self._timeout,
            transport=transport, limits=pool_limits(max_connections), verify=tls_context(),
        )

    def chat_body(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        options: SamplingOptions | None = None,
        system_prompt: str | None = None,
        ttl: int | None = None,
    ) -> dict[str, Any]:
        """The JSON body `stream_chat` sends (for the load engine, which sends it itself)."""
        return routes.completions_body(model, messages, options=options,
                                       system_prompt=system_prompt, ttl=self._ttl(ttl))

    def error_for(self, response: httpx.Response, *, model: str = "") -> AtomError:
        """The AtomError for an error response (its body already read)."""
        return error_for_response(response, url=self.base_url, model=model)

    def __repr__(self) -> str:  # never show the token
        return f"LMStudioClient({self.base_url!r}, token={'set' if self.token else 'none'})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LMStudioClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- listing -------------------------------------------------------------------------------

    def list_models(self) -> ModelList:
        """Every model the server offers, trying the richest route first.

        `/api/v1/models` (LM Studio 0.4: every downloaded model with load state), then
        `/api/v0/models` (0.3.x), then `/v1/models` (any OpenAI-compatible server; may list only
        loaded models). Auth and connection errors stop the search at once. The dialect that
        answered is remembered and asked first next time.
        """
        listing = list_models(self._get_json, base_url=self.base_url, known=self.dialect)
        self.dialect = listing.dialect
        return describe_models(listing)  # the bundled demo engine: what ATOM knows of it

    def status(self) -> ServerStatus:
        """Reachability, dialect and model counts, for a status line. Never raises AtomError."""
        try:
            listing = self.list_models()
        except AtomError as e:
            return ServerStatus(base_url=self.base_url, reachable=not _is_unreachable(e), error=e)
        llms = listing.llms
        return ServerStatus(
            base_url=self.base_url,
            reachable=True,
            dialect=listing.dialect,
            model_count=len(listing.models),
            llm_count=len(llms),
            loaded_count=sum(1 for m in llms if m.is_loaded),
            models=listing,
        )

    # -- chat ----------------------------------------------------------------------------------

    def stream_chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        options: SamplingOptions | None = None,
        system_prompt: str | None = None,
        ttl: int | None = None,
        response_format: Mapping[str, Any] | None = None,
    ) -> ChatStream:
        """Starts a streamed reply (`POST /v1/chat/completions`, `stream: true`).

        Nothing is sent until the stream is iterated. `system_prompt`, when given, is sent as
        the first message. `ttl` (seconds) asks LM Studio to unload a model this request loads
        just-in-time after that long idle. `response_format` is sent as given (the judge asks
        for a JSON schema).
        """
        body = self.chat_body(model, messages, options=options, system_prompt=system_prompt,
                              ttl=ttl)
        if response_format is not None:
            body["response_format"] = dict(response_format)
        request = self.build_request("POST", routes.ROUTE_TABLE["completions"].path, json=body,
                                     timeout=stream_timeout(self.limits))
        return self.open_stream(ChatStream, request, model=model)

    def stream_route(
        self,
        route: str,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        options: SamplingOptions | None = None,
        system_prompt: str | None = None,
        ttl: int | None = None,
        previous_response_id: str | None = None,
        reasoning: str | None = None,
    ) -> SSEStream:
        """Starts a streamed reply over one chat route (routes.ROUTES): "completions" (the
        default, same as `stream_chat`), "native" (LM Studio's /api/v1/chat), "responses"
        (/v1/responses) or "messages" (/v1/messages, Anthropic).

        On the stateful routes (native, responses) `previous_response_id` continues a stored
        conversation: only the last user message is sent. `reasoning` (off/on/low/medium/high)
        is passed where the route takes it; `ttl` only where it is documented (completions).
        A route the server lacks raises NotSupported while iterating, and is remembered
        (`route_problem`). Nothing is sent until the stream is iterated."""
        spec = routes.ROUTE_TABLE.get(route)
        if spec is None:
            raise ValueError(f"unknown chat route {route!r}; one of {', '.join(routes.ROUTES)}")
        body = spec.body(model, messages, options=options, system_prompt=system_prompt,
                         previous_response_id=previous_response_id, reasoning=reasoning,
                         ttl=self._ttl(ttl))
        request = self.build_request("POST", spec.path, json=body, headers=spec.headers(self.token),
                                     timeout=stream_timeout(self.limits))
        return spec.stream(self._http, request, base_url=self.base_url, model=model,
                           error_for=self._route_error_mapper(route, model), limits=self.limits)

    def route_problem(self, route: str) -> str | None:
        """Why this server cannot serve `route`, once a request found out; None when it can
        (or nobody has tried)."""
        err = self._route_errors.get(route)
        return err.sentence if err is not None else None

    def probe_route(self, route: str) -> str | None:
        """Asks the server once whether it has `route` (an empty POST: a route that exists
        rejects the body, an unknown one answers LM Studio's 200 + "Unexpected endpoint" or a
        404) and remembers the answer. Returns `route_problem(route)`."""
        if route in self._routes_probed or route == "completions":
            return self.route_problem(route)
        try:
            self._request_json("POST", routes.ROUTE_PATHS[route], body={})
        except NotSupported as e:
            self._route_errors[route] = e
        except AtomError:
            pass  # the route exists and refused an empty request, or the server failed
        self._routes_probed.add(route)
        return self.route_problem(route)

    def _route_error_mapper(self, route: str, model: str) -> Callable[[httpx.Response], AtomError]:
        def mapper(response: httpx.Response) -> AtomError:
            err = error_for_response(response, url=self.base_url, model=model)
            if isinstance(err, NotSupported):
                self._route_errors[route] = err
            return err

        return mapper

    def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        options: SamplingOptions | None = None,
        system_prompt: str | None = None,
        ttl: int | None = None,
    ) -> ReplyBuffer:
        """Streams a whole reply and returns it with its timings (for the CLI and bench)."""
        reply = ReplyBuffer()
        with self.stream_chat(
            model, messages, options=options, system_prompt=system_prompt, ttl=ttl
        ) as stream:
            try:
                for event in stream:
                    reply.add(event)
            finally:
                reply.timed_by(stream)
        return reply

    def _ttl(self, ttl: int | None) -> int | None:
        """`ttl` is LM Studio's just-in-time setting: a server known to be a plain
        OpenAI-compatible one never asked for it, so it is not sent there."""
        return None if self.dialect is Dialect.OPENAI else ttl

    # -- model management (LM Studio 0.4 native routes) ----------------------------------------

    def load_model(
        self, key: str, config: LoadConfig | None = None, *, echo_config: bool = True
    ) -> LoadResult:
        """Loads a model (`POST /api/v1/models/load`) and returns what the server applied.

        Sends only the documented keys. If the server rejects one of them (HTTP 400 naming the
        key), it is dropped and the load retried; `LoadResult.rejected_keys` says which.
        """
        config = config or LoadConfig()
        rejected: list[str] = []
        while True:
            body: dict[str, Any] = {"model": key, **config.to_request()}
            if echo_config:
                body["echo_load_config"] = True
            try:
                data = self._post_json(
                    "/api/v1/models/load", body, model=key, timeout=LOAD_TIMEOUT
                )
                break
            except BadRequest as e:
                param = _rejected_key(e, config)
                if param is None:
                    raise
                rejected.append(param)
                config = replace(config, **{param: None})
        instance = data.get("instance_id") or data.get("model_instance_id") or key
        applied = data.get("load_config")
        return LoadResult(
            instance_id=str(instance),
            type=str(data.get("type") or "llm"),
            load_time_s=to_float(data.get("load_time_seconds")),
            status=str(data.get("status") or "loaded"),
            applied_config=applied if isinstance(applied, dict) else None,
            rejected_keys=tuple(rejected),
        )

    def unload_model(self, instance_id: str) -> str:
        """Unloads one loaded instance (`POST /api/v1/models/unload`); returns its id."""
        data = self._post_json(
            "/api/v1/models/unload", {"instance_id": instance_id}, model=instance_id
        )
        return str(data.get("instance_id") or instance_id)

    def download_model(self, model: str, *, quantization: str | None = None) -> DownloadJob:
        """Starts a download by catalog id or Hugging Face URL (`POST /api/v1/models/download`).

        `quantization` is only honoured for Hugging Face URLs (LM Studio's rule)."""
        body: dict[str, Any] = {"model": model}
        if quantization:
            body["quantization"] = quantization
        return _download_job(self._post_json("/api/v1/models/download", body, model=model))

    def download_status(self, job_id: str) -> DownloadJob:
        """The progress of a download job (`GET /api/v1/models/download/status/{job_id}`)."""
        return _download_job(self._get_json(f"/api/v1/models/download/status/{job_id}"))

    # -- requests, for every route -------------------------------------------------------------

    def build_request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        timeout: httpx.Timeout | float | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Request:
        """A request to `path` on this server, carrying the client's token. Nothing is sent."""
        kwargs: dict[str, Any] = {}
        if json is not None:
            kwargs["json"] = json
        if timeout is not None:
            kwargs["timeout"] = timeout
        if headers:
            kwargs["headers"] = headers
        return self._http.build_request(method, path, **kwargs)

    def open_stream(self, stream_class: type[S], request: httpx.Request, *, model: str = "") -> S:
        """A stream of `stream_class` (ChatStream or a route's stream) over this client's
        connections. Nothing is sent until it is iterated."""
        return stream_class(self._http, request, base_url=self.base_url, model=model,
                            limits=self.limits)

    def _get_json(self, path: str) -> Any:
        return self._request_json("GET", path)

    def _post_json(
        self, path: str, body: dict[str, Any], *, model: str = "", timeout: float | None = None
    ) -> Any:
        return self._request_json("POST", path, body=body, model=model, timeout=timeout)

    def _request_json(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        model: str = "",
        timeout: float | None = None,
    ) -> Any:
        url = f"{self.base_url}{path}"
        request = self.build_request(
            method, path, json=body,
            timeout=httpx.Timeout(timeout, connect=5.0) if timeout is not None else None,
        )
        try:
            # Only reads are sent twice: a load or download must not run twice.
            response = (
                send_retrying_stale(self._http, request)
                if method == "GET"
                else self._http.send(request)
            )
        except httpx.TransportError as e:
            raise from_transport(e, url=self.base_url, request_line=f"{method} {path}") from e
        if response.status_code >= 400:
            raise error_for_response(response, url=self.base_url, model=model)
        try:
            data = response.json()
        except ValueError:
            raise ServerError(
                f"The server answered {method} {path} with something that is not JSON.",
                url=url,
                detail=cap(response.text),
            ) from None
        if is_error_body(data):
            # LM Studio answers unknown routes with HTTP 200 and an error body.
            raise error_for_response(response, url=self.base_url, model=model)
        return data

def _download_job(data: dict[str, Any]) -> DownloadJob:
    return DownloadJob(
        status=str(data.get("status") or "unknown").lower(),  # "FAILED" is still failed
        job_id=data.get("job_id"),
        total_bytes=to_int(data.get("total_size_bytes")),
        downloaded_bytes=to_int(data.get("downloaded_bytes")),
        bytes_per_second=to_float(data.get("bytes_per_second")),
        estimated_completion=data.get("estimated_completion"),
        started_at=data.get("started_at"),
        completed_at=data.get("completed_at"),
    )


def _rejected_key(error: BadRequest, config: LoadConfig) -> str | None:
    """The LoadConfig field a 400 names, if it is one we set (so dropping it can help)."""
    sent = config.to_request()
    if error.param in sent:
        return error.param
    for key in sent:
        if f"'{key}'" in error.sentence or f'"{key}"' in error.sentence:
            return key
    return None


def _is_unreachable(e: AtomError) -> bool:
    return isinstance(e, ServerUnreachable | RequestTimeout)


