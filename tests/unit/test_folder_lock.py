"""atom_core.files.FolderLock: the one re-entrant write lock both stores hold."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

from atom_core.files import FolderLock

ROOT = Path(__file__).resolve().parents[2]


def test_nested_holds_count_depth_and_enter_runs_once_at_the_outermost(tmp_path: Path) -> None:
    entered: list[bool] = []
    lock = FolderLock(tmp_path / "d", "x.lock", on_enter=lambda: entered.append(lock.writing))
    assert not lock.writing
    with lock.held():
        with lock.held():  # a write calling a write: no wait for itself
            assert lock.writing
        assert lock.writing  # the inner exit leaves the outer hold
    assert not lock.writing and entered == [True]
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "d" / "x.lock").exists()


def test_another_thread_waits_for_the_hold(tmp_path: Path) -> None:
    lock = FolderLock(tmp_path, "x.lock")
    order: list[str] = []
    inside = threading.Event()

    def other() -> None:
        inside.wait()
        with lock.held():
            order.append("other")

    t = threading.Thread(target=other)
    t.start()
    with lock.held():
        inside.set()
        t.join(timeout=0.2)  # it cannot get in while this thread holds the lock
        order.append("first")
    t.join()
    assert order == ["first", "other"]


def test_settings_and_history_share_the_base_lock_and_borrow_nothing_of_each_other() -> None:
    for room, other in (("settings", "history"), ("history", "settings")):
        for path in (ROOT / "atom_core" / room).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    assert not node.module.endswith(f"{other}.files"), path
    for name in ("history/tinydb_core.py", "settings/store.py"):
        source = (ROOT / "atom_core" / name).read_text()
        assert "FolderLock(" in source and "RLock()" not in source, name
