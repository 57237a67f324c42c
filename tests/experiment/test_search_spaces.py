"""Search spaces and designs (no Ray): counts, what each variant switches, names, optuna space."""

from __future__ import annotations

import optuna
import pytest

from fsnet_models.knobs import INNOVATIONS, KNOBS, KnobError
from fsnet_models.presets import PRESETS, resolve_config
from harness.experiment.designs import (
    design_variants,
    innovation_states,
    optuna_base,
    plan_trials,
    sample_variant_name,
    units,
)
from harness.tune.search import OptunaSpace
from search_spaces import SPACES, SearchSpace, SpaceError, get_space

COUNTS = {
    ("advanced", "loo"): 5, ("ultra", "loo"): 7, ("all", "loo"): 11,
    ("advanced", "oat"): 5, ("ultra", "oat"): 7, ("all", "oat"): 11,
    ("advanced", "factorial"): 16, ("ultra", "factorial"): 64, ("all", "factorial"): 1024,
}
KNOB_COUNTS = {("advanced", "loo"): 6, ("ultra", "loo"): 7, ("all", "loo"): 12, ("advanced", "oat"): 6,
               ("advanced", "factorial"): 32}


def _plan(space: str, design: str, unit: str = "innovation", seeds: int = 1, sets: dict | None = None) -> list:
    return plan_trials(get_space(space), design, unit, seeds, sets or {})


def _diff(a: dict, b: dict) -> set[str]:
    return {k for k in set(a) | set(b) if k not in ("preset", "seed") and a.get(k) != b.get(k)}


@pytest.mark.parametrize(("space", "design"), list(COUNTS))
def test_design_counts(space: str, design: str) -> None:
    planned = _plan(space, design)
    assert len(planned) == COUNTS[space, design]
    assert len({t.variant for t in planned}) == len(planned)  # readable names are unique


@pytest.mark.parametrize(("space", "design"), list(KNOB_COUNTS))
def test_knob_unit_counts(space: str, design: str) -> None:
    assert len(_plan(space, design, unit="knob")) == KNOB_COUNTS[space, design]


def test_advanced_loo_over_knobs_switches_each_knob() -> None:
    names = [v.name for v in design_variants(get_space("advanced"), "loo", "knob")]
    assert names == ["advanced", "advanced -chunk_by", "advanced -adaptive_tau", "advanced -top_k",
                     "advanced -dynamic_temperature", "advanced -controller_dropout"]


@pytest.mark.parametrize("space", ["advanced", "ultra", "all"])
@pytest.mark.parametrize("unit", ["innovation", "knob"])
def test_loo_variant_differs_from_full_exactly_in_its_unit(space: str, unit: str) -> None:
    planned = _plan(space, "loo", unit)
    full = planned[0]
    assert full.variant == get_space(space).full_preset
    assert full.config == resolve_config(full.preset, {"seed": 0})
    for trial, u in zip(planned[1:], units(get_space(space), unit), strict=True):
        assert trial.variant == f"{full.variant} -{u.name}"
        assert _diff(trial.config, full.config) == set(u.off)
        assert {k: trial.config[k] for k in u.off} == u.off


@pytest.mark.parametrize("space", ["advanced", "ultra", "all"])
def test_oat_variant_differs_from_base_exactly_in_its_unit(space: str) -> None:
    planned = _plan(space, "oat")
    base = planned[0]
    assert base.variant == get_space(space).base_preset
    for trial, u in zip(planned[1:], units(get_space(space), "innovation"), strict=True):
        assert trial.variant == f"{base.variant} +{u.name}"
        assert _diff(trial.config, base.config) == set(u.on)


def test_names_examples() -> None:
    assert "ultra -memory_heads" in {t.variant for t in _plan("ultra", "loo")}
    assert "advanced +gated_controller" in {t.variant for t in _plan("ultra", "oat")}
    factorial = {t.variant for t in _plan("advanced", "factorial")}
    assert {"fsnet", "advanced", "fsnet +chunk_by +topk_temperature"} <= factorial


def test_off_values_are_fsnet_defaults_and_on_values_the_tier_preset() -> None:
    fsnet = resolve_config("fsnet")
    for inn in INNOVATIONS.values():
        assert inn.off_values() == {k: fsnet[k] for k in inn.knobs}
        assert inn.on_values() == {k: resolve_config(inn.tier)[k] for k in inn.knobs}
        assert inn.on_values() != inn.off_values()


def test_a3_switches_top_k_and_dynamic_temperature_together() -> None:
    a3 = next(u for u in units(get_space("advanced"), "innovation") if u.name == "topk_temperature")
    assert a3.on == {"top_k": 3, "dynamic_temperature": True}
    assert a3.off == {"top_k": 2, "dynamic_temperature": False}


def test_factorial_extremes_are_the_base_and_full_presets() -> None:
    planned = _plan("ultra", "factorial")
    assert planned[0].config == resolve_config("advanced", {"seed": 0})
    assert planned[-1].config == resolve_config("ultra", {"seed": 0})
    states = [innovation_states(t.config, plain=False) for t in planned]
    combos = {tuple(s[n] for n in get_space("ultra").innovations) for s in states}
    assert len(combos) == 64 and all(None not in c for c in combos)


@pytest.mark.parametrize("design", ["loo", "oat", "factorial"])
def test_baselines_are_the_presets(design: str) -> None:
    planned = _plan("baselines", design, seeds=2, sets={"feedback_delay": 12})
    assert [t.variant for t in planned] == list(PRESETS) * 2
    assert [t.seed for t in planned] == [0] * 9 + [1] * 9
    assert all(t.config["feedback_delay"] == 12 for t in planned)
    assert all(v is None for t in planned for v in innovation_states(t.config, plain=True).values())


def test_seeds_are_the_outer_loop_and_every_config_is_resolved() -> None:
    planned = _plan("ultra", "loo", seeds=3, sets={"seq_len": 24})
    assert len(planned) == 21 and [t.plan_id for t in planned] == list(range(21))
    assert [t.seed for t in planned] == [0] * 7 + [1] * 7 + [2] * 7
    assert all(t.config["seq_len"] == 24 and t.config["seed"] == t.seed for t in planned)


def test_soft_overrides_apply_only_where_the_knob_applies() -> None:
    planned = plan_trials(get_space("baselines"), "loo", "innovation", 1, {}, {"epochs": 1})
    by_name = {t.variant: t.config for t in planned}
    assert "epochs" not in by_name["persistence"] and by_name["ogd"]["epochs"] == 1


@pytest.mark.parametrize(("space", "design", "sets", "unit"), [
    ("ultra", "loo", {"memory_heads": 2}, "innovation"),  # varied by the design
    ("ultra", "loo", {"seed": 3}, "innovation"),  # set by --seeds
    ("advanced", "loo", {"replay_size": 10}, "innovation"),  # does not apply to the presets
    ("ultra", "loo", {"memory_slots": 2}, "innovation"),  # inconsistent with top_k
    ("baselines", "loo", {"tau": 0.5, "bogus": 1}, "innovation"),
    ("hparams", "loo", {}, "innovation"),  # no innovations
    ("ultra", "nope", {}, "innovation"),
    ("ultra", "loo", {}, "nope"),
])
def test_bad_plans_raise_one_line(space: str, design: str, sets: dict, unit: str) -> None:
    with pytest.raises(KnobError) as err:
        _plan(space, design, unit=unit, sets=sets)
    assert "\n" not in str(err.value)


def test_unknown_space_is_one_line() -> None:
    with pytest.raises(SpaceError, match="unknown space 'nope'; known spaces: advanced, ultra, all"):
        get_space("nope")
    assert issubclass(SpaceError, KnobError)


def test_spaces_are_built_from_the_registry() -> None:
    assert get_space("advanced").innovations == tuple(n for n, i in INNOVATIONS.items() if i.tier == "advanced")
    assert get_space("ultra").innovations == tuple(n for n, i in INNOVATIONS.items() if i.tier == "ultra")
    assert get_space("all").innovations == tuple(INNOVATIONS)
    assert get_space("baselines").presets == tuple(PRESETS)
    for space in SPACES.values():
        assert space.base_preset in PRESETS and space.full_preset in PRESETS
        for c in space.continuous:
            low, high = c.bounds()  # inside the knob's own range (validated)
            assert c.knob in KNOBS and low <= high


def test_adding_a_space_is_data() -> None:
    space = SearchSpace("a3_only", "fsnet", "advanced", ("topk_temperature",), (), ())
    planned = plan_trials(space, "loo", "knob", 1, {})
    assert [t.variant for t in planned] == ["advanced", "advanced -top_k", "advanced -dynamic_temperature"]


def test_optuna_space_respects_bounds_and_t_min_le_t_max() -> None:
    space = get_space("hparams")
    preset, overrides = optuna_base(space, {"seq_len": 24})
    assert preset == "ultra" and overrides == {"seq_len": 24}
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sample = OptunaSpace(space.continuous)
    for _ in range(25):
        trial = study.ask()
        sample(trial)
        params = trial.params
        assert params["t_min"] <= params["t_max"]
        assert 1e-4 <= params["lr"] <= 1e-2 and isinstance(params["memory_slots"], int)
        resolve_config("ultra", {**overrides, **params})
        study.tell(trial, params["lr"])
    assert sample_variant_name("ultra", {"lr": 0.001}).startswith("ultra sample-")
    with pytest.raises(KnobError, match="no continuous knobs"):
        optuna_base(get_space("ultra"), {})
    with pytest.raises(KnobError, match="varied by design 'optuna'"):
        optuna_base(space, {"lr": 0.01})
