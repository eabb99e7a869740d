"""The one seam where HTTP meets ATOM's error tree: status codes, error bodies and transport
failures become the errors in `atom_core.errors`, each with one sentence a user can act on.

Every route goes through here: model listing and admin (client.py), every chat stream
(streaming.py, routes.py). Text from the server is untrusted and may be huge (a 2 MB HTML page
with a 500), so what is kept of it, in a sentence or in `detail`, is capped by `cap()`.

    error_for_response(response, url=..., model=...)   HTTP status / error body -> AtomError
    from_transport(exc, url=..., ...)                   httpx/SSE failure -> AtomError
    stream_error(payload, url=...)                      an error object inside a stream
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import httpx
from httpx_sse import SSEError

from ..errors import (
    AtomError,
    AuthError,
    BadRequest,
    ModelNotFound,
    NotSupported,
    RequestTimeout,
    ServerError,
    ServerUnreachable,
    StreamInterrupted,
)

# What is kept of any text a server sent us, in a sentence or a detail.
MAX_BODY_CHARS = 500
# LM Studio's answer to a route it does not have: HTTP 200 with this in the error string.
UNKNOWN_ROUTE_MARK = "Unexpected endpoint"


def cap(text: str, limit: int = MAX_BODY_CHARS) -> str:
    """`text` cut to `limit` characters, saying how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text) - limit} more)"


def error_message(body: Any) -> str:
    """The human part of an error body, capped: `{"error": "..."}`, `{"error": {"message": ...}}`
    or Anthropic's `{"type": "error", "error": {...}}`; anything else as text."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, str):
            return cap(err)
        if isinstance(err, dict):
            return cap(str(err.get("message") or err.get("type") or err))
    return cap(str(body))


class _TextOfHTML(HTMLParser):
    """The visible words of an HTML error page (scripts and styles left out)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.words: list[str] = []
        self._skip = 0

    HIDDEN = ("script", "style", "title")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.words += data.split()


def html_text(page: str) -> str:
    """The visible text of an HTML page, whitespace collapsed (for an error sentence)."""
    parser = _TextOfHTML()
    parser.feed(page[: MAX_BODY_CHARS * 20])  # enough for any error page's message
    parser.close()
    return " ".join(parser.words)


def _looks_like_html(response: httpx.Response, text: str) -> bool:
    return "html" in response.headers.get("content-type", "") or text.lstrip()[:1] == "<"


def _body(response: httpx.Response) -> Any:
    """The response's JSON, or its text when it is not JSON (never raises)."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        try:
            return response.text
        except (UnicodeDecodeError, httpx.ResponseNotRead):
            return ""


def _request_of(response: httpx.Response) -> httpx.Request | None:
    try:
        return response.request
    except RuntimeError:  # a response built by hand, not sent
        return None


def _token_sent(request: httpx.Request | None) -> bool:
    return request is not None and bool(
        request.headers.get("authorization") or request.headers.get("x-api-key")
    )


def is_error_body(body: Any) -> bool:
    """True for `{"error": ...}` bodies, which LM Studio also sends with HTTP 200."""
    return isinstance(body, dict) and bool(body.get("error"))


def error_for_response(response: httpx.Response, *, url: str, model: str = "") -> AtomError:
    """Maps an error response (any status >= 400, or a 200 whose body is `{"error": ...}`) to
    the matching AtomError. The response must have been read. `url` is the server's base URL;
    `model` the model or instance the request named, for ModelNotFound."""
    request = _request_of(response)
    req_url = str(request.url) if request is not None else url
    method = request.method if request is not None else ""
    path = request.url.path if request is not None else ""
    body = _body(response)
    status = response.status_code
    if isinstance(body, str) and body and _looks_like_html(response, body):
        body = html_text(body) or "an HTML page"
    message = error_message(body) if body else f"HTTP {status}"
    err = body.get("error") if isinstance(body, dict) else None
    fields = err if isinstance(err, dict) else {}
    code = str(fields.get("code") or "")
    etype = str(fields.get("type") or "")
    detail = cap(body if isinstance(body, str) else json.dumps(body))

    if status in (401, 403) or code == "invalid_api_key" or etype == "authentication_error":
        return AuthError.for_request(req_url, token_sent=_token_sent(request), detail=detail)
    if UNKNOWN_ROUTE_MARK in message:
        return NotSupported(
            f"This server does not offer {method} {path} "
            "(it may be an older LM Studio or a plain OpenAI-compatible server).",
            url=req_url,
            detail=detail,
        )
    if code == "model_not_found" or etype == "model_not_found" or (
        status == 404 and model and "model" in message.lower()
    ):
        return ModelNotFound(
            f"The server has no model called “{model}”. Pick one from the list, or download "
            f"it first. (Server said: {message})",
            url=req_url,
            detail=detail,
            model=model,
        )
    if status == 404 and etype == "job_not_found":
        return ServerError(
            f"The server has no download job with that id. (Server said: {message})",
            url=req_url,
            detail=detail,
        )
    if status == 404 and "instance" in path + message.lower():
        return ModelNotFound(
            f"No loaded instance “{model}” on the server; it may already be unloaded. "
            f"(Server said: {message})",
            url=req_url,
            detail=detail,
            model=model,
        )
    if status in (404, 405):
        return NotSupported(
            f"This server does not offer {method} {path}.", url=req_url, detail=detail
        )
    if status in (400, 422):
        return BadRequest(
            f"The server rejected the request: {message}",
            url=req_url,
            detail=detail,
            param=str(fields.get("param") or ""),
        )
    if status < 400:  # a 200 carrying an error body
        return ServerError(f"The server reported an error: {message}", url=req_url, detail=detail)
    if not body:
        return ServerError(f"The server failed (HTTP {status}) and said nothing more.",
                           url=req_url)
    return ServerError(f"The server failed (HTTP {status}): {message}", url=req_url, detail=detail)


def stream_error(payload: Any, *, url: str) -> ServerError:
    """An error object the server sent inside a stream (OpenAI `{"error": ...}` chunk, native
    or Responses `error` event, Anthropic `{"type": "error", ...}`)."""
    detail = cap(json.dumps(payload) if not isinstance(payload, str) else payload)
    return ServerError(
        f"The server reported an error mid-reply: {error_message(payload)}",
        url=url,
        detail=detail,
    )


def from_transport(
    exc: Exception,
    *,
    url: str,
    request_line: str = "",
    midstream: bool = False,
    tokens_arrived: bool = False,
) -> AtomError:
    """Maps a transport failure (httpx.TransportError, httpx_sse.SSEError) to an AtomError.

    `url` is the server's base URL. `request_line` ("GET /v1/models") names the request in a
    timeout sentence. `midstream`: the response had started (a break is then an interrupted
    reply, not an unreachable server); `tokens_arrived`: some of the reply was shown, so a
    timeout means the stream stopped, not that the model is still loading."""
    if isinstance(exc, httpx.TimeoutException):
        if tokens_arrived:
            return StreamInterrupted(
                "The reply stopped part-way: the server sent nothing more for too long. "
                "What arrived so far is kept.",
                url=url,
                detail=str(exc),
            )
        if request_line:
            return RequestTimeout(
                f"The server at {url} did not answer {request_line} in time.",
                url=url,
                detail=str(exc),
            )
        return RequestTimeout(
            f"The server at {url} did not answer in time. It may still be loading the model; "
            "try again in a moment.",
            url=url,
            detail=str(exc),
        )
    if midstream or isinstance(exc, SSEError):
        return StreamInterrupted(
            "The server stopped the reply part-way (the connection broke). "
            "What arrived so far is kept.",
            url=url,
            detail=str(exc),
        )
    return ServerUnreachable.at(url, str(exc))
