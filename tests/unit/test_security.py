"""Tokens stay with their server; ATOM answers only to its own names (DNS rebinding)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
import respx

from atom_core import cli
from atom_core.config import host_allowed, settings_from_env
from atom_core.settings.store import SettingsStore, check_server_url, server_token

TOKEN = "sk-lm-Saved1234:AbCdEfGhIjKlMnOp"
ENV_TOKEN = "sk-lm-FromEnv99:ZyXwVuTsRqPoNmLk"


@pytest.fixture
def settings(tmp_path: Path) -> SettingsStore:
    return SettingsStore(tmp_path / "data")


def test_the_env_token_goes_to_the_env_server_only(settings: SettingsStore) -> None:
    env = settings_from_env({"ATOM_SERVER_URL": "http://main.test:1234/v1",
                             "ATOM_API_TOKEN": ENV_TOKEN,
                             "ATOM_EXTRA_SERVERS": "http://extra.test:1234"})
    assert server_token(settings, env, "http://main.test:1234") == ENV_TOKEN
    assert server_token(settings, env, "main.test:1234/v1/") == ENV_TOKEN
    assert server_token(settings, env, "http://extra.test:1234") is None
    settings.save_profile("Saved", "http://saved.test:1234")  # saved without a token
    assert server_token(settings, env, "http://saved.test:1234") is None
    settings.save_profile("Own", "http://own.test:1234", token=TOKEN)
    assert server_token(settings, env, "http://own.test:1234") == TOKEN
    no_url = settings_from_env({"LM_API_TOKEN": ENV_TOKEN})  # the default URL is the env URL
    assert server_token(settings, no_url, "http://localhost:1234") == ENV_TOKEN
    assert server_token(settings, no_url, "http://own.test:1234") == TOKEN


def test_an_imported_profile_reusing_a_name_gets_no_token_and_is_not_made_default(
    settings: SettingsStore,
) -> None:
    settings.save_profile("Main", "http://main.test:1234", token=TOKEN)
    settings.delete_profile("Main")
    added = settings.merge({"profiles": [{"name": "Main", "url": "http://evil.test:1234"}],
                            "default_profile": "Main"})
    assert added == 1
    assert settings.token("Main") is None
    assert settings.token_for_url("http://evil.test:1234") is None
    assert settings.load().default_profile is None
    assert not settings.load().profiles[0].has_token


def test_an_old_name_keyed_token_never_reaches_a_new_url(settings: SettingsStore) -> None:
    # tokens.json from before URL binding, whose settings.json was lost (moved aside as damaged)
    settings.data_dir.mkdir(parents=True)
    settings.tokens_path.write_text(json.dumps({"tokens": {"Main": TOKEN}}))
    settings.merge({"profiles": [{"name": "Main", "url": "http://evil.test:1234"}]})
    assert settings.token("Main") is None
    assert server_token(settings, settings_from_env({}), "http://evil.test:1234") is None


def test_an_old_name_keyed_token_stays_with_its_profiles_url(settings: SettingsStore) -> None:
    settings.data_dir.mkdir(parents=True)
    settings.settings_path.write_text(json.dumps(
        {"profiles": [{"name": "Main", "url": "http://main.test:1234"}]}))
    settings.tokens_path.write_text(json.dumps({"tokens": {"Main": TOKEN}}))
    assert settings.token_for_url("http://main.test:1234") == TOKEN
    settings.save_profile("Main", "http://elsewhere.test:1234")
    assert settings.token("Main") is None
    assert TOKEN not in settings.tokens_path.read_text()


@pytest.mark.parametrize("url", ["javascript:alert(1)", "file:///etc/passwd", "ftp://x.test",
                                 "http://has space", "data:text/html,hi"])
def test_imported_urls_pass_the_settings_forms_check(settings: SettingsStore, url: str) -> None:
    with pytest.raises(ValueError):
        check_server_url(url)
    assert settings.merge({"profiles": [{"name": "Bad", "url": url}]}) == 0
    assert settings.load().profiles == ()


def test_the_command_line_uses_the_token_saved_for_its_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATOM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ATOM_API_TOKEN", ENV_TOKEN)  # for ATOM_SERVER_URL, not this server
    monkeypatch.delenv("ATOM_SERVER_URL", raising=False)
    SettingsStore(tmp_path / "data").save_profile("Saved", "http://saved.test:1234", token=TOKEN)
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json={"data": [{"id": "m1", "object": "model"}]})

    with respx.mock(assert_all_called=False) as router:
        router.route(host="saved.test").mock(side_effect=answer)
        cli.main(["--server", "saved.test:1234", "models"], out=io.StringIO(),
                 err=io.StringIO())
    assert seen and set(seen) == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize(("host", "ok"), [
    ("localhost:8501", True), ("LOCALHOST.:8501", True), ("127.0.0.1:8501", True),
    ("[::1]:8501", True), ("localhost", True), (None, True),
    ("evil.example:8501", False), ("127.0.0.1.evil.example", False), ("", False),
    ("localhost.evil.example:8501", False), ("192.168.1.5:8501", False),
])
def test_only_loopback_names_by_default(host: str | None, ok: bool) -> None:
    assert host_allowed(host, settings_from_env({}).allowed_hosts) is ok


def test_lan_names_come_from_atom_allowed_hosts() -> None:
    allowed = settings_from_env({"ATOM_ALLOWED_HOSTS": " Box.LAN , 192.168.1.5:8501"})
    assert allowed.allowed_hosts == {"box.lan", "192.168.1.5"}
    assert host_allowed("box.lan:8501", allowed.allowed_hosts)
    assert host_allowed("192.168.1.5", allowed.allowed_hosts)
    assert not host_allowed("evil.example", allowed.allowed_hosts)
    assert host_allowed("anything.example", settings_from_env(
        {"ATOM_ALLOWED_HOSTS": "*"}).allowed_hosts)
