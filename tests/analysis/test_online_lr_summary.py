"""scripts/summarize_online_lr.py: the validation-stream table and the rate it picks per preset and protocol."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "summarize_online_lr.py"


def _write(folder: Path, name: str, mses: list[float]) -> None:
    lines = [json.dumps({"mse": m, "rel_mse_persistence": m / 0.1, "error": None}) for m in mses]
    (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


def test_picks_the_rate_with_the_lowest_mean_validation_mse(tmp_path: Path) -> None:
    _write(tmp_path, "ogd-d12-lrref", [0.30, 0.50])
    _write(tmp_path, "ogd-d12-lr1e-5", [0.08, 0.10])
    _write(tmp_path, "ogd-d12-lr1e-6", [0.09, 0.11])
    _write(tmp_path, "ogd-d0-lrref", [0.06, 0.07])
    _write(tmp_path, "ogd-d0-lr1e-5", [0.07, 0.08])
    (tmp_path / "ogd-d0-lr1e-4.jsonl.part").write_text("unfinished")  # a run still going is not read
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=True)
    assert "- `ogd`, delay 12: online_lr 1e-5 (val MSE 0.0900)" in done.stdout
    assert "- `ogd`, delay 0: online_lr ref (val MSE 0.0650)" in done.stdout
    assert "| `ogd` | 12 | 1e-5 | 2 | 0.0900 [" in done.stdout and "1e-4" not in done.stdout


def test_revin_runs_are_their_own_rows(tmp_path: Path) -> None:
    _write(tmp_path, "ogd-d12-lr1e-5", [0.08, 0.10])
    _write(tmp_path, "ogd+revin-d12-lr1e-5", [0.06, 0.07])
    _write(tmp_path, "ogd+revin-d12-lr1e-4", [0.05, 0.06])
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=True)
    assert "- `ogd`, delay 12: online_lr 1e-5 (val MSE 0.0900)" in done.stdout
    assert "- `ogd+revin`, delay 12: online_lr 1e-4 (val MSE 0.0550)" in done.stdout


def test_an_empty_folder_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no finished runs" in done.stderr
