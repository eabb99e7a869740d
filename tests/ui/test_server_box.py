"""The sidebar's Server box is where a typed URL enters: it accepts what the Settings form,
the environment and `--server` accept (tests/unit/test_server_url.py), and refuses the rest
with one sentence, keeping the session on its server."""

from __future__ import annotations

import pytest
import respx

from tests.fixtures.apptest import BASE, new_app

MODELS = {"models": [{"type": "llm", "key": "m1", "display_name": "M1", "loaded_instances": []}]}


@pytest.mark.parametrize(("typed", "url"), [("HTTP://LocalHost:1234", "http://localhost:1234"),
                                            ("http://[::1]:1234", "http://[::1]:1234")])
def test_the_server_box_accepts_what_every_door_accepts(
    mock: respx.MockRouter, typed: str, url: str
) -> None:
    mock.get("/api/v1/models").respond(json={"models": []})
    other = mock.get(f"{url}/api/v1/models").respond(json=MODELS)
    at = new_app().run()
    at.sidebar.text_input[0].set_value(typed).run()
    assert not at.exception
    assert at.session_state.server_url == url
    assert other.called
    assert not at.sidebar.error
    assert at.sidebar.selectbox(key="model").value == "m1"


def test_the_server_box_refuses_what_is_not_a_server_url(mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(json=MODELS)
    at = new_app().run()
    at.sidebar.text_input[0].set_value("ftp://files.test").run()
    assert not at.exception
    assert at.session_state.server_url == BASE
    assert [e.value for e in at.sidebar.error] == [
        "“ftp://files.test” is not a server URL. Use one like http://localhost:1234."]
    assert at.sidebar.text_input[0].value == "ftp://files.test"  # what was typed is kept
