"""Ablation analysis: effects with seed-bootstrap intervals, ranking tables, figures and report.md.

Entry points: `analyze_experiment(exp_dir, out_dir=None, n_boot=10000, seed=0)` and
`python -m harness.analyze RESULTS_DIR/<experiment>`. The heavy parts (scipy, matplotlib, optuna) are
imported on first use, so reading and validating an experiment stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.analysis.load import AnalysisInputError, ExperimentData, load_experiment
from harness.analysis.result import AnalysisResult

if TYPE_CHECKING:
    from harness.analysis.pipeline import analyze_experiment, analyze_loaded

__all__ = ["AnalysisInputError", "AnalysisResult", "ExperimentData", "analyze_experiment", "analyze_loaded",
           "load_experiment"]


def __getattr__(name: str) -> Any:
    """Import the pipeline's public names on first access."""
    if name in ("analyze_experiment", "analyze_loaded"):
        from harness.analysis import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'harness.analysis' has no attribute {name!r}")
