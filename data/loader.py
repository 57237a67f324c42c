"""Read and validate an ETT-format CSV: a ``date`` column followed by numeric value columns."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from data.errors import DataError


def _where(row: int) -> str:
    """Name a 0-based data row and its 1-based line in the file (the header is line 1)."""
    return f"row {row} (line {row + 2})"


def load_ett_csv(path: Path) -> pd.DataFrame:
    """Load ``path`` into a DataFrame of ``n_rows`` rows and the file's columns, in file order.

    ``date`` becomes datetime64[ns] (strictly increasing, no duplicates) and every other column float64
    (finite, no missing values). Any problem raises a one-line DataError naming the file and, where it
    applies, the column and the first offending row (0-based data row and file line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"file not found ({path.absolute()})")
    frame = _read(path)
    if "date" not in frame.columns:
        raise DataError(path, "column 'date' is missing")
    values = [c for c in frame.columns if c != "date"]
    if not values:
        raise DataError(path, "no value columns besides 'date'")
    if len(frame) == 0:
        raise DataError(path, "file has a header but no data rows")
    out = pd.DataFrame({"date": _dates(path, frame["date"])})
    for column in values:
        out[column] = _numbers(path, column, frame[column])
    return out[list(frame.columns)]


def _read(path: Path) -> pd.DataFrame:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # ragged rows must not pass silently
            return pd.read_csv(path, index_col=False, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(path, "file is empty") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError) as exc:
        raise DataError(path, f"not a valid CSV file ({exc})") from None
    except OSError as exc:
        raise DataError(path, f"cannot read file ({exc})") from None


def _dates(path: Path, raw: pd.Series) -> pd.Series:
    dates = pd.to_datetime(raw.str.strip(), errors="coerce").astype("datetime64[ns]")
    bad = np.flatnonzero(dates.isna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise DataError(path, f"unparseable date {raw.iloc[row]!r} at {_where(row)}")
    step = np.diff(dates.to_numpy().astype(np.int64))
    bad = np.flatnonzero(step <= 0)
    if bad.size:
        row = int(bad[0]) + 1
        kind = "duplicated date" if step[row - 1] == 0 else "date not increasing (non-monotonic)"
        raise DataError(path, f"{kind} {raw.iloc[row]!r} at {_where(row)} (previous {raw.iloc[row - 1]!r})")
    return dates


def _numbers(path: Path, column: str, raw: pd.Series) -> np.ndarray:
    values = pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = int(bad[0])
        text = str(raw.iloc[row]).strip()
        if text.lower() in ("", "nan", "na", "null", "none"):
            problem = "missing value (NaN)"
        elif np.isnan(values[row]):
            problem = f"non-numeric value {text!r}"
        else:
            problem = f"non-finite value {text!r}"
        raise DataError(path, f"column {column!r} {_where(row)}: {problem}")
    return values
