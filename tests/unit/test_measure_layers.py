"""The measuring rooms' arrows (issue 19): the server room imports nothing from the rooms above
it (a stream enters the hardware sampler through a hook the sampler sets), and no two modules of
server/, measure/ or stats/ import each other, even for type checking only."""

from __future__ import annotations

import ast
from pathlib import Path

import httpx
import respx

from atom_core.measure import hardware
from atom_core.measure.hardware import HardwareSampler
from atom_core.server.client import LMStudioClient
from atom_core.types import ChatMessage
from tests.fixtures.payloads import BASE
from tests.fixtures.sse import SSE_HEADERS, sse_body

CORE = Path(__file__).resolve().parents[2] / "atom_core"


def imports_of(path: Path) -> set[str]:
    """The atom_core modules `path` imports (relative imports resolved; TYPE_CHECKING too)."""
    module = ".".join(path.relative_to(CORE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.update(f"{base}.{a.name}" for a in node.names)
            out.add(base)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("atom_core")}


def test_the_server_room_imports_no_room_above_it() -> None:
    above = ("measure", "arena", "stats", "settings", "launch", "chat", "cli")
    for path in (CORE / "server").glob("*.py"):
        up = {m for m in imports_of(path) if m.split(".")[1] in above}
        assert not up, f"{path.name} imports {sorted(up)}"


def test_no_circle_between_modules_of_the_measuring_rooms() -> None:
    modules = {".".join(p.relative_to(CORE.parent).with_suffix("").parts): p
               for room in ("server", "measure", "stats") for p in (CORE / room).glob("*.py")
               if p.name != "__init__.py"}
    graph = {m: {i for i in imports_of(p) if i in modules and i != m}
             for m, p in modules.items()}
    for a, targets in graph.items():
        for b in targets:
            assert a not in graph[b], f"{a} and {b} import each other"


def test_a_chat_stream_is_in_flight_on_the_machine_sampler_while_it_reads() -> None:
    sampler = HardwareSampler(gpu=None, read_cpu=lambda: 1.0, read_ram_mb=lambda: 1.0)
    hardware.use_sampler(sampler)
    try:
        with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
            mock.post("/v1/chat/completions").mock(return_value=httpx.Response(
                200, headers=SSE_HEADERS, content=sse_body("Hi", " there")))
            seen = [sampler.active for _ in client.stream_chat("m", [ChatMessage("user", "q")])]
        assert seen and set(seen) == {1}
        assert sampler.active == 0
    finally:
        hardware.use_sampler(None)
