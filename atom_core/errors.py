"""ATOM's exception tree. Every error a user can meet carries one sentence they can act on.

    AtomError                  base; `.sentence` is what the page shows, `.url` the request's URL
    ├── ServerUnreachable      nothing answered at the URL (connection refused, DNS, reset)
    │   └── DemoEngineNotReady the bundled demo engine `make run` started is still being built
    │                          or started: its progress instead of "Is LM Studio running?"
    ├── AuthError              the server wants a token, or refused the one we sent (HTTP 401/403)
    ├── ModelNotFound          the server does not know the model or instance asked for
    ├── BadRequest             the server rejected a parameter (HTTP 400); `.param` names it
    ├── NotSupported           the server has no such route (LM Studio: HTTP 200 + "Unexpected
    │                          endpoint"; plain OpenAI servers: 404)
    ├── ServerError            the server failed (5xx or an error payload); carries its own message
    ├── StreamInterrupted      a streamed reply stopped before its end (server crash, cut socket)
    │   └── StreamStalled      no token for the stall timeout (keep-alives alone do not count),
    │                          or the whole-request deadline passed; what arrived is kept
    ├── RequestTimeout         no answer within the timeout
    └── ClientPoolTimeout      ATOM itself had no free connection for the request in time (a
                               client-side limit, not the server's fault)

Pages catch `AtomError` and show `err.sentence`; nothing else needs to know the HTTP details.
"""

from __future__ import annotations


class AtomError(Exception):
    """Base of every error ATOM raises on purpose."""

    def __init__(self, sentence: str, *, url: str = "", detail: str = "") -> None:
        super().__init__(sentence)
        self.sentence = sentence
        self.url = url
        self.detail = detail


class ServerUnreachable(AtomError):
    """Nothing answered at the server URL."""

    @classmethod
    def at(cls, base_url: str, detail: str = "") -> ServerUnreachable:
        return cls(
            f"Can't reach a model server at {base_url}. Is LM Studio running? "
            "Start its server with `lms server start`, or check the URL.",
            url=base_url,
            detail=detail,
        )


class DemoEngineNotReady(ServerUnreachable):
    """The server is the bundled demo engine, still building or starting; the sentence says how
    far it is (the launcher's progress), not to start LM Studio."""


class AuthError(AtomError):
    """The server requires an API token, or refused the token sent."""

    def __init__(self, sentence: str, *, url: str = "", detail: str = "", token_sent: bool) -> None:
        super().__init__(sentence, url=url, detail=detail)
        self.token_sent = token_sent

    @classmethod
    def for_request(cls, url: str, *, token_sent: bool, detail: str = "") -> AuthError:
        if token_sent:
            sentence = (
                "The server refused the API token. Check the token in Settings "
                "(or ATOM_API_TOKEN) against LM Studio's Developer > Manage Tokens."
            )
        else:
            sentence = (
                "This server requires an API token. Create one in LM Studio "
                "(Developer > Server Settings > Manage Tokens) and set it in Settings "
                "or as ATOM_API_TOKEN."
            )
        return cls(sentence, url=url, detail=detail, token_sent=token_sent)


class ModelNotFound(AtomError):
    """The server does not know the model (or instance) named in the request."""

    def __init__(self, sentence: str, *, url: str = "", detail: str = "", model: str = "") -> None:
        super().__init__(sentence, url=url, detail=detail)
        self.model = model


class BadRequest(AtomError):
    """The server rejected the request's content (HTTP 400)."""

    def __init__(self, sentence: str, *, url: str = "", detail: str = "", param: str = "") -> None:
        super().__init__(sentence, url=url, detail=detail)
        self.param = param


class NotSupported(AtomError):
    """The server does not offer this route (an older LM Studio or a plain OpenAI server)."""


class ServerError(AtomError):
    """The server reported a failure of its own."""


class StreamInterrupted(AtomError):
    """A streamed reply ended before the server finished it."""


class RequestTimeout(AtomError):
    """The server did not answer in time."""


class StreamStalled(StreamInterrupted):
    """A streamed reply made no progress (no token) for too long, or ran past its deadline.
    The stream is ended by ATOM; what arrived is kept and the reply is marked interrupted."""

    def __init__(self, sentence: str, *, url: str = "", detail: str = "",
                 waited_s: float = 0.0) -> None:
        super().__init__(sentence, url=url, detail=detail)
        self.waited_s = waited_s

    @classmethod
    def no_token(cls, url: str, waited_s: float) -> StreamStalled:
        return cls(
            f"The reply stalled: no new token for {waited_s:.0f} s, so ATOM ended it. What "
            "arrived so far is kept. (Raise the stall timeout in Settings, Chat defaults, if "
            "this model is just slow.)", url=url, waited_s=waited_s)

    @classmethod
    def no_first_token(cls, url: str, waited_s: float) -> StreamStalled:
        return cls(
            f"The reply never began: no token in {waited_s:.0f} s, so ATOM ended it. (Raise "
            "the first-token limit in Settings, Chat defaults, if this model takes long to "
            "load or to read a long prompt.)", url=url, waited_s=waited_s)

    @classmethod
    def deadline(cls, url: str, deadline_s: float) -> StreamStalled:
        return cls(
            f"The reply ran past the {deadline_s:.0f} s limit for one request, so ATOM ended "
            "it. What arrived so far is kept. (Raise the whole-request limit in Settings, Chat "
            "defaults, for longer replies.)", url=url, waited_s=deadline_s)


class ClientPoolTimeout(AtomError):
    """ATOM's own connection pool had no free connection for the request in time."""

    @classmethod
    def at(cls, base_url: str, detail: str = "") -> ClientPoolTimeout:
        return cls(
            f"ATOM had no free connection to {base_url} for this request in time: every "
            "connection was busy with other requests on this computer. The server was not "
            "asked; lower the number of requests in flight.", url=base_url, detail=detail)
