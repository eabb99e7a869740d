"""The machine strip under a live race redraws only when the sampler has a new reading: it is
called on every redraw of the race (about 12 a second), and each chart it draws is a Vega-Lite
spec the browser lays out again."""

from __future__ import annotations

import time
from typing import Any

import pytest

from atom_core.measure import hardware
from pages.parts import arena_machine


class Slot:
    """Stands in for an st.empty(): records what was drawn into it."""

    def __init__(self, drawn: list[str]) -> None:
        self.drawn = drawn

    def caption(self, text: str) -> None:
        self.drawn.append(f"caption {text}")

    def line_chart(self, df: Any, **_: Any) -> None:
        self.drawn.append(f"chart {len(df)}")


class Box:
    def __init__(self) -> None:
        self.drawn: list[str] = []

    def container(self) -> Box:
        return self

    def empty(self) -> Slot:
        return Slot(self.drawn)


class Sampler:
    def __init__(self) -> None:
        self.kept: list[hardware.HardwareSample] = []

    def add(self) -> None:
        self.kept.append(hardware.HardwareSample(t_ns=time.perf_counter_ns(),
                                                 cpu_percent=40.0 + len(self.kept),
                                                 ram_used_mb=8000.0))

    def samples(self, t0_ns: int | None = None) -> list[hardware.HardwareSample]:
        return [s for s in self.kept if t0_ns is None or s.t_ns >= t0_ns]


def test_the_strip_redraws_only_when_a_reading_arrives(monkeypatch: pytest.MonkeyPatch) -> None:
    sampler = Sampler()
    monkeypatch.setattr(hardware, "sampler", lambda: sampler)
    box = Box()
    strip = arena_machine.MachineStrip(box)
    strip.draw()
    assert box.drawn == []  # nothing read yet
    sampler.add()
    strip.draw()
    strip.draw()
    assert box.drawn == ["caption :material/memory: CPU 40 % (peak 40 %) · RAM 7.8 GB"]
    sampler.add()
    for _ in range(5):  # the race redraws far more often than the machine is read
        strip.draw()
    assert box.drawn[1:] == ["caption :material/memory: CPU 41 % (peak 41 %) · RAM 7.8 GB",
                             "chart 2"]
