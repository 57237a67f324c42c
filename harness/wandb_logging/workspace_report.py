"""The W&B Report of an experiment (wandb-workspaces reports v2; online mode only).

build_report() only builds the Report object (no network: the entity must be given); save_report()
saves it and returns its URL. The report shows, for the runs of the experiment's group: a parallel
coordinates plot of the varying knobs against the final mse (trial runs), the running cumulative MSE,
the effects table (as markdown and as the analysis run's W&B Table) and the analysis figures
(the analysis run's images).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from harness.wandb_logging import ANALYSIS_JOB, TRIAL_JOB

EFFECTS_TABLE = "effects"
RANKING_TABLE = "ranking"
FIGURE_PREFIX = "figures/"
_MAX_ROWS = 60


def _cell(value: Any) -> str:
    """One markdown table cell: numbers to 4 significant digits, missing values empty, pipes escaped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def frame_markdown(frame: pd.DataFrame, max_rows: int = _MAX_ROWS) -> str:
    """A DataFrame as a GitHub markdown table (at most `max_rows` rows, then a note)."""
    if frame.empty:
        return "_(no rows)_"
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.head(max_rows).itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    if len(frame) > max_rows:
        lines.append(f"\n_{len(frame) - max_rows} more rows in the W&B table below._")
    return "\n".join(lines)


def varying_knobs(trials: pd.DataFrame) -> list[str]:
    """Knob names (from `knob_<name>` columns) that take more than one value over the trials."""
    return [c[len("knob_"):] for c in trials.columns
            if c.startswith("knob_") and c != "knob_seed" and trials[c].nunique(dropna=True) > 1]


def build_report(experiment: str, project: str, entity: str, knobs: Sequence[str], effects: pd.DataFrame,
                 figure_keys: Sequence[str], description: str = "") -> Any:
    """The Report object (not saved) for the runs of group `experiment` in entity/project.

    knobs: the config keys on the parallel coordinates axes (then the summary mse); an empty list
    uses the `variant` config key. figure_keys: the analysis run's image keys (e.g. figures/cumulative_mse).
    """
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    def runset(name: str, job_type: str) -> Any:
        return wr.Runset(entity=entity, project=project, name=name,
                         filters=expr.And(expr.Metric("Group") == experiment, expr.Metric("JobType") == job_type))

    trials, analysis = runset(f"{experiment}: trials", TRIAL_JOB), runset(f"{experiment}: analysis", ANALYSIS_JOB)
    axes = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k)) for k in (knobs or ["variant"])]
    axes.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric("mse")))
    blocks: list[Any] = [
        wr.P(description or f"Ablation experiment {experiment}: every trial is a run of group {experiment}."),
        wr.H2("Knobs against MSE"),
        wr.PanelGrid(runsets=[trials], panels=[
            wr.ParallelCoordinatesPlot(columns=axes, title="knobs vs final mse", layout=wr.Layout(w=24, h=9)),
            wr.LinePlot(title="cumulative MSE over the stream", x="step", y=["cum_mse"], layout=wr.Layout(w=24, h=8)),
        ]),
        wr.H2("Effects"),
        wr.MarkdownBlock(text=frame_markdown(effects)),
        wr.PanelGrid(runsets=[analysis], panels=[
            wr.WeavePanelSummaryTable(table_name=EFFECTS_TABLE, layout=wr.Layout(w=24, h=10)),
            wr.WeavePanelSummaryTable(table_name=RANKING_TABLE, layout=wr.Layout(w=24, h=10)),
        ]),
        wr.H2("Figures"),
        wr.PanelGrid(runsets=[analysis], panels=[
            wr.MediaBrowser(title=key[len(FIGURE_PREFIX):], media_keys=[key], num_columns=1,
                            layout=wr.Layout(w=12, h=10)) for key in figure_keys]),
    ]
    return wr.Report(project=project, entity=entity, title=f"FSNet ablation: {experiment}"[:128],
                     description=f"Ray Tune ablation {experiment} (fsnet-harness)", blocks=blocks)


def save_report(report: Any) -> str:
    """Save the report to W&B (network) and return its URL."""
    report.save()
    return str(report.url)
