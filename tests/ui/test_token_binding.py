"""Settings → Test in AppTest: a saved server without its own token is sent none, even with
ATOM_API_TOKEN set (that token is for ATOM_SERVER_URL only)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import respx

from tests.fixtures.apptest import new_app
from tests.fixtures.payloads import NATIVE_MODELS

ENV_TOKEN = "sk-lm-FromEnv99:ZyXwVuTsRqPoNmLk"
OTHER = "http://other.test:1234"


@pytest.fixture
def servers() -> Iterator[dict[str, list[str | None]]]:
    seen: dict[str, list[str | None]] = {"lms.test": [], "other.test": []}

    def answer(request: httpx.Request) -> httpx.Response:
        seen[request.url.host].append(request.headers.get("Authorization"))
        return httpx.Response(200, json=NATIVE_MODELS)

    with respx.mock(assert_all_called=False) as router:
        router.route(host="lms.test").mock(side_effect=answer)
        router.route(host="other.test").mock(side_effect=answer)
        yield seen


def test_settings_test_sends_a_saved_server_no_env_token(
    servers: dict[str, list[str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATOM_API_TOKEN", ENV_TOKEN)
    at = new_app().run()
    at.switch_page("pages/settings.py").run()
    assert not at.exception, at.exception
    assert servers["lms.test"] and set(servers["lms.test"]) == {f"Bearer {ENV_TOKEN}"}
    next(t for t in at.text_input if t.label == "Name").set_value("Other")
    next(t for t in at.text_input if t.label == "URL").set_value(OTHER)
    next(b for b in at.button if b.label == "Save server").click().run()
    assert not at.exception, at.exception
    at.button(key="test-Other").click().run()
    assert not at.exception, at.exception
    assert servers["other.test"] == [None]
