"""The ranking table (the shape of the technical report's table 4.1) and markdown formatting helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.load import ExperimentData

RANK_METRICS = ("mse", "mae", "mape")
RANKING_COLUMNS = (
    "rank", "variant", "mse_mean", "mse_std", "mae_mean", "mae_std", "mape_mean", "mape_std",
    "mse_change_vs_baseline_pct", "seconds_mean", "n_seeds", "n_trials",
)


def is_finite(x: Any) -> bool:
    """Whether x is a real finite number."""
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def decimals_for(spread: float, minimum: int = 1, maximum: int = 8) -> int:
    """Decimals showing two significant digits of `spread` (an interval half-width or a std)."""
    if not is_finite(spread) or spread == 0:
        return 4
    return int(min(maximum, max(minimum, -math.floor(math.log10(abs(spread))) + 1)))


def fmt_num(x: Any, decimals: int | None = None) -> str:
    """A number for a table or sentence: 'n/a' for NaN/None, 4 significant digits unless `decimals` is given."""
    if not is_finite(x):
        return "n/a"
    x = float(x)
    if decimals is not None:
        return f"{x:.{decimals}f}"
    if x == 0:
        return "0"
    return f"{x:.4g}" if abs(x) >= 1e-4 else f"{x:.2e}"


def fmt_pm(mean: Any, std: Any) -> str:
    """'mean ± std' with as many decimals as the std's two significant digits; just the mean when std is NaN."""
    if not is_finite(mean):
        return "n/a"
    if not is_finite(std) or float(std) == 0:
        return fmt_num(mean)
    d = decimals_for(float(std))
    return f"{float(mean):.{d}f} ± {float(std):.{d}f}"


def fmt_p(p: Any) -> str:
    """A p-value: 'n/a', '<0.001' or two significant digits."""
    if not is_finite(p):
        return "n/a"
    p = float(p)
    return "<0.001" if p < 0.001 else f"{p:.2g}"


def md_escape(text: Any) -> str:
    """A value safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table; `align` holds 'l' or 'r' per column (default: first left, rest right)."""
    align = list(align) if align else ["l"] + ["r"] * (len(header) - 1)
    sep = ["---" if a == "l" else "--:" for a in align]
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def ranking_from_trials(trials: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """The ranking (report table 4.1's shape) of a trials table: the one definition, for the console and report.

    Per variant over its TERMINATED trials (rows without a `status` column count as finished):
    MSE/MAE/MAPE mean and std over seeds (trials of one seed, key `rep` or else `seed`, averaged
    first), the change in MSE vs `baseline` in % (default `ogd` when present; NaN without one),
    mean trial seconds, seeds and trials; sorted by MSE. Columns: RANKING_COLUMNS.
    """
    ok = trials[trials["status"] == "TERMINATED"] if "status" in trials.columns else trials
    if ok.empty:
        return pd.DataFrame(columns=list(RANKING_COLUMNS))
    if "rep" not in ok.columns:
        ok = ok.assign(rep=ok["seed"])
    if baseline is None and "ogd" in set(ok["variant"]):
        baseline = "ogd"
    metrics = [m for m in RANK_METRICS if m in ok.columns]
    cols = metrics + [c for c in ("trial_seconds",) if c in ok.columns]
    per_seed = ok.groupby(["variant", "rep"])[cols].mean()
    grouped = per_seed.groupby(level="variant")
    out = pd.DataFrame(index=grouped.size().index)
    for m in RANK_METRICS:
        if m in metrics:
            out[f"{m}_mean"] = grouped[m].mean()
            out[f"{m}_std"] = grouped[m].std(ddof=1)
        else:
            out[f"{m}_mean"] = np.nan
            out[f"{m}_std"] = np.nan
    out["seconds_mean"] = ok.groupby("variant")["trial_seconds"].mean() if "trial_seconds" in ok else np.nan
    out["n_seeds"] = grouped.size()
    out["n_trials"] = ok.groupby("variant").size()
    base = baseline
    if base is not None and base in out.index and is_finite(out.loc[base, "mse_mean"]) and out.loc[base, "mse_mean"]:
        out["mse_change_vs_baseline_pct"] = 100 * (out["mse_mean"] / out.loc[base, "mse_mean"] - 1)
    else:
        out["mse_change_vs_baseline_pct"] = np.nan
    out = out.reset_index().rename(columns={"index": "variant"})
    out = out.sort_values(["mse_mean", "variant"], kind="stable").reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    return out[list(RANKING_COLUMNS)]


def ranking_table(data: ExperimentData) -> pd.DataFrame:
    """ranking_from_trials of an experiment's finished trials, against its baseline variant."""
    return ranking_from_trials(data.ok, data.baseline_variant)


def ranking_markdown(ranking: pd.DataFrame, baseline: str | None, max_rows: int | None = None) -> str:
    """The ranking as a markdown table (variant, MSE, MAE, MAPE as mean ± std, Δ MSE vs baseline, seconds, seeds)."""
    base = baseline or "ogd"
    header = ["#", "Variant", "MSE (scaled)", "MAE (scaled)", "MAPE", f"Δ MSE vs {base} (%)", "Seconds (s)", "Seeds"]
    rows = []
    shown = ranking if max_rows is None else ranking.head(max_rows)
    for _, r in shown.iterrows():
        change = r["mse_change_vs_baseline_pct"]
        rows.append([
            int(r["rank"]), f"`{r['variant']}`" + (" (baseline)" if r["variant"] == baseline else ""),
            fmt_pm(r["mse_mean"], r["mse_std"]), fmt_pm(r["mae_mean"], r["mae_std"]),
            fmt_pm(r["mape_mean"], r["mape_std"]), f"{float(change):+.1f}" if is_finite(change) else "n/a",
            f"{float(r['seconds_mean']):.1f}" if is_finite(r["seconds_mean"]) else "n/a", int(r["n_seeds"]),
        ])
    text = markdown_table(header, rows, ["r", "l", "r", "r", "r", "r", "r", "r"])
    if max_rows is not None and len(ranking) > max_rows:
        text += f"\n({len(ranking) - max_rows} more variants in ranking.csv.)\n"
    return text


def effects_markdown(effects: pd.DataFrame, sign_convention: str) -> str:
    """Effects as a markdown table: one row per term, Δ and 95% interval per metric, MSE p-value and verdict."""
    if effects.empty:
        return "_No effects to estimate._\n"
    metrics = [m for m in RANK_METRICS if m in set(effects["metric"])]
    header = ["Term"] + [f"Δ {m.upper()} [95% CI]" for m in metrics] + ["p (MSE)", "Seeds", "Verdict (MSE)"]
    rows = []
    for term, grp in effects.groupby("term", sort=False):
        by_metric = {r["metric"]: r for _, r in grp.iterrows()}
        cells = [f"`{term}`"]
        for m in metrics:
            r = by_metric.get(m)
            if r is None or not is_finite(r["effect"]):
                cells.append("n/a")
                continue
            half = (float(r["ci_high"]) - float(r["ci_low"])) / 2 if is_finite(r["ci_low"]) else abs(float(r["effect"]))
            d = max(4, decimals_for(half)) if abs(float(r["effect"])) < 1 else decimals_for(half)
            ci = f" [{fmt_num(r['ci_low'], d)}, {fmt_num(r['ci_high'], d)}]" if is_finite(r["ci_low"]) else " [n/a]"
            cells.append(f"{fmt_num(r['effect'], d)}{ci}")
        first = by_metric.get("mse", next(iter(by_metric.values())))
        cells += [fmt_p(first["p_value"]), int(first["n_seeds"]), first["verdict"]
                  + (f" ({first['note']})" if first["note"] else "")]
        rows.append(cells)
    return f"Sign convention: Δ = {sign_convention}.\n\n" + markdown_table(header, rows)
