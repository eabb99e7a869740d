"""The runs archive (history/tinydb_archive.py): the Parquet copy of the runs agrees with the
history after appends, batches, a child process killed mid-batch, deletes, imports and
migrations; it is rebuilt when missing or damaged; reads filter by model, server and time;
and Stats reads its window and its export from it."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from atom_core import stats
from atom_core.history import backup
from atom_core.history.memory_store import MemoryHistoryStore
from atom_core.history.run_columns import typed_columns
from atom_core.history.tinydb_store import TinyDBHistoryStore
from atom_core.runs import RunRecord
from tests.fixtures.realistic_runs import realistic_runs

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["id", "ts", "model", "server", "ok", "ttft_s", "decode_tps", "extra"]


def runs(n: int, *, seed: int = 1, end: float | None = None, days: float = 20.0,
         ) -> list[dict[str, Any]]:
    return list(realistic_runs(n, seed=seed, end=end or time.time(), days=days))


def expected(store: Any) -> pd.DataFrame:
    """The history's runs (run_rows), typed as the archive types them, readable ones only."""
    df, bad = typed_columns(store.run_rows())
    return df[~bad][COLUMNS].reset_index(drop=True)


def read(store: Any, **filters: Any) -> pd.DataFrame:
    return store.runs_table(COLUMNS, **filters).table.to_pandas()


def assert_agree(store: Any) -> None:
    pd.testing.assert_frame_equal(read(store), expected(store))


def parts(store: TinyDBHistoryStore) -> list[Path]:
    return [p for p in store.archive_files() if p.suffix == ".parquet"]


def archived_ids(store: TinyDBHistoryStore) -> list[str]:
    """The run ids the manifest's parts hold, read straight from the Parquet files."""
    manifest = json.loads((store.data_dir / "archive/runs/manifest.json").read_text())
    out: list[str] = []
    for part in manifest["parts"]:
        out += pq.read_table(store.data_dir / "archive/runs" / part["file"],
                             columns=["id"])["id"].to_pylist()
    return out


def closed_ids(store: TinyDBHistoryStore) -> set[str]:
    """Ids of runs in every shard but the newest (those the archive must hold)."""
    folder = store.data_dir / "tables/runs"
    shards = sorted(folder.glob("[0-9]*.json"))
    out: set[str] = set()
    for shard in shards[:-1]:
        out |= {d["id"] for d in json.loads(shard.read_text())["records"].values()}
    return out


@pytest.fixture
def store(tmp_path: Path) -> TinyDBHistoryStore:
    return TinyDBHistoryStore(tmp_path / "data", shard_rows=40, durable=False)


def test_appends_one_at_a_time_and_in_batches_agree(store: TinyDBHistoryStore) -> None:
    rows = runs(300)
    for row in rows[:90]:
        store.add_run(RunRecord.from_record(row))
    store.add_runs([RunRecord.from_record(r) for r in rows[90:250]])
    store.append_many("runs", rows[250:])
    assert_agree(store)
    # the archive itself holds every closed shard's runs, written as they closed
    assert set(archived_ids(store)) == closed_ids(store)
    assert len(closed_ids(store)) >= 280


def test_a_batch_is_one_archive_write_not_one_per_run(store: TinyDBHistoryStore) -> None:
    store.add_runs([RunRecord.from_record(r) for r in runs(400)])  # 10 shards
    assert len(parts(store)) == 1  # the 9 shards it closed, as one part
    assert len(archived_ids(store)) == 360


def test_add_runs_takes_run_records_only(store: TinyDBHistoryStore) -> None:
    with pytest.raises(TypeError):
        store.add_runs([RunRecord.from_record(runs(1)[0]), {"model": "x"}])  # type: ignore[list-item]
    assert store.run_rows() == []


def test_unreadable_rows_are_kept_out_and_counted(store: TinyDBHistoryStore) -> None:
    rows = runs(100)
    rows[3]["ok"] = "yes"
    rows[50]["ttft_s"] = "fast"
    store.append_many("runs", rows)
    view = store.runs_table(["id"])
    assert view.unreadable == 2 and view.table.num_rows == 98
    assert stats.runs_frame(store.run_rows()).attrs["unreadable"] == 2


def test_a_child_killed_mid_batch_loses_no_run_and_leaves_no_torn_file(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    child = (
        "import sys, time\n"
        "from atom_core.history.tinydb_store import TinyDBHistoryStore\n"
        "from tests.fixtures.realistic_runs import realistic_runs\n"
        f"store = TinyDBHistoryStore({str(folder)!r}, shard_rows=30)\n"
        "for i in range(10**6):\n"
        "    store.append_many('runs', list(realistic_runs(97, seed=i, end=time.time())))\n"
        "    print(i, flush=True)\n"
    )
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None
        for _ in range(round_ + 2):  # a few whole batches, then a kill in the next one
            assert proc.stdout.readline(), "the child died on its own"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        store = TinyDBHistoryStore(folder, shard_rows=30)
        for part in parts(store):  # every part file whole: written aside, then renamed
            pq.read_metadata(part)
        assert_agree(store)  # what a reader gets is exactly the history
        store.archive_runs()
        assert_agree(store)
        assert set(archived_ids(store)) == closed_ids(store)


def test_delete_everything_empties_the_archive_too(store: TinyDBHistoryStore) -> None:
    store.append_many("runs", runs(200))
    assert parts(store)
    store.delete_all()
    assert store.runs_table(["id"]).table.num_rows == 0
    assert parts(store) == []
    store.append_many("runs", runs(120, seed=2))
    assert_agree(store)
    assert set(archived_ids(store)) == closed_ids(store)


def test_a_deleted_conversation_and_its_runs(store: TinyDBHistoryStore) -> None:
    """Runs outlive their conversation in the history (they are measurements, not text);
    the archive says exactly what the history says."""
    conv = store.create_conversation(title="gone soon")
    rows = [dict(r, conversation_id=conv.id) for r in runs(100)]
    store.append_many("runs", rows)
    store.delete_conversation(conv.id)
    assert_agree(store)
    assert read(store).shape[0] == len(store.run_rows()) == 100


def test_a_run_changed_in_an_archived_shard_is_read_as_changed(
        store: TinyDBHistoryStore) -> None:
    ids = store.append_many("runs", runs(100))
    store.update_record("runs", ids[0], {"model": "renamed"})
    assert read(store)["model"][0] == "renamed"
    assert_agree(store)
    store.archive_runs()
    assert set(archived_ids(store)) == closed_ids(store)
    assert any("renamed" in pq.read_table(p).column("model").to_pylist() for p in parts(store))


def test_an_import_agrees(store: TinyDBHistoryStore, tmp_path: Path) -> None:
    source = TinyDBHistoryStore(tmp_path / "other", durable=False)
    source.append_many("runs", runs(150, seed=5))
    store.append_many("runs", runs(30))
    backup.import_everything(store, None, backup.export_json(source))
    assert len(store.run_rows()) == 180
    assert_agree(store)
    assert set(archived_ids(store)) == closed_ids(store)


def test_a_migration_that_rewrites_runs_rebuilds_the_archive(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    v1 = TinyDBHistoryStore(folder, shard_rows=40, durable=False)
    v1.append_many("runs", [dict(r, model=r["model"].upper()) for r in runs(100)])
    assert parts(v1)

    def lower_models(data_dir: Path) -> None:  # in place: same size, and as in the same tick
        for shard in (data_dir / "tables" / "runs").glob("*.json"):
            was = shard.stat()
            tables = json.loads(shard.read_text())
            for doc in tables["records"].values():
                doc["model"] = doc["model"].lower()
            shard.write_text(json.dumps(tables, ensure_ascii=False, separators=(",", ":")))
            assert shard.stat().st_size == was.st_size
            os.utime(shard, ns=(was.st_atime_ns, was.st_mtime_ns))

    v2 = TinyDBHistoryStore(folder, shard_rows=40, durable=False, migrations=[lower_models])
    v2.archive_runs()  # takes the write lock: the migration runs first
    shown = read(v2)
    assert (shown["model"] == shown["model"].str.lower()).all()
    assert_agree(v2)


def test_a_missing_archive_is_rebuilt_with_progress(store: TinyDBHistoryStore) -> None:
    store.append_many("runs", runs(400))
    shutil.rmtree(store.data_dir / "archive")
    assert_agree(store)  # read from the history meanwhile
    seen: list[tuple[float, int]] = []
    assert store.archive_runs(lambda share, n: seen.append((share, n))) == 360
    assert seen and seen[-1] == (1.0, 360)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    assert set(archived_ids(store)) == closed_ids(store)
    assert_agree(store)
    assert store.archive_runs(lambda share, n: seen.append((share, n))) == 0  # nothing left


def test_a_damaged_part_or_manifest_is_read_around_and_rebuilt(
        store: TinyDBHistoryStore) -> None:
    store.append_many("runs", runs(200))
    (part,) = parts(store)
    part.write_bytes(b"not parquet at all")
    assert_agree(store)
    assert part not in parts(store)  # dropped at once
    store.archive_runs()
    assert set(archived_ids(store)) == closed_ids(store)
    (store.data_dir / "archive/runs/manifest.json").write_text("{half")
    assert_agree(store)
    store.archive_runs()
    assert set(archived_ids(store)) == closed_ids(store)
    assert_agree(store)


def test_small_parts_are_merged(tmp_path: Path) -> None:
    store = TinyDBHistoryStore(tmp_path / "data", shard_rows=5, durable=False)
    for row in runs(120):
        store.add_run(RunRecord.from_record(row))
    before = len(parts(store))
    assert before >= 20  # one per closed shard, as they closed
    store.archive_runs()
    assert len(parts(store)) < before / 4
    assert set(archived_ids(store)) == closed_ids(store)
    assert_agree(store)


def test_orphans_of_a_killed_write_are_removed(store: TinyDBHistoryStore) -> None:
    store.append_many("runs", runs(100))
    folder = store.data_dir / "archive/runs"
    orphan = folder / "part-000099-deadbeef.parquet"
    orphan.write_bytes(b"PAR1")
    temp = folder / ".part-000100-x.parquet.abc123.tmp"
    temp.write_bytes(b"half")
    young = folder / ".part-000101-y.parquet.def456.tmp"  # another writer's, mid-write
    young.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    os.utime(temp, (old, old))
    store.archive_runs()
    assert not orphan.exists() and not temp.exists()
    assert young.exists()
    assert_agree(store)


@pytest.mark.parametrize("backend", ["tinydb", "memory"])
def test_filters_by_model_server_and_time(backend: str, tmp_path: Path) -> None:
    store: Any = (TinyDBHistoryStore(tmp_path / "data", shard_rows=40, durable=False)
                  if backend == "tinydb" else MemoryHistoryStore())
    now = time.time()
    store.append_many("runs", runs(500, end=now, days=10))
    all_ = expected(store)
    model = all_["model"].value_counts().index[0]
    server = all_["server"].iloc[0]
    since, until = now - 5 * 86400, now - 2 * 86400
    got = read(store, models=[model], servers=[server], since=since, until=until)
    want = all_[(all_["model"] == model) & (all_["server"] == server)
                & (all_["ts"] >= since) & (all_["ts"] < until)].reset_index(drop=True)
    assert len(want) > 0
    pd.testing.assert_frame_equal(got, want)
    with pytest.raises(ValueError):
        store.runs_table(["no_such_column"])


def test_stats_window_is_the_runs_frame_of_those_days(store: TinyDBHistoryStore) -> None:
    now = time.time()
    store.append_many("runs", runs(300, end=now, days=60))
    facts = stats.history_facts(store)
    start, end = stats.default_days(facts, pd.Timestamp(now, unit="s").date())
    flt = stats.RunFilter(start=start, end=end)
    window = stats.window_frame(store, flt)
    whole = stats.runs_frame(store.run_rows())
    pd.testing.assert_frame_equal(window.reset_index(drop=True),
                                  flt.apply(whole)[window.columns].reset_index(drop=True))
    assert 0 < len(window) < len(whole)
    assert facts.colors == stats.model_colors(whole)
    assert facts.models == stats.filter_options(whole)["models"]
    assert facts.route_colors == stats.model_colors(stats.route_series(whole))


def test_export_parquet_and_csv(store: TinyDBHistoryStore) -> None:
    rows = runs(120)
    rows[0]["model"] = "=HYPERLINK(\"http://x\")"
    rows[1]["sweep_id"] = "sw-1"
    store.append_many("runs", rows)
    flt = stats.RunFilter()
    table = pd.read_parquet(io.BytesIO(stats.export_runs(store, flt, "parquet")))
    assert len(table) == 120 and {"id", "model", "ttft_s", "extra", "sweep_id"} <= set(table)
    assert set(table["id"]) == {r["id"] for r in store.run_rows()}
    text = stats.export_runs(store, flt, "csv").decode()
    csv = pd.read_csv(io.StringIO(text), keep_default_na=False)
    assert len(csv) == 120
    assert "'=HYPERLINK" in set(csv["model"].str[:11])  # shown as text, not run
    assert not csv["model"].str.startswith("=").any()
    picked = stats.RunFilter(models=(rows[5]["model"],))
    assert set(pd.read_parquet(io.BytesIO(stats.export_runs(store, picked, "parquet")))["model"]
               ) == {rows[5]["model"]}
    with pytest.raises(ValueError):
        stats.export_runs(store, flt, "xlsx")


def test_a_sweep_writes_its_runs_in_batches(store: TinyDBHistoryStore,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from atom_core.history import batch as batch_module
    from atom_core.history.batch import RunBatch

    writes: list[int] = []
    real = store.add_runs
    monkeypatch.setattr(store, "add_runs", lambda rs: (writes.append(len(rs)), real(rs))[1])
    clock = [0.0]
    monkeypatch.setattr(batch_module.time, "monotonic", lambda: clock[0])
    sweep = [RunRecord.from_record(r) for r in runs(1100)]
    with pytest.raises(RuntimeError), RunBatch(store, max_runs=500, max_wait_s=1.0) as batch:
        for i, run in enumerate(sweep):
            if i == 1050:
                clock[0] += 2.0  # a slow level: what waited a second goes out
            batch.add(run)
        raise RuntimeError("Stop pressed")  # what is left is written however the block ends
    assert writes == [500, 500, 51, 49]
    assert [r["id"] for r in store.run_rows()] == [r["id"] for r in read(store).to_dict(
        "records")] and len(store.run_rows()) == 1100
    assert_agree(store)
    with pytest.raises(TypeError):
        RunBatch(store).add({"model": "x"})  # type: ignore[arg-type]


def test_the_machine_tab_counts_the_same_runs_from_the_archive(
        store: TinyDBHistoryStore) -> None:
    from atom_core.measure import card

    rows = runs(300)
    for i, row in enumerate(rows):
        if i % 3:
            row.update(machine_id=f"m{i % 2}", cpu_percent_mean=10.0 + i % 7,
                       ram_used_mb_peak=1000.0 + i)
        if i % 10 == 0:
            row["source"] = "judge"
        if i % 11 == 0:
            row.update(gpu_util_mean=50.0, vram_used_mb_peak=2048.0 + i)
    store.append_many("runs", rows)
    from_rows = card.machine_table(store.run_rows())
    assert from_rows and from_rows == card.machine_table(stats.machine_runs(store))


def test_catching_up_while_another_thread_records_runs(tmp_path: Path) -> None:
    """Parts are written outside the write lock: a catch-up and reads running while runs
    arrive never lose, double or tear a run."""
    import threading

    store = TinyDBHistoryStore(tmp_path / "data", shard_rows=20, durable=False)
    store.append_many("runs", runs(200, seed=3))
    shutil.rmtree(store.data_dir / "archive")  # a backlog for the catch-up to work through
    done = threading.Event()
    errors: list[BaseException] = []

    def record() -> None:
        try:
            for i in range(30):
                store.append_many("runs", runs(17, seed=100 + i))
                store.add_run(RunRecord.from_record(runs(1, seed=200 + i)[0]))
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=record)
    writer.start()
    while not done.is_set():
        store.archive_runs()
        ids = store.runs_table(["id"]).table["id"].to_pylist()
        assert len(ids) == len(set(ids))  # never a run twice
    writer.join()
    assert not errors
    store.archive_runs()
    assert_agree(store)
    assert len(store.run_rows()) == 200 + 30 * 18
    assert sorted(archived_ids(store)) == sorted(closed_ids(store))
