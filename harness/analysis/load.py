"""Reading an experiment folder: trials.parquet, curves.parquet and experiment.json.

Only these three files are read. A missing folder or a missing/unreadable/malformed parquet file
raises `AnalysisInputError` (one line, meant for the CLI); experiment.json is optional and read
defensively, the keys it lacks being inferred from the trials.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

TRIALS_FILE = "trials.parquet"
CURVES_FILE = "curves.parquet"
META_FILE = "experiment.json"

# Columns a trials table cannot be analysed without; the others are used when present.
REQUIRED_TRIAL_COLUMNS = ("variant", "seed", "mse")
REQUIRED_CURVE_COLUMNS = ("step", "cum_mse")
# Columns that together name one data setting; pairing is by seed within a setting.
SETTING_COLUMNS = ("dataset", "features", "seq_len", "pred_len", "feedback_delay")
DESIGNS = ("loo", "oat", "factorial", "optuna", "presets")


class AnalysisInputError(ValueError):
    """The experiment folder or one of its files cannot be analysed; str() is one line."""


@dataclass
class ExperimentData:
    """One experiment's inputs, cleaned: the trials that count, the rest, curves and metadata."""

    exp_dir: Path
    meta: dict[str, Any]
    trials_all: pd.DataFrame
    ok: pd.DataFrame  # status TERMINATED with a finite MSE, plus a `rep` replicate-key column
    errored: pd.DataFrame  # status other than TERMINATED
    diverged: pd.DataFrame  # TERMINATED but MSE not finite (excluded from every statistic)
    curves: pd.DataFrame  # only rows of trials in `ok`
    design: str
    unit: str | None
    innovations: list[str]
    reference_variant: str | None
    baseline_variant: str | None
    knob_types: dict[str, str] = field(default_factory=dict)  # knob name -> "bool"|"int"|"float"|"str"
    warnings: list[str] = field(default_factory=list)

    @property
    def experiment(self) -> str:
        """The experiment's name (experiment.json, else the trials' column, else the folder name)."""
        name = self.meta.get("experiment")
        if not name and "experiment" in self.trials_all:
            name = _mode(self.trials_all["experiment"])
        return str(name or self.exp_dir.name)


def _one_line(exc: BaseException) -> str:
    """First line of an exception's message, with its type."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def read_parquet_checked(path: Path, required: tuple[str, ...],
                         empty_ok: bool = False) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read `path` as a DataFrame, with the Arrow type of every column ("bool", "int", "float", "str", "other").

    Raises AnalysisInputError when the file is missing, unreadable, or lacks a `required` column (a file
    with no rows may lack them when `empty_ok`; they are then added, empty).
    """
    if not path.is_file():
        raise AnalysisInputError(f"missing file: {path}")
    try:
        schema = pq.read_schema(path)
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
        raise AnalysisInputError(f"malformed parquet file {path}: {_one_line(exc)}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing and empty_ok and frame.empty:
        frame = frame.assign(**{c: pd.Series(dtype=float) for c in missing})
        missing = []
    if missing:
        raise AnalysisInputError(f"malformed parquet file {path}: missing column(s) {', '.join(missing)}")
    types: dict[str, str] = {}
    for fld in schema:
        t = fld.type
        if pa_is(t, "bool"):
            types[fld.name] = "bool"
        elif pa_is(t, "int"):
            types[fld.name] = "int"
        elif pa_is(t, "float"):
            types[fld.name] = "float"
        elif pa_is(t, "str"):
            types[fld.name] = "str"
        else:
            types[fld.name] = "other"
    return frame, types


def pa_is(arrow_type: Any, kind: str) -> bool:
    """Whether an Arrow type is of `kind` ("bool", "int", "float" or "str")."""
    import pyarrow.types as pat

    checks = {
        "bool": pat.is_boolean,
        "int": pat.is_integer,
        "float": pat.is_floating,
        "str": lambda t: pat.is_string(t) or pat.is_large_string(t) or pat.is_dictionary(t),
    }
    return bool(checks[kind](arrow_type))


def read_meta(path: Path) -> dict[str, Any]:
    """experiment.json as a dict ({} when absent); raises AnalysisInputError when it is not a JSON object."""
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnalysisInputError(f"malformed {path}: {_one_line(exc)}") from None
    if not isinstance(meta, dict):
        raise AnalysisInputError(f"malformed {path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def as_bool(series: pd.Series) -> pd.Series:
    """A column of booleans (possibly stored as objects, 0/1 or strings) as pandas' nullable "boolean"."""
    if series.dtype == "boolean":
        return series
    mapping = {1: True, 0: False, "true": True, "false": False, "True": True, "False": False, "1": True, "0": False}

    def conv(v: Any) -> Any:
        """One value -> True, False or pd.NA."""
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            return pd.NA
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        return mapping.get(v, pd.NA)

    return pd.Series([conv(v) for v in series], index=series.index, dtype="boolean")


def _mode(series: pd.Series) -> Any:
    """Most frequent non-null value of a column, or None."""
    s = series.dropna()
    return None if s.empty else s.mode().iloc[0]


def _infer_innovations(meta: dict[str, Any], trials: pd.DataFrame, design: str) -> list[str]:
    """Innovation names: experiment.json's list, else the innov_<name> columns that vary across trials, else
    (loo/oat) the suffixes of the variants named "<reference> -<innovation>" / "<reference> +<innovation>"."""
    listed = meta.get("innovations")
    if isinstance(listed, (list, tuple)) and listed:
        return [str(x) for x in listed]
    cols = [c[len("innov_"):] for c in trials.columns if c.startswith("innov_") and trials[c].nunique(dropna=True) > 1]
    if cols:
        return cols
    sign = {"loo": " -", "oat": " +"}.get(design)
    if sign is None:
        return []
    variants = list(dict.fromkeys(trials["variant"].astype(str)))
    best: list[str] = []
    for v in variants:
        found = [w[len(v) + 2:] for w in variants if w.startswith(v + sign) and " " not in w[len(v) + 2:]]
        if len(found) > len(best):
            best = found
    return best


def _infer_reference(design: str, variants: list[str], innovations: list[str], trials: pd.DataFrame) -> str | None:
    """The loo full variant / oat base variant when experiment.json does not name it."""
    sign = {"loo": "-", "oat": "+"}.get(design)
    if sign is None:
        return None
    best, best_hits = None, 0
    names = set(variants)
    for v in variants:
        hits = sum(f"{v} {sign}{i}" in names for i in innovations)
        if hits > best_hits:
            best, best_hits = v, hits
    if best is not None:
        return best
    cols = [f"innov_{i}" for i in innovations if f"innov_{i}" in trials]
    if cols and len(cols) == len(innovations):
        want = design == "loo"  # loo: everything on; oat: everything off
        mask = pd.Series(True, index=trials.index)
        for c in cols:
            mask &= trials[c].fillna(not want) == want
        if mask.any():
            return str(_mode(trials.loc[mask, "variant"]))
    return None


def load_experiment(exp_dir: Path) -> ExperimentData:
    """Read and clean one experiment folder; raises AnalysisInputError for bad input (one-line message)."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise AnalysisInputError(f"experiment folder not found: {exp_dir}")
    trials, types = read_parquet_checked(exp_dir / TRIALS_FILE, REQUIRED_TRIAL_COLUMNS)
    curves, _ = read_parquet_checked(exp_dir / CURVES_FILE, REQUIRED_CURVE_COLUMNS, empty_ok=True)
    if curves.empty:
        curves = curves.assign(**{c: pd.Series(dtype=object) for c in ("trial_id", "variant", "seed")
                                  if c not in curves.columns})
    if "trial_id" not in curves.columns and not {"variant", "seed"} <= set(curves.columns):
        raise AnalysisInputError(f"malformed parquet file {exp_dir / CURVES_FILE}: needs trial_id or variant and seed")
    meta = read_meta(exp_dir / META_FILE)
    warnings: list[str] = []
    for col, kinds in (("mse", ("float", "int")), ("seed", ("int", "float"))):
        if types.get(col) not in kinds:
            raise AnalysisInputError(f"malformed parquet file {exp_dir / TRIALS_FILE}: column {col} is "
                                     f"{types.get(col)}, expected a number")
    seeds = trials["seed"].dropna().to_numpy(dtype=float)
    if not np.all(seeds == np.round(seeds)):
        raise AnalysisInputError(f"malformed parquet file {exp_dir / TRIALS_FILE}: column seed has non-integer values")

    trials = trials.copy()
    trials["variant"] = trials["variant"].astype(str)
    for col in trials.columns:
        if col.startswith("innov_") or (col.startswith("knob_") and types.get(col) == "bool"):
            trials[col] = as_bool(trials[col])
    for col in ("mse", "mae", "rmse", "mape", "smape", "mape_scaled", "rel_mse_persistence", "trial_seconds",
                "memory_triggers", "attention_entropy_mean", "steps"):
        if col in trials.columns:
            trials[col] = pd.to_numeric(trials[col], errors="coerce").astype(float)
    knob_types = {c[len("knob_"):]: types.get(c, "other") for c in trials.columns if c.startswith("knob_")}

    status = trials["status"].astype(str).str.upper() if "status" in trials else pd.Series("TERMINATED",
                                                                                           index=trials.index)
    if "status" not in trials:
        warnings.append("trials.parquet has no status column: every trial is taken as TERMINATED")
    terminated = status == "TERMINATED"
    finite = np.isfinite(trials["mse"].to_numpy(dtype=float, na_value=np.nan))
    ok = trials[terminated & finite].copy()
    errored = trials[~terminated].copy()
    diverged = trials[terminated & ~finite].copy()

    # Replicate key: the seed, qualified by the data setting when an experiment mixes several.
    setting_cols = [c for c in SETTING_COLUMNS if c in ok.columns and ok[c].nunique(dropna=True) > 1]
    if setting_cols:
        warnings.append("several data settings in one experiment (" + ", ".join(setting_cols)
                        + " vary): rows are paired by seed within each setting and pooled")
        ok["rep"] = ok[setting_cols + ["seed"]].astype(str).agg("|".join, axis=1)
    else:
        ok["rep"] = ok["seed"].astype(str)

    design = str(meta.get("design") or (_mode(trials["design"]) if "design" in trials else None) or "presets")
    if design not in DESIGNS:
        warnings.append(f"unknown design {design!r}: analysed as 'presets'")
        design = "presets"
    unit = meta.get("unit") or (_mode(trials["unit"]) if "unit" in trials else None)
    innovations = _infer_innovations(meta, trials, design)
    variants = sorted(trials["variant"].unique().tolist())
    reference = meta.get("reference_variant") or _infer_reference(design, variants, innovations, trials)
    baseline = meta.get("baseline_variant")
    if baseline is None and "ogd" in set(ok["variant"]):
        baseline = "ogd"

    if "trial_id" in curves.columns and "trial_id" in ok.columns:
        curves = curves[curves["trial_id"].astype(str).isin(set(ok["trial_id"].astype(str)))].copy()
        if "variant" not in curves.columns or "seed" not in curves.columns:
            keys = ok[["trial_id", "variant", "seed"]].assign(trial_id=lambda d: d["trial_id"].astype(str))
            curves = curves.assign(trial_id=curves["trial_id"].astype(str)).drop(
                columns=[c for c in ("variant", "seed") if c in curves.columns]).merge(keys, on="trial_id")
    else:
        pairs = set(zip(ok["variant"], ok["seed"].astype(str), strict=True))
        keep = [(v, str(s)) in pairs for v, s in zip(curves["variant"], curves["seed"], strict=True)]
        curves = curves[keep].copy()
    curves["variant"] = curves["variant"].astype(str)

    return ExperimentData(
        exp_dir=exp_dir, meta=meta, trials_all=trials, ok=ok, errored=errored, diverged=diverged, curves=curves,
        design=design, unit=str(unit) if unit else None, innovations=innovations,
        reference_variant=str(reference) if reference else None,
        baseline_variant=str(baseline) if baseline else None, knob_types=knob_types, warnings=warnings,
    )
