"""Terminal output of an ablation: a line per finished trial and the ranking table (report table 4.1)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd


def _mean_std(mean: float, std: float, digits: int = 4) -> str:
    """`mean ± std`, or just the mean when std is undefined (one seed)."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_ranking(table: pd.DataFrame, baseline: str = "ogd") -> str:
    """A ranking (harness.analysis.tables.ranking_from_trials) as fixed-width text: variant, seeds, MSE, MAE,
    MAPE (mean ± std), ΔMSE vs the baseline, seconds."""
    header = ["variant", "seeds", "MSE", "MAE", "MAPE", f"ΔMSE vs {baseline}", "seconds"]
    rows = []
    for r in table.itertuples(index=False):
        change = (f"{r.mse_change_vs_baseline_pct:+.1f} %" if math.isfinite(r.mse_change_vs_baseline_pct)
                  else "n/a")
        seconds = f"{r.seconds_mean:.1f}" if math.isfinite(r.seconds_mean) else "n/a"
        rows.append([r.variant, str(r.n_seeds), _mean_std(r.mse_mean, r.mse_std), _mean_std(r.mae_mean, r.mae_std),
                     _mean_std(r.mape_mean, r.mape_std), change, seconds])
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) if rows else len(header[i])
              for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths,
                                                                                         strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)


def progress_line(row: Mapping[str, Any], done: int, total: int | None) -> str:
    """One line for a finished trial: count, variant, seed, status, mse and seconds."""
    count = f"[{done}/{total}]" if total else f"[{done}]"
    mse, seconds = row.get("mse"), row.get("trial_seconds")
    text = f"{count} {row['variant']} seed {row['seed']}: mse " + (f"{mse:.4f}" if mse is not None else "n/a")
    if seconds is not None:
        text += f", {seconds:.1f} s"
    if row.get("status") == "ERROR":
        text += f", ERROR: {row.get('error')}"
    return text
