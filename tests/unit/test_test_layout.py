"""What tests share lives in tests/fixtures/: no test file imports a conftest (pytest loads
those itself, and discourages importing them), another test file, or bench/."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def _shared_outside_fixtures(module: str) -> bool:
    parts = module.lstrip(".").split(".")
    last = parts[-1]
    return (module.startswith(".") or parts[0] == "bench"
            or (parts[0] == "tests" and "fixtures" not in parts)
            or last == "conftest" or last.startswith("test_"))


def test_tests_share_code_only_through_fixtures() -> None:
    files = [p for p in TESTS.rglob("*.py") if "fixtures" not in p.relative_to(TESTS).parts]
    assert len(files) > 50
    found = sorted(f"{p.relative_to(TESTS)} imports {m}"
                   for p in files for m in _imported(p) if _shared_outside_fixtures(m))
    assert found == []


def test_browser_tests_read_counts_only_through_expect() -> None:
    """A `locator.count()` reads the page as it is at that instant: on a busy machine a table
    not drawn yet counts 0 (issue 19). Counts go through expect(...).to_have_count, or
    tests/fixtures/browser.py's expect_at_least, which wait for the page."""
    found = []
    for folder in ("e2e", "engine"):
        for path in sorted((TESTS / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "count" and not node.args and not node.keywords):
                    found.append(f"{path.relative_to(TESTS)}:{node.lineno}")
    assert found == []
