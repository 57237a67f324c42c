"""Tests for the ablation analysis: effects recovered from synthetic experiments with known truth,
interval coverage, factorial contrasts, Optuna importances and Pareto fronts, figures, report and CLI."""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from harness import analyze as analyze_module
from harness.analysis import AnalysisInputError, AnalysisResult, analyze_experiment, load_experiment
from harness.analysis.effects import factorial_effects, loo_oat_effects, paired_effects
from harness.analysis.markdown_report import finding_sentence
from harness.analysis.stats import CI_METHODS, MEASURABLE, NOT_MEASURABLE, pareto_mask, verdict
from harness.analyze import main as cli_main

try:
    import sklearn  # noqa: F401

    HAVE_SKLEARN = True
except ImportError:
    HAVE_SKLEARN = False

ROOT = Path(__file__).resolve().parents[2]
N_BOOT = 2000

LOO_INNOVATIONS = ["chunk_by", "adaptive_tau", "memory_heads", "gated_controller", "diversity_penalty"]
# MSE added when the innovation is OFF (so the loo effect, full minus full-without-it, is minus this).
LOO_OFF_EFFECT = {"chunk_by": -0.010, "adaptive_tau": 0.005, "memory_heads": 0.020, "gated_controller": 0.0,
                  "diversity_penalty": 0.003}


# ----------------------------------------------------------------------------------------------- fixtures


def trial_row(**over: Any) -> dict[str, Any]:
    """One trials.parquet row with every documented column; `over` replaces values."""
    row: dict[str, Any] = {
        "experiment": "exp", "trial_id": "t0", "variant": "ultra", "space": "ultra", "design": "loo",
        "unit": "innovation", "preset": "ultra", "seed": 0,
        "knob_lr": 1e-3, "knob_top_k": 3, "knob_adaptive_tau": True, "knob_chunk_by": "out", "knob_memory_slots": 64,
        "dataset": "ETTh1", "features": "S", "seq_len": 48, "pred_len": 12, "feedback_delay": 12,
        "mse": 0.5, "mae": 0.4, "rmse": math.sqrt(0.5), "mape": 0.12, "smape": 0.1, "mape_scaled": 0.3,
        "rel_mse_persistence": 0.8, "memory_triggers": 40, "attention_entropy_mean": 1.2, "tau_mean": 0.7,
        "tau_min": 0.5, "tau_max": 0.9, "temperature_mean": 1.0, "temperature_min": 0.8, "temperature_max": 1.2,
        "slot_mean_sq_cos": 0.1, "memory_triggers_per_layer": "[10, 10, 10, 10]", "steps": 1000,
        "warmup_seconds": 2.0, "online_seconds": 20.0, "trial_seconds": 22.0, "steps_per_s": 50.0,
        "peak_rss_mb": 900.0, "device": "cpu", "node_ip": "10.0.0.1", "status": "TERMINATED", "error": None,
        "git_commit": "abc1234", "package_versions": "{}", "started_at": "2025-01-01T00:00:00",
        "ended_at": "2025-01-01T00:00:22",
    }
    row.update(over)
    return row


def write_experiment(root: Path, name: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> Path:
    """Write trials.parquet, curves.parquet (converging cumulative MSE) and experiment.json; return the folder."""
    exp = root / name
    exp.mkdir(parents=True)
    trials = pd.DataFrame(rows)
    for col in trials.columns:
        if col.startswith("innov_") or col == "knob_adaptive_tau":
            trials[col] = trials[col].astype("boolean")
    for col in ("knob_top_k", "knob_memory_slots", "memory_triggers"):
        trials[col] = trials[col].astype("Int64")
    trials.to_parquet(exp / "trials.parquet")
    curves = []
    steps = np.arange(100, 1001, 100)
    for r in rows:
        if r["status"] != "TERMINATED":
            continue
        for s in steps:
            curves.append({"experiment": name, "trial_id": r["trial_id"], "variant": r["variant"], "seed": r["seed"],
                           "step": int(s), "cum_mse": r["mse"] * (1 + 0.5 * math.exp(-s / 300)),
                           "cum_mae": r["mae"] * (1 + 0.3 * math.exp(-s / 300))})
    pd.DataFrame(curves).to_parquet(exp / "curves.parquet")
    (exp / "experiment.json").write_text(json.dumps({"experiment": name, **meta}))
    return exp


def loo_rows(n_seeds: int, rng: np.random.Generator, noise: float = 0.001, with_ogd: bool = True,
             memory: bool = True) -> list[dict[str, Any]]:
    """A loo design over LOO_INNOVATIONS: ultra, ultra -<innovation> for each, optionally ogd; one errored trial."""
    rows = []
    seed_offset = rng.normal(0, 0.01, n_seeds)  # shared by every variant of a seed: pairing must remove it
    variants: list[tuple[str, dict[str, bool]]] = [("ultra", dict.fromkeys(LOO_INNOVATIONS, True))]
    variants += [(f"ultra -{i}", {j: j != i for j in LOO_INNOVATIONS}) for i in LOO_INNOVATIONS]
    for s in range(n_seeds):
        for name, on in variants:
            mse = 0.5 + sum(LOO_OFF_EFFECT[i] for i in LOO_INNOVATIONS if not on[i]) + seed_offset[s] \
                + rng.normal(0, noise)
            rows.append(trial_row(
                trial_id=f"{name}-{s}", variant=name, seed=s, mse=mse, mae=0.8 * mse, mape=0.25 * mse,
                trial_seconds=20 + 2 * sum(on.values()) + rng.normal(0, 0.5),
                memory_triggers=int(30 + 5 * on["memory_heads"]) if memory else None,
                attention_entropy_mean=(1.0 + 0.2 * on["memory_heads"]) if memory else None,
                **{f"innov_{i}": on[i] for i in LOO_INNOVATIONS}))
        if with_ogd:
            mse = 0.56 + seed_offset[s] + rng.normal(0, noise)
            rows.append(trial_row(trial_id=f"ogd-{s}", variant="ogd", preset="ogd", seed=s, mse=mse, mae=0.8 * mse,
                                  mape=0.25 * mse, trial_seconds=8.0, memory_triggers=None,
                                  attention_entropy_mean=None, **{f"innov_{i}": None for i in LOO_INNOVATIONS}))
    rows.append(trial_row(trial_id="ultra-crash", variant="ultra -memory_heads", seed=99, status="ERROR", mse=None,
                          error="RuntimeError: CUDA out of memory\ntraceback...",
                          **{f"innov_{i}": i != "memory_heads" for i in LOO_INNOVATIONS}))
    return rows


LOO_META = {"space": "ultra", "design": "loo", "unit": "innovation", "seeds": list(range(8)),
            "reference_variant": "ultra", "baseline_variant": "ogd", "innovations": LOO_INNOVATIONS}


@pytest.fixture(scope="module")
def loo_result(tmp_path_factory: pytest.TempPathFactory) -> AnalysisResult:
    exp = write_experiment(tmp_path_factory.mktemp("loo"), "loo_ultra", loo_rows(8, np.random.default_rng(7)),
                           LOO_META)
    return analyze_experiment(exp, n_boot=N_BOOT, seed=0)


# Factorial: y = 0.5 + A*a + C*c + A*B*ab (+ seed offset + noise). Main effect of A = a + ab/2, of B = ab/2,
# of C = c; interaction A x B = ab/2, the others 0.
FACT_INNOV = ["memory_heads", "gated_controller", "adaptive_trigger"]
FACT_A, FACT_C, FACT_AB = -0.010, 0.004, -0.008
FACT_TRUE_MAIN = {"memory_heads": FACT_A + FACT_AB / 2, "gated_controller": FACT_AB / 2, "adaptive_trigger": FACT_C}
FACT_TRUE_INTER = {("memory_heads", "gated_controller"): FACT_AB / 2, ("memory_heads", "adaptive_trigger"): 0.0,
                   ("gated_controller", "adaptive_trigger"): 0.0}


@pytest.fixture(scope="module")
def factorial_result(tmp_path_factory: pytest.TempPathFactory) -> AnalysisResult:
    rng = np.random.default_rng(11)
    rows = []
    offsets = rng.normal(0, 0.01, 4)
    for s in range(4):
        for a, b, c in itertools.product([False, True], repeat=3):
            on = dict(zip(FACT_INNOV, (a, b, c), strict=True))
            name = " + ".join(i for i in FACT_INNOV if on[i]) or "advanced"
            mse = 0.5 + FACT_A * a + FACT_C * c + FACT_AB * a * b + offsets[s] + rng.normal(0, 0.001)
            rows.append(trial_row(trial_id=f"{name}-{s}", variant=name, seed=s, design="factorial", mse=mse,
                                  mae=0.8 * mse, mape=0.25 * mse, trial_seconds=20 + 3 * a + 2 * b + rng.normal(0, .3),
                                  **{f"innov_{i}": on[i] for i in FACT_INNOV}))
    rows[5]["status"] = "ERROR"  # one missing cell-seed: estimates must stay unbiased
    rows[5]["mse"] = None
    exp = write_experiment(tmp_path_factory.mktemp("fact"), "fact", rows,
                           {"space": "ultra", "design": "factorial", "unit": "innovation", "seeds": [0, 1, 2, 3],
                            "reference_variant": None, "baseline_variant": None, "innovations": FACT_INNOV})
    return analyze_experiment(exp, n_boot=N_BOOT, seed=0)


@pytest.fixture(scope="module")
def optuna_result(tmp_path_factory: pytest.TempPathFactory) -> AnalysisResult:
    rng = np.random.default_rng(3)
    rows = []
    for t in range(48):
        lr = float(10 ** rng.uniform(-4, -2))
        top_k = int(rng.integers(1, 5))
        tau = bool(rng.integers(0, 2))
        chunk = str(rng.choice(["in", "out"]))
        mse = 0.5 + 0.08 * (math.log10(lr) + 3) ** 2 + 0.002 * top_k + rng.normal(0, 0.002)
        rows.append(trial_row(trial_id=f"trial_{t:03d}", variant=f"ultra #{t}", seed=t % 2, design="optuna",
                              unit="knob", knob_lr=lr, knob_top_k=top_k, knob_adaptive_tau=tau, knob_chunk_by=chunk,
                              mse=mse, mae=0.8 * mse, mape=0.25 * mse,
                              trial_seconds=10 + 6 * top_k + rng.uniform(0, 4)))
    exp = write_experiment(tmp_path_factory.mktemp("opt"), "opt", rows,
                           {"space": "ultra", "design": "optuna", "unit": "knob", "seeds": [0, 1],
                            "baseline_variant": None, "innovations": []})
    return analyze_experiment(exp, n_boot=500, seed=0)


# ----------------------------------------------------------------------------------------------- loo


def test_loo_effects_recover_truth(loo_result: AnalysisResult) -> None:
    eff = loo_result.effects[loo_result.effects["metric"] == "mse"].set_index("innovation")
    assert set(eff.index) == set(LOO_INNOVATIONS)
    for i in LOO_INNOVATIONS:
        truth = -LOO_OFF_EFFECT[i]  # full minus full-without-it
        assert eff.loc[i, "effect"] == pytest.approx(truth, abs=0.0015), i
        assert eff.loc[i, "ci_low"] <= eff.loc[i, "effect"] <= eff.loc[i, "ci_high"]
        assert eff.loc[i, "n_seeds"] == 8
        assert eff.loc[i, "with_variant"] == "ultra" and eff.loc[i, "without_variant"] == f"ultra -{i}"
    assert eff.loc["memory_heads", "verdict"] == MEASURABLE and eff.loc["memory_heads", "p_value"] < 0.001
    assert eff.loc["memory_heads", "ci_high"] < 0  # the innovation lowers MSE
    assert eff.loc["chunk_by", "ci_low"] > 0  # this one raises MSE
    assert eff.loc["gated_controller", "verdict"] == NOT_MEASURABLE
    assert eff.loc["gated_controller", "ci_low"] < 0 < eff.loc["gated_controller", "ci_high"]
    assert {"mse", "mae", "mape"} <= set(loo_result.effects["metric"])
    assert (loo_result.effects["sign_convention"].str.contains("full minus full-without-it")).all()


def test_loo_report_sentences(loo_result: AnalysisResult) -> None:
    text = loo_result.report_path.read_text()
    assert text.startswith("# Ablation analysis: loo_ultra")
    assert "`gated_controller`: no measurable effect (Δ MSE" in text
    big = re.search(r"Switching off `memory_heads` raises MSE by ([0-9.]+) \(95% CI ([0-9.]+) to ([0-9.]+), "
                    r"p<0\.001\): a measurable effect\.", text)
    assert big, text
    assert float(big.group(1)) == pytest.approx(0.020, abs=0.0015)
    assert float(big.group(2)) < float(big.group(1)) < float(big.group(3))
    hurt = re.search(r"Switching off `chunk_by` lowers MSE by ([0-9.]+) .*a measurable effect", text)
    assert hurt and float(hurt.group(1)) == pytest.approx(0.010, abs=0.0015)
    assert "full minus full-without-it" in text  # sign convention in the effects table header
    assert "1 errored" in text and "CUDA out of memory" in text
    assert "Online steps per trial: 1000" in text
    for name in loo_result.figures:
        assert f"]({name}.png)" in text  # relative links


def test_loo_ranking_table(loo_result: AnalysisResult) -> None:
    r = loo_result.ranking
    assert list(r["mse_mean"]) == sorted(r["mse_mean"])
    assert set(r["variant"]) == {"ogd", "ultra"} | {f"ultra -{i}" for i in LOO_INNOVATIONS}
    assert (r["n_seeds"] == 8).all()  # the errored trial is not counted
    ogd = r.set_index("variant").loc["ogd", "mse_mean"]
    full = r.set_index("variant").loc["ultra"]
    assert full["mse_change_vs_baseline_pct"] == pytest.approx(100 * (full["mse_mean"] / ogd - 1))
    assert r.set_index("variant").loc["ogd", "mse_change_vs_baseline_pct"] == pytest.approx(0)
    md = (loo_result.out_dir / "ranking.md").read_text()
    assert "Δ MSE vs ogd (%)" in md and " ± " in md
    csv = pd.read_csv(loo_result.out_dir / "ranking.csv")
    assert len(csv) == len(r)


def test_loo_figures_written_and_readable(loo_result: AnalysisResult) -> None:
    expected = {"metric_per_variant", "improvement_vs_ogd", "effects_forest", "cumulative_mse", "mse_vs_seconds",
                "memory_diagnostics"}
    assert expected <= set(loo_result.figures), loo_result.skipped
    assert not loo_result.skipped
    for path in loo_result.figures.values():
        assert path.parent == loo_result.out_dir and path.suffix == ".png"
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 500
        assert img[..., :3].std() > 0.02  # something is drawn
    for path in loo_result.written:
        assert path.is_file() and path.stat().st_size > 0


def test_single_seed_has_no_interval(tmp_path: Path) -> None:
    rows = [r for r in loo_rows(1, np.random.default_rng(1), with_ogd=False, memory=False)]
    exp = write_experiment(tmp_path, "one_seed", rows, {**LOO_META, "seeds": [0], "baseline_variant": None})
    res = analyze_experiment(exp, n_boot=500)
    eff = res.effects[res.effects["metric"] == "mse"]
    assert eff["ci_low"].isna().all() and eff["p_value"].isna().all()
    assert (eff["verdict"] == NOT_MEASURABLE).all()
    assert eff["note"].str.contains("single seed: no interval").all()
    text = res.report_path.read_text()
    assert "`memory_heads`: no measurable effect (Δ MSE" in text and "single seed: no interval" in text
    # no ogd and no memory diagnostics: both figures skipped and said so
    assert {"improvement_vs_ogd", "memory_diagnostics"} <= set(res.skipped)
    assert "## Figures skipped" in text and "`improvement_vs_ogd.png`" in text
    assert not (res.out_dir / "improvement_vs_ogd.png").exists()
    assert pd.read_csv(res.out_dir / "ranking.csv")["mse_change_vs_baseline_pct"].isna().all()


def test_reference_inferred_without_metadata(tmp_path: Path) -> None:
    """No reference, innovations or innov_ columns: all inferred from names like "ultra -memory_heads"."""
    rows = [{k: v for k, v in r.items() if not k.startswith("innov_")} for r in loo_rows(3, np.random.default_rng(2))]
    exp = write_experiment(tmp_path, "bare", rows, {"design": "loo"})
    res = analyze_experiment(exp, n_boot=500, out_dir=tmp_path / "elsewhere")
    assert res.out_dir == tmp_path / "elsewhere" and (tmp_path / "elsewhere" / "report.md").is_file()
    assert res.data.reference_variant == "ultra"
    assert res.data.innovations == LOO_INNOVATIONS
    assert res.effects["effect"].notna().all()


def test_partner_found_by_innovation_columns(tmp_path: Path) -> None:
    """Variants with arbitrary names are paired through their innov_ columns; empty curves are tolerated."""
    rows = loo_rows(4, np.random.default_rng(8))
    names = {"ultra": "full", **{f"ultra -{i}": f"ablation {k}" for k, i in enumerate(LOO_INNOVATIONS)}}
    for r in rows:
        r["variant"] = names.get(r["variant"], r["variant"])
    exp = write_experiment(tmp_path, "renamed", rows, {**LOO_META, "reference_variant": "full"})
    pd.read_parquet(exp / "curves.parquet").iloc[0:0].to_parquet(exp / "curves.parquet")
    data = load_experiment(exp)
    assert data.curves.empty
    eff = loo_oat_effects(data, 500, 0, "expanded").query("metric == 'mse'").set_index("innovation")
    assert eff.loc["memory_heads", "without_variant"] == "ablation 2"
    assert eff.loc["memory_heads", "effect"] == pytest.approx(-0.020, abs=0.002)


def test_cli_interval_methods_match_library() -> None:
    assert analyze_module.CI_METHODS == CI_METHODS


# ----------------------------------------------------------------------------------------------- coverage


def test_bootstrap_interval_coverage() -> None:
    """Over 200 simulated 8-seed experiments the 95% interval covers the true effect 88-99% of the time."""
    rng = np.random.default_rng(2024)
    truth, n_seeds, sims = 0.003, 8, 200
    covered = {"expanded": 0, "percentile": 0}
    seeds = [str(s) for s in range(n_seeds)]
    for _ in range(sims):
        base = rng.normal(0.5, 0.01, n_seeds)
        without = pd.DataFrame({"mse": base + rng.normal(0, 0.001, n_seeds)}, index=seeds)
        with_ = pd.DataFrame({"mse": base + truth + rng.normal(0, 0.001, n_seeds)}, index=seeds)
        for method in covered:
            rec = paired_effects(with_, without, ["mse"], 1000, np.random.default_rng(0), method)[0]
            covered[method] += rec["ci_low"] <= truth <= rec["ci_high"]
    assert 0.88 <= covered["expanded"] / sims <= 0.99, covered
    # the plain percentile interval is nested inside the expanded one, hence never covers more often
    assert covered["percentile"] <= covered["expanded"]


def test_verdict_rules() -> None:
    assert verdict(0.01, 0.005, 0.015, 0.001, 8) == MEASURABLE
    assert verdict(0.01, -0.005, 0.015, 0.3, 8) == NOT_MEASURABLE
    assert verdict(0.01, 0.001, 0.015, 0.08, 8) == "inconclusive"
    assert verdict(0.01, math.nan, math.nan, math.nan, 1) == NOT_MEASURABLE
    assert verdict(math.nan, math.nan, math.nan, math.nan, 0) == "not estimated"


# ----------------------------------------------------------------------------------------------- factorial


def test_factorial_main_effects_and_interaction(factorial_result: AnalysisResult) -> None:
    main = factorial_result.effects[factorial_result.effects["metric"] == "mse"].set_index("innovation")
    for i, truth in FACT_TRUE_MAIN.items():
        assert main.loc[i, "effect"] == pytest.approx(truth, abs=0.0012), i
        assert main.loc[i, "ci_low"] <= truth <= main.loc[i, "ci_high"] or abs(main.loc[i, "effect"] - truth) < 1e-3
    assert main.loc["memory_heads", "verdict"] == MEASURABLE
    inter = factorial_result.interactions
    assert inter is not None
    inter = inter[inter["metric"] == "mse"].set_index(["innovation", "innovation_b"])
    assert len(inter) == 3
    for pair, truth in FACT_TRUE_INTER.items():
        assert inter.loc[pair, "effect"] == pytest.approx(truth, abs=0.0012), pair
    assert inter.loc[("memory_heads", "gated_controller"), "verdict"] == MEASURABLE
    assert inter.loc[("memory_heads", "gated_controller"), "ci_high"] < 0
    assert (factorial_result.out_dir / "interactions.csv").is_file()
    assert "interactions_heatmap" in factorial_result.figures
    text = factorial_result.report_path.read_text()
    assert "`memory_heads` × `gated_controller` interact" in text
    assert "1 errored" in text


def test_factorial_balanced_equals_textbook_contrast(tmp_path: Path) -> None:
    """With a complete design the estimate equals the plain 2^k contrast computed by hand."""
    rng = np.random.default_rng(5)
    rows = []
    for s in range(2):
        for a, b in itertools.product([False, True], repeat=2):
            rows.append(trial_row(trial_id=f"{a}{b}{s}", variant=f"{a}{b}", seed=s, design="factorial",
                                  mse=0.5 + rng.normal(0, 0.01), innov_x=a, innov_y=b))
    exp = write_experiment(tmp_path, "f2", rows, {"design": "factorial", "innovations": ["x", "y"]})
    main, interactions = factorial_effects(load_experiment(exp), 200, 0, "expanded")
    df = pd.DataFrame(rows)

    def m(a: bool, b: bool) -> float:
        return float(df[(df.innov_x == a) & (df.innov_y == b)]["mse"].mean())

    main_x = main.query("metric == 'mse' and innovation == 'x'")["effect"].item()
    assert main_x == pytest.approx(df[df.innov_x]["mse"].mean() - df[~df.innov_x]["mse"].mean())
    inter = interactions.query("metric == 'mse'")["effect"].item()
    assert inter == pytest.approx((m(True, True) - m(True, False) - m(False, True) + m(False, False)) / 2)


# ----------------------------------------------------------------------------------------------- optuna


def test_optuna_importances_and_pareto(optuna_result: AnalysisResult) -> None:
    imp = pd.read_csv(optuna_result.out_dir / "importances.csv")
    evaluators = {"ped_anova"} | ({"fanova"} if HAVE_SKLEARN else set())  # fANOVA needs scikit-learn
    assert set(imp["evaluator"]) == evaluators
    assert set(imp["param"]) == {"lr", "top_k", "adaptive_tau", "chunk_by"}  # memory_slots does not vary
    for ev in evaluators:
        scores = imp[imp["evaluator"] == ev].set_index("param")["importance"]
        assert scores.idxmax() == "lr", ev
        assert scores.sum() == pytest.approx(1.0, abs=1e-6)
    if not HAVE_SKLEARN:
        assert any("fanova importances unavailable" in n for n in optuna_result.notes)

    pareto = pd.read_csv(optuna_result.out_dir / "pareto.csv")
    assert len(pareto) == 48
    front = pareto[pareto["on_front"]]
    x, y = pareto["mse"].to_numpy(), pareto["trial_seconds"].to_numpy()
    for _, p in front.iterrows():  # nobody dominates a front point
        dominated = (x <= p["mse"]) & (y <= p["trial_seconds"]) & ((x < p["mse"]) | (y < p["trial_seconds"]))
        assert not dominated.any()
    for _, p in pareto[~pareto["on_front"]].iterrows():  # every other point is dominated by a front point
        fx_, fy = front["mse"].to_numpy(), front["trial_seconds"].to_numpy()
        assert ((fx_ <= p["mse"]) & (fy <= p["trial_seconds"])).any()
    assert pareto.loc[pareto["mse"].idxmin(), "on_front"]
    assert pareto.loc[pareto["trial_seconds"].idxmin(), "on_front"]
    assert {"importances", "mse_vs_seconds", "cumulative_mse", "metric_per_variant"} <= set(optuna_result.figures)
    for path in optuna_result.figures.values():
        assert mpimg.imread(path).shape[0] >= 300
    text = optuna_result.report_path.read_text()
    assert "most important parameter for MSE is `lr`" in text and "Pareto front" in text


def test_pareto_mask_ties_and_nans() -> None:
    x = np.array([1.0, 1.0, 2.0, 0.5, np.nan, 0.5])
    y = np.array([5.0, 5.0, 1.0, 9.0, 0.1, 9.0])
    assert pareto_mask(x, y).tolist() == [True, True, True, True, False, True]


# ----------------------------------------------------------------------------------------------- presets


def test_presets_effects_vs_baseline(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    rows = []
    for s in range(5):
        off = rng.normal(0, 0.01)
        for name, mse in (("ogd", 0.56), ("fsnet", 0.53), ("ultra", 0.56)):
            rows.append(trial_row(trial_id=f"{name}{s}", variant=name, preset=name, design="presets", seed=s,
                                  mse=mse + off + rng.normal(0, 0.001), memory_triggers=None,
                                  attention_entropy_mean=None))
    exp = write_experiment(tmp_path, "presets", rows, {"design": "presets", "baseline_variant": "ogd"})
    res = analyze_experiment(exp, n_boot=1000)
    eff = res.effects.query("metric == 'mse'").set_index("term")
    assert eff.loc["fsnet", "effect"] == pytest.approx(-0.03, abs=0.003)
    assert eff.loc["fsnet", "verdict"] == MEASURABLE
    assert eff.loc["ultra", "verdict"] == NOT_MEASURABLE
    text = res.report_path.read_text()
    assert "`fsnet` has lower MSE than `ogd` by 0.03" in text
    assert "memory_diagnostics" in res.skipped and "effects_forest" in res.figures


def test_finding_sentence_oat() -> None:
    row = {"kind": "oat", "term": "gated_controller", "verdict": MEASURABLE, "effect": -0.004, "ci_low": -0.006,
           "ci_high": -0.002, "p_value": 0.003, "note": ""}
    s = finding_sentence(row)
    assert s.startswith("Switching on `gated_controller` on the base variant lowers MSE by 0.0040")
    assert "95% CI 0.0020 to 0.0060, p=0.003" in s


# ----------------------------------------------------------------------------------------------- CLI


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.analyze", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_cli_missing_folder_exits_2_one_line(tmp_path: Path) -> None:
    proc = _run_cli(str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "not found" in proc.stderr and proc.stdout == ""


def test_cli_malformed_parquet_exits_2_one_line(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path, "bad", loo_rows(2, np.random.default_rng(0)), LOO_META)
    (exp / "trials.parquet").write_bytes(b"this is not parquet")
    proc = _run_cli(str(exp))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr and "malformed" in proc.stderr


def test_missing_curves_and_missing_columns_are_input_errors(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path, "nocurves", loo_rows(2, np.random.default_rng(0)), LOO_META)
    (exp / "curves.parquet").unlink()
    with pytest.raises(AnalysisInputError, match="missing file"):
        analyze_experiment(exp, n_boot=200)
    exp2 = write_experiment(tmp_path, "nomse", loo_rows(2, np.random.default_rng(0)), LOO_META)
    pd.read_parquet(exp2 / "trials.parquet").drop(columns=["mse"]).to_parquet(exp2 / "trials.parquet")
    with pytest.raises(AnalysisInputError, match="missing column"):
        analyze_experiment(exp2, n_boot=200)
    pd.read_parquet(exp / "trials.parquet").assign(mse="0.5").to_parquet(exp2 / "trials.parquet")
    with pytest.raises(AnalysisInputError, match="column mse is str"):
        load_experiment(exp2)
    (exp2 / "experiment.json").write_text("{not json")
    with pytest.raises(AnalysisInputError, match="experiment.json"):
        load_experiment(exp2)


def test_cli_success_prints_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = write_experiment(tmp_path, "ok", loo_rows(3, np.random.default_rng(4)), LOO_META)
    rc = cli_main([str(exp), "--bootstrap", "300", "--seed", "1", "--out", str(tmp_path / "out")])
    assert rc == 0
    printed = [Path(p) for p in capsys.readouterr().out.split()]
    assert tmp_path / "out" / "report.md" in printed and tmp_path / "out" / "effects.csv" in printed
    assert all(p.is_file() for p in printed)
    assert cli_main([str(exp), "--bootstrap", "5"]) == 2
