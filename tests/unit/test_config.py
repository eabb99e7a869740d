"""config.settings_from_env: the one reader of the environment."""

from __future__ import annotations

from pathlib import Path

from atom_core.config import settings_from_env
from atom_core.settings.store import AppSettings, ServerProfile, initial_server_url


def test_defaults_without_any_variable() -> None:
    s = settings_from_env({})
    assert s.server_url == "http://localhost:1234" and not s.server_url_set
    assert s.api_token is None and s.extra_servers == () and s.demo_engine == ()
    assert s.demo_enabled and s.data_dir == Path.home() / ".atom"


def test_extra_servers_are_parsed_once_normalized_and_deduplicated() -> None:
    s = settings_from_env({"ATOM_EXTRA_SERVERS": " gpu:1234/v1, http://b:2/ ,,gpu:1234"})
    assert s.extra_servers == ("http://gpu:1234", "http://b:2")


def test_demo_engine_one_means_the_configured_servers() -> None:
    env = {"ATOM_SERVER_URL": "127.0.0.1:5001", "ATOM_EXTRA_SERVERS": "127.0.0.1:5002",
           "ATOM_DEMO_ENGINE": "1", "ATOM_DEMO": "off"}
    s = settings_from_env(env)
    assert s.demo_engine == ("http://127.0.0.1:5001", "http://127.0.0.1:5002")
    assert not s.demo_enabled and s.server_url_set


def test_the_env_server_wins_over_the_saved_default_only_when_set() -> None:
    saved = AppSettings(profiles=(ServerProfile(name="Main", url="http://main:1234"),),
                        default_profile="Main")
    assert initial_server_url(settings_from_env({}), saved) == "http://main:1234"
    env = settings_from_env({"ATOM_SERVER_URL": "http://other:9/v1"})
    assert initial_server_url(env, saved) == "http://other:9"
    assert initial_server_url(settings_from_env({}), AppSettings()) == "http://localhost:1234"
