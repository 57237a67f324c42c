"""The analysis W&B run (job_type "analysis", group = experiment) and the end-of-experiment hook.

log_analysis_run() logs the ranking and effects tables (plus interactions/importances/pareto where the
design has them) as wandb.Table and every figure as wandb.Image under `figures/<name>`.
publish_analysis() does that and, online, builds and saves the W&B Report; offline it says in one
line that the report needs online mode. finish_experiment() is what `harness.ablate` runs after the
trials: the analysis (harness.analysis.analyze_experiment), then publish_analysis(); a failure of any
step prints one line and loses nothing already written.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from harness.wandb_logging import ANALYSIS_JOB, init_dir, runs_dir
from harness.wandb_logging.workspace_report import EFFECTS_TABLE, FIGURE_PREFIX, RANKING_TABLE

if TYPE_CHECKING:
    from harness.analysis.result import AnalysisResult


@dataclass(frozen=True)
class AnalysisRun:
    """The analysis run that was written: its id, folder, and (online) entity and URL."""

    run_id: str
    run_dir: Path
    project: str
    entity: str
    url: str
    figure_keys: tuple[str, ...]


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` of an exception."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def table_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy wandb.Table takes as is: string column names, object columns as text (None kept)."""
    out = frame.copy()
    out.columns = [str(c) for c in out.columns]
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: None if v is None or (isinstance(v, float) and v != v) else str(v))
    return out


def analysis_tables(result: AnalysisResult) -> dict[str, pd.DataFrame]:
    """The tables of an analysis by W&B key: ranking, effects, and interactions/importances/pareto when present."""
    tables = {RANKING_TABLE: result.ranking, EFFECTS_TABLE: result.effects}
    if result.interactions is not None:
        tables["interactions"] = result.interactions
    if result.importances is not None:
        tables["importances"] = result.importances
    if result.design == "optuna":
        tables["pareto"] = result.pareto
    return tables


def log_analysis_run(result: AnalysisResult, mode: str, project: str) -> AnalysisRun:
    """Write the analysis run of `result` under <experiment>/wandb (mode offline or online)."""
    import wandb

    data = result.data
    experiment = data.experiment
    runs_dir(result.exp_dir).mkdir(parents=True, exist_ok=True)
    config = {"experiment": experiment, "space": data.meta.get("space"), "design": result.design, "unit": data.unit,
              "n_trials": len(data.trials_all), "n_ok": len(data.ok), "n_boot": result.n_boot,
              "ci_method": result.ci_method, "bootstrap_seed": result.seed,
              "reference_variant": data.reference_variant, "baseline_variant": data.baseline_variant}
    run = wandb.init(project=project, group=experiment, job_type=ANALYSIS_JOB, name=f"{experiment} analysis",
                     dir=str(init_dir(result.exp_dir)), mode=mode, config=config, reinit="create_new",
                     settings=wandb.Settings(console="off", silent=True))
    try:
        payload: dict[str, Any] = {k: wandb.Table(dataframe=table_frame(v)) for k, v in analysis_tables(result).items()}
        figures = {f"{FIGURE_PREFIX}{name}": wandb.Image(str(path), caption=name)
                   for name, path in result.figures.items()}
        payload.update(figures)
        run.log(payload)
        run.summary["findings"] = "\n".join(result.findings)
        run.summary["notes"] = "\n".join(result.notes)
        online = mode == "online"
        info = AnalysisRun(run.id, Path(run.dir).parent, project, (run.entity or "") if online else "",
                           (run.url or "") if online else "", tuple(figures))
    finally:
        run.finish()
    return info


def publish_analysis(result: AnalysisResult, mode: str, project: str,
                     say: Callable[[str], None] = print) -> AnalysisRun | None:
    """Log the analysis run; online, also save the W&B Report. One line per outcome; never raises."""
    if mode == "off":
        return None
    try:
        info = log_analysis_run(result, mode, project)
    except Exception as exc:  # noqa: BLE001 - W&B trouble must not fail the experiment
        print(f"W&B analysis run failed: {one_line(exc)}", file=sys.stderr)
        return None
    if mode == "offline":
        say(f"W&B runs (offline): {runs_dir(result.exp_dir)}; upload with: wandb sync "
            f"{runs_dir(result.exp_dir)}/offline-run-*")
        say("W&B report: skipped, it needs --wandb online (after wandb sync: python -m harness.analyze "
            f"{result.exp_dir} --wandb online)")
        return info
    say(f"W&B analysis run: {info.url}")
    try:
        from harness.wandb_logging.workspace_report import build_report, save_report, varying_knobs

        report = build_report(result.data.experiment, project, info.entity, varying_knobs(result.data.ok),
                              result.effects, info.figure_keys)
        say(f"W&B report: {save_report(report)}")
    except Exception as exc:  # noqa: BLE001
        print(f"W&B report failed: {one_line(exc)}", file=sys.stderr)
    return info


def finish_experiment(exp_dir: str | Path, mode: str, project: str, n_boot: int = 10000,
                      say: Callable[[str], None] = print) -> AnalysisResult | None:
    """After the trials: analyse the experiment (printing the paths written), then publish_analysis().

    An analysis failure prints one line on stderr and returns None; the results files stay as they are.
    """
    try:
        from harness.analysis import analyze_experiment

        result = analyze_experiment(Path(exp_dir), n_boot=n_boot)
    except Exception as exc:  # noqa: BLE001 - the results are written already; say why in one line
        print(f"analysis failed: {one_line(exc)} (retry: python -m harness.analyze {exp_dir})", file=sys.stderr)
        return None
    say("analysis: " + "\n          ".join(str(p) for p in result.written))
    publish_analysis(result, mode, project, say)
    return result
