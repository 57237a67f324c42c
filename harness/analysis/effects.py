"""Effect estimates per design: loo/oat contributions, factorial main effects and interactions, effects
against a baseline (presets), and Optuna hyperparameter importances plus the MSE/seconds Pareto front.

Every effect is "with minus without", paired by seed (the replicate key `rep`), so a negative effect on
an error metric means the innovation (or variant) lowers the error.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.load import ExperimentData
from harness.analysis.stats import (
    NOT_ESTIMATED,
    bootstrap_mean_ci,
    interval_from_draws,
    one_sample_p,
    pareto_mask,
    verdict,
)

METRICS = ("mse", "mae", "mape")
EFFECT_COLUMNS = (
    "kind", "term", "innovation", "innovation_b", "metric", "effect", "ci_low", "ci_high", "p_value", "n_seeds",
    "mean_with", "mean_without", "rel_effect_pct", "with_variant", "without_variant", "verdict", "note",
    "sign_convention",
)
SIGN_CONVENTIONS = {
    "loo": "full minus full-without-it, paired by seed; < 0: the innovation lowers the error",
    "oat": "base-with-it minus base, paired by seed; < 0: the innovation lowers the error",
    "main": "mean with it on minus off over all other combinations and seeds; < 0: the innovation lowers the error",
    "interaction": "(on,on - on,off - off,on + off,off) / 2; < 0: together they lower the error more than their "
                   "separate effects add up to",
    "vs_baseline": "variant minus baseline, paired by seed; < 0: the variant has the lower error",
}


def available_metrics(frame: pd.DataFrame) -> list[str]:
    """The metrics of METRICS present in `frame` with at least one finite value."""
    return [m for m in METRICS if m in frame.columns and np.isfinite(frame[m].to_numpy(dtype=float)).any()]


def empty_effects() -> pd.DataFrame:
    """An effects table with its columns and no rows."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in EFFECT_COLUMNS})


def _rep_means(ok: pd.DataFrame, variant: str, metrics: list[str]) -> pd.DataFrame:
    """Per-replicate (seed) means of `metrics` for one variant, indexed by rep."""
    rows = ok[ok["variant"] == variant]
    return rows.groupby("rep")[metrics].mean()


def paired_effects(with_rows: pd.DataFrame, without_rows: pd.DataFrame, metrics: list[str], n_boot: int,
                   rng: np.random.Generator, method: str) -> list[dict[str, Any]]:
    """One record per metric: mean paired difference (with - without), bootstrap interval over seeds, t-test p."""
    joined = with_rows.merge(without_rows, how="inner", left_index=True, right_index=True,
                             suffixes=("_with", "_without"))
    unpaired = len(set(with_rows.index) ^ set(without_rows.index))
    records = []
    diffs = np.column_stack([joined[f"{m}_with"] - joined[f"{m}_without"] for m in metrics]) if len(joined) else \
        np.empty((0, len(metrics)))
    n = int(len(joined))
    lo, hi = bootstrap_mean_ci(diffs, n_boot, rng, method) if n >= 2 else (np.full(len(metrics), np.nan),) * 2
    for j, m in enumerate(metrics):
        d = diffs[:, j]
        d = d[np.isfinite(d)]
        effect = float(d.mean()) if d.size else math.nan
        mean_without = float(joined[f"{m}_without"].mean()) if n else math.nan
        notes = []
        if n == 0:
            notes.append("no seed with both variants terminated")
        elif n == 1:
            notes.append("single seed: no interval")
        if unpaired:
            notes.append(f"{unpaired} unpaired seed(s) left out")
        p = one_sample_p(d)
        records.append({
            "metric": m, "effect": effect, "ci_low": float(lo[j]), "ci_high": float(hi[j]), "p_value": p,
            "n_seeds": n, "mean_with": float(joined[f"{m}_with"].mean()) if n else math.nan,
            "mean_without": mean_without,
            "rel_effect_pct": 100 * effect / mean_without if n and mean_without else math.nan,
            "verdict": verdict(effect, float(lo[j]), float(hi[j]), p, n), "note": "; ".join(notes),
        })
    return records


def _innov_vector(ok: pd.DataFrame, variant: str, cols: list[str]) -> tuple[Any, ...] | None:
    """The variant's on/off tuple over `cols` (most frequent value per column), None if any is unknown."""
    rows = ok.loc[ok["variant"] == variant, cols]
    if rows.empty:
        return None
    out = []
    for c in cols:
        s = rows[c].dropna()
        if s.empty:
            return None
        out.append(bool(s.mode().iloc[0]))
    return tuple(out)


def find_partner(data: ExperimentData, innovation: str) -> str | None:
    """The loo variant without `innovation` / the oat variant with it, by name, else by the innov_ columns."""
    ref = data.reference_variant
    if ref is None:
        return None
    sign = "-" if data.design == "loo" else "+"
    variants = set(data.ok["variant"])
    for name in (f"{ref} {sign}{innovation}", f"{ref}{sign}{innovation}", f"{ref} {sign} {innovation}"):
        if name in variants:
            return name
    cols = [f"innov_{i}" for i in data.innovations if f"innov_{i}" in data.ok.columns]
    if f"innov_{innovation}" not in cols:
        return None
    ref_vec = _innov_vector(data.ok, ref, cols)
    if ref_vec is None:
        return None
    k = cols.index(f"innov_{innovation}")
    want = tuple(not v if j == k else v for j, v in enumerate(ref_vec))
    for v in sorted(variants - {ref}):
        if _innov_vector(data.ok, v, cols) == want:
            return v
    return None


def _not_estimated(kind: str, term: str, metrics: list[str], note: str, **extra: Any) -> list[dict[str, Any]]:
    """Rows saying an effect could not be estimated, with the reason."""
    return [{"kind": kind, "term": term, "innovation": term, "metric": m, "effect": math.nan, "ci_low": math.nan,
             "ci_high": math.nan, "p_value": math.nan, "n_seeds": 0, "verdict": NOT_ESTIMATED, "note": note,
             "sign_convention": SIGN_CONVENTIONS.get(kind, ""), **extra} for m in metrics]


def loo_oat_effects(data: ExperimentData, n_boot: int, seed: int, method: str) -> pd.DataFrame:
    """Each innovation's contribution in a loo (full - full without it) or oat (base with it - base) design."""
    kind = data.design
    metrics = available_metrics(data.ok)
    rows: list[dict[str, Any]] = []
    ref = data.reference_variant
    for innovation in data.innovations:
        partner = find_partner(data, innovation)
        if ref is None or ref not in set(data.ok["variant"]):
            rows += _not_estimated(kind, innovation, metrics, "reference variant has no terminated trial")
            continue
        if partner is None:
            rows += _not_estimated(kind, innovation, metrics, "no terminated trial of the variant "
                                   + ("without" if kind == "loo" else "with") + " it")
            continue
        with_v, without_v = (ref, partner) if kind == "loo" else (partner, ref)
        rng = np.random.default_rng(seed)
        recs = paired_effects(_rep_means(data.ok, with_v, metrics), _rep_means(data.ok, without_v, metrics),
                              metrics, n_boot, rng, method)
        for r in recs:
            rows.append({"kind": kind, "term": innovation, "innovation": innovation, "with_variant": with_v,
                         "without_variant": without_v, "sign_convention": SIGN_CONVENTIONS[kind], **r})
    return _frame(rows)


def baseline_effects(data: ExperimentData, n_boot: int, seed: int, method: str) -> pd.DataFrame:
    """Every variant minus the baseline variant (e.g. ogd), paired by seed; empty without a baseline."""
    base = data.baseline_variant
    if base is None or base not in set(data.ok["variant"]):
        return empty_effects()
    metrics = available_metrics(data.ok)
    base_means = _rep_means(data.ok, base, metrics)
    rows: list[dict[str, Any]] = []
    for v in sorted(set(data.ok["variant"]) - {base}):
        rng = np.random.default_rng(seed)
        for r in paired_effects(_rep_means(data.ok, v, metrics), base_means, metrics, n_boot, rng, method):
            rows.append({"kind": "vs_baseline", "term": v, "innovation": v, "with_variant": v, "without_variant": base,
                         "sign_convention": SIGN_CONVENTIONS["vs_baseline"], **r})
    return _frame(rows)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with exactly EFFECT_COLUMNS, in order."""
    if not rows:
        return empty_effects()
    out = pd.DataFrame(rows)
    for c in EFFECT_COLUMNS:
        if c not in out.columns:
            out[c] = "" if c in ("innovation_b", "with_variant", "without_variant", "note") else math.nan
    out[["innovation_b", "with_variant", "without_variant", "note"]] = \
        out[["innovation_b", "with_variant", "without_variant", "note"]].fillna("")
    return out[list(EFFECT_COLUMNS)]


# ----------------------------------------------------------------------------------------------- factorial


def factorial_cells(data: ExperimentData) -> pd.DataFrame:
    """The factorial trials with one bool column per innovation (innov_ columns, else parsed from the name;
    the baseline variant, which is outside the factorial, is then left out)."""
    ok = data.ok.copy()
    if not all(f"innov_{i}" in ok.columns and ok[f"innov_{i}"].notna().any() for i in data.innovations):
        ok = ok[ok["variant"] != data.baseline_variant]
    for i in data.innovations:
        col = f"innov_{i}"
        if col in ok.columns and ok[col].notna().any():
            ok[i] = ok[col]
        else:
            ok[i] = pd.array([i in set(re.findall(r"[A-Za-z0-9_]+", v)) for v in ok["variant"]], dtype="boolean")
    known = ok[list(data.innovations)].notna().all(axis=1)
    out = ok[known].copy()
    for i in data.innovations:
        out[i] = out[i].astype(bool)
    return out


def contrast_weights(cells: np.ndarray, term: tuple[int, ...]) -> np.ndarray:
    """Weights over cells [n_cells, k] (bool) giving the 2^k contrast of `term` (factor indices).

    Main effect (one factor): mean of cells with it on minus mean of cells with it off. Two factors:
    (mean(on,on) - mean(on,off) - mean(off,on) + mean(off,off)) / 2, each quadrant averaged over the cells
    present in it (so a missing cell does not bias the others).
    """
    sub = cells[:, list(term)]
    sign = np.prod(np.where(sub, 1.0, -1.0), axis=1)
    groups = [tuple(r) for r in sub]
    counts = {g: groups.count(g) for g in set(groups)}
    m = len(term)
    if len(counts) < 2 ** m:
        return np.full(cells.shape[0], np.nan)
    return np.array([s / (2 ** (m - 1) * counts[g]) for s, g in zip(sign, groups, strict=True)])


def factorial_effects(data: ExperimentData, n_boot: int, seed: int, method: str) -> tuple[pd.DataFrame,
                                                                                         pd.DataFrame]:
    """Main effects and pairwise interactions of a 2^k factorial, with bootstrap intervals.

    Seeds are resampled (cell means recomputed with bootstrap weights); with a single seed, trials are
    resampled within cells. p-values: t-test of the per-seed contrasts (seeds with every cell present).
    """
    frame = factorial_cells(data)
    innov = list(data.innovations)
    metrics = available_metrics(frame)
    if frame.empty or not innov:
        return empty_effects(), empty_effects()
    cell_keys = sorted({tuple(r) for r in frame[innov].itertuples(index=False, name=None)})
    cells = np.array(cell_keys, dtype=bool).reshape(len(cell_keys), len(innov))
    frame["cell"] = [cell_keys.index(tuple(r)) for r in frame[innov].itertuples(index=False, name=None)]
    k = len(innov)
    terms: list[tuple[int, ...]] = [(a,) for a in range(k)] + list(itertools.combinations(range(k), 2))
    weights = np.column_stack([contrast_weights(cells, t) for t in terms])  # [cells, terms]
    reps = sorted(frame["rep"].unique())
    n_reps = len(reps)
    rng = np.random.default_rng(seed)
    boot_idx = rng.integers(0, n_reps, size=(n_boot, n_reps)) if n_reps >= 2 else None
    within_draws = {}
    if n_reps < 2:
        # resample trials within each cell (the same draws for every metric)
        for c in range(len(cell_keys)):
            n_c = int((frame["cell"] == c).sum())
            within_draws[c] = rng.integers(0, n_c, size=(n_boot, n_c))

    main_rows: list[dict[str, Any]] = []
    inter_rows: list[dict[str, Any]] = []
    for m in metrics:
        table = frame.pivot_table(index="cell", columns="rep", values=m, aggfunc="mean").reindex(
            index=range(len(cell_keys)), columns=reps)
        y = table.to_numpy(dtype=float)  # [cells, reps], NaN where missing
        present = np.isfinite(y)
        y0 = np.where(present, y, 0.0)
        cell_mean = y0.sum(1) / np.maximum(present.sum(1), 1)
        cell_mean[present.sum(1) == 0] = np.nan
        est = cell_mean @ weights
        mean_on = [float(np.nanmean(cell_mean[cells[:, a]])) for a in range(k)]
        mean_off = [float(np.nanmean(cell_mean[~cells[:, a]])) for a in range(k)]
        note = ""
        if boot_idx is not None:
            w = np.stack([np.bincount(r, minlength=n_reps) for r in boot_idx]).astype(float)  # [B, reps]
            with np.errstate(invalid="ignore", divide="ignore"):
                bmeans = (w @ y0.T) / (w @ present.T.astype(float))  # [B, cells]
            draws = bmeans @ weights
            lo, hi = interval_from_draws(draws, n_reps, method)
            complete = present.all(axis=0)
            per_rep = y[:, complete].T @ weights if complete.any() else np.empty((0, len(terms)))
            pvals = [one_sample_p(per_rep[:, t]) for t in range(len(terms))]
            if not complete.all():
                note = f"{int((~complete).sum())} seed(s) with missing cells: p-value from complete seeds only"
        else:
            bmeans = np.column_stack([
                frame.loc[frame["cell"] == c, m].to_numpy(dtype=float)[within_draws[c]].mean(axis=1)
                for c in range(len(cell_keys))])
            draws = bmeans @ weights
            lo, hi = interval_from_draws(draws, 0, "percentile")
            pvals = [math.nan] * len(terms)
            if all(v.shape[1] < 2 for v in within_draws.values()):
                lo = np.full(len(terms), np.nan)
                hi = np.full(len(terms), np.nan)
                note = "single seed, one trial per cell: no interval"
            else:
                note = "single seed: trials resampled within cells"
        for t_i, term in enumerate(terms):
            eff = float(est[t_i])
            n_units = n_reps if n_reps >= 2 else (2 if math.isfinite(lo[t_i]) else 1)
            rec = {"metric": m, "effect": eff, "ci_low": float(lo[t_i]), "ci_high": float(hi[t_i]),
                   "p_value": float(pvals[t_i]), "n_seeds": n_reps,
                   "verdict": verdict(eff, float(lo[t_i]), float(hi[t_i]), float(pvals[t_i]), n_units),
                   "note": note}
            if len(term) == 1:
                a = term[0]
                rel = 100 * eff / mean_off[a] if mean_off[a] else math.nan
                rec.update(kind="main", term=innov[a], innovation=innov[a], mean_with=mean_on[a],
                           mean_without=mean_off[a], rel_effect_pct=rel,
                           with_variant="on", without_variant="off", sign_convention=SIGN_CONVENTIONS["main"])
                main_rows.append(rec)
            else:
                a, b = term
                rec.update(kind="interaction", term=f"{innov[a]} x {innov[b]}", innovation=innov[a],
                           innovation_b=innov[b], sign_convention=SIGN_CONVENTIONS["interaction"])
                inter_rows.append(rec)
    return _frame(main_rows), _frame(inter_rows)


# ----------------------------------------------------------------------------------------------- optuna

IMPORTANCE_COLUMNS = ("evaluator", "param", "importance", "rank", "n_trials", "note")


def optuna_params(data: ExperimentData) -> tuple[list[str], list[str]]:
    """Columns used as Optuna parameters (those that vary and are never null) and the varying ones left out."""
    ok = data.ok
    knob_cols = [c for c in ok.columns if c.startswith("knob_") and c != "knob_seed"]
    innov_cols = [c for c in ok.columns if c.startswith("innov_")]
    varying = [c for c in (innov_cols if data.unit == "innovation" else knob_cols) if ok[c].nunique(dropna=True) > 1]
    if not varying:
        varying = [c for c in knob_cols + innov_cols if ok[c].nunique(dropna=True) > 1]
    used = [c for c in varying if ok[c].notna().all()]
    return used, [c for c in varying if c not in used]


def _distribution(series: pd.Series, kind: str) -> tuple[Any, Any]:
    """An Optuna distribution for a parameter column and a converter of its values to Python types."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    values = series.dropna()
    if kind == "bool" or series.dtype == "boolean" or series.dtype == bool:
        return CategoricalDistribution((False, True)), bool
    if kind == "str" or not pd.api.types.is_numeric_dtype(values):
        return CategoricalDistribution(tuple(sorted({str(v) for v in values}))), str
    arr = values.to_numpy(dtype=float)
    lo, hi = float(arr.min()), float(arr.max())
    if kind == "int" or (kind == "other" and np.all(arr == np.round(arr))):
        return IntDistribution(int(lo), int(hi)), lambda v: int(round(float(v)))
    return FloatDistribution(lo, hi, log=bool(lo > 0 and hi / lo >= 100)), float


def optuna_importances(data: ExperimentData, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """Parameter importances for MSE by Optuna's fANOVA and PED-ANOVA evaluators, from an in-memory study."""
    import optuna

    notes: list[str] = []
    used, left_out = optuna_params(data)
    if left_out:
        notes.append("left out of the importances (null in some trials): " + ", ".join(left_out))
    if not used:
        notes.append("no parameter varies across the terminated trials: no importances")
        return pd.DataFrame(columns=list(IMPORTANCE_COLUMNS)), notes
    kinds = {c: data.knob_types.get(c[len("knob_"):], "other") if c.startswith("knob_") else "bool" for c in used}
    dists, convs = {}, {}
    for c in used:
        dists[c], convs[c] = _distribution(data.ok[c], kinds[c])
    names = {c: c.split("_", 1)[1] for c in used}
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="minimize")
    for _, row in data.ok.iterrows():
        params = {names[c]: convs[c](row[c]) for c in used}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={names[c]: dists[c] for c in used}, value=float(row["mse"])))
    n = len(study.trials)
    # PED-ANOVA compares the best `target_quantile` of the trials with all of them; Optuna's default 0.1 leaves
    # only a handful of trials in small studies, so the quantile is raised to hold at least 10 (at most 0.5).
    quantile = float(min(0.5, max(0.1, 10 / max(n, 1))))
    evaluators = {
        "fanova": lambda: optuna.importance.FanovaImportanceEvaluator(seed=seed),
        "ped_anova": lambda: optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile),
    }
    settings = {"fanova": f"n_trees=64, seed={seed}", "ped_anova": f"target_quantile={quantile:.2f}"}
    rows = []
    for label, make in evaluators.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imp = optuna.importance.get_param_importances(study, evaluator=make())
        except ImportError as exc:  # fANOVA needs scikit-learn
            notes.append(f"{label} importances unavailable: {str(exc).split('.')[0]} (install scikit-learn)")
            continue
        except Exception as exc:  # an evaluator refusing this study is reported, not fatal
            first = str(exc).splitlines()[0] if str(exc) else ""
            notes.append(f"{label} importances failed: {type(exc).__name__}: {first}")
            continue
        for rank, (p, v) in enumerate(sorted(imp.items(), key=lambda kv: -kv[1]), start=1):
            rows.append({"evaluator": label, "param": p, "importance": float(v), "rank": rank, "n_trials": n,
                         "note": settings[label]})
    return pd.DataFrame(rows, columns=list(IMPORTANCE_COLUMNS)), notes


def pareto_front(points: pd.DataFrame, x: str = "mse", y: str = "trial_seconds") -> pd.DataFrame:
    """`points` with an `on_front` column (non-dominated when minimising x and y), front first, sorted by x."""
    out = points.copy()
    out["on_front"] = pareto_mask(out[x].to_numpy(dtype=float), out[y].to_numpy(dtype=float)) if len(out) else []
    return out.sort_values(["on_front", x, y], ascending=[False, True, True], kind="stable").reset_index(drop=True)
