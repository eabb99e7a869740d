"""ServerURL: one spelling per server, made where a URL enters (environment, Settings form,
imports, `--server`; the sidebar box is in tests/ui/test_server_box.py), and the same URLs
accepted at every one of those doors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
import respx

from atom_core import cli
from atom_core.config import settings_from_env
from atom_core.server.status_cache import StatusCache
from atom_core.settings.store import SettingsStore, check_server_url, server_token
from atom_core.url import ServerURL

# Spellings the rest of ATOM always accepted and the Settings form's check once refused.
ODD_BUT_GOOD = {
    "HTTP://LocalHost:1234": "http://localhost:1234",
    "http://[::1]:1234": "http://[::1]:1234",
}
BAD = ["javascript:alert(1)", "file:///etc/passwd", "ftp://x.test", "http://has space",
       "data:text/html,hi", "http://:1234", "http://x.test:99999", ""]


@pytest.mark.parametrize(("raw", "url"), [
    ("localhost:1234/v1/", "http://localhost:1234"),
    ("  http://lms.test:1234/api/v1 ", "http://lms.test:1234"),
    ("[::1]:1234", "http://[::1]:1234"),
    ("HTTPS://Box.Test:443/v1", "https://box.test"),
    ("", "http://localhost:1234"),
    *ODD_BUT_GOOD.items(),
])
def test_one_spelling_per_server(raw: str, url: str) -> None:
    assert ServerURL(raw) == url
    assert ServerURL(ServerURL(raw)) == url


def test_a_server_url_is_made_once() -> None:
    url = ServerURL("localhost:1234")
    assert ServerURL(url) is url
    assert json.dumps({"url": url}) == '{"url": "http://localhost:1234"}'  # stored as a string


@pytest.mark.parametrize(("raw", "url"), ODD_BUT_GOOD.items())
def test_the_environment_accepts_it(raw: str, url: str) -> None:
    env = settings_from_env({"ATOM_SERVER_URL": raw, "ATOM_EXTRA_SERVERS": f"{raw}/v1, x:1"})
    assert env.server_url == url
    assert env.extra_servers == (url, "http://x:1")


@pytest.mark.parametrize(("raw", "url"), ODD_BUT_GOOD.items())
def test_the_settings_form_accepts_it(tmp_path: Path, raw: str, url: str) -> None:
    assert check_server_url(raw) == url
    settings = SettingsStore(tmp_path / "data")
    assert settings.save_profile("Odd", raw, token="sk-odd").url == url
    assert settings.token_for_url(url) == "sk-odd"
    assert server_token(settings, settings_from_env({}), ServerURL(raw)) == "sk-odd"


@pytest.mark.parametrize(("raw", "url"), ODD_BUT_GOOD.items())
def test_an_import_accepts_it(tmp_path: Path, raw: str, url: str) -> None:
    settings = SettingsStore(tmp_path / "data")
    doc = {"profiles": [{"name": "Odd", "url": raw}]}
    assert settings.check_import(doc) == []
    assert settings.merge(doc) == 1
    assert [p.url for p in settings.load().profiles] == [url]


@pytest.mark.parametrize("raw", BAD)
def test_every_door_refuses_what_is_not_a_server_url(tmp_path: Path, raw: str) -> None:
    with pytest.raises(ValueError, match="server's URL|is not a server URL"):
        ServerURL.checked(raw)
    settings = SettingsStore(tmp_path / "data")
    with pytest.raises(ValueError):
        settings.save_profile("Bad", raw)
    assert settings.check_import({"profiles": [{"name": "Bad", "url": raw}]}) != []
    err = io.StringIO()
    if raw:  # an empty --server means "not given"
        assert cli.main(["--server", raw, "models"], out=io.StringIO(), err=err) == 2
        assert "server URL" in err.getvalue()


@pytest.mark.parametrize(("raw", "url"), ODD_BUT_GOOD.items())
def test_the_command_line_accepts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     raw: str, url: str) -> None:
    monkeypatch.setenv("ATOM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("ATOM_SERVER_URL", raising=False)
    out = io.StringIO()
    with respx.mock(assert_all_called=False) as router:
        route = router.get(f"{url}/api/v1/models").mock(return_value=httpx.Response(
            200, json={"models": [{"type": "llm", "key": "m1", "display_name": "M1"}]}))
        assert cli.main(["--server", raw, "models"], out=out, err=io.StringIO()) == 0
    assert route.called
    assert url in out.getvalue()


def test_a_status_stored_under_one_spelling_is_forgotten_under_another() -> None:
    asked: list[str] = []
    cache: StatusCache[str] = StatusCache(60.0, clock=lambda: 0.0)

    def ask(url: ServerURL) -> str:
        asked.append(url)
        return f"status {len(asked)}"

    assert cache.get("localhost:1234/v1", ask) == "status 1"
    assert cache.get("HTTP://LocalHost:1234", ask) == "status 1"  # one server, one entry
    cache.forget("http://localhost:1234")
    assert cache.get("localhost:1234/v1", ask) == "status 2"
    assert asked == ["http://localhost:1234", "http://localhost:1234"]


def test_a_status_is_asked_again_when_old_or_refreshed() -> None:
    now = [0.0]
    cache: StatusCache[int] = StatusCache(15.0, clock=lambda: now[0])
    answers = iter(range(1, 10))
    assert cache.get("a:1", lambda u: next(answers)) == 1
    now[0] = 14.9
    assert cache.get("a:1", lambda u: next(answers)) == 1
    assert cache.get("a:1", lambda u: next(answers), refresh=True) == 2
    now[0] = 30.0
    assert cache.get("a:1", lambda u: next(answers)) == 3


def test_a_token_saved_under_an_older_spelling_is_still_found(tmp_path: Path) -> None:
    settings = SettingsStore(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    settings.tokens_path.write_text(json.dumps({"tokens": {"http://box.test:80": "sk-old"}}))
    assert settings.token_for_url("http://box.test") == "sk-old"
    assert settings.token_for_url("box.test:80/v1") == "sk-old"


def test_a_lookup_never_normalises_a_server_url_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page's client lookup (token saved in Settings, the environment's token, the client)
    once normalised the same URL four times; a ServerURL is made once and passed on."""
    from atom_core import url as url_module
    from atom_core.config import StreamLimits
    from atom_core.server.client import LMStudioClient

    url = ServerURL("localhost:1234/v1")
    settings, env = SettingsStore(tmp_path / "data"), settings_from_env({})
    made: list[str] = []
    real = url_module._normalise
    monkeypatch.setattr(url_module, "_normalise", lambda text: made.append(text) or real(text))
    assert server_token(settings, env, url) is None
    with LMStudioClient(url, limits=StreamLimits()) as client:
        assert client.base_url is url
    assert made == []
