"""The technical report's claims, each a contrast between two presets, tested on an experiment's trials.

`python -m harness.analyze --claims EXP [EXP ...] [--json | --markdown]` (experiments of the `baselines`
space; those of one protocol, i.e. one feedback_delay and the same settings (see protocol_of), are pooled,
so presets run in batches count as one). `EXP@v1,v2` keeps only those variants of EXP, and `--pool-settings`
pools by feedback_delay alone: together they put each preset at its own chosen settings (a tuned rate for
some, the reference's for others) into one column.
Each claim says that preset B is lower than, higher than, or about equal to
preset A in a metric, with the report's own percentage where it gives one. For each, over the TERMINATED
trials with a finite value (one value per seed): both means, B vs A in % of A's mean with Welch's 95%
interval (the difference's interval divided by A's mean, taken as fixed), the seeds, and a verdict:

- lower/higher: "holds" when the interval lies on the claimed side of 0 (and says whether the report's
  size lies inside it, or which side of it we are); "does not hold" when it lies on the other side;
  "unresolved at N seeds" when it holds 0;
- about equal: "holds" when the interval lies inside +-EQUIVALENCE_PCT; "does not hold" when it
  excludes 0; otherwise "unresolved at N seeds".

A claim whose presets the experiment did not run is listed as "not run". The percentages are of the
experiment's own means, so they compare with the report's numbers only in their direction and size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.compare import _json_value, mean_interval, read_trials, welch_interval
from harness.analysis.load import AnalysisInputError
from harness.analysis.tables import is_finite

EQUIVALENCE_PCT = 2.0  # "about equal" holds when the interval lies inside +-2% of A's mean
LOWER, HIGHER, EQUAL = "lower", "higher", "about equal"


@dataclass(frozen=True)
class Claim:
    """One claim: `variant` is `relation` to `reference` in `metric`; `claimed_pct` the report's B vs A %."""

    name: str
    metric: str
    variant: str
    relation: str
    reference: str
    claimed_pct: float | None
    text: str


def _pct(b: float, a: float) -> float:
    """(b / a - 1) in %."""
    return 100 * (b / a - 1)


# The report's Table 4.1 MAPE (scaled data, %): Advanced 5.06, NoMem 9.73, FSNet-Bug 10.07, FSNet-Fixed 10.25,
# ER 13.53, OGD 14.75; its MSE: Advanced 0.0131 (Table 4.1), Ultra 0.008535 vs Advanced 0.013064 (section 7).
REPORT_MAPE = {"advanced": 5.06, "nomem": 9.73, "fsnet_bug": 10.07, "fsnet": 10.25, "er": 13.53, "ogd": 14.75}
CLAIMS: tuple[Claim, ...] = (
    Claim("T4.1 ranking", "mape_scaled", "advanced", LOWER, "nomem", _pct(5.06, 9.73), "Advanced >> NoMem"),
    Claim("T4.1 ranking", "mape_scaled", "nomem", LOWER, "fsnet_bug", _pct(9.73, 10.07), "NoMem > FSNet-Bug"),
    Claim("T4.1 ranking", "mape_scaled", "fsnet", EQUAL, "fsnet_bug", _pct(10.25, 10.07), "FSNet-Bug ~ FSNet-Fixed"),
    Claim("T4.1 ranking", "mape_scaled", "fsnet", LOWER, "er", _pct(10.25, 13.53), "FSNet-Fixed > ER"),
    Claim("T4.1 ranking", "mape_scaled", "er", LOWER, "ogd", _pct(13.53, 14.75), "ER > OGD"),
    Claim("Advanced vs OGD", "mape_scaled", "advanced", LOWER, "ogd", -65.7, "MAPE -65.7%"),
    Claim("Advanced vs OGD", "mse", "advanced", LOWER, "ogd", -79.4, "MSE -79.4%"),
    Claim("Advanced vs NoMem", "mape_scaled", "advanced", LOWER, "nomem", -48.0, "MAPE -48.0%"),
    Claim("Advanced vs NoMem", "mse", "advanced", LOWER, "nomem", -59.0, "MSE -59.0%"),
    Claim("Finding 2", "mape_scaled", "fsnet_bug", HIGHER, "nomem", _pct(10.07, 9.73),
          "the bug makes the memory a burden: FSNet-Bug worse than NoMem"),
    Claim("Finding 2", "mape_scaled", "fsnet", EQUAL, "fsnet_bug", _pct(10.25, 10.07),
          "fixing the bug alone changes little"),
    Claim("Ultra vs Advanced", "mse", "ultra", LOWER, "advanced", -34.7, "MSE -34.7%"),
    Claim("Ultra vs Advanced", "mape_scaled", "ultra", LOWER, "advanced", -4.9, "MAPE -4.9%"),
    Claim("Ours: does the memory help?", "mse", "fsnet", EQUAL, "nomem", None,
          "the fixed memory against the adapter alone"),
)
CLAIM_COLUMNS = ("claim", "text", "metric", "variant", "relation", "reference", "claimed_pct", "n_variant",
                 "n_reference", "mean_variant", "mean_reference", "pct", "pct_low", "pct_high", "verdict")


def _per_seed(trials: pd.DataFrame, variant: str, metric: str) -> np.ndarray:
    """One finite value per seed of `variant` (a seed's trials averaged), TERMINATED trials only."""
    ok = trials[(trials["variant"] == variant)]
    if "status" in ok.columns:
        ok = ok[ok["status"].astype(str).str.upper() == "TERMINATED"]
    values = pd.to_numeric(ok[metric], errors="coerce")
    values = values[np.isfinite(values)]
    return ok.loc[values.index].assign(_v=values).groupby("seed")["_v"].mean().to_numpy(dtype=float)


def verdict(relation: str, low: float, high: float, claimed: float | None, seeds: int) -> str:
    """The verdict of a claim from the interval [low, high] of B vs A in % (see the module docstring)."""
    if not (is_finite(low) and is_finite(high)):
        return "not estimated (fewer than 2 seeds)"
    unresolved = f"unresolved at {seeds} seeds"
    if relation == EQUAL:
        if -EQUIVALENCE_PCT <= low and high <= EQUIVALENCE_PCT:
            return f"holds (no difference larger than {EQUIVALENCE_PCT:g}%)"
        return "does not hold: they differ" if low > 0 or high < 0 else unresolved
    right_side = high < 0 if relation == LOWER else low > 0
    wrong_side = low > 0 if relation == LOWER else high < 0
    if wrong_side:
        return "does not hold: the opposite"
    if not right_side:
        return unresolved
    if claimed is None or low <= claimed <= high:
        return "holds" if claimed is None else "holds, and the report's size lies in the interval"
    smaller = abs(claimed) > max(abs(low), abs(high))
    return f"the direction holds; the effect is {'smaller' if smaller else 'larger'} than the report's"


def evaluate_claims(trials: pd.DataFrame, claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
    """One row per claim (columns CLAIM_COLUMNS) tested on `trials` (see the module docstring)."""
    rows = []
    present = set(trials["variant"])
    for c in claims:
        row: dict[str, Any] = {"claim": c.name, "text": c.text, "metric": c.metric, "variant": c.variant,
                               "relation": c.relation, "reference": c.reference, "claimed_pct": c.claimed_pct}
        if c.metric not in trials.columns or not {c.variant, c.reference} <= present:
            rows.append({**row, "n_variant": 0, "n_reference": 0, "mean_variant": math.nan,
                         "mean_reference": math.nan, "pct": math.nan, "pct_low": math.nan, "pct_high": math.nan,
                         "verdict": "not run"})
            continue
        b, a = _per_seed(trials, c.variant, c.metric), _per_seed(trials, c.reference, c.metric)
        mean_b, mean_a = mean_interval(b)[0], mean_interval(a)[0]
        diff, low, high, _ = welch_interval(a, b)
        scale = 100 / mean_a if is_finite(mean_a) and mean_a else math.nan
        rows.append({**row, "n_variant": len(b), "n_reference": len(a), "mean_variant": mean_b,
                     "mean_reference": mean_a, "pct": diff * scale, "pct_low": low * scale,
                     "pct_high": high * scale,
                     "verdict": verdict(c.relation, low * scale, high * scale, c.claimed_pct, min(len(a), len(b)))})
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))


def delay_of(trials: pd.DataFrame) -> str:
    """`feedback_delay D` of an experiment's trials (D the distinct values, comma-separated, when several)."""
    if "feedback_delay" not in trials.columns:
        return "feedback_delay ?"
    values = sorted({int(v) for v in trials["feedback_delay"].dropna()})
    return "feedback_delay " + ",".join(map(str, values))


def protocol_of(trials: pd.DataFrame) -> str:
    """`feedback_delay D` of an experiment's trials (the distinct values, when several), followed by
    `, online_lr set` when any trial sets the online phase's own rate (its value may differ by preset, so
    experiments at per-preset tuned rates pool together) and `, revin` when any trial has RevIN on: runs at
    the reference settings and runs at tuned ones are two columns, never pooled into one."""
    name = delay_of(trials)
    if "knob_online_lr" in trials.columns and pd.to_numeric(trials["knob_online_lr"], errors="coerce").notna().any():
        name += ", online_lr set"
    if "knob_revin" in trials.columns and trials["knob_revin"].eq(True).any():
        name += ", revin"
    return name


SELECT = "@"  # EXP@v1,v2: only those variants of EXP


def split_selection(folder: str | Path) -> tuple[Path, tuple[str, ...]]:
    """`EXP` -> (EXP, ()); `EXP@v1,v2` -> (EXP, ("v1", "v2")): the folder and the variants kept from it (none
    named: all). AnalysisInputError (one line) when the list after `@` names no variant."""
    text = str(folder)
    if SELECT not in text:
        return Path(text), ()
    path, _, listed = text.rpartition(SELECT)
    variants = tuple(v.strip() for v in listed.split(",") if v.strip())
    if not path or not variants:
        raise AnalysisInputError(f"{text}: write EXP@VARIANT[,VARIANT...], with at least one variant after @")
    return Path(path), variants


def pooled_trials(folders: Sequence[str | Path],
                  pool_settings: bool = False) -> dict[str, tuple[list[str], pd.DataFrame]]:
    """protocol -> (its experiment folders, their trials pooled): experiments of one protocol_of count as one.

    A folder written `EXP@v1,v2` contributes only those variants. With pool_settings, experiments pool by
    feedback_delay alone (the key is `feedback_delay D, settings as selected`), whatever online_lr or revin
    they set: each preset at the settings chosen for it. Raises AnalysisInputError (one line) on a missing or
    empty trials.parquet, a selected variant the folder lacks, or a variant and seed found in two pooled
    experiments.
    """
    parts: dict[str, tuple[list[str], list[pd.DataFrame]]] = {}
    for given in folders:
        folder, variants = split_selection(given)
        trials = read_trials(folder)
        if trials.empty:
            raise AnalysisInputError(f"{folder}: trials.parquet has no trials")
        if variants:
            held = trials["variant"].astype(str)
            missing = sorted(set(variants) - set(held))
            if missing:
                raise AnalysisInputError(f"{folder} has no variant {', '.join(missing)} "
                                         f"(it holds {', '.join(sorted(set(held)))})")
            trials = trials[held.isin(variants)]
        protocol = delay_of(trials) + ", settings as selected" if pool_settings else protocol_of(trials)
        names, frames = parts.setdefault(protocol, ([], []))
        names.append(str(given))
        frames.append(trials)
    out: dict[str, tuple[list[str], pd.DataFrame]] = {}
    for protocol, (names, frames) in parts.items():
        trials = pd.concat(frames, ignore_index=True)
        done = trials[trials["status"].astype(str).str.upper() == "TERMINATED"] if "status" in trials else trials
        twice = done[done.duplicated(["variant", "seed"], keep=False)]
        if len(frames) > 1 and not twice.empty:
            first = twice.iloc[0]
            raise AnalysisInputError(f"{first['variant']} seed {first['seed']} is in more than one of the "
                                     f"experiments of {protocol}: {', '.join(names)}")
        out[protocol] = (names, trials)
    return out


Pooled = Mapping[str, tuple[list[str], pd.DataFrame]]  # protocol -> (its experiment folders, their trials)


def claims_of_pooled(pooled: Pooled) -> list[dict[str, Any]]:
    """The claims per protocol of pooled_trials' result, in order of first appearance:
    [{"experiments": [folder, ...], "protocol", "claims": [row, ...]}, ...]."""
    out = []
    for protocol, (names, trials) in pooled.items():
        table = evaluate_claims(trials)
        out.append({"experiments": names, "protocol": protocol,
                    "claims": [{k: _json_value(v) for k, v in r.items()} for r in table.to_dict(orient="records")]})
    return out


def protocols_table(pooled: Pooled, metric: str = "mse") -> tuple[pd.DataFrame, str, str]:
    """Every variant's mean `metric` with its 95% t interval under two protocols (the figure's input), from
    pooled_trials' result: columns variant, n_a, mean_a, ci_low_a, ci_high_a and the same for b, plus the two
    protocols' names. AnalysisInputError unless the experiments hold exactly two protocols."""
    if len(pooled) != 2:
        raise AnalysisInputError(f"--figure draws two protocols; these experiments hold {len(pooled)}: "
                                 f"{', '.join(pooled)}")
    (name_a, (_, trials_a)), (name_b, (_, trials_b)) = pooled.items()
    rows = []
    for variant in sorted(set(trials_a["variant"]) | set(trials_b["variant"])):
        row: dict[str, Any] = {"variant": variant}
        for side, trials in (("a", trials_a), ("b", trials_b)):
            values = _per_seed(trials, variant, metric) if variant in set(trials["variant"]) else np.array([])
            mean, low, high = mean_interval(values)
            row.update({f"n_{side}": len(values), f"mean_{side}": mean, f"ci_low_{side}": low,
                        f"ci_high_{side}": high})
        rows.append(row)
    return pd.DataFrame(rows), name_a, name_b


def _fmt_pct(x: float | None) -> str:
    return "" if x is None or not is_finite(x) else f"{x:+.1f}%"


def claims_markdown(results: Sequence[dict[str, Any]]) -> str:
    """The claims of every experiment as one Markdown table: a row per claim, a column group per experiment."""
    head = "| claim | metric | report | " + " | ".join(
        f"ours, {r['protocol']}: B vs A [95% CI] | seeds | verdict" for r in results) + " |"
    sep = "| --- | --- | --: | " + " | ".join("--: | --: | ---" for _ in results) + " |"
    lines = [head, sep]
    for i, first in enumerate(results[0]["claims"]):
        cells = [f"{first['claim']}: {first['text']} (`{first['variant']}` vs `{first['reference']}`)",
                 f"`{first['metric']}`", _fmt_pct(first["claimed_pct"]) or "n/a"]
        for r in results:
            c = r["claims"][i]
            shown = (f"{_fmt_pct(c['pct'])} [{_fmt_pct(c['pct_low'])}, {_fmt_pct(c['pct_high'])}]"
                     if c["pct"] is not None else "")
            cells += [shown, f"{c['n_variant']}/{c['n_reference']}", c["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def protocols_markdown(table: pd.DataFrame, name_a: str, name_b: str, metric: str = "mse") -> str:
    """protocols_table as one Markdown table: a row per variant, its seeds and mean `metric` with the 95% t
    interval under each protocol (an empty cell where a protocol has no trial of the variant), in order of
    the mean under the first protocol."""
    def cell(row: pd.Series, side: str) -> tuple[str, str]:
        n = int(row[f"n_{side}"])
        if n == 0:
            return "", "0"
        if n == 1:
            return f"{row[f'mean_{side}']:.4f}", "1"
        return f"{row[f'mean_{side}']:.4f} [{row[f'ci_low_{side}']:.4f}, {row[f'ci_high_{side}']:.4f}]", str(n)

    lines = [f"| variant | seeds, {name_a} | {metric}, {name_a} [95% CI] | seeds, {name_b} | {metric}, {name_b} "
             "[95% CI] |", "| --- | --: | --: | --: | --: |"]
    order = table.assign(_key=table["mean_a"].fillna(float("inf"))).sort_values(["_key", "variant"])
    for _, row in order.iterrows():
        shown_a, n_a = cell(row, "a")
        shown_b, n_b = cell(row, "b")
        lines.append(f"| `{row['variant']}` | {n_a} | {shown_a} | {n_b} | {shown_b} |")
    return "\n".join(lines) + "\n"


def claims_text(results: Sequence[dict[str, Any]]) -> str:
    """The claims of each experiment as a plain table, one block per experiment."""
    blocks = []
    for r in results:
        lines = [f"{' + '.join(r['experiments'])} ({r['protocol']}); B vs A in % of A's mean, Welch 95% interval"]
        for c in r["claims"]:
            shown = (f"{_fmt_pct(c['pct']):>8} [{_fmt_pct(c['pct_low'])}, {_fmt_pct(c['pct_high'])}]"
                     if c["pct"] is not None else " " * 8)
            lines.append(f"  {c['claim'] + ': ' + c['text']:<62.62} {c['metric']:<11} report "
                         f"{_fmt_pct(c['claimed_pct']) or 'n/a':>7}  ours {shown:<28} n {c['n_variant']}/"
                         f"{c['n_reference']}  {c['verdict']}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
