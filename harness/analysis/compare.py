"""Two experiments side by side: `python -m harness.analyze --compare EXP_A EXP_B [--metric mse] [--json]`.

For every variant both experiments ran (matched by the `variant` column), over their TERMINATED trials with a
finite value of the metric: seeds, mean and 95% t interval of each side, the difference B - A with Welch's
unpaired 95% interval, the same in % of A's mean, and, when both sides ran the same seeds of that variant, the
paired 95% t interval over those seeds. Meant for two protocols set against each other (feedback_delay 0 vs 12)
and for grouped vs solo runs of the same configuration.

One value per seed: a seed's trials of a variant are averaged first (as in the ranking), so a retried or
duplicated trial does not count twice. Pairing is by seed only: the two experiments may differ in their data
setting (that is usually the point of the comparison).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.load import SETTING_COLUMNS, TRIALS_FILE, AnalysisInputError, read_parquet_checked
from harness.analysis.tables import decimals_for, fmt_num, is_finite
from harness.online.result import METRIC_NAMES

LEVEL = 0.95
COMPARE_METRICS = (*METRIC_NAMES, "trial_seconds", "online_seconds", "steps_per_s", "peak_rss_mb")
DIFFERS = "differs"
NO_DIFFERENCE = "no difference detected"
NOT_ESTIMATED = "not estimated"
COMPARE_COLUMNS = (
    "variant", "n_a", "mean_a", "ci_low_a", "ci_high_a", "n_b", "mean_b", "ci_low_b", "ci_high_b",
    "diff", "diff_ci_low", "diff_ci_high", "welch_df", "diff_pct", "diff_pct_ci_low", "diff_pct_ci_high",
    "welch_verdict", "paired", "n_paired", "paired_diff", "paired_ci_low", "paired_ci_high", "paired_pct",
    "paired_pct_ci_low", "paired_pct_ci_high", "paired_verdict", "verdict", "verdict_basis",
)


def _t_quantile(df: float, level: float = LEVEL) -> float:
    """The two-sided t critical value at `level` with `df` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df))


def mean_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the t interval mean +- t_{n-1} s / sqrt(n); NaN ends with fewer than 2 values."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    half = _t_quantile(v.size - 1, level) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, mean - half, mean + half


def welch_interval(a: np.ndarray, b: np.ndarray, level: float = LEVEL) -> tuple[float, float, float, float]:
    """(mean(b) - mean(a), low, high, df): Welch's unpaired t interval with Welch-Satterthwaite degrees of freedom.

    NaN interval when a side has fewer than 2 values; both sides without spread: the interval is the difference
    itself (df NaN).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan, math.nan, math.nan
    diff = float(b.mean() - a.mean())
    if a.size < 2 or b.size < 2:
        return diff, math.nan, math.nan, math.nan
    va, vb = float(a.var(ddof=1)) / a.size, float(b.var(ddof=1)) / b.size
    se2 = va + vb
    if se2 == 0:
        return diff, diff, diff, math.nan
    df = se2 ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = _t_quantile(df, level) * math.sqrt(se2)
    return diff, diff - half, diff + half, float(df)


def _verdict(low: float, high: float) -> str:
    """'differs' when the interval excludes 0, 'no difference detected' when it holds it, else 'not estimated'."""
    if not (is_finite(low) and is_finite(high)):
        return NOT_ESTIMATED
    return DIFFERS if low > 0 or high < 0 else NO_DIFFERENCE


def _pct(x: float, base: float) -> float:
    """x in % of base (NaN when base is 0 or not finite)."""
    return 100 * x / base if is_finite(base) and base != 0 and is_finite(x) else math.nan


def _pct_interval(low: float, high: float, base: float) -> tuple[float, float]:
    """An interval in % of base, ends ordered (base taken as fixed)."""
    lo, hi = _pct(low, base), _pct(high, base)
    return (lo, hi) if not (is_finite(lo) and is_finite(hi)) or lo <= hi else (hi, lo)


def _terminated(trials: pd.DataFrame) -> pd.DataFrame:
    """The TERMINATED rows (every row when there is no status column)."""
    if "status" not in trials.columns:
        return trials
    return trials[trials["status"].astype(str).str.upper() == "TERMINATED"]


def check_metric(trials: pd.DataFrame, metric: str, side: str = "") -> None:
    """AnalysisInputError unless `metric` is a known metric and a numeric column of `trials`."""
    if metric not in COMPARE_METRICS:
        raise AnalysisInputError(f"unknown metric {metric!r}; known: {', '.join(COMPARE_METRICS)}")
    where = f" of {side}" if side else ""
    if metric not in trials.columns:
        raise AnalysisInputError(f"the trials{where} have no column {metric!r}")
    if trials[metric].dropna().size and pd.to_numeric(trials[metric].dropna(), errors="coerce").isna().all():
        raise AnalysisInputError(f"column {metric!r} of the trials{where} is not numeric")


def _per_seed(trials: pd.DataFrame, metric: str) -> dict[str, pd.Series]:
    """variant -> the metric per seed (mean over the seed's finite TERMINATED trials), for every variant with a
    TERMINATED trial (an empty series when none of its values is finite)."""
    ok = _terminated(trials)
    values = pd.to_numeric(ok[metric], errors="coerce").astype(float)
    frame = pd.DataFrame({"variant": ok["variant"].astype(str), "seed": pd.to_numeric(ok["seed"], errors="coerce"),
                          "value": values})
    out: dict[str, pd.Series] = {}
    for variant, grp in frame.groupby("variant", sort=False):
        fin = grp[np.isfinite(grp["value"].to_numpy()) & grp["seed"].notna()]
        out[str(variant)] = fin.groupby(fin["seed"].astype(int))["value"].mean().sort_index()
    return out


def variant_sets(trials_a: pd.DataFrame, trials_b: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """(in both, only in A, only in B): the variants with a TERMINATED trial, each list sorted by name."""
    va = sorted(set(_terminated(trials_a)["variant"].astype(str)))
    vb = sorted(set(_terminated(trials_b)["variant"].astype(str)))
    both = [v for v in va if v in set(vb)]
    return both, [v for v in va if v not in set(vb)], [v for v in vb if v not in set(va)]


def compare_experiments(trials_a: pd.DataFrame, trials_b: pd.DataFrame, metric: str = "mse") -> pd.DataFrame:
    """One row per variant with a TERMINATED trial in both trials tables (sorted by name); columns COMPARE_COLUMNS:

    variant; n_a, mean_a, ci_low_a, ci_high_a: A's seeds with a finite value (one value per seed, the mean of its
    trials), their mean and 95% t interval (NaN ends with one seed); n_b ... ci_high_b: the same for B;
    diff, diff_ci_low, diff_ci_high, welch_df: mean B - mean A with Welch's unpaired 95% interval and its
    Welch-Satterthwaite degrees of freedom; diff_pct, diff_pct_ci_low, diff_pct_ci_high: the same in % of mean A
    (A's mean taken as fixed: the interval is Welch's divided by it); welch_verdict: "differs" when Welch's interval
    excludes 0, "no difference detected" when it holds 0, "not estimated" without an interval (a side with fewer
    than 2 seeds); paired: whether both sides have the same seeds (at least 2), n_paired: their number;
    paired_diff, paired_ci_low, paired_ci_high: the mean per-seed difference B - A and its paired 95% t interval
    (NaN unless paired), paired_pct, paired_pct_ci_low, paired_pct_ci_high: in % of mean A; paired_verdict: as
    welch_verdict, on the paired interval; verdict, verdict_basis: the paired verdict ("paired") when paired, else
    Welch's ("welch").

    Raises AnalysisInputError (one line) for an unknown or absent metric or when no variant is in both.
    """
    check_metric(trials_a, metric, "A")
    check_metric(trials_b, metric, "B")
    both, only_a, only_b = variant_sets(trials_a, trials_b)
    if not both:
        raise AnalysisInputError(f"no variant in both experiments (A: {_names(only_a)}; B: {_names(only_b)})")
    seeds_a, seeds_b = _per_seed(trials_a, metric), _per_seed(trials_b, metric)
    rows = []
    for v in both:
        a, b = seeds_a.get(v, pd.Series(dtype=float)), seeds_b.get(v, pd.Series(dtype=float))
        xa, xb = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
        mean_a, lo_a, hi_a = mean_interval(xa)
        mean_b, lo_b, hi_b = mean_interval(xb)
        diff, lo, hi, df = welch_interval(xa, xb)
        pct_lo, pct_hi = _pct_interval(lo, hi, mean_a)
        paired = len(a) >= 2 and list(a.index) == list(b.index)
        p_diff = p_lo = p_hi = math.nan
        if paired:
            p_diff, p_lo, p_hi = mean_interval(xb - xa)
        pp_lo, pp_hi = _pct_interval(p_lo, p_hi, mean_a)
        welch_v = _verdict(lo, hi)
        paired_v = _verdict(p_lo, p_hi) if paired else NOT_ESTIMATED
        rows.append({
            "variant": v, "n_a": len(a), "mean_a": mean_a, "ci_low_a": lo_a, "ci_high_a": hi_a,
            "n_b": len(b), "mean_b": mean_b, "ci_low_b": lo_b, "ci_high_b": hi_b,
            "diff": diff, "diff_ci_low": lo, "diff_ci_high": hi, "welch_df": df, "diff_pct": _pct(diff, mean_a),
            "diff_pct_ci_low": pct_lo, "diff_pct_ci_high": pct_hi, "welch_verdict": welch_v,
            "paired": paired, "n_paired": len(a) if paired else 0, "paired_diff": p_diff, "paired_ci_low": p_lo,
            "paired_ci_high": p_hi, "paired_pct": _pct(p_diff, mean_a), "paired_pct_ci_low": pp_lo,
            "paired_pct_ci_high": pp_hi, "paired_verdict": paired_v,
            "verdict": paired_v if paired else welch_v, "verdict_basis": "paired" if paired else "welch",
        })
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))


def _names(names: Sequence[str], limit: int = 6) -> str:
    """A short list of variant names for a one-line message."""
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ----------------------------------------------------------------------------------------------- folders and output


def read_trials(exp_dir: Path) -> pd.DataFrame:
    """An experiment folder's trials.parquet; AnalysisInputError (one line) when the folder or the file is missing,
    unreadable or lacks variant/seed."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise AnalysisInputError(f"experiment folder not found: {exp_dir}")
    trials, _ = read_parquet_checked(exp_dir / TRIALS_FILE, ("variant", "seed"))
    return trials


def _json_value(x: Any) -> Any:
    """A cell as strict JSON: NaN -> None, numpy scalars -> Python."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x


def compare_folders(exp_a: Path, exp_b: Path, metric: str = "mse") -> dict[str, Any]:
    """The --json object: {"a", "b", "metric", "variants": [row of compare_experiments, ...], "only_in_a",
    "only_in_b"}, plus "settings" (what the table's header prints: the data settings that differ between A and
    B). Raises AnalysisInputError (one line) for bad input."""
    trials_a, trials_b = read_trials(exp_a), read_trials(exp_b)
    table = compare_experiments(trials_a, trials_b, metric)
    _, only_a, only_b = variant_sets(trials_a, trials_b)
    rows = [{k: _json_value(v) for k, v in r.items()} for r in table.to_dict(orient="records")]
    return {"a": str(exp_a), "b": str(exp_b), "metric": metric, "variants": rows, "only_in_a": only_a,
            "only_in_b": only_b, "settings": setting_differences(trials_a, trials_b)}


def setting_differences(trials_a: pd.DataFrame, trials_b: pd.DataFrame) -> dict[str, dict[str, list[Any]]]:
    """{column: {"a": values, "b": values}} for the data-setting columns whose values differ between A and B."""
    out: dict[str, dict[str, list[Any]]] = {}
    for col in SETTING_COLUMNS:
        if col not in trials_a.columns or col not in trials_b.columns:
            continue
        va = sorted({_json_value(x) for x in _terminated(trials_a)[col].dropna()}, key=str)
        vb = sorted({_json_value(x) for x in _terminated(trials_b)[col].dropna()}, key=str)
        if va != vb:
            out[col] = {"a": va, "b": vb}
    return out


def _interval_text(x: float, lo: float, hi: float, decimals: int | None = None, sign: bool = False) -> str:
    """'x [lo, hi]' (with a sign when asked), 'x [n/a]' without an interval."""
    def num(v: float) -> str:
        if not is_finite(v):
            return "n/a"
        text = fmt_num(v, decimals)
        return f"+{text}" if sign and float(v) > 0 else text

    if not is_finite(x):
        return "n/a"
    return f"{num(x)} [{num(lo)}, {num(hi)}]" if is_finite(lo) and is_finite(hi) else f"{num(x)} [n/a]"


def compare_text(payload: dict[str, Any]) -> str:
    """The console table of a compare_folders object: a header, one line per variant (and a paired line under it
    when the seeds are the same), then the variants only in A or only in B."""
    rows = payload["variants"]
    nan = math.nan

    def f(r: dict[str, Any], k: str) -> float:
        v = r.get(k)
        return nan if v is None else float(v)

    spreads = [abs(f(r, "ci_high_a") - f(r, "ci_low_a")) / 2 for r in rows if is_finite(r.get("ci_high_a"))]
    spreads += [abs(f(r, "diff_ci_high") - f(r, "diff_ci_low")) / 2 for r in rows if is_finite(r.get("diff_ci_high"))]
    d = decimals_for(min(spreads)) if spreads else None
    header = ["variant", "n A", "mean A [95% CI]", "n B", "mean B [95% CI]", "B - A [95% CI]", "B vs A % [95% CI]",
              "verdict"]
    table = [header]
    for r in rows:
        table.append([r["variant"],
                      str(r["n_a"]), _interval_text(f(r, "mean_a"), f(r, "ci_low_a"), f(r, "ci_high_a"), d),
                      str(r["n_b"]), _interval_text(f(r, "mean_b"), f(r, "ci_low_b"), f(r, "ci_high_b"), d),
                      _interval_text(f(r, "diff"), f(r, "diff_ci_low"), f(r, "diff_ci_high"), d, sign=True),
                      _interval_text(f(r, "diff_pct"), f(r, "diff_pct_ci_low"), f(r, "diff_pct_ci_high"), 2, sign=True),
                      f"{r['welch_verdict']} (Welch)"])
        if r["paired"]:
            table.append([f"  paired, {r['n_paired']} seeds", "", "", "", "",
                          _interval_text(f(r, "paired_diff"), f(r, "paired_ci_low"), f(r, "paired_ci_high"), d,
                                         sign=True),
                          _interval_text(f(r, "paired_pct"), f(r, "paired_pct_ci_low"), f(r, "paired_pct_ci_high"), 2,
                                         sign=True),
                          f"{r['paired_verdict']} (paired)"])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = {1, 3}
    lines = [f"A: {payload['a']}", f"B: {payload['b']}",
             f"metric: {payload['metric']} (TERMINATED trials with a finite value, one value per seed); "
             "intervals 95% t; B - A: Welch's unpaired interval, and the paired one where both ran the same seeds"]
    for col, vals in payload.get("settings", {}).items():
        lines.append(f"settings differ: {col} A {', '.join(map(str, vals['a'])) or 'none'}, "
                     f"B {', '.join(map(str, vals['b'])) or 'none'}")
    lines.append("")
    for row in table:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    only = [f"only in A: {', '.join(payload['only_in_a'])}" if payload["only_in_a"] else "",
            f"only in B: {', '.join(payload['only_in_b'])}" if payload["only_in_b"] else ""]
    only = [x for x in only if x]
    if only:
        lines += ["", "; ".join(only)]
    return "\n".join(lines) + "\n"
