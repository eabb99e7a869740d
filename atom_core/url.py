"""ServerURL: a model server's base URL, normalised once where it enters ATOM.

A URL enters at five doors: the sidebar's Server box, the environment (ATOM_SERVER_URL,
ATOM_EXTRA_SERVERS), the Settings form, `--server` on the command line and imported settings.
Each door makes a ``ServerURL`` and everything behind it passes that value on; making one from a
``ServerURL`` returns it unchanged, so a URL is never normalised twice.

httpx parses it (scheme and host lower-cased, ``[::1]`` understood, a default port dropped), so
two spellings of one server are one key: in the status cache, the token file, the clients.
A ``ServerURL`` is a ``str``, so rows and settings on disk keep their shape (plain strings).

    ServerURL("localhost:1234/v1/")      -> 'http://localhost:1234'
    ServerURL("HTTP://LocalHost:1234")   -> 'http://localhost:1234'
    ServerURL.checked("ftp://x")         -> ValueError, with a sentence for the form
"""

from __future__ import annotations

import functools

import httpx

DEFAULT_SERVER_URL = "http://localhost:1234"
# People paste the OpenAI-style base URL; ATOM adds route prefixes itself.
_ROUTE_SUFFIXES = ("/api/v1", "/api/v0", "/v1")
_MAX_PORT = 65535


class ServerURL(str):
    """A server's base URL: http(s), lower-case scheme and host, no trailing slash or /v1.

    ``ServerURL(text)`` never fails (a URL httpx cannot parse keeps its trimmed text and fails
    when asked, as an unreachable server); ``ServerURL.checked(text)`` is the strict door the
    Settings form and imports use."""

    __slots__ = ()

    def __new__(cls, raw: object = "") -> ServerURL:
        if type(raw) is cls:
            return raw  # made once: never normalised again
        return super().__new__(cls, _normalise(str(raw or "")))

    @classmethod
    def checked(cls, raw: object) -> ServerURL:
        """The URL of a server ATOM may talk to (http or https, a host, maybe a port and a
        path), or ValueError with one sentence a user can act on."""
        text = str(raw or "").strip()
        if not text:
            raise ValueError("Enter the server's URL, for example http://localhost:1234.")
        bad = ValueError(f"“{text}” is not a server URL. Use one like http://localhost:1234.")
        if any(c.isspace() for c in text):
            raise bad
        url = cls(text)
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise bad from None
        if (parsed.scheme not in ("http", "https") or not parsed.host or parsed.userinfo
                or (parsed.port is not None and parsed.port > _MAX_PORT)):
            raise bad
        return url

    @property
    def parsed(self) -> httpx.URL:
        """The parsed URL, for httpx (a client's base_url)."""
        return httpx.URL(str(self))


@functools.lru_cache(maxsize=1024)  # the environment is read again on every page run
def _normalise(text: str) -> str:
    text = text.strip() or DEFAULT_SERVER_URL
    scheme, sep, rest = text.partition("://")
    # httpx keeps a default port behind an upper-case scheme (HTTPS://x:443)
    text = scheme.lower() + sep + rest if sep else "http://" + text
    text = text.rstrip("/")
    for suffix in _ROUTE_SUFFIXES:
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    try:
        text = str(httpx.URL(text))
    except httpx.InvalidURL:
        pass
    return text.rstrip("/")
