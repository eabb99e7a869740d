"""What the hardware sampler costs: the share of one CPU core it uses while requests are in
flight (goal: under 1 %).

    python bench/bench_hardware.py [--seconds 10] [--hz 4]

Holds one request "in flight" for SECONDS with the real psutil readers (and NVML when an NVIDIA
GPU is present) while the main thread sleeps, and reports two figures: the time spent inside
the sampler's reads (its own clock), and this process's CPU time over the same wall time (which
also counts the sampler thread's wake-ups and Python's overhead). A baseline of the same sleep
without the sampler is subtracted from the second. Prints figures; asserts nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import time  # noqa: E402

import psutil  # noqa: E402

from atom_core.measure.hardware import HardwareSampler  # noqa: E402


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--hz", type=float, default=4.0)
    args = ap.parse_args()
    proc = psutil.Process()

    c0, w0 = cpu_seconds(proc), time.perf_counter()
    time.sleep(args.seconds)
    baseline = (cpu_seconds(proc) - c0) / (time.perf_counter() - w0)

    sampler = HardwareSampler(hz=args.hz)
    c0, w0 = cpu_seconds(proc), time.perf_counter()
    with sampler.in_flight():
        time.sleep(args.seconds)
    wall = time.perf_counter() - w0
    process_share = (cpu_seconds(proc) - c0) / wall - baseline
    n = len(sampler.samples())
    print(f"sampler at {args.hz:g} Hz for {wall:.1f} s: {n} readings "
          f"(GPU: {'NVML' if sampler.gpu is not None else 'none'})")
    print(f"  time inside reads: {sampler.cost_ns / 1e6:.1f} ms = "
          f"{sampler.cost_ns / 1e9 / wall * 100:.3f} % of one core "
          f"({sampler.cost_ns / max(n, 1) / 1e3:.0f} µs per reading)")
    print(f"  process CPU time above an idle baseline: {process_share * 100:.3f} % of one core "
          f"(goal < 1 %)")


if __name__ == "__main__":
    main()
