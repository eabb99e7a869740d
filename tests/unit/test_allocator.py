"""glibc's mmap threshold is fixed in the app process, so freed large buffers go back to the
system (the long-session soak, docs/BENCHMARKS.md)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from atom_core.launch import allocator

ROOT = Path(__file__).resolve().parents[2]
GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


def test_fixes_the_threshold_at_128_kib() -> None:
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    assert allocator.fix_mmap_threshold({}, mallopt) is True
    assert calls == [(-3, 128 * 1024)]  # M_MMAP_THRESHOLD from <malloc.h>


@pytest.mark.parametrize("name", ["MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"])
def test_the_users_own_malloc_tuning_wins(name: str) -> None:
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    assert allocator.fix_mmap_threshold({name: "65536"}, mallopt) is False
    assert calls == []


def test_a_refused_setting_reports_false() -> None:
    assert allocator.fix_mmap_threshold({}, lambda param, value: 0) is False


# After a 4 MB block is freed, glibc serves a 1 MB block from the heap (the raised threshold),
# where its hole can stay; with the threshold fixed it is mmapped and unmapped on free.
PROBE = """
import ctypes, sys
from atom_core.launch import allocator

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
               "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = Info
if sys.argv[1] == "fix":
    assert allocator.fix_mmap_threshold({})
libc.free(libc.malloc(4 << 20))
before = libc.mallinfo2().hblkhd
block = libc.malloc(1 << 20)
print(libc.mallinfo2().hblkhd - before >= 1 << 20)
libc.free(block)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
@pytest.mark.parametrize(("mode", "mmapped"), [("fix", "True"), ("as-is", "False")])
def test_large_blocks_stay_mmapped_after_a_large_free(mode: str, mmapped: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}  # no MALLOC_* from the caller
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == mmapped
