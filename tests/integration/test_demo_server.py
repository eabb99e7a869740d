"""The demo launcher against real sockets."""

from __future__ import annotations

from atom_core.launch import demo


def test_server_answers_is_false_for_a_closed_port() -> None:
    assert not demo.server_answers(f"http://127.0.0.1:{demo.free_port()}")
