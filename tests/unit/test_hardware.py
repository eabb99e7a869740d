"""The hardware sampler: readings, windows, run rows, the machine, and no GPU without errors."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
import pytest

from atom_core.history import open_store
from atom_core.measure import hardware
from atom_core.measure.hardware import (
    GpuInfo,
    HardwareSample,
    HardwareSampler,
    MachineInfo,
    NvmlReader,
    record_machine,
    summarize,
)
from atom_core.metrics import GenerationMetrics
from atom_core.runs import RunRecord
from tests.fixtures.hardware import FakeGpu


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000_000

    def __call__(self) -> int:
        return self.t


@pytest.fixture(autouse=True)
def no_process_sampler() -> Iterator[None]:
    yield
    hardware.use_sampler(None)


def M(e2e_s: float = 2.0) -> GenerationMetrics:  # noqa: N802 - reads like the constant it was
    return GenerationMetrics(ttft_s=0.2, e2e_s=e2e_s, decode_tps=40.0, itl_p50_s=0.02,
                             itl_p95_s=0.03, output_tokens=50, tokens_source="usage")


def test_summary_takes_peak_and_mean_over_its_own_window() -> None:
    clock = Clock()
    cpu = iter([0.0, 10.0, 30.0, 50.0, 90.0])  # the first is the primer read in __init__
    ram = iter([1000.0, 1500.0, 1200.0, 4000.0])
    gpu = FakeGpu([(20.0, 3000.0), (60.0, 5000.0), (40.0, 4000.0), (100.0, 9000.0)])
    s = HardwareSampler(gpu=gpu, read_cpu=lambda: next(cpu), read_ram_mb=lambda: next(ram),
                        clock=clock)
    for t in (1, 2, 3, 9):  # seconds; the last reading is outside the window asked for
        clock.t = t * 1_000_000_000
        s.sample()
    summary = s.summary(1_000_000_000, 3_000_000_000)
    assert summary is not None and summary.samples == 3
    fields = summary.run_fields()
    assert fields["cpu_percent_mean"] == pytest.approx(30.0)  # (10 + 30 + 50) / 3
    assert fields["cpu_percent_peak"] == 50.0
    assert fields["ram_used_mb_peak"] == 1500.0
    assert fields["gpu_util_mean"] == pytest.approx(40.0)
    assert fields["gpu_util_peak"] == 60.0
    assert fields["vram_used_mb_peak"] == 5000.0


def test_summarize_arithmetic_on_pinned_samples() -> None:
    samples = [HardwareSample(t_ns=i, cpu_percent=c, ram_used_mb=r, gpu_util=g, vram_used_mb=v)
               for i, (c, r, g, v) in enumerate([(10, 100, 50, 1000), (30, 300, 70, 3000),
                                                 (20, 200, 60, 2000)])]
    out = summarize(samples)
    assert out is not None
    assert out.cpu_percent_mean == pytest.approx(20.0) and out.cpu_percent_peak == 30
    assert out.ram_used_mb_peak == 300
    assert out.gpu_util_mean == pytest.approx(60.0) and out.vram_used_mb_peak == 3000
    assert summarize([]) is None


def test_a_window_shorter_than_a_period_takes_the_nearest_reading() -> None:
    clock = Clock()
    s = HardwareSampler(hz=4, gpu=None, read_cpu=lambda: 42.0, read_ram_mb=lambda: 10.0,
                        clock=clock)
    clock.t = 5_000_000_000
    s.sample()
    # a 50 ms request that began 100 ms after the reading: no reading inside, one near
    out = s.summary(5_100_000_000, 5_150_000_000)
    assert out is not None and out.samples == 1 and out.cpu_percent_mean == 42.0
    assert s.summary(9_000_000_000, 9_100_000_000) is None  # nothing near: no figures


def test_sampler_against_psutil_with_a_fake_gpu() -> None:
    """The real psutil readers, a fake GPU: readings are plausible for this machine."""
    gpu = FakeGpu([(55.0, 2048.0)])
    s = HardwareSampler(hz=20, gpu=gpu)
    total_mb = psutil.virtual_memory().total / (1024 * 1024)
    with s.in_flight():
        deadline = time.monotonic() + 30
        while len(s.samples()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    got = s.samples()
    assert len(got) >= 3
    assert all(0.0 <= r.cpu_percent <= 100.0 for r in got)
    assert all(0.0 < r.ram_used_mb <= total_mb for r in got)
    assert all(r.gpu_util == 55.0 and r.vram_used_mb == 2048.0 for r in got)
    # the thread stops once nothing is in flight: no more readings after a while
    deadline = time.monotonic() + 30
    while s.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not s.running
    n = len(s.samples())
    time.sleep(0.2)
    assert len(s.samples()) == n


def test_sampling_runs_only_while_a_request_is_in_flight() -> None:
    s = HardwareSampler(hz=50, gpu=None, read_cpu=lambda: 1.0, read_ram_mb=lambda: 1.0)
    assert s.samples() == []  # nothing sampled before any request
    with s.in_flight(), s.in_flight():  # two at once: one sampler thread
        assert s.active == 2
        assert len(s.samples()) >= 1  # a reading as the first request starts
    assert s.active == 0


def test_run_rows_carry_the_hardware_of_their_window() -> None:
    clock = Clock()
    s = HardwareSampler(gpu=FakeGpu([(80.0, 6000.0)]), read_cpu=lambda: 75.0,
                        read_ram_mb=lambda: 8000.0, clock=clock)
    hardware.use_sampler(s)
    for t in (10, 11, 12):
        clock.t = t * 1_000_000_000
        s.sample()
    clock.t = 12_000_000_000  # the run ends now, after 2 s
    row = RunRecord.measured(source="cli", server="s", model="m", metrics=M(2.0)).to_record()
    assert row["cpu_percent_mean"] == 75.0 and row["ram_used_mb_peak"] == 8000.0
    assert row["gpu_util_mean"] == 80.0 and row["vram_used_mb_peak"] == 6000.0
    assert row["hw_samples"] == 3
    assert row["machine_id"] == hardware.this_machine().id
    assert RunRecord.from_record(row).cpu_percent_mean == 75.0


def test_no_gpu_leaves_gpu_fields_absent_and_raises_nothing() -> None:
    clock = Clock()
    s = HardwareSampler(gpu=None, read_cpu=lambda: 12.0, read_ram_mb=lambda: 900.0, clock=clock)
    hardware.use_sampler(s)
    s.sample()
    row = RunRecord.measured(source="cli", server="s", model="m", metrics=M(0.5)).to_record()
    assert row["cpu_percent_mean"] == 12.0
    assert row["gpu_util_mean"] is None and row["vram_used_mb_peak"] is None
    assert hardware.this_machine().gpus == ()


def test_nvml_reader_without_an_nvidia_gpu_is_none_not_an_error() -> None:
    # This machine has no NVIDIA GPU (and may lack the driver library): open() says None.
    reader = NvmlReader.open()
    assert reader is None or reader.describe()  # on a GPU machine: it names its GPUs


def test_rows_without_a_sampler_have_no_hardware_fields() -> None:
    hardware.use_sampler(None)
    row = RunRecord.measured(source="cli", server="s", model="m", metrics=M()).to_record()
    assert row["cpu_percent_mean"] is None and row["machine_id"] is None


def test_machine_is_described_once_and_recorded_once() -> None:
    m = hardware.describe_machine(FakeGpu([(0.0, 0.0)]))
    assert m.cpu_threads == psutil.cpu_count(logical=True)
    assert m.gpus[0].name == "Fake RTX" and "Fake RTX (24 GB)" in m.label
    back = MachineInfo.from_record(m.to_record())
    assert back == m and back.id == m.id
    store = open_store()
    assert record_machine(store, m) == m.id
    record_machine(store, m)
    assert [r["id"] for r in store.records(hardware.MACHINES_TABLE)] == [m.id]
    assert hardware.machines(store)[m.id].cpu_model == m.cpu_model


def test_a_session_start_records_the_machine_and_every_run_then_names_it() -> None:
    # A sampler that never sampled: the run below saw no reading, yet it names its machine.
    hardware.use_sampler(HardwareSampler(gpu=FakeGpu([(0.0, 0.0)]), read_cpu=lambda: 5.0,
                                         read_ram_mb=lambda: 100.0))
    store = open_store()
    before = RunRecord.measured(source="chat", server="s", model="m", metrics=M()).to_record()
    assert before["machine_id"] is None  # no session started: no machine to name
    machine = hardware.start_session(store)
    assert hardware.session_machine_id() == machine.id
    assert [r["id"] for r in store.records(hardware.MACHINES_TABLE)] == [machine.id]
    assert "Fake RTX" in hardware.machines(store)[machine.id].gpu_label
    row = RunRecord.measured(source="chat", server="s", model="m", metrics=M()).to_record()
    assert row["machine_id"] == machine.id and row["cpu_percent_mean"] is None
    assert hardware.window_fields(0, 0) == {"machine_id": machine.id}
    hardware.start_session(store)  # a second session on the same machine: still one row
    assert len(store.records(hardware.MACHINES_TABLE)) == 1
    hardware.use_sampler(None)  # a fresh process knows no session machine
    assert hardware.session_machine_id() is None


def test_imported_machine_records_are_read_leniently() -> None:
    m = MachineInfo.from_record({"cpu_model": 5, "cpu_cores": "8", "gpus": [{"name": "x"}, 3],
                                 "ram_total_mb": True})
    assert m.cpu_model == "5" and m.cpu_cores is None and m.ram_total_mb is None
    assert m.gpus == (GpuInfo(name="x", vram_total_mb=0.0),)






def test_an_exact_window_beats_the_window_ending_now() -> None:
    clock = Clock()
    cpu = iter([0.0, 90.0, 10.0])  # primer, then a busy reading, then a quiet one
    s = HardwareSampler(gpu=None, read_cpu=lambda: next(cpu), read_ram_mb=lambda: 1.0,
                        clock=clock)
    hardware.use_sampler(s)
    clock.t = 1_000_000_000
    s.sample()  # 90 % while slot A ran (0.9-1.1 s)
    clock.t = 5_000_000_000
    s.sample()  # 10 % much later, when the last slot ended and the round was saved
    exact = hardware.window_fields(900_000_000, 1_100_000_000)
    assert exact["cpu_percent_mean"] == 90.0 and exact["hw_samples"] == 1
    row = RunRecord.measured(source="arena", server="s", model="m", metrics=M(0.2),
                             **exact).to_record()
    assert row["cpu_percent_mean"] == 90.0  # explicit fields win over the probe's guess
    assert hardware.window_fields(0, 0) == {}


def test_the_live_strip_line_shows_now_and_peak_and_gpu_only_with_one() -> None:
    base = [HardwareSample(t_ns=1, cpu_percent=80.0, ram_used_mb=8192.0),
            HardwareSample(t_ns=2, cpu_percent=20.0, ram_used_mb=9216.0)]
    assert hardware.strip_line(base) == "CPU 20 % (peak 80 %) · RAM 9.0 GB"
    gpu = [HardwareSample(t_ns=1, cpu_percent=5.0, ram_used_mb=1024.0, gpu_util=97.0,
                          vram_used_mb=6144.0)]
    assert hardware.strip_line(gpu) == ("CPU 5 % (peak 5 %) · RAM 1.0 GB · GPU 97 % (peak 97 %)"
                                        " · VRAM 6.0 GB (peak 6.0 GB)")
    assert hardware.strip_line([]) == ""
