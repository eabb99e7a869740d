"""Hardware fields on benchmark records, against the real HTTP double."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from atom_core.cli import main
from atom_core.history import open_store
from atom_core.measure import hardware
from atom_core.measure.hardware import HardwareSampler
from tests.fixtures.hardware import FakeGpu
from tests.fixtures.lmstudio_double import serve


@pytest.fixture(autouse=True)
def no_process_sampler() -> Iterator[None]:
    yield
    hardware.use_sampler(None)


CONFIG = {"models": [{"key": "a", "loaded": True, "ttft_ms": 50, "token_gap_ms": 20,
                      "reply_tokens": 10}]}


@pytest.mark.parametrize("gpu", [None, FakeGpu([(33.0, 1234.0)])])
def test_bench_json_records_carry_the_hardware_fields(monkeypatch: pytest.MonkeyPatch,
                                                      gpu: FakeGpu | None) -> None:
    """Integration (the real HTTP double): GPU fields only when there is a GPU."""
    hardware.use_sampler(HardwareSampler(hz=20, gpu=gpu))
    with serve(CONFIG) as double:
        monkeypatch.setenv("ATOM_SERVER_URL", double.url)
        out, err = io.StringIO(), io.StringIO()
        code = main(["bench", "--models", "a", "--prompt", "hi", "--repeat", "2", "--json"],
                    out=out, err=err)
    assert code == 0, err.getvalue()
    records = [r for r in map(json.loads, out.getvalue().splitlines()) if r["type"] == "record"]
    assert len(records) == 2
    for r in records:
        assert 0 <= r["cpu_percent_mean"] <= 100 and r["ram_used_mb_peak"] > 0
        assert r["machine_id"] == hardware.this_machine().id
        if gpu is None:
            assert "gpu_util_mean" not in r and "vram_used_mb_peak" not in r
        else:
            assert r["gpu_util_mean"] == 33.0 and r["vram_used_mb_peak"] == 1234.0
    stored = open_store().run_rows()
    assert all(row["hw_samples"] >= 1 for row in stored)
