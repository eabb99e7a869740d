"""StatusCache: each server's last status for a few seconds, one entry per server.

Keyed by ServerURL, so a status stored under one spelling of a URL ("localhost:1234/v1") is
found, refreshed and forgotten under any other ("http://localhost:1234"). The pages keep one
per browser session (pages/parts/ui.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

from ..url import ServerURL

S = TypeVar("S")


class StatusCache(Generic[S]):
    """What `ask(url)` last answered for each server, reused for `max_age_s` seconds."""

    def __init__(self, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._hits: dict[ServerURL, tuple[float, S]] = {}

    def get(self, url: str, ask: Callable[[ServerURL], S], *, refresh: bool = False) -> S:
        """The cached status of `url`, or `ask(url)`'s answer (kept) when there is none, it is
        older than max_age_s, or `refresh` is set."""
        key = ServerURL(url)
        hit = self._hits.get(key)
        if not refresh and hit is not None and self._clock() - hit[0] < self.max_age_s:
            return hit[1]
        status = ask(key)
        self._hits[key] = (self._clock(), status)
        return status

    def forget(self, url: str) -> None:
        """Drops a server's status (its token or profile changed): the next get asks it."""
        self._hits.pop(ServerURL(url), None)
