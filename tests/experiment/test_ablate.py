"""The ablation CLI, its results files and callback (unit), and Ray Tune runs (integration).

Integration tests start a local Ray (2 CPUs here) and keep trials tiny: the acceptance command
(ultra loo, 200 steps, 1 epoch), a worker crash resumed from its checkpoint, and a driver killed
mid-experiment then resumed with --resume.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fsnet_models.knobs import INNOVATIONS, KNOBS
from fsnet_models.presets import resolve_config
from harness import ablate
from harness.analysis.tables import ranking_from_trials
from harness.experiment import results
from harness.experiment.console import format_ranking
from harness.experiment.results import (
    CURVE_SCHEMA,
    TRIAL_SCHEMA,
    ResultsStore,
    build_curve_rows,
    build_trial_row,
)
from harness.experiment.settings import prepare, settings_from_args
from harness.tune.results_callback import ResultsCallback, one_line_error
from harness.tune.search import SeedRepeater

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
EXPERIMENT = {"name": "exp", "space": "ultra", "design": "loo", "unit": "innovation", "plain": False,
              "git_commit": "abc", "package_versions": "{}"}
TINY = ["--seeds", "1", "--max-steps", "60", "--epochs", "0", "--report-every", "20", "--checkpoint-every", "20"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("FSNET_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    env["WANDB_MODE"] = "disabled"  # W&B has its own tests (tests/test_wandb.py); keep these runs lean
    env.update(extra)
    return env


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """ablate.main in-process; returns (status, stdout, stderr) also when argparse exits."""
    try:
        status = ablate.main(argv)
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


# ------------------------------------------------------------------ bad input (no Ray)
BAD = [
    (["--space", "nope"], "unknown space 'nope'"),
    (["--space", "ultra", "--design", "nope"], "unknown design 'nope'"),
    (["--space", "ultra", "--unit", "nope"], "unknown unit 'nope'"),
    (["--space", "ultra", "--set", "nope=1"], "unknown knob 'nope'"),
    (["--space", "ultra", "--set", "tau=7"], "knob 'tau' got 7.0"),
    (["--space", "ultra", "--set", "tau"], "--set expects knob=value"),
    (["--space", "ultra", "--set", "memory_heads=2"], "varied by design 'loo'"),
    (["--space", "ultra", "--bogus"], "unrecognized arguments: --bogus"),
    (["--space", "ultra", "--seeds", "x"], "invalid int value"),
    (["--space", "ultra", "--seeds", "0"], "--seeds must be >= 1"),
    (["--space", "ultra", "--cpus-per-trial", "0"], "--cpus-per-trial must be > 0"),
    (["--space", "ultra", "--scheduler", "asha"], "apply to --design optuna only"),
    (["--space", "ultra", "--wandb", "maybe"], "invalid choice: 'maybe'"),
    (["--space", "hparams", "--design", "loo"], "no innovations to switch"),
    (["--space", "ultra", "--experiment", "a/b"], "--experiment 'a/b'"),
    (["--resume", "--experiment", "nope"], "no experiment at"),
    (["--resume"], "--resume needs --experiment NAME"),
    (["--design", "loo"], "--space is required"),
    (["--space", "ultra", "--set", "dataset=NoSuchData"], "NoSuchData.csv: not found"),
]


@pytest.mark.parametrize(("argv", "message"), BAD)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(argv: list[str], message: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default --results is ./results
    status, out, err = _main(argv, capsys)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_missing_data_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _main(["--space", "ultra", "--data", str(tmp_path / "none"), "--results", str(tmp_path / "r")],
                           capsys)
    assert status == 2 and "file not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_existing_experiment_needs_resume_and_resume_takes_no_design_flags(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "experiment.json").write_text("{}")
    status, _, err = _main(["--space", "ultra", "--experiment", "x", "--results", str(tmp_path)], capsys)
    assert status == 2 and "already exists" in err
    status, _, err = _main(["--resume", "--experiment", "x", "--space", "ultra", "--results", str(tmp_path)], capsys)
    assert status == 2 and "drop --space" in err


def test_resume_keeps_the_experiments_wandb_mode_and_refuses_another(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    parser = ablate.build_parser()
    settings = settings_from_args(parser.parse_args(["--space", "ultra", "--experiment", "w", "--wandb", "off"]))
    settings["wandb_project"] = "p1"
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "experiment.json").write_text(json.dumps(settings))
    kept, _ = prepare(parser.parse_args(["--resume", "--experiment", "w", "--results", str(tmp_path)]))
    assert kept["wandb"] == "off" and kept["wandb_project"] == "p1"
    status, _, err = _main(["--resume", "--experiment", "w", "--results", str(tmp_path), "--wandb", "offline"], capsys)
    assert status == 2 and "keeps the experiment's --wandb off; drop --wandb offline" in err
    status, _, err = _main(["--resume", "--experiment", "w", "--results", str(tmp_path), "--wandb-project", "p2"],
                           capsys)
    assert status == 2 and "drop --wandb-project p2" in err


def test_cli_bad_knob_in_a_real_process_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run([PY, "-m", "harness.ablate", "--space", "ultra", "--set", "top_k=0", "--results",
                           str(tmp_path / "r")], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: knob 'top_k' got 0: expected an integer >= 1"]
    assert not (tmp_path / "r").exists()


def test_dry_run_lists_trials_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _main(["--space", "ultra", "--seeds", "2", "--dry-run", "--results", str(tmp_path / "r")],
                           capsys)
    assert status == 0 and not (tmp_path / "r").exists()
    lines = out.strip().splitlines()
    assert "14 trials" in lines[0] and len(lines) == 15 and "ultra -memory_heads" in out
    status, out, _ = _main(["--space", "hparams", "--design", "optuna", "--samples", "3", "--dry-run",
                            "--multi-objective", "--scheduler", "asha", "--results", str(tmp_path / "r")], capsys)
    assert status == 0 and "9 trials" in out and "t_max" in out


# ------------------------------------------------------------------ results files (no Ray)
def _row(trial_id: str, variant: str = "ultra", seed: int = 0, status: str = "TERMINATED", mse: float | None = 0.5,
         **result: Any) -> dict[str, Any]:
    knobs = resolve_config("ultra", {"seed": seed})
    return build_trial_row(EXPERIMENT, trial_id, variant, "ultra", seed, knobs, {}, {"mse": mse, **result},
                           status, None)


def test_trials_schema_is_exact_and_typed_even_when_values_are_null(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.upsert(_row("t1", mse=None), [])
    table = pq.read_table(tmp_path / "trials.parquet")
    assert table.schema.equals(TRIAL_SCHEMA)
    names = table.schema.names
    expected = ["experiment", "trial_id", "variant", "space", "design", "unit", "preset", "seed", "group_id",
                "group_size", "member_index", *[f"knob_{k}" for k in KNOBS], *[f"innov_{i}" for i in INNOVATIONS],
                "dataset", "features",
                "seq_len", "pred_len", "feedback_delay", "mse", "mae", "rmse", "mape", "smape", "mape_scaled",
                "rel_mse_persistence", "memory_triggers", "attention_entropy_mean", "tau_mean", "tau_min",
                "tau_max", "temperature_mean", "temperature_min", "temperature_max", "slot_mean_sq_cos",
                "memory_triggers_per_layer", "steps", "warmup_seconds", "online_seconds", "trial_seconds",
                "steps_per_s", "peak_rss_mb", "device", "node_ip", "status", "error", "git_commit",
                "package_versions", "started_at", "ended_at"]
    assert names == expected
    kinds = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}
    for k in KNOBS.values():
        assert table.schema.field(f"knob_{k.name}").type == kinds[k.type]
    assert table.schema.field("innov_memory_heads").type == pa.bool_()
    assert table.schema.field("started_at").type == pa.timestamp("us", tz="UTC")
    assert table.column("mse").null_count == 1 and table.column("knob_replay_size").null_count == 1
    assert table.column("knob_top_k").to_pylist() == [3]
    # a solo trial is a group of one: its own trial id, size 1, member 0
    assert (table.column("group_id").to_pylist(), table.column("group_size").to_pylist(),
            table.column("member_index").to_pylist()) == (["t1"], [1], [0])


def test_upsert_replaces_by_trial_id_and_supersedes_errored_retries(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    curve = build_curve_rows("exp", "t1", "ultra", 0, [{"step": 10, "cum_mse": 1.0, "cum_mae": 1.0}])
    store.upsert(_row("t1", mse=0.9), curve)
    store.upsert(_row("t2", "ultra -memory_heads", status="ERROR", mse=None), [])
    store.upsert(_row("t1", mse=0.4), curve + build_curve_rows("exp", "t1", "ultra", 0,
                                                               [{"step": 20, "cum_mse": 0.4, "cum_mae": 0.5}]))
    store.upsert(_row("t3", "ultra -memory_heads", mse=0.3), [])  # the errored trial, re-created under a new id
    frame = pq.read_table(tmp_path / "trials.parquet").to_pandas()
    assert sorted(frame["trial_id"]) == ["t1", "t3"]
    assert frame.set_index("trial_id").loc["t1", "mse"] == 0.4
    curves = pq.read_table(tmp_path / "curves.parquet")
    assert curves.schema.equals(CURVE_SCHEMA) and curves.column("step").to_pylist() == [10, 20]
    reloaded = ResultsStore(tmp_path)
    assert len(reloaded.trials) == 2
    assert set(reloaded.finished()) == {"t1", "t3", "ultra|0", "ultra -memory_heads|0"}


def test_a_crash_while_writing_leaves_the_previous_file_intact(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path)
    store.upsert(_row("t1"), [])
    before = (tmp_path / "trials.parquet").read_bytes()

    def crash(table: pa.Table, where: Any, **kw: Any) -> None:
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(results.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        store.upsert(_row("t2"), [])
    assert (tmp_path / "trials.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.parquet", "trials.parquet"]  # no temp files
    monkeypatch.undo()
    assert pq.read_table(tmp_path / "trials.parquet").column("trial_id").to_pylist() == ["t1"]


def test_ranking_table_against_ogd_and_without() -> None:
    rows = [{"variant": v, "seed": s, "mse": m, "mae": m / 2, "mape": m / 4, "trial_seconds": 10.0,
             "status": "TERMINATED"} for v, s, m in [("ogd", 0, 1.0), ("ogd", 1, 1.2), ("fsnet", 0, 0.8),
                                                     ("fsnet", 1, 0.9), ("ultra", 0, 0.5)]]
    rows.append({"variant": "broken", "seed": 0, "mse": None, "mae": None, "mape": None, "trial_seconds": 1.0,
                 "status": "ERROR"})
    table = ranking_from_trials(pd.DataFrame(rows))
    assert list(table["variant"]) == ["ultra", "fsnet", "ogd"]
    change = table.set_index("variant").loc["fsnet", "mse_change_vs_baseline_pct"]
    assert change == pytest.approx((0.85 / 1.1 - 1) * 100)
    assert table.set_index("variant").loc["ogd", "n_seeds"] == 2
    text = format_ranking(table)
    assert "0.8500 ± 0.0707" in text and "-22.7 %" in text and "0.5000 " in text
    no_ogd = ranking_from_trials(pd.DataFrame([r for r in rows if r["variant"] != "ogd"]))
    assert no_ogd["mse_change_vs_baseline_pct"].isna().all() and "n/a" in format_ranking(no_ogd)


def _fake_trial(trial_id: str, result: dict[str, Any], error: str | None = None) -> SimpleNamespace:
    config = {"run": {}, "trial": {"plan_id": 0, "variant": "ultra -memory_heads", "seed": 1, "preset": "ultra",
                                   "overrides": {"memory_heads": 1, "seed": 1}}}
    return SimpleNamespace(trial_id=trial_id, config=config, last_result=result, node_ip="127.0.0.1",
                           get_error=lambda: error, error_file=None)


def test_callback_writes_rows_as_trials_finish(tmp_path: Path) -> None:
    out = io.StringIO()
    callback = ResultsCallback(tmp_path, {k: EXPERIMENT[k] for k in ("name", "space", "design", "unit", "plain")},
                               2, out=out)
    final = {"step": 30, "cum_mse": 0.2, "mse": 0.2, "mae": 0.3, "rmse": 0.45, "steps": 30, "final": True,
             "trial_seconds": 3.0, "memory_triggers": 4, "memory_triggers_per_layer": json.dumps({"a": 4}),
             "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:00:03+00:00",
             "curve_json": json.dumps([{"step": 30, "cum_mse": 0.2, "cum_mae": 0.3}])}
    callback.on_trial_complete(0, [], _fake_trial("a", final))
    trace = "Failure # 1\nTraceback (most recent call last):\n  File x\nRuntimeError: boom\n"
    callback.on_trial_error(0, [], _fake_trial("b", {"step": 10, "cum_mse": 0.9, "trial_seconds": 1.0}, trace))
    frame = pq.read_table(tmp_path / "trials.parquet").to_pandas().set_index("trial_id")
    assert frame.loc["a", "status"] == "TERMINATED" and frame.loc["a", "mse"] == 0.2
    assert frame.loc["a", "knob_memory_heads"] == 1 and not frame.loc["a", "innov_memory_heads"]
    assert frame.loc["a", "innov_gated_controller"] and frame.loc["a", "git_commit"]
    assert frame.loc["b", "status"] == "ERROR" and frame.loc["b", "error"] == "RuntimeError: boom"
    assert math.isnan(frame.loc["b", "mse"]) and frame.loc["b", "steps"] == 10
    assert pq.read_table(tmp_path / "curves.parquet").num_rows == 1
    assert out.getvalue().splitlines()[0] == "[1/2] ultra -memory_heads seed 1: mse 0.2000, 3.0 s"
    clone = pickle.loads(pickle.dumps(callback))
    assert clone._store is None and len(clone.store.trials) == 2  # reloaded from disk
    callback.on_trial_complete(0, [], _fake_trial("a", {"final": True, "skipped": True, "mse": 0.2}))
    assert pq.read_table(tmp_path / "trials.parquet").num_rows == 2


def test_rows_record_the_commit_of_the_drivers_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.tune.results_callback as results_callback

    monkeypatch.setattr(results_callback, "git_commit", lambda: "commit-at-start")
    callback = ResultsCallback(tmp_path, {k: EXPERIMENT[k] for k in ("name", "space", "design", "unit", "plain")},
                               1, out=io.StringIO())
    monkeypatch.setattr(results_callback, "git_commit", lambda: "commit-later")  # the checkout moves on
    final = {"step": 30, "cum_mse": 0.2, "mse": 0.2, "steps": 30, "final": True, "trial_seconds": 3.0,
             "curve_json": json.dumps([{"step": 30, "cum_mse": 0.2, "cum_mae": 0.3}])}
    callback.on_trial_complete(0, [], _fake_trial("a", final))
    assert pq.read_table(tmp_path / "trials.parquet").to_pandas()["git_commit"].tolist() == ["commit-at-start"]
    restored = pickle.loads(pickle.dumps(callback))  # a resumed driver runs the code of its own start
    assert restored.provenance["git_commit"] == "commit-later"


def test_one_line_error() -> None:
    assert one_line_error(None) == "trial failed"
    text = "Failure # 1 (occurred at x)\nray.exceptions.ActorDiedError: The actor died\n\tpid: 3\n"
    assert one_line_error(text) == "ray.exceptions.ActorDiedError: The actor died"


def test_seed_repeater_averages_every_objective() -> None:
    from ray.tune.search import Searcher

    class Fake(Searcher):
        def __init__(self) -> None:
            super().__init__(metric=["mse", "trial_seconds"], mode=["min", "min"])
            self.told: list[dict] = []

        def suggest(self, trial_id: str) -> dict:
            return {"lr": 0.01}

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            self.told.append(result or {})

    fake = Fake()
    repeater = SeedRepeater(fake, repeat=2)
    assert repeater.suggest("a") == {"lr": 0.01, "__trial_index__": 0}
    assert repeater.suggest("b") == {"lr": 0.01, "__trial_index__": 1}
    repeater.on_trial_complete("a", {"mse": 1.0, "trial_seconds": 4.0})
    assert fake.told == []
    repeater.on_trial_complete("b", {"mse": 3.0, "trial_seconds": 6.0})
    assert fake.told == [{"mse": 2.0, "trial_seconds": 5.0}]


# ------------------------------------------------------------------ Ray (integration)
def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.integration
def test_acceptance_ultra_loo(tmp_path: Path) -> None:
    cmd = [PY, "-m", "harness.ablate", "--space", "ultra", "--design", "loo", "--seeds", "1", "--max-steps", "200",
           "--epochs", "1", "--wandb", "off", "--results", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    folders = [p for p in tmp_path.iterdir() if p.name != "ray"]
    assert len(folders) == 1 and folders[0].name.startswith("ultra-loo-")
    folder = folders[0]
    table = pq.read_table(folder / "trials.parquet")
    assert table.schema.equals(TRIAL_SCHEMA)
    trials = table.to_pandas()
    assert len(trials) == 7 and trials["trial_id"].is_unique and set(trials["status"]) == {"TERMINATED"}
    assert set(trials["variant"]) == {"ultra"} | {f"ultra -{n}" for n, i in INNOVATIONS.items() if i.tier == "ultra"}
    for column in ("mse", "mae", "rmse", "mape", "smape", "rel_mse_persistence", "trial_seconds", "peak_rss_mb"):
        assert trials[column].map(math.isfinite).all(), column
    assert (trials["steps"] == 200).all() and (trials["knob_epochs"] == 1).all() and trials["error"].isna().all()
    full = trials.set_index("variant").loc["ultra"]
    assert full["innov_memory_heads"] and full["knob_memory_heads"] == 4
    off = trials.set_index("variant").loc["ultra -memory_heads"]
    assert not off["innov_memory_heads"] and off["knob_memory_heads"] == 1 and off["innov_gated_controller"]
    curves = pq.read_table(folder / "curves.parquet").to_pandas()
    assert set(curves["trial_id"]) == set(trials["trial_id"])
    last = curves.sort_values("step").groupby("trial_id").last()
    assert (last["step"] == 200).all()
    merged = last.join(trials.set_index("trial_id")["mse"])
    assert (merged["cum_mse"] - merged["mse"]).abs().max() < 1e-9
    settings = json.loads((folder / "experiment.json").read_text())
    assert settings["reference_variant"] == "ultra" and settings["baseline_variant"] is None
    assert len(settings["planned_trials"]) == 7
    assert settings["innovations"] == [n for n, i in INNOVATIONS.items() if i.tier == "ultra"]
    assert "ΔMSE vs ogd" in done.stdout and done.stdout.count("n/a") >= 7 and "[7/7]" in done.stdout
    assert str(folder / "trials.parquet") in done.stdout


@pytest.mark.integration
def test_a_crashed_worker_resumes_from_its_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    marker, events = tmp_path / "crashed", tmp_path / "events.jsonl"
    monkeypatch.setenv("FSNET_TEST_CRASH_ONCE", f"{marker}:20")
    monkeypatch.setenv("FSNET_TRIAL_EVENTS", str(events))
    monkeypatch.setenv("FSNET_DATA_DIR", _env()["FSNET_DATA_DIR"])
    status, out, err = _main(["--space", "advanced", "--limit", "2", *TINY, "--results", str(tmp_path / "r"),
                              "--experiment", "crash"], capsys)
    assert status == 0, err[-2000:]
    crashed_pid, crashed_step = map(int, marker.read_text().split())
    assert crashed_step >= 20
    log = _events(events)
    crashed = next(e["trial_id"] for e in log if e["event"] == "start" and e["pid"] == crashed_pid)
    starts = [e for e in log if e["event"] == "start" and e["trial_id"] == crashed]
    assert [(e["step"], e["attempt"]) for e in starts] == [(0, 1), (crashed_step, 2)]
    trials = pq.read_table(tmp_path / "r" / "crash" / "trials.parquet").to_pandas()
    assert len(trials) == 2 and trials["trial_id"].is_unique and set(trials["status"]) == {"TERMINATED"}
    assert (trials["steps"] == 60).all() and trials["mse"].map(math.isfinite).all()
    assert "[retry]" in out


@pytest.mark.integration
def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    env = _env(FSNET_TRIAL_EVENTS=str(events))
    cmd = [PY, "-m", "harness.ablate", "--space", "advanced", "--limit", "4", *TINY, "--results", str(tmp_path / "r"),
           "--experiment", "killed"]
    trials_file = tmp_path / "r" / "killed" / "trials.parquet"
    driver = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not trials_file.exists() and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray processes of its session
        driver.wait(timeout=60)
    assert driver.returncode == -signal.SIGKILL, "the driver ended before it could be killed"
    before = pq.read_table(trials_file).to_pandas()
    assert 1 <= len(before) < 4
    started_before = {e["trial_id"] for e in _events(events) if e["event"] == "start"}

    resumed = subprocess.run([PY, "-m", "harness.ablate", "--resume", "--experiment", "killed", "--results",
                              str(tmp_path / "r")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    after = pq.read_table(trials_file).to_pandas()
    assert resumed.returncode == 0, (resumed.stderr[-2000:], after[["variant", "status", "error"]].to_dict("records"))
    assert len(after) == 4 and after["trial_id"].is_unique and after["variant"].is_unique
    assert set(after["status"]) == {"TERMINATED"}
    kept = after.set_index("trial_id").loc[before["trial_id"]]
    assert list(kept["started_at"]) == list(before["started_at"]) and list(kept["ended_at"]) == list(
        before["ended_at"])
    log = _events(events)
    for trial_id in before["trial_id"]:  # finished before the kill: started once, never again
        assert sum(e["event"] == "start" and e["trial_id"] == trial_id for e in log) == 1
    unfinished = started_before - set(before["trial_id"])
    assert all(sum(e["event"] == "start" and e["trial_id"] == t for e in log) >= 2 for t in unfinished)


def test_sweep_staging_removes_folders_of_dead_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.tune import trainable

    monkeypatch.setattr(trainable, "STAGING", tmp_path)
    gone = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / f"{gone}-abc").mkdir()
    (tmp_path / f"{os.getpid()}-def").mkdir()
    trainable.sweep_staging()
    assert [p.name for p in tmp_path.iterdir()] == [f"{os.getpid()}-def"]


def test_variants_restricts_a_grid_to_the_named_configurations(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _main(["--space", "baselines", "--variants", "fsnet,ogd", "--seeds", "2", "--dry-run",
                              "--results", str(tmp_path)], capsys)
    assert status == 0, err
    planned = [line.split()[1] for line in out.splitlines()[1:]]
    assert planned == ["ogd", "fsnet", "ogd", "fsnet"]
    for argv, message in ((["--variants", "fsnett"], "--variants: unknown variant 'fsnett'"),
                          (["--variants", "ultra", "--until-resolved", "--space", "ultra"], "--until-resolved"),
                          (["--variants", "x", "--design", "optuna", "--space", "hparams"], "grid designs")):
        space = [] if "--space" in argv else ["--space", "baselines"]
        status, out, err = _main([*space, *argv, "--dry-run", "--results", str(tmp_path)], capsys)
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())
