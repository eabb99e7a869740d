"""Unit tests open no network sockets: each one talks to respx mocks or pure functions. A test
that needs a real server belongs in tests/integration (marked `integration`)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

_INET = (socket.AF_INET, socket.AF_INET6)


class NetworkInUnitTest(AssertionError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_connect, real_bind = socket.socket.connect, socket.socket.bind

    def guard(real: Any) -> Any:
        def call(self: socket.socket, address: Any) -> Any:
            if self.family in _INET:
                raise NetworkInUnitTest(
                    f"a unit test opened a network socket ({address!r}): move it to "
                    "tests/integration")
            return real(self, address)
        return call

    monkeypatch.setattr(socket.socket, "connect", guard(real_connect))
    monkeypatch.setattr(socket.socket, "bind", guard(real_bind))
    yield
