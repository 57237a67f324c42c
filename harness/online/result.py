"""The one scalar result schema of a trial: what trials.parquet, W&B and the CLI read from a result.

`TrialRunner.result()` returns a nested dict (metrics, protocol, warm-up, timings, diagnostics);
`flatten_result` picks the scalar columns below out of it. `json_safe` is the one helper that turns
non-finite floats (NaN diagnostics of a memory that never fired) into None, for strict JSON and
nullable Parquet columns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

METRIC_NAMES = ("mse", "mae", "rmse", "mape", "smape", "mape_scaled", "rel_mse_persistence")
DIAGNOSTIC_SCALARS = ("memory_triggers", "attention_entropy_mean", "tau_mean", "tau_min", "tau_max",
                      "temperature_mean", "temperature_min", "temperature_max", "slot_mean_sq_cos")
RESULT_SCALARS = (*METRIC_NAMES, "steps", "warmup_seconds", "online_seconds", "steps_per_s", "peak_rss_mb",
                  "device")


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float replaced by None, through dicts, lists and tuples."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def flatten_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar columns of a TrialRunner.result(): metrics, diagnostics, timings, memory, device."""
    flat = {k: json_safe(result.get(k)) for k in RESULT_SCALARS}
    diagnostics = result.get("diagnostics") or {}
    flat.update({k: json_safe(diagnostics.get(k)) for k in DIAGNOSTIC_SCALARS})
    per_layer = diagnostics.get("memory_triggers_per_layer")
    flat["memory_triggers_per_layer"] = json.dumps(per_layer) if per_layer is not None else None
    return flat
