"""Arena: the machine strip under a live race (CPU, RAM, GPU, VRAM as the race runs).
Drawing only; the sampler is atom_core.measure.hardware."""

import time
from typing import Any

import pandas as pd

from atom_core.measure import hardware


class MachineStrip:
    """A caption and a small chart under the race, fed from the process-wide sampler."""

    def __init__(self, container: Any) -> None:
        self.t0_ns = time.perf_counter_ns()
        box = container.container()
        self._line = box.empty()
        self._chart = box.empty()
        self.drawn = 0  # how many readings the strip shows (redrawn only when one arrives)

    def draw(self) -> None:
        """Called on every redraw of the race (about 12 a second); it draws only when the
        sampler has a new reading (a few a second at most): each chart is a Vega-Lite spec
        the browser lays out again, which took most of the race's redraw time."""
        samples = hardware.sampler().samples(self.t0_ns)
        line = hardware.strip_line(samples)
        if not line or len(samples) == self.drawn:
            return
        self.drawn = len(samples)
        self._line.caption(f":material/memory: {line}")
        if len(samples) >= 2:
            t0 = samples[0].t_ns
            df = pd.DataFrame({"s": [(s.t_ns - t0) / 1e9 for s in samples],
                               "CPU %": [s.cpu_percent for s in samples]})
            if samples[-1].gpu_util is not None:
                df["GPU %"] = [s.gpu_util for s in samples]
            self._chart.line_chart(df, x="s", height=90, x_label="", y_label="%")
