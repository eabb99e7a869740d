"""A slot's settings read from what its fields hold (arena.SlotFields): the same whether the
Arena drew the fields in this run or kept its Settings popover folded (issue 18, page speed)."""

from __future__ import annotations

from atom_core.arena import FLASH_CHOICES, SlotFields, SlotSetup
from atom_core.server.routes import ROUTES
from atom_core.types import LoadConfig, SamplingOptions


def test_untouched_fields_give_the_pickers_defaults() -> None:
    options, load, route, reasoning = SlotFields().choices(can_manage_models=True)
    assert options == SamplingOptions() and load == LoadConfig()
    assert route == ROUTES[0] == "completions" and reasoning is None
    assert FLASH_CHOICES[0] == "as loaded"


def test_set_fields_become_the_slots_options_load_config_route_and_reasoning() -> None:
    fields = SlotFields(temperature=0.2, top_p=0.9, max_tokens=64, seed=7, context_length=8192,
                        flash="off", route="native", reasoning="high")
    options, load, route, reasoning = fields.choices(
        can_manage_models=True, reasoning_options=["off", "low", "high"])
    assert options == SamplingOptions(temperature=0.2, top_p=0.9, max_tokens=64, seed=7)
    assert load == LoadConfig(context_length=8192, flash_attention=False)
    assert (route, reasoning) == ("native", "high")
    setup = SlotSetup(server="http://x:1", model="m", options=options, load_config=load,
                      route=route, reasoning=reasoning)
    assert setup.contestant == "m (temp 0.2 · top-p 0.9 · ctx 8192 · flash off · via native · " \
                               "reasoning high)"


def test_what_the_slot_cannot_use_is_left_out() -> None:
    fields = SlotFields(context_length=8192, flash="on", route="completions", reasoning="high")
    _, load, route, reasoning = fields.choices(can_manage_models=False,
                                               reasoning_options=["high"])
    assert load == LoadConfig()  # a server that cannot load models: no load config
    assert reasoning is None  # the completions route carries no reasoning setting
    # a level the (newly picked) model does not list, or "default": the model's own
    for level in ("medium", "default"):
        assert SlotFields(route="native", reasoning=level).choices(
            can_manage_models=True, reasoning_options=["off", "high"])[3] is None
    # a kept value no picker offers falls back to the picker's default
    assert SlotFields(route="nonsense", flash="maybe").choices(can_manage_models=True)[1:3] \
        == (LoadConfig(), "completions")
