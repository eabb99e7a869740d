"""`ATOM_CLASS=1 make run`: the app for a classroom.

It listens on every interface (phones on the classroom's Wi-Fi reach it), admits this machine's
own LAN names and addresses in its Host check (atom_core/network.py), and prints two lines: the
teacher's link, which carries the teacher key once, and the address students open. The key is
ATOM_TEACHER_KEY when set, else a new random one per start.

Two Streamlit settings are changed for a class, both measured (docs/BENCHMARKS.md, class mode):
Streamlit collects all garbage after every script run (`runner.postScriptGC`: ~50-75 ms of CPU
in ATOM's process, per run, fragment runs included), and watches the source files for changes
(`server.fileWatcherType`), which walks every loaded module after each run. Sixty phones each
looking for the teacher's next step spent most of two cores on those; without them a look costs
about 2 ms.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable, Mapping, Sequence

from .. import network

DEFAULT_PORT = 8501
# What a class changes in `streamlit run` (each only when ARGS did not set it).
CLASS_OPTIONS = {"server.address": "0.0.0.0", "runner.postScriptGC": "false",
                 "server.fileWatcherType": "none"}


def _given(args: Sequence[str], option: str) -> str | None:
    """The value ARGS give a `--option=value` / `--option value`, or None."""
    flag = f"--{option}"
    for i, a in enumerate(args):
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
        if a == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def prepare(args: Sequence[str], env: Mapping[str, str], say: Callable[[str], None],
            port_is_free: Callable[[int], bool] = port_free) -> tuple[list[str], dict[str, str]]:
    """The `streamlit run` arguments and environment for a class, after printing the teacher's
    link and the students' address."""
    out = list(args)
    for option, value in CLASS_OPTIONS.items():
        if _given(out, option) is None:
            out.append(f"--{option}={value}")
    given = _given(out, "server.port")
    if given is not None and given.isdigit():
        port = int(given)
    else:
        port = DEFAULT_PORT
        while not port_is_free(port) and port < DEFAULT_PORT + 50:
            port += 1
        out.append(f"--server.port={port}")
    new_env = dict(env)
    key = (new_env.get("ATOM_TEACHER_KEY") or "").strip() or secrets.token_urlsafe(16)
    new_env["ATOM_TEACHER_KEY"] = key
    say(f"Class mode. Teacher (keep this link to yourself): {network.base_url(port)}/"
        f"?teacher={key}")
    say(f"Students open: {network.student_address(port)}")
    return out, new_env
