"""analyze_experiment: load an experiment folder, estimate effects, write tables, figures and report.md."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from harness.analysis import effects as fx
from harness.analysis import figures as figs
from harness.analysis.load import ExperimentData, load_experiment
from harness.analysis.markdown_report import build_report, findings
from harness.analysis.result import AnalysisResult
from harness.analysis.stats import CI_METHODS
from harness.analysis.tables import ranking_markdown, ranking_table

ANALYSIS_DIR = "analysis"


def _pareto_points(data: ExperimentData, ranking: pd.DataFrame) -> pd.DataFrame:
    """Points for the MSE/seconds front: every trial for optuna, else every variant's means over seeds."""
    if data.design == "optuna":
        cols = [c for c in ("trial_id", "variant", "seed", "mse", "trial_seconds") if c in data.ok.columns]
        knobs = [c for c in data.ok.columns if c.startswith(("knob_", "innov_")) and data.ok[c].nunique() > 1]
        pts = data.ok[cols + knobs].copy()
        if "trial_seconds" not in pts:
            pts["trial_seconds"] = float("nan")
    else:
        pts = ranking[["variant", "mse_mean", "seconds_mean", "n_seeds"]].rename(
            columns={"mse_mean": "mse", "seconds_mean": "trial_seconds"})
    return fx.pareto_front(pts)


def analyze_experiment(exp_dir: Path, out_dir: Path | None = None, n_boot: int = 10000, seed: int = 0,
                       ci_method: str = "expanded") -> AnalysisResult:
    """Analyse `exp_dir` (trials.parquet, curves.parquet, experiment.json) and write into `out_dir`.

    out_dir defaults to `<exp_dir>/analysis`. Writes effects.csv (plus interactions.csv for factorial,
    importances.csv and pareto.csv for optuna, sequential.csv for --until-resolved), ranking.csv/.md, PNG
    figures and report.md. Raises AnalysisInputError (one-line message) for a missing folder or a
    missing/malformed input file.
    """
    return analyze_loaded(load_experiment(Path(exp_dir)), out_dir, n_boot, seed, ci_method)


def analyze_loaded(data: ExperimentData, out_dir: Path | None = None, n_boot: int = 10000, seed: int = 0,
                   ci_method: str = "expanded") -> AnalysisResult:
    """`analyze_experiment` for an experiment already read by `load_experiment`."""
    if ci_method not in CI_METHODS:
        raise ValueError(f"unknown interval method {ci_method!r}; known: {', '.join(CI_METHODS)}")
    if n_boot < 100:
        raise ValueError(f"n_boot must be at least 100, got {n_boot}")
    exp_dir = data.exp_dir
    out = Path(out_dir) if out_dir is not None else exp_dir / ANALYSIS_DIR
    out.mkdir(parents=True, exist_ok=True)

    ranking = ranking_table(data)
    interactions: pd.DataFrame | None = None
    importances: pd.DataFrame | None = None
    notes: list[str] = []
    if data.ok.empty:
        effects = fx.empty_effects()
        notes.append("no terminated trial: no effects")
    elif data.design in ("loo", "oat"):
        if data.reference_variant is None:
            notes.append(f"{data.design}: reference variant unknown (not in experiment.json, not inferable)")
        effects = fx.loo_oat_effects(data, n_boot, seed, ci_method)
    elif data.design == "factorial":
        effects, interactions = fx.factorial_effects(data, n_boot, seed, ci_method)
    elif data.design == "optuna":
        effects = fx.empty_effects()
        importances, imp_notes = fx.optuna_importances(data, seed)
        notes += imp_notes
    else:
        effects = fx.baseline_effects(data, n_boot, seed, ci_method)
    pareto = _pareto_points(data, ranking)
    n_reps = data.ok["rep"].nunique() if len(data.ok) else 0
    if 2 <= n_reps < 5 and data.design != "optuna":
        notes.append(f"only {n_reps} seeds: no bootstrap interval reaches 95% coverage with so few (about 75% at 3 "
                     "seeds), so an effect is called measurable only when the paired t-test agrees")

    res = AnalysisResult(exp_dir=exp_dir, out_dir=out, design=data.design, data=data, ranking=ranking,
                         effects=effects, interactions=interactions, importances=importances, pareto=pareto,
                         n_boot=n_boot, seed=seed, ci_method=ci_method, notes=notes)

    def write_csv(name: str, frame: pd.DataFrame) -> None:
        """Write `frame` as out/name and record it."""
        path = out / name
        frame.to_csv(path, index=False)
        res.tables[name] = path

    write_csv("ranking.csv", ranking)
    (out / "ranking.md").write_text(ranking_markdown(ranking, data.baseline_variant), encoding="utf-8")
    res.tables["ranking.md"] = out / "ranking.md"
    write_csv("effects.csv", effects)
    if interactions is not None:
        write_csv("interactions.csv", interactions)
    if data.design == "optuna":
        write_csv("importances.csv", importances if importances is not None else pd.DataFrame())
        write_csv("pareto.csv", pareto)

    sequential = None
    if data.meta.get("sequential"):  # --until-resolved: the rounds replayed as the driver ran them
        from harness.analysis.rounds import replay_experiment, sequential_rows, sequential_section

        try:
            replayed = replay_experiment(data.meta, data.trials_all)
        except (KeyError, ValueError) as exc:
            notes.append(f"sequential rule not replayed: {exc}")
        else:
            write_csv("sequential.csv", sequential_rows(replayed))
            sequential = sequential_section(replayed, trials=data.trials_all)

    _draw_figures(res)
    res.findings = findings(effects, interactions)
    res.report_path = out / "report.md"
    res.report_path.write_text(build_report(data, res, sequential), encoding="utf-8")
    return res


def _draw_figures(res: AnalysisResult) -> None:
    """Draw every figure that applies; record the path, or the reason it was skipped."""
    data, out = res.data, res.out_dir
    base = data.baseline_variant if data.baseline_variant in set(res.ranking["variant"]) else None
    jobs: dict[str, Callable[[Path], Path]] = {
        "metric_per_variant": lambda p: figs.metric_per_variant(res.ranking, p, base),
        "improvement_vs_ogd": lambda p: figs.improvement_vs_baseline(res.ranking, base, p),
    }
    if data.design == "optuna":
        jobs["importances"] = lambda p: figs.importances_bar(res.importances if res.importances is not None
                                                             else pd.DataFrame(), p)
    else:
        title = {"loo": "Leave-one-out contributions (full minus full-without-it; < 0: it lowers error)",
                 "oat": "One-at-a-time contributions (base-with-it minus base; < 0: it lowers error)",
                 "factorial": "Factorial main effects and interactions (< 0: lowers error)",
                 "presets": f"Difference from {base} (variant minus {base}; < 0: lower error)"}.get(data.design, "")
        jobs["effects_forest"] = lambda p: figs.effects_forest(res.effects, p, title + ", 95% CI",
                                                               res.interactions)
    if data.design == "factorial":
        jobs["interactions_heatmap"] = lambda p: figs.interactions_heatmap(res.effects, res.interactions
                                                                           if res.interactions is not None
                                                                           else fx.empty_effects(),
                                                                           list(data.innovations), p)
    unit = "trial" if data.design == "optuna" else "variant (means over seeds)"
    jobs["cumulative_mse"] = lambda p: figs.cumulative_mse(data.curves, res.ranking, base, p)
    jobs["mse_vs_seconds"] = lambda p: figs.mse_vs_seconds(
        res.pareto, p, None if data.design == "optuna" else "variant",
        f"MSE vs trial time per {unit}, Pareto front in red")
    jobs["memory_diagnostics"] = lambda p: figs.memory_diagnostics(data.ok, res.ranking, p)
    for name, job in jobs.items():
        path = out / f"{name}.png"
        try:
            res.figures[name] = job(path)
        except figs.Skipped as why:
            res.skipped[name] = str(why)
        except Exception as exc:  # a figure failing must not lose the tables and the report
            res.skipped[name] = f"failed: {type(exc).__name__}: {exc}"
