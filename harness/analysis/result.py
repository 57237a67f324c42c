"""What one analysis produced: its tables (DataFrames), the files it wrote, and its findings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.analysis.load import ExperimentData


@dataclass
class AnalysisResult:
    """Everything one analysis produced: tables (DataFrames), the files written, and the findings."""

    exp_dir: Path
    out_dir: Path
    design: str
    data: ExperimentData
    ranking: pd.DataFrame
    effects: pd.DataFrame
    interactions: pd.DataFrame | None
    importances: pd.DataFrame | None
    pareto: pd.DataFrame
    n_boot: int
    seed: int
    ci_method: str
    figures: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # figure name -> why it was not drawn
    tables: dict[str, Path] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report_path: Path | None = None

    @property
    def written(self) -> list[Path]:
        """Every file written: tables, figures, then the report."""
        paths = list(self.tables.values()) + list(self.figures.values())
        return paths + ([self.report_path] if self.report_path else [])
