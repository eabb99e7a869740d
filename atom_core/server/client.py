"""HTTP client for LM Studio 0.4 (native /api/v1 routes) and any OpenAI-compatible server.

One `LMStudioClient` per server. It is safe to share between threads (httpx.Client is), which the
arena relies on. It remembers which dialect the server speaks after the first listing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import httpx

from ..config import normalize_base_url, settings_from_env
from ..errors import (
    AtomError,
    AuthError,
    BadRequest,
    ModelNotFound,
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
    LoadedInstance,
    LoadResult,
    ModelInfo,
    ModelList,
    SamplingOptions,
    to_float,
    to_int,
)
from .streaming import ChatStream, ReplyBuffer, error_message, send_retrying_stale

# Connecting is quick or never; reading a chat stream may wait minutes while a big prompt is
# processed on a slow machine, and loading a large model can take minutes too.
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=10.0)
STREAM_READ_TIMEOUT = 300.0
LOAD_TIMEOUT = 900.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStatus:
    """What the sidebar shows: can we talk to the server, what is it, what has it got."""

    base_url: str
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
    ) -> None:
        if base_url is None:
            settings = settings_from_env()
            base_url, token = settings.server_url, token or settings.api_token
        self.base_url = normalize_base_url(base_url)
        self.token = token or None
        self.dialect: Dialect | None = None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            # Enough connections for a 4-slot arena plus listing and polling at the same time.
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
        )

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
        loaded models). Auth and connection errors stop the search at once.
        """
        attempts: list[tuple[str, Dialect]] = [
            ("/api/v1/models", Dialect.LMSTUDIO_04),
            ("/api/v0/models", Dialect.LMSTUDIO_03),
            ("/v1/models", Dialect.OPENAI),
        ]
        if self.dialect is not None:  # ask the known route first; fall back if it changed
            attempts.sort(key=lambda a: a[1] is not self.dialect)
        last: AtomError | None = None
        for route, dialect in attempts:
            try:
                body = self._get_json(route)
                models = _parse_listing(body, dialect)
            except (NotSupported, _WrongShape) as e:
                last = e if isinstance(e, AtomError) else None
                continue
            self.dialect = dialect
            return ModelList(
                models=tuple(models),
                dialect=dialect,
                route=route,
                loaded_only=dialect is Dialect.OPENAI,
            )
        raise last or NotSupported(
            f"The server at {self.base_url} answered, but not like LM Studio or an "
            "OpenAI-compatible server (no model list at /api/v1/models or /v1/models).",
            url=self.base_url,
        )

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
        body = self._chat_body(model, messages, options, system_prompt, ttl)
        if response_format is not None:
            body["response_format"] = dict(response_format)
        request = self._http.build_request(
            "POST",
            "/v1/chat/completions",
            json=body,
            timeout=httpx.Timeout(connect=5.0, read=STREAM_READ_TIMEOUT, write=30.0, pool=10.0),
        )
        return ChatStream(
            self._http,
            request,
            base_url=self.base_url,
            error_for=lambda r: self._error_for(r, model=model),
        )

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
                reply.t_request_ns, reply.t_end_ns = stream.t_request_ns, stream.t_end_ns
        return reply

    @staticmethod
    def _chat_body(
        model: str,
        messages: Sequence[ChatMessage],
        options: SamplingOptions | None,
        system_prompt: str | None,
        ttl: int | None,
    ) -> dict[str, Any]:
        wire = [m.to_request() for m in messages]
        if system_prompt and system_prompt.strip():
            wire = [{"role": "system", "content": system_prompt}, *wire]
        body: dict[str, Any] = {
            "model": model,
            "messages": wire,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        body.update((options or SamplingOptions()).to_request())
        if ttl:
            body["ttl"] = int(ttl)
        return body

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

    # -- plumbing ------------------------------------------------------------------------------

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
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=5.0)
        try:
            request = self._http.build_request(method, path, **kwargs)
            # Only reads are sent twice: a load or download must not run twice.
            response = (
                send_retrying_stale(self._http, request)
                if method == "GET"
                else self._http.send(request)
            )
        except httpx.TimeoutException as e:
            raise RequestTimeout(
                f"The server at {self.base_url} did not answer {method} {path} in time.",
                url=url,
                detail=str(e),
            ) from e
        except httpx.TransportError as e:
            raise ServerUnreachable.at(self.base_url, str(e)) from e
        if response.status_code >= 400:
            raise self._error_for(response, model=model)
        try:
            data = response.json()
        except ValueError:
            raise ServerError(
                f"The server answered {method} {path} with something that is not JSON.",
                url=url,
                detail=response.text[:500],
            ) from None
        if isinstance(data, dict) and data.get("error"):
            # LM Studio answers unknown routes with HTTP 200 and an error body.
            raise self._error_for(response, model=model)
        return data

    def _error_for(self, response: httpx.Response, *, model: str = "") -> AtomError:
        """Maps an error response to the matching AtomError with a sentence a user can act on."""
        url = str(response.request.url) if response.request else self.base_url
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        message = error_message(body) if body else f"HTTP {response.status_code}"
        err = body.get("error") if isinstance(body, dict) else None
        fields = err if isinstance(err, dict) else {}
        code = str(fields.get("code") or "")
        etype = str(fields.get("type") or "")
        detail = json.dumps(body)[:500] if not isinstance(body, str) else body[:500]
        status = response.status_code
        path = response.request.url.path if response.request else ""

        if status in (401, 403) or code == "invalid_api_key":
            return AuthError.for_request(url, token_sent=bool(self.token), detail=detail)
        if "Unexpected endpoint" in message:
            return NotSupported(
                f"This server does not offer {response.request.method} {path} "
                "(it may be an older LM Studio or a plain OpenAI-compatible server).",
                url=url,
                detail=detail,
            )
        if code == "model_not_found" or etype == "model_not_found" or (
            status == 404 and model and "model" in message.lower()
        ):
            return ModelNotFound(
                f"The server has no model called “{model}”. Pick one from the list, or download "
                f"it first. (Server said: {message})",
                url=url,
                detail=detail,
                model=model,
            )
        if status == 404 and etype == "job_not_found":
            return ServerError(
                f"The server has no download job with that id. (Server said: {message})",
                url=url,
                detail=detail,
            )
        if status == 404 and "instance" in path + message.lower():
            return ModelNotFound(
                f"No loaded instance “{model}” on the server; it may already be unloaded. "
                f"(Server said: {message})",
                url=url,
                detail=detail,
                model=model,
            )
        if status == 404 or status == 405:
            return NotSupported(
                f"This server does not offer {response.request.method} {path}.",
                url=url,
                detail=detail,
            )
        if status == 400 or status == 422:
            return BadRequest(
                f"The server rejected the request: {message}",
                url=url,
                detail=detail,
                param=str(fields.get("param") or ""),
            )
        return ServerError(
            f"The server failed (HTTP {status}): {message}", url=url, detail=detail
        )


class _WrongShape(Exception):
    """A listing route answered, but not with the shape its dialect uses."""


def _parse_listing(body: Any, dialect: Dialect) -> list[ModelInfo]:
    if dialect is Dialect.LMSTUDIO_04:
        if not isinstance(body, dict) or not isinstance(body.get("models"), list):
            raise _WrongShape()
        return [_native_model(m) for m in body["models"] if isinstance(m, dict) and m.get("key")]
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise _WrongShape()
    items = [m for m in body["data"] if isinstance(m, dict) and m.get("id")]
    if dialect is Dialect.LMSTUDIO_03:
        if items and not any("state" in m for m in items):
            raise _WrongShape()  # an OpenAI list served under /api/v0 by some proxy
        return [_v0_model(m) for m in items]
    return [_openai_model(m) for m in items]


def _native_model(m: dict[str, Any]) -> ModelInfo:
    quant = m.get("quantization") or {}
    caps = m.get("capabilities") or {}
    capabilities = tuple(
        name
        for name, present in (
            ("vision", caps.get("vision")),
            ("tools", caps.get("trained_for_tool_use")),
            ("reasoning", caps.get("reasoning")),
        )
        if present
    )
    instances = tuple(
        LoadedInstance(id=str(i.get("id")), config=dict(i.get("config") or {}))
        for i in m.get("loaded_instances") or []
        if isinstance(i, dict) and i.get("id")
    )
    return ModelInfo(
        key=str(m["key"]),
        type=str(m.get("type") or "llm"),
        display_name=str(m.get("display_name") or ""),
        publisher=str(m.get("publisher") or ""),
        architecture=m.get("architecture"),
        quantization=quant.get("name") if isinstance(quant, dict) else None,
        bits_per_weight=to_float(quant.get("bits_per_weight")) if isinstance(quant, dict) else None,
        size_bytes=to_int(m.get("size_bytes")),
        params=m.get("params_string"),
        max_context=to_int(m.get("max_context_length")),
        format=m.get("format"),
        capabilities=capabilities,
        loaded_instances=instances,
        description=m.get("description"),
    )


def _v0_model(m: dict[str, Any]) -> ModelInfo:
    caps = m.get("capabilities") or []
    capabilities = tuple(
        c for c in (("tools" if "tool_use" in caps else None), ("vision" if m.get("type") == "vlm"
                    else None)) if c
    )
    loaded = m.get("state") == "loaded"
    instances: tuple[LoadedInstance, ...] = ()
    if loaded:
        config = {"context_length": m["loaded_context_length"]} if m.get(
            "loaded_context_length") else {}
        instances = (LoadedInstance(id=str(m["id"]), config=config),)
    mtype = str(m.get("type") or "llm")
    return ModelInfo(
        key=str(m["id"]),
        type="embedding" if mtype.startswith("embedding") else mtype,
        publisher=str(m.get("publisher") or ""),
        architecture=m.get("arch"),
        quantization=m.get("quantization"),
        max_context=to_int(m.get("max_context_length")),
        format=m.get("compatibility_type"),
        capabilities=capabilities,
        loaded_instances=instances,
    )


def _openai_model(m: dict[str, Any]) -> ModelInfo:
    key = str(m["id"])
    # /v1/models has no type; embedding models conventionally say so in their id.
    kind = "embedding" if "embed" in key.lower() else "llm"
    return ModelInfo(
        key=key,
        type=kind,
        publisher=str(m.get("owned_by") or "") if m.get("owned_by") != "organization_owner" else "",
        load_state_known=False,
    )


def _download_job(data: dict[str, Any]) -> DownloadJob:
    return DownloadJob(
        status=str(data.get("status") or "unknown"),
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


