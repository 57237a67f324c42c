"""Turn an ETT CSV into FSNet's scaled train/val/test windows (``Dataset_ETT_hour``, timeenc=2, no label)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from data.errors import DataError
from data.loader import load_ett_csv
from data.locate import find_data_file, sha256_of

FEATURES = ("S", "M", "MS")
TRAIN_END, VAL_END, TEST_END = 4 * 30 * 24, 5 * 30 * 24, 20 * 30 * 24  # 2880, 3600, 14400 rows
N_CALENDAR = 7


@dataclass(frozen=True, eq=False)
class SplitWindows:
    """All sliding windows of one split; window ``s`` reads rows ``[s, s + seq_len)`` of the split."""

    x: torch.Tensor  # [n, seq_len, n_in + 7] float32: scaled input columns then the 7 calendar features
    y: torch.Tensor  # [n, pred_len * n_out] float32 scaled targets, flattened time-major ('b t d -> b (t d)')
    y_raw: torch.Tensor  # [n, pred_len * n_out] float64 targets in original units
    last_raw: torch.Tensor  # [n, n_out] float64 last observed target values of each window (original units)

    def __len__(self) -> int:
        """Return the number of windows ``n``."""
        return int(self.x.shape[0])


@dataclass(frozen=True, eq=False)
class PreparedData:
    """A dataset ready for FSNet: provenance, column roles, the train-fitted scaler and the three splits."""

    dataset: str
    path: str
    sha256: str
    features: str
    target: str
    seq_len: int
    pred_len: int
    input_columns: tuple[str, ...]
    target_columns: tuple[str, ...]
    n_in: int
    n_out: int
    scaler_mean: np.ndarray  # [n_in] float64, over input columns, fitted on train rows only
    scaler_std: np.ndarray  # [n_in] float64 (ddof=0)
    train: SplitWindows
    val: SplitWindows
    test: SplitWindows  # the online stream

    def to_original(self, y_scaled: torch.Tensor) -> torch.Tensor:
        """Inverse-scale targets ``[..., pred_len * n_out]`` (time-major) to original units, as float64."""
        width = self.pred_len * self.n_out
        if y_scaled.shape[-1] != width:
            raise ValueError(f"to_original expects a last dimension of {width}, got {tuple(y_scaled.shape)}")
        idx = [self.input_columns.index(c) for c in self.target_columns]
        mean = torch.from_numpy(np.tile(self.scaler_mean[idx], self.pred_len)).to(y_scaled.device)
        std = torch.from_numpy(np.tile(self.scaler_std[idx], self.pred_len)).to(y_scaled.device)
        return y_scaled.to(torch.float64) * std + mean


def prepare_data(
    dataset: str = "ETTh1",
    features: str = "S",
    target: str = "OT",
    seq_len: int = 48,
    pred_len: int = 12,
    path: str | None = None,
) -> PreparedData:
    """Locate, validate, scale and window a dataset exactly as FSNet's ``Dataset_ETT_hour`` (timeenc=2).

    Rows: train [0, 2880), val [2880 - seq_len, 3600), test [3600 - seq_len, 14400); later rows unused.
    ``features``: 'S' target -> target, 'M' all value columns -> all, 'MS' all -> the last column.
    Inputs are standardised with mean/std (ddof=0) of train rows; the 7 calendar features likewise.
    """
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    if seq_len < 1 or pred_len < 1:
        raise ValueError(f"seq_len and pred_len must be >= 1, got seq_len={seq_len}, pred_len={pred_len}")
    if seq_len + pred_len > TRAIN_END or pred_len > VAL_END - TRAIN_END:
        raise ValueError(f"seq_len={seq_len}, pred_len={pred_len} leave a split without windows")

    file = find_data_file(dataset, path)
    frame = load_ett_csv(file)
    value_columns = tuple(c for c in frame.columns if c != "date")
    if target not in value_columns:
        raise DataError(file, f"column {target!r} is missing")
    if features == "MS" and target != value_columns[-1]:
        raise ValueError(f"features 'MS' predicts the last column {value_columns[-1]!r}, not {target!r}")
    if len(frame) < TEST_END:
        raise DataError(file, f"has {len(frame)} rows, needs at least {TEST_END} for the ETT-hour splits")

    inputs = (target,) if features == "S" else value_columns
    targets = (value_columns[-1],) if features == "MS" else inputs
    frame = frame.iloc[:TEST_END]
    raw = frame[list(inputs)].to_numpy(dtype=np.float64)
    mean, std = raw[:TRAIN_END].mean(axis=0), raw[:TRAIN_END].std(axis=0)
    if np.any(std == 0):
        constant = [c for c, s in zip(inputs, std, strict=True) if s == 0]
        raise DataError(file, f"column(s) {constant} constant over the train rows: cannot standardise")
    scaled = np.concatenate([(raw - mean) / std, _calendar(frame["date"])], axis=1)
    target_idx = [inputs.index(c) for c in targets]

    borders = {
        "train": (0, TRAIN_END),
        "val": (TRAIN_END - seq_len, VAL_END),
        "test": (VAL_END - seq_len, TEST_END),
    }
    splits = {
        name: _windows(scaled[lo:hi], raw[lo:hi, target_idx], target_idx, seq_len, pred_len)
        for name, (lo, hi) in borders.items()
    }
    return PreparedData(
        dataset=dataset,
        path=str(file),
        sha256=sha256_of(file),
        features=features,
        target=targets[-1] if features == "MS" else target,
        seq_len=seq_len,
        pred_len=pred_len,
        input_columns=inputs,
        target_columns=targets,
        n_in=len(inputs),
        n_out=len(targets),
        scaler_mean=mean,
        scaler_std=std,
        **splits,
    )


def _calendar(dates: pd.Series) -> np.ndarray:
    """Return [rows, 7] float64 calendar features standardised on train rows (a zero std counts as 1)."""
    dt = pd.DatetimeIndex(dates)
    columns = (dt.minute, dt.hour, dt.day_of_week, dt.day, dt.day_of_year, dt.month, dt.isocalendar().week)
    feats = np.stack([np.asarray(c, dtype=np.float64) for c in columns], axis=1)
    mean, std = feats[:TRAIN_END].mean(axis=0), feats[:TRAIN_END].std(axis=0)
    return (feats - mean) / np.where(std == 0, 1.0, std)


def _windows(
    scaled: np.ndarray, raw_target: np.ndarray, target_idx: list[int], seq_len: int, pred_len: int
) -> SplitWindows:
    """Slide over one split of L rows: ``scaled`` [L, n_in + 7], ``raw_target`` [L, n_out].

    Gives n = L - seq_len - pred_len + 1 windows; window s takes x from rows [s, s + seq_len) and y from
    the target columns of rows [s + seq_len, s + seq_len + pred_len).
    """
    n = len(scaled) - seq_len - pred_len + 1
    rows = torch.from_numpy(scaled)
    raw = torch.from_numpy(raw_target)
    # unfold(0, size, 1): [L - size + 1, d, size] -> [windows, size, d]
    x = rows[: n + seq_len - 1].unfold(0, seq_len, 1).transpose(1, 2)
    y = rows[seq_len:, target_idx].unfold(0, pred_len, 1).transpose(1, 2)
    y_raw = raw[seq_len:].unfold(0, pred_len, 1).transpose(1, 2)
    return SplitWindows(
        x=x.to(torch.float32).contiguous(),
        y=y.reshape(n, -1).to(torch.float32).contiguous(),
        y_raw=y_raw.reshape(n, -1).contiguous(),
        last_raw=raw[seq_len - 1 : seq_len - 1 + n].clone(),
    )
