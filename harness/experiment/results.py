"""Result files of an experiment, written atomically as each trial finishes.

<results>/<experiment>/trials.parquet  one row per trial, i.e. per (configuration, seed), also when seeds ran as
                                       a group (group_id: the group's Tune trial id; group_size; member_index)
<results>/<experiment>/curves.parquet  cumulative MSE/MAE every report_every steps and at the last step
Both are rewritten whole through a temp file in the same folder and os.replace, so a reader never
sees a half-written file. A trial is keyed by trial_id: a retried trial replaces its row.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fsnet_models.knobs import INNOVATIONS, KNOBS
from harness.online.result import METRIC_NAMES

TRIALS_FILE = "trials.parquet"
CURVES_FILE = "curves.parquet"
METRICS = METRIC_NAMES
_ARROW_TYPES = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}
_TIME = pa.timestamp("us", tz="UTC")
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK  # what open() would give; mkstemp's temp files are 0600


def _trial_schema() -> pa.Schema:
    """The columns of trials.parquet, in order, with their types."""
    s, f, i, b = pa.string(), pa.float64(), pa.int64(), pa.bool_()
    fields = [("experiment", s), ("trial_id", s), ("variant", s), ("space", s), ("design", s), ("unit", s),
              ("preset", s), ("seed", i), ("group_id", s), ("group_size", i), ("member_index", i)]
    fields += [(f"knob_{k.name}", _ARROW_TYPES[k.type]) for k in KNOBS.values()]
    fields += [(f"innov_{name}", b) for name in INNOVATIONS]
    fields += [("dataset", s), ("features", s), ("seq_len", i), ("pred_len", i), ("feedback_delay", i)]
    fields += [(m, f) for m in METRICS]
    fields += [("memory_triggers", i), ("attention_entropy_mean", f), ("tau_mean", f), ("tau_min", f),
               ("tau_max", f), ("temperature_mean", f), ("temperature_min", f), ("temperature_max", f),
               ("slot_mean_sq_cos", f), ("memory_triggers_per_layer", s), ("steps", i), ("warmup_seconds", f),
               ("online_seconds", f), ("trial_seconds", f), ("steps_per_s", f), ("peak_rss_mb", f), ("device", s),
               ("node_ip", s), ("status", s), ("error", s), ("git_commit", s), ("package_versions", s),
               ("started_at", _TIME), ("ended_at", _TIME)]
    return pa.schema(fields)


TRIAL_SCHEMA = _trial_schema()
CURVE_SCHEMA = pa.schema([("experiment", pa.string()), ("trial_id", pa.string()), ("variant", pa.string()),
                          ("seed", pa.int64()), ("step", pa.int64()), ("cum_mse", pa.float64()),
                          ("cum_mae", pa.float64())])


def _timestamp(value: Any) -> datetime | None:
    """An ISO 8601 string (or datetime) as a timezone-aware datetime; None stays None."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _typed(value: Any, kind: pa.DataType) -> Any:
    """`value` converted to the Python type of an arrow column (None stays None)."""
    if value is None:
        return None
    if pa.types.is_boolean(kind):
        return bool(value)
    if pa.types.is_integer(kind):
        return int(value)
    if pa.types.is_floating(kind):
        return float(value)
    if pa.types.is_timestamp(kind):
        return _timestamp(value)
    return str(value)


def build_trial_row(experiment: Mapping[str, Any], trial_id: str, variant: str, preset: str, seed: int,
                    knobs: Mapping[str, Any], innovations: Mapping[str, bool | None], result: Mapping[str, Any],
                    status: str, error: str | None) -> dict[str, Any]:
    """One trials.parquet row, typed by TRIAL_SCHEMA (absent values are null).

    `experiment` holds name, space, design, unit, git_commit and package_versions (a JSON string);
    `knobs` is the trial's resolved config; `result` the trainable's last report.
    """
    row: dict[str, Any] = dict(result)
    row.update({"experiment": experiment["name"], "trial_id": trial_id, "variant": variant,
                "space": experiment["space"], "design": experiment["design"], "unit": experiment["unit"],
                "preset": preset, "seed": seed, "status": status, "error": error,
                "group_id": result.get("group_id") or trial_id, "group_size": result.get("group_size") or 1,
                "member_index": result.get("member_index") or 0,
                "git_commit": experiment.get("git_commit"), "package_versions": experiment.get("package_versions")})
    row.update({f"knob_{k}": knobs.get(k) for k in KNOBS})
    row.update({f"innov_{k}": innovations.get(k) for k in INNOVATIONS})
    row.update({k: knobs.get(k) for k in ("dataset", "features", "seq_len", "pred_len", "feedback_delay")})
    return {f.name: _typed(row.get(f.name), f.type) for f in TRIAL_SCHEMA}


def build_curve_rows(experiment: str, trial_id: str, variant: str, seed: int,
                     curve: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """curves.parquet rows of one trial."""
    return [{"experiment": experiment, "trial_id": trial_id, "variant": variant, "seed": seed,
             "step": int(p["step"]), "cum_mse": float(p["cum_mse"]), "cum_mae": float(p["cum_mae"])} for p in curve]


def write_table_atomic(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write a parquet file through a temp file in the same folder and os.replace (never half-written)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(data: Any, path: str | os.PathLike[str]) -> None:
    """Write JSON through a temp file in the same folder and os.replace."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, default=str)
            handle.write("\n")
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_rows(path: Path, schema: pa.Schema) -> list[dict[str, Any]]:
    """The rows of a parquet file written with `schema` (empty when absent)."""
    if not path.is_file():
        return []
    return pq.read_table(path, schema=schema).to_pylist()


class ResultsStore:
    """trials.parquet and curves.parquet of one experiment folder, kept in memory and rewritten atomically."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.trials = _read_rows(self.folder / TRIALS_FILE, TRIAL_SCHEMA)
        self.curves = _read_rows(self.folder / CURVES_FILE, CURVE_SCHEMA)

    @property
    def trials_path(self) -> Path:
        """Path of trials.parquet."""
        return self.folder / TRIALS_FILE

    @property
    def curves_path(self) -> Path:
        """Path of curves.parquet."""
        return self.folder / CURVES_FILE

    def upsert(self, row: Mapping[str, Any], curve: Iterable[Mapping[str, Any]] = ()) -> None:
        """Add or replace (by trial_id) a trial's row and curve, then rewrite both files.

        An ERROR row of the same variant and seed under another trial_id (a trial Ray re-created
        after a driver crash) is superseded as well, so each planned trial appears once.
        """
        self.upsert_many([(row, curve)])

    def upsert_many(self, entries: Iterable[tuple[Mapping[str, Any], Iterable[Mapping[str, Any]]]]) -> None:
        """upsert() of several (row, curve) pairs (a group's members), with one rewrite of each file."""
        for row, curve in entries:
            trial_id = row["trial_id"]
            gone = {trial_id} | {r["trial_id"] for r in self.trials if r["status"] == "ERROR"
                                 and (r["variant"], r["seed"]) == (row["variant"], row["seed"])}
            self.trials = [r for r in self.trials if r["trial_id"] not in gone] + [dict(row)]
            self.curves = [c for c in self.curves if c["trial_id"] not in gone] + [dict(c) for c in curve]
        write_table_atomic(pa.Table.from_pylist(self.curves, schema=CURVE_SCHEMA), self.curves_path)
        write_table_atomic(pa.Table.from_pylist(self.trials, schema=TRIAL_SCHEMA), self.trials_path)

    def finished(self) -> dict[str, dict[str, Any]]:
        """trial_id and `variant|seed` -> final metrics of every TERMINATED trial (what a resume skips)."""
        done: dict[str, dict[str, Any]] = {}
        for r in self.trials:
            if r["status"] == "TERMINATED":
                summary = {"step": r["steps"], "cum_mse": r["mse"], "cum_mae": r["mae"], "mse": r["mse"],
                           "trial_seconds": r["trial_seconds"]}
                done[r["trial_id"]] = summary
                done[f"{r['variant']}|{r['seed']}"] = summary
        return done

    def get(self, trial_id: str) -> dict[str, Any] | None:
        """The stored row of `trial_id`, if any."""
        return next((r for r in self.trials if r["trial_id"] == trial_id), None)

    def frame(self) -> pd.DataFrame:
        """trials as a pandas DataFrame (typed by TRIAL_SCHEMA)."""
        return pa.Table.from_pylist(self.trials, schema=TRIAL_SCHEMA).to_pandas()
