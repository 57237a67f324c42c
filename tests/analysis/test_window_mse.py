"""scripts/window_mse.py: the MSE of each stretch of the stream, recovered from cumulative curves."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "window_mse.py"


def _curves(errors: dict[int, np.ndarray], every: int = 500) -> pd.DataFrame:
    """The curves a trial would report for these per-step squared errors (seed -> [steps])."""
    rows = []
    for seed, err in errors.items():
        for step in range(every, len(err) + 1, every):
            rows.append({"variant": "ogd", "seed": seed, "step": step, "cum_mse": err[:step].mean(), "cum_mae": 0.0})
    return pd.DataFrame(rows)


def test_recovers_each_stretch() -> None:
    spec = importlib.util.spec_from_file_location("window_mse", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    window_mse = module.window_mse

    rng = np.random.default_rng(0)
    errors = {0: rng.random(3000), 1: rng.random(3000) * 2}
    table = window_mse(_curves(errors), [1000, 1500])
    assert list(table.index) == ["0-1000", "1000-1500", "1500-3000"]
    for seed, err in errors.items():
        assert table[seed].tolist() == pytest.approx([err[:1000].mean(), err[1000:1500].mean(), err[1500:].mean()])
    with pytest.raises(ValueError, match="not reported"):
        window_mse(_curves(errors), [750])


def test_cli_table_and_errors(tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    folder.mkdir()
    _curves({0: np.full(2000, 0.5), 1: np.full(2000, 0.7)}).to_parquet(folder / "curves.parquet")
    done = subprocess.run([sys.executable, str(SCRIPT), f"{folder}:ogd", "--edges", "1000"], capture_output=True,
                          text=True, check=True)
    assert f"| {folder}:ogd | 0.600 | 0.600 | 2 |" in done.stdout
    bad = subprocess.run([sys.executable, str(SCRIPT), f"{folder}:er"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no curve of variant 'er'" in bad.stderr
