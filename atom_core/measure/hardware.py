"""What the machine was doing during every run: CPU %, RAM used, GPU utilisation and VRAM used.

One sampler per process (`sampler()`), running only while a request is in flight: every chat
stream enters `in_flight()` when it sends its request and leaves it when the stream closes. While
at least one is in flight, a daemon thread reads the machine a few times a second (psutil; NVIDIA
GPUs through NVML, `nvidia-ml-py`, when one is present; no GPU -> GPU fields None, no error) into
a bounded ring. A run row takes the peak and mean over its own time window (`summary()`), and the
machine itself (CPU model, cores, RAM, GPUs, OS) is described once (`describe_machine()`), kept
once in the "machines" table and named on every run by its `machine_id`.

System-wide figures, not this process's: the model server is another process (LM Studio), and
what it costs the machine is the point. Samples are stamped with time.perf_counter_ns(), the
clock every reply is timed with.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .. import runs
from ..records import stored_record
from ..server import streaming

if TYPE_CHECKING:
    from ..history import HistoryStore

MACHINES_TABLE = "machines"
DEFAULT_HZ = 4.0
KEEP_SECONDS = 3600.0  # ring size: an hour of samples at DEFAULT_HZ is 14,400 small tuples
MB = 1024 * 1024

# RunRecord fields this module fills (None when unknown: no samples, or no GPU)
RUN_FIELDS = ("cpu_percent_mean", "cpu_percent_peak", "ram_used_mb_peak", "gpu_util_mean",
              "gpu_util_peak", "vram_used_mb_peak", "hw_samples", "machine_id")


@dataclass(frozen=True, slots=True)
class HardwareSample:
    """One reading of the machine."""

    t_ns: int  # time.perf_counter_ns() when read
    cpu_percent: float  # all cores, 0-100, since the previous reading
    ram_used_mb: float
    gpu_util: float | None = None  # 0-100, mean over GPUs; None without a GPU
    vram_used_mb: float | None = None  # summed over GPUs


@dataclass(frozen=True, slots=True, kw_only=True)
class HardwareSummary:
    """Peak and mean over a window of samples."""

    samples: int
    cpu_percent_mean: float
    cpu_percent_peak: float
    ram_used_mb_peak: float
    gpu_util_mean: float | None = None
    gpu_util_peak: float | None = None
    vram_used_mb_peak: float | None = None

    def run_fields(self) -> dict[str, Any]:
        """The RunRecord fields, rounded for storage."""
        return {
            "cpu_percent_mean": round(self.cpu_percent_mean, 1),
            "cpu_percent_peak": round(self.cpu_percent_peak, 1),
            "ram_used_mb_peak": round(self.ram_used_mb_peak, 1),
            "gpu_util_mean": _r(self.gpu_util_mean),
            "gpu_util_peak": _r(self.gpu_util_peak),
            "vram_used_mb_peak": _r(self.vram_used_mb_peak),
            "hw_samples": self.samples,
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def summarize(samples: Sequence[HardwareSample]) -> HardwareSummary | None:
    """Peak and mean of the samples; None for none. GPU figures only from samples that have
    them (None when no sample does)."""
    if not samples:
        return None
    cpu = [s.cpu_percent for s in samples]
    gpu = [s.gpu_util for s in samples if s.gpu_util is not None]
    vram = [s.vram_used_mb for s in samples if s.vram_used_mb is not None]
    return HardwareSummary(
        samples=len(samples),
        cpu_percent_mean=sum(cpu) / len(cpu),
        cpu_percent_peak=max(cpu),
        ram_used_mb_peak=max(s.ram_used_mb for s in samples),
        gpu_util_mean=sum(gpu) / len(gpu) if gpu else None,
        gpu_util_peak=max(gpu) if gpu else None,
        vram_used_mb_peak=max(vram) if vram else None,
    )


# -- readers --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuInfo:
    name: str
    vram_total_mb: float


class GpuReader(Protocol):
    """Reads the GPUs: (utilisation %, VRAM used MB) now, and what they are."""

    def read(self) -> tuple[float, float] | None: ...

    def describe(self) -> list[GpuInfo]: ...


class NvmlReader:
    """NVIDIA GPUs through NVML. `open()` returns None when the library or a GPU is missing."""

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self._nvml = nvml
        self._handles = handles

    @classmethod
    def open(cls) -> NvmlReader | None:
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception:  # no package, no driver, no device: no GPU figures, never an error
            return None
        return cls(pynvml, handles) if handles else None

    def read(self) -> tuple[float, float] | None:
        try:
            utils = [self._nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._handles]
            used = [self._nvml.nvmlDeviceGetMemoryInfo(h).used for h in self._handles]
        except Exception:  # a GPU that went away mid-run: stop reporting, don't fail the run
            return None
        return sum(utils) / len(utils), sum(used) / MB

    def describe(self) -> list[GpuInfo]:
        out = []
        for h in self._handles:
            try:
                name = self._nvml.nvmlDeviceGetName(h)
                total = self._nvml.nvmlDeviceGetMemoryInfo(h).total / MB
            except Exception:
                continue
            out.append(GpuInfo(name=name.decode() if isinstance(name, bytes) else str(name),
                               vram_total_mb=round(total, 1)))
        return out


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a requirement; degrade, don't crash
        return None
    return psutil


def _read_cpu() -> float:
    ps = _psutil()
    return float(ps.cpu_percent(interval=None)) if ps else 0.0


def _read_ram_mb() -> float:
    ps = _psutil()
    return float(ps.virtual_memory().used) / MB if ps else 0.0


# -- the sampler ----------------------------------------------------------------------------------


class HardwareSampler:
    """Samples the machine at `hz` while anything is `in_flight()`; keeps the last `keep_s`.

    `gpu` is a GpuReader, None for no GPU, or "auto" (NVML if an NVIDIA GPU is there).
    `read_cpu`/`read_ram_mb`/`clock` exist for tests."""

    def __init__(self, *, hz: float = DEFAULT_HZ, gpu: GpuReader | None | str = "auto",
                 read_cpu: Callable[[], float] = _read_cpu,
                 read_ram_mb: Callable[[], float] = _read_ram_mb,
                 clock: Callable[[], int] = time.perf_counter_ns,
                 keep_s: float = KEEP_SECONDS) -> None:
        self.period_s = 1.0 / hz
        self.gpu: GpuReader | None = NvmlReader.open() if gpu == "auto" else gpu  # type: ignore[assignment]
        self._read_cpu = read_cpu
        self._read_ram = read_ram_mb
        self._clock = clock
        self._samples: deque[HardwareSample] = deque(maxlen=max(16, int(keep_s * hz)))
        self._lock = threading.Lock()
        self._active = 0
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._read_cpu()  # psutil's first cpu_percent(None) is a meaningless 0.0: prime it
        self.cost_ns = 0  # time spent reading, for bench/bench_hardware.py

    # -- in flight -------------------------------------------------------------------------------

    @property
    def active(self) -> int:
        return self._active

    @property
    def running(self) -> bool:
        """Whether the sampling thread is alive (it ends once nothing is in flight)."""
        return self._thread is not None

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Marks one request in flight for the `with` block; samples run while any is."""
        self.started()
        try:
            yield
        finally:
            self.ended()

    def started(self) -> None:
        with self._lock:
            self._active += 1
            first = self._thread is None
            if first:
                self._thread = threading.Thread(target=self._loop, name="atom-hardware",
                                                daemon=True)
        if first:
            self.sample()  # every window starts with a reading, however short the request
            assert self._thread is not None
            self._thread.start()

    def ended(self) -> None:
        with self._lock:
            self._active = max(0, self._active - 1)
            last = self._active == 0
        if last:
            self.sample()  # and ends with one
            self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.period_s)
            self._wake.clear()
            with self._lock:
                if self._active == 0:
                    self._thread = None
                    return
            self.sample()

    # -- readings --------------------------------------------------------------------------------

    def sample(self) -> HardwareSample:
        """Reads the machine now and keeps the reading."""
        t0 = time.perf_counter_ns()
        gpu = self.gpu.read() if self.gpu is not None else None
        s = HardwareSample(t_ns=self._clock(), cpu_percent=self._read_cpu(),
                           ram_used_mb=self._read_ram(),
                           gpu_util=gpu[0] if gpu else None, vram_used_mb=gpu[1] if gpu else None)
        with self._lock:
            self._samples.append(s)
            self.cost_ns += time.perf_counter_ns() - t0
        return s

    def samples(self, t0_ns: int | None = None, t1_ns: int | None = None) -> list[HardwareSample]:
        """Kept samples within [t0_ns, t1_ns] (either end open when None)."""
        with self._lock:
            kept = list(self._samples)
        return [s for s in kept if (t0_ns is None or s.t_ns >= t0_ns)
                and (t1_ns is None or s.t_ns <= t1_ns)]

    def summary(self, t0_ns: int, t1_ns: int) -> HardwareSummary | None:
        """Peak and mean over [t0_ns, t1_ns]. A window shorter than one period may hold no
        sample: then the nearest reading within one period of it stands for the window."""
        inside = self.samples(t0_ns, t1_ns)
        if not inside:
            slack = int(self.period_s * 1e9)
            near = self.samples(t0_ns - slack, t1_ns + slack)
            if near:
                mid = (t0_ns + t1_ns) // 2
                inside = [min(near, key=lambda s: abs(s.t_ns - mid))]
        return summarize(inside)

    def summary_ending_now(self, seconds: float | None) -> HardwareSummary | None:
        """The summary of the last `seconds` (a run that just ended, its end-to-end time)."""
        if seconds is None or seconds < 0:
            return None
        now = self._clock()
        return self.summary(now - int(seconds * 1e9), now)


# -- the machine ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MachineInfo:
    """What the machine is. `id` is a hash of these facts, the same on every run."""

    cpu_model: str
    cpu_cores: int | None  # physical
    cpu_threads: int | None  # logical
    ram_total_mb: float | None
    os: str
    gpus: tuple[GpuInfo, ...] = ()
    hostname: str = field(default="", compare=False)  # shown locally; left out of the card's id

    @property
    def id(self) -> str:
        facts = asdict(self)
        facts.pop("hostname")
        digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()
        return digest[:12]

    @property
    def gpu_label(self) -> str:
        if not self.gpus:
            return "no GPU"
        return ", ".join(f"{g.name} ({g.vram_total_mb / 1024:.0f} GB)" for g in self.gpus)

    @property
    def label(self) -> str:
        """One line: "AMD Ryzen 9 7950X · 16 cores · 64 GB RAM · RTX 4090 (24 GB) · Linux"."""
        ram = f"{self.ram_total_mb / 1024:.0f} GB RAM" if self.ram_total_mb else "RAM ?"
        cores = f"{self.cpu_cores or self.cpu_threads or '?'} cores"
        return " · ".join([self.cpu_model or "CPU ?", cores, ram, self.gpu_label, self.os])

    def to_record(self) -> dict[str, Any]:
        d = asdict(self)
        d["gpus"] = [asdict(g) for g in self.gpus]
        d["id"] = self.id
        return d

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> MachineInfo:
        """Reads a stored or imported machine leniently (untrusted: wrong types are dropped)."""
        def num(v: Any) -> float | None:
            return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

        def whole(v: Any) -> int | None:
            return int(v) if isinstance(v, int) and not isinstance(v, bool) else None

        gpus = tuple(GpuInfo(name=str(g.get("name", ""))[:200],
                             vram_total_mb=num(g.get("vram_total_mb")) or 0.0)
                     for g in (d.get("gpus") or []) if isinstance(g, Mapping))
        return cls(cpu_model=str(d.get("cpu_model") or "")[:200],
                   cpu_cores=whole(d.get("cpu_cores")), cpu_threads=whole(d.get("cpu_threads")),
                   ram_total_mb=num(d.get("ram_total_mb")),
                   os=str(d.get("os") or "")[:200], gpus=gpus,
                   hostname=str(d.get("hostname") or "")[:200])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(gpu: GpuReader | None = None) -> MachineInfo:
    ps = _psutil()
    return MachineInfo(
        cpu_model=_cpu_model(),
        cpu_cores=ps.cpu_count(logical=False) if ps else None,
        cpu_threads=ps.cpu_count(logical=True) if ps else None,
        ram_total_mb=round(ps.virtual_memory().total / MB, 1) if ps else None,
        os=f"{platform.system()} {platform.release()}".strip(),
        gpus=tuple(gpu.describe()) if gpu is not None else (),
        hostname=platform.node(),
    )


@stored_record
@dataclass(frozen=True, slots=True, kw_only=True)
class StoredMachine:
    """A machine as the "machines" table keeps it: its facts under the id it was saved with
    (MachineInfo.id when ATOM saved it; an import's own otherwise): rounds and runs name it."""

    TABLE: ClassVar[str] = MACHINES_TABLE

    id: str
    machine: MachineInfo

    def to_record(self) -> dict[str, Any]:
        return {**self.machine.to_record(), "id": self.id}

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> StoredMachine:
        """Reads a stored or imported machine leniently (MachineInfo.from_record); raises
        ValueError for a row without an id."""
        if not isinstance(row.get("id"), str) or not row["id"]:
            raise ValueError("a machine is saved under its id")
        return cls(id=row["id"], machine=MachineInfo.from_record(row))

    @classmethod
    def check_import(cls, row: Mapping[str, Any]) -> None:
        """Raises ValueError when an imported row does not read as a machine (strict: its
        facts text, numbers or nothing, its GPUs a list of objects)."""
        cls.from_record(row)
        texts = ("cpu_model", "os", "hostname")
        numbers = ("cpu_cores", "cpu_threads", "ram_total_mb")
        gpus = row.get("gpus", [])
        if (any(not isinstance(row.get(k, ""), str) for k in texts)
                or any(isinstance(row.get(k), bool)
                       or not isinstance(row.get(k), int | float | None) for k in numbers)
                or not isinstance(gpus, list) or not all(isinstance(g, Mapping) for g in gpus)):
            raise ValueError("a machine's facts are not as saved")


def record_machine(store: HistoryStore, machine: MachineInfo) -> str:
    """Keeps the machine in the "machines" table once (by id); returns its id."""
    if store.get(StoredMachine, machine.id) is None:
        store.add(StoredMachine(id=machine.id, machine=machine))
    return machine.id


def machines(store: HistoryStore) -> dict[str, MachineInfo]:
    """Every machine ATOM has recorded, by id."""
    return {m.id: m.machine for m in store.read(StoredMachine)}


# -- the process-wide sampler ---------------------------------------------------------------------

_sampler: HardwareSampler | None = None
_machine: MachineInfo | None = None
_recorded: str | None = None  # the id start_session() kept in the store; every run names it
_sampler_lock = threading.Lock()


def sampler() -> HardwareSampler:
    """The process-wide sampler; created on first use, which also lets every run row carry
    what it saw (runs.set_hardware_probe)."""
    global _sampler
    with _sampler_lock:
        if _sampler is None:
            _sampler = HardwareSampler()
            runs.set_hardware_probe(run_fields)
        return _sampler


def use_sampler(s: HardwareSampler | None) -> None:
    """Replaces the process-wide sampler (tests; None forgets it and unhooks run rows)."""
    global _sampler, _machine, _recorded
    with _sampler_lock:
        _sampler, _machine, _recorded = s, None, None
        runs.set_hardware_probe(run_fields if s is not None else None)


def this_machine() -> MachineInfo:
    """This machine, described once per process."""
    global _machine
    if _machine is None:
        _machine = describe_machine(sampler().gpu)
    return _machine


def start_session(store: HistoryStore) -> MachineInfo:
    """What a session does once as it starts (the app, once per browser session; the CLI,
    once per command that saves runs): describes this machine (once per process), keeps it in
    the "machines" table (once per machine) and from then on names it on every run row, sampled
    or not, as the row is saved."""
    global _recorded
    machine = this_machine()  # starts the sampler, which hooks run rows (runs.set_hardware_probe)
    record_machine(store, machine)
    _recorded = machine.id
    return machine


def session_machine_id() -> str | None:
    """The id of the machine start_session() recorded in this process; None before."""
    return _recorded


def in_flight() -> contextlib.AbstractContextManager[None]:
    """`with in_flight():` around a request: the sampler runs while any request is in flight."""
    return sampler().in_flight()


# Every chat stream enters in_flight() while its request is out: the server room's hook, set as
# this module loads (as runs.set_hardware_probe), so that the server room imports no measuring.
streaming.set_in_flight(in_flight)


def window_fields(t0_ns: int, t1_ns: int) -> dict[str, Any]:
    """The hardware fields of a run over its exact window (perf_counter_ns stamps, as a
    ReplyBuffer keeps them): for callers that record a run some time after it ended."""
    s = _sampler
    summary = s.summary(t0_ns, t1_ns) if s is not None and t1_ns >= t0_ns > 0 else None
    if summary is None:
        return _machine_only()
    return {**summary.run_fields(), "machine_id": this_machine().id}


def _machine_only() -> dict[str, Any]:
    """A run the sampler saw nothing of still names the machine the session recorded."""
    return {"machine_id": _recorded} if _recorded is not None else {}


def run_fields(e2e_s: float | None) -> dict[str, Any]:
    """The hardware fields of a run that ended just now after `e2e_s` seconds ({} when the
    sampler saw nothing of it). GPU fields stay None without a GPU."""
    s = _sampler
    if s is None:
        return {}
    summary = s.summary_ending_now(e2e_s)
    if summary is None:
        return _machine_only()
    return {**summary.run_fields(), "machine_id": this_machine().id}


def json_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """The hardware fields of a run row that have a value (GPU ones only with a GPU): what
    `bench --json` adds to each record."""
    return {k: row[k] for k in RUN_FIELDS if row.get(k) is not None}


def strip_line(samples: Sequence[HardwareSample]) -> str:
    """The live strip under a race: the latest reading and the peak since `samples` began.
    "" before any reading."""
    if not samples:
        return ""
    now, peak = samples[-1], summarize(samples)
    assert peak is not None
    parts = [f"CPU {now.cpu_percent:.0f} % (peak {peak.cpu_percent_peak:.0f} %)",
             f"RAM {now.ram_used_mb / 1024:.1f} GB"]
    if now.gpu_util is not None and peak.gpu_util_peak is not None:
        parts.append(f"GPU {now.gpu_util:.0f} % (peak {peak.gpu_util_peak:.0f} %)")
    if now.vram_used_mb is not None and peak.vram_used_mb_peak is not None:
        parts.append(f"VRAM {now.vram_used_mb / 1024:.1f} GB "
                     f"(peak {peak.vram_used_mb_peak / 1024:.1f} GB)")
    return " · ".join(parts)
