"""`python -m harness.trial`: JSON output, knob listing and one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fsnet_models import KNOBS
from harness.trial import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit status, stdout, stderr)."""
    try:
        status = main(list(args))
    except SystemExit as exc:  # argparse
        status = int(exc.code or 0)
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.mark.parametrize("preset", ["persistence", "ultra"])
def test_json_has_the_promised_fields(capsys: pytest.CaptureFixture[str], preset: str) -> None:
    status, out, _ = run_cli(capsys, "--preset", preset, "--max-steps", "40", "--epochs", "0", "--json",
                             "--curve-every", "20")
    assert status == 0
    result = json.loads(out)
    for key in ("preset", "knobs", "seed", "dataset", "protocol", "mse", "mae", "rmse", "mape", "smape",
                "rel_mse_persistence", "steps", "warmup_seconds", "online_seconds", "steps_per_s", "peak_rss_mb"):
        assert key in result, key
    assert result["steps"] == 40 and result["preset"] == preset
    assert all(math.isfinite(result[m]) for m in ("mse", "mae", "rmse", "mape", "smape"))
    assert [c["step"] for c in result["curve"]] == [20, 40]
    if preset == "ultra":
        assert result["knobs"]["memory_heads"] == 4 and "diagnostics" in result


def test_set_overrides_a_preset_value(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "--preset", "ultra", "--set", "memory_heads=2", "--set", "diversity_penalty=0",
                             "--max-steps", "5", "--epochs", "0", "--json")
    assert status == 0
    knobs = json.loads(out)["knobs"]
    assert knobs["memory_heads"] == 2 and knobs["diversity_penalty"] == 0.0 and knobs["memory_slots"] == 64


def test_list_knobs_prints_every_knob(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "--list-knobs")
    assert status == 0
    names = {line.split()[0] for line in out.splitlines()[1:]}
    assert names == set(KNOBS)


@pytest.mark.parametrize("args,needle", [
    (["--set", "memory_head=2"], "unknown knob 'memory_head'"),
    (["--set", "memory_heads=0"], "memory_heads"),
    (["--set", "memory_heads"], "knob=value"),
    (["--preset", "fsnet2"], "unknown preset"),
    (["--max-steps", "zero"], "--max-steps"),
    (["--max-steps", "0"], "--max-steps"),
    (["--data", "/nonexistent/ETTh1.csv"], "ETTh1.csv"),
    (["--bogus"], "--bogus"),
])
def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    status, out, err = run_cli(capsys, *args, "--max-steps", "3") if "--max-steps" not in args else run_cli(
        capsys, *args)
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_unusable_checkpoints_are_refused_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    common = ["--preset", "ogd", "--max-steps", "5", "--epochs", "0"]
    good = tmp_path / "run.pt"
    assert run_cli(capsys, *common, "--checkpoint", str(good), "--json")[0] == 0
    old = tmp_path / "old.pt"
    state = torch.load(good, weights_only=False)
    torch.save({**state, "version": 1}, old)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    cases = [(old, "format version 1"), (tmp_path / "missing.pt", "cannot read checkpoint"),
             (tmp_path / "text.pt", "cannot read checkpoint")]
    for path, needle in cases:
        status, out, err = run_cli(capsys, *common, "--resume", str(path))
        assert status == 2 and out == "", path
        assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    other = run_cli(capsys, "--preset", "fsnet", "--max-steps", "5", "--epochs", "0", "--resume", str(good))
    assert other[0] == 2 and "different trial configuration" in other[2]


def test_module_entry_point_runs_as_a_process() -> None:
    proc = subprocess.run([sys.executable, "-m", "harness.trial", "--set", "top_k=0"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: knob 'top_k'") and proc.stderr.count("\n") == 1


def test_seeds_run_one_group_and_print_a_line_per_member(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "--preset", "ogd", "--seeds", "2,0", "--max-steps", "30", "--epochs", "0",
                             "--json", "--threads", "1")
    assert status == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(r["seed"], r["member_index"], r["group_size"]) for r in lines] == [(2, 0, 2), (0, 1, 2)]
    _, solo, _ = run_cli(capsys, "--preset", "ogd", "--seed", "0", "--max-steps", "30", "--epochs", "0", "--json",
                         "--threads", "1")
    assert lines[1]["mse"] == pytest.approx(json.loads(solo)["mse"], rel=1e-5)
    for bad in (["--seeds", "1,1"], ["--seeds", "x"], ["--seeds", "0,1", "--seed", "2"],
                ["--seeds", "0,1", "--preset", "persistence"]):
        status, out, err = run_cli(capsys, *bad, "--max-steps", "5")
        assert status == 2 and not out and len(err.strip().splitlines()) == 1, bad


def test_a_group_checkpointed_and_resumed_ends_with_the_same_metrics(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--preset", "fsnet", "--seeds", "0,3", "--epochs", "0", "--json", "--threads", "1"]
    _, straight, _ = run_cli(capsys, *common, "--max-steps", "40")
    checkpoint = tmp_path / "group.pt"
    status, _, err = run_cli(capsys, *common, "--max-steps", "40", "--checkpoint", str(checkpoint),
                             "--checkpoint-every", "15")
    assert status == 0 and checkpoint.is_file(), err
    state = torch.load(checkpoint, weights_only=False)
    assert state["step"] == 40 and state["seeds"] == [0, 3]
    # the saved group (a part-way resume is tests/tune/test_groups.py's) gives back the same members' metrics
    status, resumed, err = run_cli(capsys, *common, "--max-steps", "40", "--resume", str(checkpoint))
    assert status == 0, err
    assert [json.loads(x)["mse"] for x in resumed.splitlines()] == [json.loads(x)["mse"] for x in straight.splitlines()]
    status, out, err = run_cli(capsys, "--preset", "fsnet", "--seeds", "0,4", "--epochs", "0", "--max-steps", "40",
                               "--resume", str(checkpoint))
    assert status == 2 and not out and "different group" in err
