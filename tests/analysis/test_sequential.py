"""Tests for the sequential (--until-resolved) rule: boundaries, error rates and power on simulated
experiments with known effects, the stopping rule, scheduling, determinism, bad arguments, rliable
helpers and the `python -m harness.analyze --simulate-sequential` command line."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from harness.analysis import sequential as sq
from harness.analysis.sequential import (
    RESOLVED_EFFECT,
    RESOLVED_NULL,
    UNRESOLVED,
    EffectSpec,
    SequentialPlan,
    boundaries,
    configs_needed,
    crossing_probabilities,
    effects_for_design,
    factorial_effects,
    iqm_and_probability_of_improvement,
    loo_effects,
    power_at,
    report_markdown,
    run_sequential,
    simulate_sequential,
)
from harness.analyze import main as cli_main

REF = 0.06


@pytest.fixture(scope="module")
def sim() -> dict[str, Any]:
    """The default simulation (loo, effects 0, 2, 5, 15%, spread 5-9%) over 500 experiments."""
    return simulate_sequential(500, seed=2024)


def _loo_plan(effects: dict[str, str], **kw: Any) -> SequentialPlan:
    """A loo plan over innovations -> without-config names, reference 'full'."""
    return SequentialPlan(tuple(loo_effects("full", effects)), **kw)


def _sampler(means: dict[str, float], noise: float, seed: int, calls: list | None = None) -> sq.Sampler:
    """Paired Gaussian seed values: mean per config, shared seed term, independent noise (sd `noise`)."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 0.1 * REF, 1000)
    own = {c: rng.normal(0, noise, 1000) for c in sorted(means)}

    def sample(r: int, configs: Sequence[str], reps: range) -> dict[str, dict[int, float]]:
        if calls is not None:
            calls.append((r, tuple(configs)))
        return {c: {rep: means[c] + shared[rep] + own[c][rep] for rep in reps} for c in configs}

    return sample


# ----------------------------------------------------------------------------------------------- boundaries


def test_boundaries_match_published_values() -> None:
    # gsDesign / ldbounds, two-sided alpha 0.05, five equally spaced looks
    obf = boundaries([0.2, 0.4, 0.6, 0.8, 1.0], 0.05, "obrien-fleming")
    assert obf == pytest.approx((4.877, 3.357, 2.680, 2.290, 2.031), abs=2e-3)
    pocock = boundaries([0.2, 0.4, 0.6, 0.8, 1.0], 0.05, "pocock")
    assert pocock == pytest.approx((2.438, 2.427, 2.410, 2.397, 2.386), abs=2e-3)
    fr = [k / 8 for k in range(1, 9)]
    for level in (0.05, 0.0125):
        assert crossing_probabilities(boundaries(fr, level), fr, 0.0).sum() == pytest.approx(level, rel=1e-6)


def test_power_at_agrees_with_simulation() -> None:
    out = simulate_sequential(800, effect_sizes=(0.05,), spread=0.09, seed=7, global_null=False)
    analytic = power_at(0.05, 32, 0.09, seeds_per_round=4, max_seeds=32)
    assert abs(out["power"]["0.05"] - analytic) <= 3 * out["power_se"]["0.05"] + 0.01
    fixed = power_at(0.05, 32, 0.09)
    assert analytic < fixed < 1  # the sequential test pays a little power for its looks
    assert power_at(0.15, 32, 0.07, n_effects=4) > 0.999
    assert power_at(0.0, 32, 0.07) == pytest.approx(0.05, abs=1e-6)


# ----------------------------------------------------------------------------------------------- simulations


def test_family_wise_false_positive_rate_at_most_alpha(sim: dict[str, Any]) -> None:
    assert sim["experiments"] >= 500
    assert sim["fwer"] <= sim["alpha"] + 2 * sim["fwer_se"] + 1e-12
    assert sim["fwer_global_null"] <= sim["alpha"] + 2 * sim["fwer_global_null_se"] + 1e-12
    assert sim["false_equivalence"] <= sim["alpha"]


def test_power_reported_and_at_least_080_at_15_percent(sim: dict[str, Any]) -> None:
    assert set(sim["power"]) == {"0.02", "0.05", "0.15"}
    assert sim["power"]["0.15"] >= 0.8
    assert 0 < sim["power"]["0.05"] <= 1
    assert sim["power"]["0.02"] < sim["power"]["0.05"] < sim["power"]["0.15"] + 1e-12


def test_fewer_seeds_than_the_fixed_design_with_the_same_power(sim: dict[str, Any]) -> None:
    assert sim["fixed_design_seeds"] is not None
    assert sim["fixed_design_power"] >= sim["sequential_power_at_match"]
    assert sim["mean_seeds"] + 2 * sim["mean_seeds_se"] < sim["fixed_design_seeds"]
    by = sim["mean_seeds_by_config"]
    assert by["full -0.15"] < by["full -0.05"] < by["full -0"] <= sim["max_seeds"]


def test_a_naive_repeated_test_would_fail_the_fwer_check() -> None:
    # The check above can fail: t-tests at alpha after every round, no spending, no Holm, exceed alpha.
    rng = np.random.default_rng(0)
    d = rng.normal(0, 0.07, (500, 4, 32))
    hits = np.zeros(500, dtype=bool)
    for n in range(4, 33, 4):
        t = d[:, :, :n].mean(axis=2) / (d[:, :, :n].std(axis=2, ddof=1) / math.sqrt(n))
        hits |= (2 * sq.special.stdtr(n - 1, -np.abs(t)) < 0.05).any(axis=1)
    assert hits.mean() > 0.05 + 2 * math.sqrt(0.05 * 0.95 / 500)


# ----------------------------------------------------------------------------------------------- stopping rule


def test_stops_when_every_effect_is_resolved() -> None:
    plan = _loo_plan({"a": "w_a", "b": "w_b"})
    res = run_sequential(plan, _sampler({"full": REF, "w_a": 1.3 * REF, "w_b": 1.4 * REF}, 1e-5, 1))
    assert res.stopped == "all resolved"
    assert res.rounds_run < plan.n_rounds
    assert res.unresolved == []
    assert all(d.status == RESOLVED_EFFECT and d.estimate < 0 for d in res.decisions)
    assert res.seeds_per_config == dict.fromkeys(plan.configs, res.rounds_run * plan.seeds_per_round)
    a = res.decisions[0]
    assert a.estimate == pytest.approx(-0.3 * REF, rel=1e-3)
    assert a.rel_pct == pytest.approx(100 * a.estimate / a.reference_mean)
    assert a.rel_ci_low_pct < a.rel_pct < a.rel_ci_high_pct < 0


def test_stops_at_max_seeds_and_names_the_unresolved() -> None:
    plan = _loo_plan({"a": "w_a", "b": "w_b"}, max_seeds=10, seeds_per_round=4)
    assert plan.n_rounds == 3 and plan.seeds_through(2) == 10
    res = run_sequential(plan, _sampler({"full": REF, "w_a": REF, "w_b": REF}, 0.05 * REF, 2))
    assert res.stopped == "max seeds"
    assert res.rounds_run == 3
    assert res.unresolved == ["a", "b"]
    assert res.seeds_per_config == {"full": 10, "w_a": 10, "w_b": 10}
    assert all(d.n_seeds == 10 and d.status == UNRESOLVED for d in res.decisions)
    md = report_markdown(res)
    assert "Unresolved: a, b." in md and "alpha 0.05" in md and "3 round(s) run" in md
    assert "would have been found with probability" in md


def test_equivalence_stop_resolves_a_null_effect() -> None:
    plan = _loo_plan({"a": "w_a"}, precision=0.05)
    res = run_sequential(plan, _sampler({"full": REF, "w_a": REF}, 0.002 * REF, 3))
    d = res.decisions[0]
    assert d.status == RESOLVED_NULL and res.stopped == "all resolved"
    assert -5 < d.rel_ci_low_pct <= d.rel_pct <= d.rel_ci_high_pct < 5


def test_only_configs_of_unresolved_effects_are_scheduled() -> None:
    plan = _loo_plan({"big": "w_big", "zero": "w_zero"}, max_seeds=16, seeds_per_round=4)
    calls: list = []
    res = run_sequential(plan, _sampler({"full": REF, "w_big": 2 * REF, "w_zero": REF}, 0.05 * REF, 4, calls))
    big, zero = res.decisions
    assert big.status == RESOLVED_EFFECT and zero.status == UNRESOLVED
    assert calls[0] == (0, ("full", "w_big", "w_zero"))
    later = [c for r, c in calls if r > big.decided_round]
    assert later and all(c == ("full", "w_zero") for c in later)
    assert res.seeds_per_config["w_big"] == 4 * (big.decided_round + 1) < res.seeds_per_config["w_zero"] == 16
    assert configs_needed(res.decisions) == {"full", "w_zero"}


def test_holm_frees_level_for_the_others() -> None:
    # One round of 4 seeds (a fixed design): b's t lies between the alpha/2 and alpha critical values.
    lo, hi = (float(sq.special.stdtrit(3, 1 - a / 2)) for a in (0.05 / 2, 0.05))
    z = np.array([-1.5, -0.5, 0.5, 1.5])
    z = z / z.std(ddof=1)
    t_b = (lo + hi) / 2
    d_b = 0.001 * (t_b / 2 + z)  # mean / (sd / sqrt 4) = t_b
    full = np.full(4, REF)
    plan = _loo_plan({"a": "w_a", "b": "w_b"}, max_seeds=4, seeds_per_round=4)
    big_a = {"full": full, "w_a": full + 0.5 * REF + 1e-6 * z, "w_b": full - d_b}
    got = {d.name: d.status for d in plan.decide(0, big_a)}
    assert got == {"a": RESOLVED_EFFECT, "b": RESOLVED_EFFECT}
    zero_a = dict(big_a, w_a=full + 0.001 * z)
    got = {d.name: d.status for d in plan.decide(0, zero_a)}
    assert got["b"] == UNRESOLVED and got["a"] == UNRESOLVED


# ----------------------------------------------------------------------------------------------- determinism


def test_decisions_deterministic_and_blind_to_future_rounds() -> None:
    plan = _loo_plan({"a": "w_a", "b": "w_b", "c": "w_c"})
    rng = np.random.default_rng(5)
    values = {c: REF * (1 + s) + rng.normal(0, 0.05 * REF, 32)
              for c, s in (("full", 0.0), ("w_a", 0.15), ("w_b", 0.05), ("w_c", 0.0))}
    for r in range(plan.n_rounds):
        first = plan.decide(r, values)
        assert first == plan.decide(r, values)
        cut = plan.seeds_through(r)
        past = {c: {rep: float(v[rep]) for rep in range(cut)} for c, v in values.items()}
        assert sq.decide(plan, r, past) == first
    res = run_sequential(plan, lambda r, configs, reps: {c: {k: values[c][k] for k in reps} for c in configs})
    assert list(res.decisions) == plan.decide(res.rounds_run - 1, res.values)


# ----------------------------------------------------------------------------------------------- designs


def test_factorial_effects_follow_the_effects_convention() -> None:
    from harness.analysis.effects import contrast_weights

    innov = ["a", "b", "c"]
    cells = {"".join(n for n, on in zip(innov, bits, strict=True) if on) or "none": dict(zip(innov, bits, strict=True))
             for bits in itertools.product([False, True], repeat=3)}
    specs = factorial_effects(cells, innov)
    assert [s.name for s in specs] == ["a", "b", "c", "a x b", "a x c", "b x c"]
    assert {s.kind for s in specs} == {"main", "interaction"} and specs[0].reference == "abc"
    mat = np.array([[cells[c][i] for i in innov] for c in cells])
    terms = [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2)]
    for spec, term in zip(specs, terms, strict=True):
        assert [w for _, w in spec.weights] == pytest.approx(list(contrast_weights(mat, term)))
    # a lowers the error by 20% of the reference; b and c do nothing
    rng = np.random.default_rng(6)
    shared = rng.normal(0, 0.1 * REF, 32)
    values = {c: REF * (1 - 0.2 * v["a"]) + shared + rng.normal(0, 0.03 * REF, 32) for c, v in cells.items()}
    plan = SequentialPlan(tuple(specs))
    got = {d.name: d for d in plan.decide(plan.n_rounds - 1, values)}
    assert got["a"].status == RESOLVED_EFFECT and got["a"].estimate < 0
    assert configs_needed(list(got.values())) <= set(cells)


def test_effects_for_design_finds_partners() -> None:
    configs = {"full": {"x": True, "y": True}, "no-x": {"x": False, "y": True}, "no-y": {"x": True, "y": False}}
    specs = effects_for_design("loo", configs, ["x", "y"], "full")
    assert [(s.name, s.configs) for s in specs] == [("x", ("full", "no-x")), ("y", ("full", "no-y"))]
    oat = effects_for_design("oat", {"base": {"x": False}, "+x": {"x": True}}, ["x"], "base")
    assert oat[0].weights == (("+x", 1.0), ("base", -1.0)) and oat[0].kind == "oat"
    with pytest.raises(ValueError, match="partner"):
        effects_for_design("loo", {"full": {"x": True}}, ["x"], "full")


# ----------------------------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"alpha": -0.1}, "alpha"),
    ({"precision": 0.0}, "precision"), ({"precision": -0.02}, "precision"), ({"precision": math.nan}, "precision"),
    ({"seeds_per_round": 1}, "seeds_per_round"), ({"seeds_per_round": 2.5}, "seeds_per_round"),
    ({"max_seeds": 3, "seeds_per_round": 4}, "max_seeds"), ({"max_seeds": 1}, "max_seeds"),
    ({"spending": "haybittle"}, "spending"),
])
def test_bad_plan_arguments_raise_one_line(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError) as err:
        _loo_plan({"a": "w_a"}, **kwargs)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_other_bad_arguments() -> None:
    plan = _loo_plan({"a": "w_a"})
    for call, name in [
        (lambda: plan.decide(plan.n_rounds, {}), "round_index"),
        (lambda: plan.decide(-1, {}), "round_index"),
        (lambda: plan.decide(0, {"full": {-1: 0.1}}), "values"),
        (lambda: simulate_sequential(0), "experiments"),
        (lambda: simulate_sequential(10, alpha=2.0), "alpha"),
        (lambda: simulate_sequential(10, spread=0.0), "spread"),
        (lambda: simulate_sequential(10, seeds_per_round=1), "seeds_per_round"),
        (lambda: power_at(0.05, 1, 0.07), "n_seeds"),
        (lambda: power_at(0.05, 8, 0.0), "spread"),
        (lambda: SequentialPlan(()), "effects"),
        (lambda: EffectSpec("a", "loo", (("x", 1.0), ("y", 1.0)), "x"), "contrast"),
        (lambda: EffectSpec("a", "nope", (("x", 1.0), ("y", -1.0)), "x"), "kind"),
    ]:
        with pytest.raises(ValueError, match=name):
            call()


# ----------------------------------------------------------------------------------------------- rliable


def test_iqm_and_probability_of_improvement_tiny_case() -> None:
    out = iqm_and_probability_of_improvement([0.010, 0.020, 0.030, 0.040], [0.020, 0.030, 0.040, 0.050])
    assert out["iqm_with"] == pytest.approx(0.025) and out["iqm_without"] == pytest.approx(0.035)
    # P(with < without) + ties / 2 over the 16 pairs: (10 + 3 / 2) / 16
    assert out["probability_of_improvement"] == pytest.approx(11.5 / 16)
    higher = iqm_and_probability_of_improvement([3.0, 4.0], [1.0, 2.0], lower_is_better=False)
    assert higher["probability_of_improvement"] == 1.0
    with pytest.raises(ValueError, match="finite"):
        iqm_and_probability_of_improvement([math.nan], [1.0])


# ----------------------------------------------------------------------------------------------- command line


def test_cli_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--simulate-sequential", "--experiments", "40", "--alpha", "0.1", "--json"]) == 0
    out = capsys.readouterr().out.strip()
    obj = json.loads(out)
    assert len(out.splitlines()) == 1
    for key in ("alpha", "fwer", "power", "mean_seeds", "fixed_design_seeds"):
        assert key in obj
    assert obj["alpha"] == 0.1 and obj["experiments"] == 40 and {"0.05", "0.15"} <= set(obj["power"])


def test_cli_table_and_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--simulate-sequential", "--experiments", "20"]) == 0
    assert "power at 0.15" in capsys.readouterr().out
    for argv, word in [(["--simulate-sequential", "--experiments", "0"], "--experiments"),
                       (["--simulate-sequential", "--alpha", "1.5"], "--alpha"),
                       (["--simulate-sequential", "some/dir"], "experiment folder")]:
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert word in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        cli_main([])
    assert exc.value.code == 2
    assert "experiment" in capsys.readouterr().err
