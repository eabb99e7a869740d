"""The public facade (atom_core.__all__) and the house rules of the package layout.

The rules are checked on the source with ast, so a new module that breaks one fails here, not in
review: no streamlit in atom_core, no module importing another module's private name, the base
layer importing no room, and pages importing atom_core only.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import atom_core

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "atom_core"
BASE_LAYER = {"errors", "types", "config", "metrics", "runs", "files", "records", "url"}

PINNED = [
    "ArenaRace", "ArenaRound", "AtomError", "AuthError", "BadRequest", "ChatMessage", "ChatStream",
    "Conversation", "Dialect", "FanOut", "GenerationMetrics", "HistoryStore", "LMStudioClient",
    "LoadConfig", "Message", "ModelInfo", "ModelList", "ModelNotFound", "NotSupported",
    "RequestTimeout", "SamplingOptions", "ServerError", "ServerStatus", "ServerUnreachable",
    "Settings", "SettingsStore", "Slot", "StreamEvent", "StreamInterrupted", "compute_metrics",
    "normalize_base_url", "open_settings", "open_store", "percentile", "run_load",
    "settings_from_env",
    # measuring under load (issue 10)
    "ClientPoolTimeout", "StreamStalled",
    # a server's URL, made once where it enters (issue 19)
    "ServerURL",
]


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(CORE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def _imports(module: str, path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module imported, names taken from it) for every import in a file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names]))
    return found


def test_all_is_pinned_and_every_name_resolves() -> None:
    assert sorted(atom_core.__all__) == sorted(PINNED)
    for name in atom_core.__all__:
        assert getattr(atom_core, name) is not None, name


def test_unknown_names_raise_attribute_error() -> None:
    try:
        atom_core.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:  # pragma: no cover - the assertion below reports it
        raise AssertionError("atom_core.no_such_thing did not raise")


def test_importing_the_package_loads_nothing_heavy() -> None:
    """demo_server runs where ATOM's requirements are not installed: the facade must be lazy."""
    code = (
        "import sys, atom_core, atom_core.launch\n"
        "heavy = ('httpx', 'pandas', 'plotly', 'tinydb', 'streamlit')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


def test_every_module_imports() -> None:
    for module, _ in _modules():
        if module.endswith(("demo_server", "__main__")):
            continue  # needs llama_cpp (the engine's own virtualenv) / runs the command line
        importlib.import_module(module)


def test_no_streamlit_in_atom_core() -> None:
    for module, path in _modules():
        for imported, _ in _imports(module, path):
            assert not imported.startswith("streamlit"), f"{module} imports {imported}"


def test_no_module_imports_another_modules_private_names() -> None:
    for module, path in _modules():
        for imported, names in _imports(module, path):
            if not imported.startswith("atom_core") or imported == module:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{module} imports private {private} from {imported}"


def test_the_base_layer_imports_no_room() -> None:
    for module, path in _modules():
        if module.rpartition(".")[2] not in BASE_LAYER or module.count(".") != 1:
            continue
        for imported, _ in _imports(module, path):
            if imported.startswith("atom_core."):
                top = imported.split(".")[1]
                assert top in BASE_LAYER, f"{module} (base layer) imports {imported}"


def test_pages_import_no_private_names() -> None:
    for path in sorted((ROOT / "pages").rglob("*.py")) + [ROOT / "app.py"]:
        for imported, names in _imports(f"pages.{path.stem}", path):
            if imported.startswith("atom_core"):
                private = [n for n in names if n.startswith("_")]
                assert not private, f"{path.name} imports private {private} from {imported}"


def _private_attribute_uses(path: Path) -> list[str]:
    """`obj._name` where obj is not self or cls (dunders are public protocol, not private)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if (isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name)
                and owner.func.id == "super"):
            continue  # the object's own method, as its base class defines it
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        found.append(f"{where}:{node.lineno} {ast.unparse(node)}")
    return found


def test_no_module_reaches_into_another_objects_private_attributes() -> None:
    paths = [p for _, p in _modules()] + sorted((ROOT / "pages").rglob("*.py")) + [ROOT / "app.py"]
    found = [use for path in paths for use in _private_attribute_uses(path)]
    assert not found, "private attributes used from outside their object:\n" + "\n".join(found)


def test_the_private_attribute_check_sees_a_reach_in(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f(client, self):\n    self._ok = client._http\n    super()._ok()\n"
                      "    return x.__dict__\n")
    assert [u.split(" ", 1)[1] for u in _private_attribute_uses(sample)] == ["client._http"]


def test_config_is_the_one_reader_of_the_environment() -> None:
    for module, path in _modules():
        if module == "atom_core.config":
            continue
        text = path.read_text()
        for needle in ("os.environ", "os.getenv", "getenv("):
            assert needle not in text, f"{module} reads the environment ({needle})"
    for path in sorted((ROOT / "pages").rglob("*.py")) + [ROOT / "app.py"]:
        assert "os.environ" not in path.read_text(), f"{path.name} reads the environment"
