"""Stream metrics (MODELS.md section 7): on scaled data as in the reference, plus original units."""

from __future__ import annotations

import math

import torch

from harness.online.result import METRIC_NAMES

__all__ = ["METRIC_NAMES", "cumulative_curve", "stream_metrics"]


def stream_metrics(pred: torch.Tensor, true: torch.Tensor, pred_raw: torch.Tensor, true_raw: torch.Tensor,
                   persistence_mse: float) -> dict[str, float]:
    """Whole-stream metrics of forecasts `pred` against `true`, both [n_steps, pred_len * n_out].

    mse, mae, rmse (= sqrt(mse) over the stream; the public code averages per-step RMSEs
    instead) and mape_scaled (the public code's mean(|p - t| / |t|), which divides by values
    near zero) are on the scaled data; mape and smape on the original units (`*_raw`, entries
    with true value exactly 0 left out of mape). rel_mse_persistence = mse / persistence_mse.
    """
    err = pred.double() - true.double()
    mse = float(err.square().mean())
    raw_err = (pred_raw.double() - true_raw.double()).abs()
    nonzero = true_raw != 0
    mape = float((raw_err[nonzero] / true_raw.double().abs()[nonzero]).mean())
    smape = float((2 * raw_err / (pred_raw.double().abs() + true_raw.double().abs()).clamp_min(1e-12)).mean())
    return {
        "mse": mse,
        "mae": float(err.abs().mean()),
        "rmse": math.sqrt(mse),
        "mape": mape,
        "smape": smape,
        "mape_scaled": float((err.abs() / true.double().abs()).mean()),
        "rel_mse_persistence": mse / persistence_mse if persistence_mse > 0 else float("nan"),
    }


def cumulative_curve(step_sq_err: torch.Tensor, step_abs_err: torch.Tensor, every: int) -> list[dict[str, float]]:
    """Cumulative MSE and MAE after every `every` steps and at the last step.

    step_sq_err / step_abs_err: [n_steps] per-step mean squared / absolute error.
    Returns [{"step": s, "cum_mse": ..., "cum_mae": ...}] with s counted from 1.
    """
    n = int(step_sq_err.numel())
    if n == 0:
        return []
    counts = torch.arange(1, n + 1, dtype=torch.float64)
    cum_mse = step_sq_err.double().cumsum(0) / counts
    cum_mae = step_abs_err.double().cumsum(0) / counts
    steps = list(range(every, n + 1, every))
    if not steps or steps[-1] != n:
        steps.append(n)
    return [{"step": s, "cum_mse": float(cum_mse[s - 1]), "cum_mae": float(cum_mae[s - 1])} for s in steps]
