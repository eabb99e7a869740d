"""A request a load run makes (LoadJob): what the engine runs and what the load run, sweeps
and prompt sets plan. Below both engine.py and loadrun.py, so neither imports the other's
caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..types import SamplingOptions


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadJob:
    """One request to make."""

    model: str
    prompt: str
    system_prompt: str | None = None
    options: SamplingOptions | None = None
    server: str = ""  # base URL; "" means the runner's default client
    route: str = "completions"  # chat route (server.routes.ROUTES)
    # the reasoning setting sent on a route that takes one (off/on/low/medium/high; None: the
    # model's default)
    reasoning: str | None = None
    # Anything the caller wants back on the record: prompt index, repeat, slot label, ...
    tags: dict[str, Any] = field(default_factory=dict)
