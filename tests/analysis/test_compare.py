"""Tests for `python -m harness.analyze --compare EXP_A EXP_B`: two experiments side by side, variant by variant
(harness.analysis.compare), checked against intervals computed by hand with scipy."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats

from harness.analysis.compare import COMPARE_COLUMNS, DIFFERS, NO_DIFFERENCE, NOT_ESTIMATED, compare_experiments
from harness.analyze import main as cli_main
from harness.experiment.results import TRIAL_SCHEMA, build_trial_row, write_table_atomic

ROOT = Path(__file__).resolve().parents[2]

# variant -> {seed: mse}. "ultra": the same seeds on both sides (paired); "ogd": other seeds (Welch only);
# "ultra -memory_heads": B is clearly worse on every seed; "ultra -gated_controller": one seed in A (no interval).
A_VALUES: dict[str, dict[int, float]] = {
    "ultra": {0: 0.0420, 1: 0.0450, 2: 0.0390, 3: 0.0470},
    "ogd": {0: 0.0600, 1: 0.0640, 2: 0.0580},
    "ultra -memory_heads": {0: 0.0410, 1: 0.0440, 2: 0.0400, 3: 0.0460},
    "ultra -gated_controller": {0: 0.0430},
    "ultra -memory_slots": {0: 0.0400, 1: 0.0410},
}
B_VALUES: dict[str, dict[int, float]] = {
    "ultra": {0: 0.0431, 1: 0.0449, 2: 0.0402, 3: 0.0468},
    "ogd": {0: 0.0700, 1: 0.0720, 2: 0.0710, 3: 0.0690, 4: 0.0730},
    "ultra -memory_heads": {0: 0.0450, 1: 0.0482, 2: 0.0445, 3: 0.0497},
    "ultra -gated_controller": {0: 0.0440, 1: 0.0450},
    "ultra -adaptive_trigger": {0: 0.0420, 1: 0.0430},
}
EXPERIMENT = {"name": "cmp", "space": "ultra", "design": "loo", "unit": "innovation", "git_commit": "abc1234"}


def _row(trial_id: str, variant: str, seed: int, mse: float | None, status: str = "TERMINATED",
         feedback_delay: int = 0) -> dict[str, Any]:
    knobs = {"dataset": "ETTh1", "features": "S", "seq_len": 48, "pred_len": 12, "feedback_delay": feedback_delay}
    result = {"mse": mse, "mae": None if mse is None else 3 * mse, "trial_seconds": 10.0 + seed}
    return build_trial_row(EXPERIMENT, trial_id, variant, "ultra", seed, knobs, {}, result, status,
                           "RuntimeError: boom" if status == "ERROR" else None)


def _write(folder: Path, values: dict[str, dict[int, float]], extra: list[dict[str, Any]] | None = None,
           feedback_delay: int = 0) -> Path:
    """A real trials.parquet (TRIAL_SCHEMA, written atomically) in `folder`."""
    rows = [_row(f"{v}-{s}", v, s, x, feedback_delay=feedback_delay) for v, by in values.items() for s, x in by.items()]
    rows += extra or []
    write_table_atomic(pa.Table.from_pylist(rows, schema=TRIAL_SCHEMA), folder / "trials.parquet")
    return folder


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two experiment folders: A (feedback_delay 0) and B (feedback_delay 12), with rows that must not count."""
    extra_a = [
        _row("ultra-crash", "ultra", 7, None, status="ERROR"),  # errored: left out
        _row("ultra-nan", "ultra", 8, math.nan),  # diverged (TERMINATED, not finite): left out
        _row("only-a-error", "ultra -diversity_penalty", 0, None, status="ERROR"),  # never TERMINATED: not a variant
    ]
    # ogd seed 0 twice in B (a retried trial with its own id): one value per seed, their mean.
    extra_b = [_row("ogd-0-retry", "ogd", 0, 0.0710, feedback_delay=12)]
    a = _write(tmp_path / "a", A_VALUES, extra_a)
    b_values = {k: dict(v) for k, v in B_VALUES.items()}
    b_values["ogd"][0] = 0.0690  # with the retry: mean 0.0700, as in B_VALUES
    b = _write(tmp_path / "b", b_values, extra_b, feedback_delay=12)
    return a, b


def _table(pair: tuple[Path, Path], metric: str = "mse") -> pd.DataFrame:
    a, b = pair
    return compare_experiments(pd.read_parquet(a / "trials.parquet"), pd.read_parquet(b / "trials.parquet"), metric)


def _by_variant(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {r["variant"]: r for r in table.to_dict(orient="records")}


# ----------------------------------------------------------------------------------------------- the numbers


def test_columns_and_variants_in_both(pair: tuple[Path, Path]) -> None:
    table = _table(pair)
    assert list(table.columns) == list(COMPARE_COLUMNS)
    assert list(table["variant"]) == ["ogd", "ultra", "ultra -gated_controller", "ultra -memory_heads"]


def test_means_and_t_intervals_match_scipy(pair: tuple[Path, Path]) -> None:
    rows = _by_variant(_table(pair))
    for side, values in (("a", A_VALUES), ("b", B_VALUES)):
        for v in ("ultra", "ogd", "ultra -memory_heads"):
            x = np.array(list(values[v].values()))
            lo, hi = stats.t.interval(0.95, x.size - 1, loc=x.mean(), scale=stats.sem(x))
            r = rows[v]
            assert r[f"n_{side}"] == x.size
            assert r[f"mean_{side}"] == pytest.approx(x.mean(), rel=1e-12)
            assert (r[f"ci_low_{side}"], r[f"ci_high_{side}"]) == pytest.approx((lo, hi), rel=1e-10)


def test_welch_difference_and_percent_match_scipy(pair: tuple[Path, Path]) -> None:
    rows = _by_variant(_table(pair))
    for v in ("ultra", "ogd", "ultra -memory_heads"):
        a = np.array(list(A_VALUES[v].values()))
        b = np.array(list(B_VALUES[v].values()))
        res = stats.ttest_ind(b, a, equal_var=False)
        ci = res.confidence_interval(0.95)
        r = rows[v]
        assert r["diff"] == pytest.approx(b.mean() - a.mean(), rel=1e-10)
        assert (r["diff_ci_low"], r["diff_ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
        assert r["welch_df"] == pytest.approx(res.df, rel=1e-10)
        assert r["diff_pct"] == pytest.approx(100 * (b.mean() - a.mean()) / a.mean(), rel=1e-10)
        assert (r["diff_pct_ci_low"], r["diff_pct_ci_high"]) == pytest.approx(
            (100 * ci.low / a.mean(), 100 * ci.high / a.mean()), rel=1e-9)
    assert rows["ogd"]["welch_verdict"] == DIFFERS  # B's ogd is about 17% higher
    assert rows["ultra"]["welch_verdict"] == NO_DIFFERENCE


def test_paired_interval_only_on_the_same_seeds(pair: tuple[Path, Path]) -> None:
    rows = _by_variant(_table(pair))
    for v in ("ultra", "ultra -memory_heads"):
        a = np.array(list(A_VALUES[v].values()))
        b = np.array(list(B_VALUES[v].values()))
        ci = stats.ttest_rel(b, a).confidence_interval(0.95)
        r = rows[v]
        assert r["paired"] and r["n_paired"] == 4 and r["verdict_basis"] == "paired"
        assert r["paired_diff"] == pytest.approx((b - a).mean(), rel=1e-10)
        assert (r["paired_ci_low"], r["paired_ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
        assert (r["paired_pct_ci_low"], r["paired_pct_ci_high"]) == pytest.approx(
            (100 * ci.low / a.mean(), 100 * ci.high / a.mean()), rel=1e-9)
    # -memory_heads: B worse on every seed by 0.0037-0.0042: Welch's interval holds 0, the paired one does not.
    mh = rows["ultra -memory_heads"]
    assert mh["welch_verdict"] == NO_DIFFERENCE and mh["paired_verdict"] == DIFFERS and mh["verdict"] == DIFFERS
    assert rows["ultra"]["verdict"] == NO_DIFFERENCE
    # Other seeds (ogd: 0-2 vs 0-4): no paired interval, the verdict is Welch's.
    ogd = rows["ogd"]
    assert not ogd["paired"] and ogd["n_paired"] == 0 and math.isnan(ogd["paired_ci_low"])
    assert ogd["verdict_basis"] == "welch" and ogd["verdict"] == ogd["welch_verdict"] == DIFFERS


def test_one_seed_has_no_interval(pair: tuple[Path, Path]) -> None:
    r = _by_variant(_table(pair))["ultra -gated_controller"]
    assert r["n_a"] == 1 and r["n_b"] == 2 and r["mean_a"] == pytest.approx(0.0430)
    assert math.isnan(r["ci_low_a"]) and math.isnan(r["diff_ci_low"]) and r["diff"] == pytest.approx(0.0015)
    assert r["welch_verdict"] == NOT_ESTIMATED and not r["paired"] and r["verdict"] == NOT_ESTIMATED


def test_other_metric(pair: tuple[Path, Path]) -> None:
    r = _by_variant(_table(pair, "mae"))["ultra"]
    assert r["mean_a"] == pytest.approx(3 * np.mean(list(A_VALUES["ultra"].values())))
    assert r["paired_diff"] == pytest.approx(3 * np.mean([B_VALUES["ultra"][s] - A_VALUES["ultra"][s]
                                                          for s in range(4)]))


def test_bad_frames_raise_one_line(pair: tuple[Path, Path]) -> None:
    a, b = (pd.read_parquet(p / "trials.parquet") for p in pair)
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        compare_experiments(a, b, "nope")
    with pytest.raises(ValueError, match="no variant in both"):
        compare_experiments(a[a["variant"] == "ultra -memory_slots"], b)
    with pytest.raises(ValueError, match="have no column 'mse'"):
        compare_experiments(a.drop(columns=["mse"]), b)


# ----------------------------------------------------------------------------------------------- the CLI


def test_cli_json(pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = pair
    assert cli_main(["--compare", str(a), str(b), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["a"] == str(a) and out["b"] == str(b) and out["metric"] == "mse"
    assert out["only_in_a"] == ["ultra -memory_slots"] and out["only_in_b"] == ["ultra -adaptive_trigger"]
    assert out["settings"] == {"feedback_delay": {"a": [0], "b": [12]}}
    rows = {r["variant"]: r for r in out["variants"]}
    assert set(rows) == {"ogd", "ultra", "ultra -gated_controller", "ultra -memory_heads"}
    expected = _by_variant(_table(pair))
    assert rows["ultra"]["paired_ci_high"] == pytest.approx(expected["ultra"]["paired_ci_high"])
    assert rows["ultra -gated_controller"]["ci_low_a"] is None  # NaN is null: strict JSON
    assert rows["ultra -memory_heads"]["verdict"] == DIFFERS


def test_cli_table(pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = pair
    assert cli_main(["--compare", str(a), str(b), "--metric", "mse"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == f"A: {a}" and lines[1] == f"B: {b}"
    assert "settings differ: feedback_delay A 0, B 12" in text
    assert any(line.startswith("  paired, 4 seeds") and line.endswith("differs (paired)") for line in lines)
    assert lines[-1] == "only in A: ultra -memory_slots; only in B: ultra -adaptive_trigger"
    mh = next(line for line in lines if line.startswith("ultra -memory_heads"))
    assert "no difference detected (Welch)" in mh


def _bad_cases(tmp: Path, a: Path, b: Path) -> list[tuple[list[str], str]]:
    empty = tmp / "empty"
    empty.mkdir()
    other = _write(tmp / "other", {"fsnet": {0: 0.05, 1: 0.06}})
    return [
        (["--compare", str(a), str(empty)], "missing file"),
        (["--compare", str(a), str(tmp / "nowhere")], "not found"),
        (["--compare", str(a), str(b), "--metric", "accuracy"], "unknown metric 'accuracy'"),
        (["--compare", str(a), str(other)], "no variant in both"),
        (["--compare", str(a), str(b), str(a)], "not a third"),
        ([str(a), "--metric", "mae"], "--metric applies to --compare only"),
    ]


def test_cli_bad_input_one_line_exit_2(pair: tuple[Path, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    a, b = pair
    for argv, message in _bad_cases(tmp_path, a, b):
        assert cli_main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.count("\n") == 1 and captured.err.startswith("error: ") and message in captured.err


def test_cli_bad_input_subprocess_has_no_traceback(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = pair
    (tmp_path / "empty").mkdir()
    for argv, message in ((["--compare", str(a), str(tmp_path / "empty")], "missing file"),
                          (["--compare", str(a), str(a), "--metric", "nope"], "unknown metric")):
        proc = subprocess.run([sys.executable, "-m", "harness.analyze", *argv], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr and message in proc.stderr


def test_cli_figure_draws_both_experiments(pair: tuple[Path, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from matplotlib.image import imread

    target = tmp_path / "fig" / "two.png"
    assert cli_main(["--compare", str(pair[0]), str(pair[1]), "--figure", str(target)]) == 0
    assert f"figure: {target}" in capsys.readouterr().out
    image = imread(target)  # [H, W, 4] RGBA
    assert image.shape[0] > 100 and image.shape[1] > 100
    # both series are drawn: the two markers' colours (matplotlib's tab:blue and tab:orange) are present
    rgb = image[..., :3].reshape(-1, 3)  # [H * W, 3]
    for colour in ((0.122, 0.467, 0.706), (1.0, 0.498, 0.055)):
        assert (np.abs(rgb - np.array(colour)).max(axis=1) < 0.02).any(), colour
