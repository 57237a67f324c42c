"""Weights & Biases support: modes, the trial-run callback, offline runs read back, the report, sweeps.

There is no W&B server here: runs are written offline (WANDB_MODE=offline, dirs in tmp_path) and read
back from their .wandb files with harness.wandb_logging.offline. The report is built, never saved.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import yaml

from fsnet_models.knobs import INNOVATIONS, KNOBS, KnobError
from harness import ablate
from harness.experiment.designs import design_variants
from harness.wandb_logging import (
    DEFAULT_PROJECT,
    default_mode,
    has_credentials,
    history_metrics,
    resolve_project,
    summary_metrics,
    sweeps,
)
from harness.wandb_logging.offline import iter_records, offline_runs
from search_spaces.spaces import get_space

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
TINY = ["--seeds", "1", "--max-steps", "30", "--epochs", "0"]


def _env(**extra: str) -> dict[str, str]:
    """A subprocess environment: offline W&B, no credentials, the shared data."""
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_SWEEP_ID", "WANDB_DIR")}
    env.setdefault("FSNET_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", **extra)
    return env


# ------------------------------------------------------------------ modes and metrics
def test_default_mode_is_offline_without_credentials_and_online_with_them(tmp_path: Path) -> None:
    rc = tmp_path / "netrc"
    assert not has_credentials({"NETRC": str(rc)}) and default_mode({"NETRC": str(rc)}) == "offline"
    rc.write_text("machine example.com login user password secret\n")
    assert default_mode({"NETRC": str(rc)}) == "offline"
    rc.write_text("machine api.wandb.ai login user password 0123456789abcdef\n")
    assert default_mode({"NETRC": str(rc)}) == "online"
    assert default_mode({"NETRC": str(rc), "WANDB_BASE_URL": "https://wandb.example.org"}) == "offline"
    assert default_mode({"NETRC": str(tmp_path / "none"), "WANDB_API_KEY": "x" * 40}) == "online"
    assert default_mode({"NETRC": str(rc), "WANDB_MODE": "offline"}) == "offline"
    assert default_mode({"NETRC": str(rc), "WANDB_MODE": "disabled"}) == "off"
    assert ablate.build_parser().parse_args(["--space", "ultra"]).wandb is None  # resolved by main


def test_project_flag_then_env_then_default() -> None:
    assert resolve_project("mine", {"WANDB_PROJECT": "env"}) == "mine"
    assert resolve_project(None, {"WANDB_PROJECT": "env"}) == "env"
    assert resolve_project(None, {}) == DEFAULT_PROJECT == "fsnet-harness"


def test_history_and_summary_metrics_keep_finite_numbers() -> None:
    running = {"step": 500, "cum_mse": 0.4, "cum_mae": float("nan"), "mse": 0.4, "final": False}
    assert history_metrics(running) == {"step": 500, "cum_mse": 0.4}
    nested = {"mse": 0.3, "mae": 0.4, "rmse": 0.5, "steps": 10, "device": "cpu", "online_seconds": 2.0,
              "diagnostics": {"memory_triggers": 3, "tau_mean": float("nan"), "per_layer": [1, 2]}}
    assert summary_metrics(nested) == {"mse": 0.3, "mae": 0.4, "rmse": 0.5, "steps": 10, "online_seconds": 2.0,
                                       "memory_triggers": 3}
    flat = {"mse": 0.3, "trial_seconds": 5.0, "tau_mean": 0.7, "final": True}
    assert summary_metrics(flat, ["tau_mean", "tau_min"]) == {"mse": 0.3, "trial_seconds": 5.0, "tau_mean": 0.7}


# ------------------------------------------------------------------ the Tune callback (no Ray run)
class _Queue:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def put(self, item: Any) -> None:
        self.items.append(item)


def _fake_callback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, Any]]:
    from harness.tune.wandb_trials import TrialRunsCallback, make_trial_callback

    assert make_trial_callback({"wandb": "off", "name": "x"}, tmp_path) is None
    assert not (tmp_path / "wandb").exists()
    cb = make_trial_callback({"wandb": "offline", "name": "exp", "space": "advanced", "design": "loo",
                              "unit": "innovation", "wandb_project": "proj"}, tmp_path)
    assert isinstance(cb, TrialRunsCallback) and (tmp_path / "wandb").is_dir()
    clone = pickle.loads(pickle.dumps(cb))  # Tune pickles its callbacks into the experiment state (tuner.pkl)
    assert clone.mode == "offline" and clone.kwargs == cb.kwargs and clone.group == "exp"
    started: dict[str, Any] = {}

    def start(trial: Any, exclude: list[str], **init: Any) -> None:
        started[trial.trial_id] = init
        cb._trial_logging_actors[trial] = object()
        cb._trial_queues[trial] = _Queue()

    monkeypatch.setattr(cb, "_start_logging_actor", start)
    monkeypatch.setattr(cb, "_cleanup_logging_actors", lambda *a, **k: None)
    return cb, started


class _Trial(SimpleNamespace):
    """A stand-in for a Tune Trial: an id and a config, hashable by identity (Ray keys its dicts by trial)."""

    __hash__ = object.__hash__


def _trial(trial_id: str, variant: str, overrides: dict[str, Any]) -> _Trial:
    config = {"run": {"max_steps": 30}, "trial": {"plan_id": 1, "variant": variant, "seed": 0,
                                                  "preset": "advanced", "overrides": {**overrides, "seed": 0}}}
    return _Trial(trial_id=trial_id, config=config)


def test_trial_callback_logs_flat_config_history_and_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cb, started = _fake_callback(tmp_path, monkeypatch)
    cb.setup()  # offline: no API key needed
    trial = _trial("t_00001", "advanced -adaptive_tau", {"adaptive_tau": False})
    cb.log_trial_start(trial)
    assert started == {}  # the run starts with the first fresh report
    cb.log_trial_result(1, trial, {"step": 0, "cum_mse": 0.0, "cum_mae": 0.0, "mse": 0.0, "final": False,
                                   "trial_seconds": 1.0, "training_iteration": 1, "config": {"x": 1}})
    init = started["t_00001"]
    assert init["id"] == "t_00001" and init["group"] == "exp" and init["project"] == "proj"
    assert init["mode"] == "offline" and init["job_type"] == "trial" and init["dir"] == str(tmp_path.absolute())
    config = init["config"]
    assert config["preset"] == "advanced" and config["variant"] == "advanced -adaptive_tau" and config["seed"] == 0
    assert config["adaptive_tau"] is False and config["chunk_by"] == "out" and config["experiment"] == "exp"
    assert set(KNOBS) - {"replay_size", "replay_batch", "replay_weight"} <= set(config)
    assert not any("key" in k.lower() for k in config)
    final = {"step": 30, "cum_mse": 0.5, "cum_mae": 0.6, "mse": 0.5, "mae": 0.6, "rmse": 0.7, "mape": 0.1,
             "smape": 0.2, "rel_mse_persistence": 1.5, "trial_seconds": 9.0, "memory_triggers": 2,
             "tau_mean": None, "device": "cpu", "curve_json": "[]", "final": True}
    cb.log_trial_result(2, trial, final)
    queue = cb._trial_queues[trial].items
    assert [item[1] for item in queue] == [
        {"step": 0, "cum_mse": 0.0, "cum_mae": 0.0},
        {"step": 30, "cum_mse": 0.5, "cum_mae": 0.6, "mse": 0.5, "mae": 0.6, "rmse": 0.7, "mape": 0.1, "smape": 0.2,
         "rel_mse_persistence": 1.5, "trial_seconds": 9.0, "memory_triggers": 2}]
    cb.log_trial_end(trial)
    assert queue[-1][0].name == "END"


def test_trial_callback_skips_replayed_trials_and_closes_early_stopped_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cb, started = _fake_callback(tmp_path, monkeypatch)
    replayed = _trial("t_00002", "advanced", {})
    cb.log_trial_result(1, replayed, {"mse": 0.4, "final": True, "skipped": True})
    cb.log_trial_end(replayed)
    assert started == {} and replayed not in cb._trial_queues
    stopped = _trial("t_00003", "advanced", {})
    cb.log_trial_result(1, stopped, {"step": 20, "cum_mse": 0.9, "cum_mae": 0.8, "final": False})
    cb.log_trial_end(stopped)
    payloads = [item[1] for item in cb._trial_queues[stopped].items if item[0].name == "RESULT"]
    assert payloads[-1] == {"mse": 0.9, "mae": 0.8, "stopped_early": 1}


# ------------------------------------------------------------------ offline run files
def test_offline_reader_reassembles_records_split_across_blocks(tmp_path: Path) -> None:
    from wandb.proto import wandb_internal_pb2 as pb

    big = pb.Record()
    big.history.item.add(key="blob", value_json=json.dumps("x" * 40000))
    payload = big.SerializeToString()
    first = 32 * 1024 - 7 - 7
    data = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
    data += struct.pack("<IHB", 0, first, 2) + payload[:first]
    data += struct.pack("<IHB", 0, len(payload) - first, 4) + payload[first:]
    path = tmp_path / "run-x.wandb"
    path.write_bytes(data)
    assert list(iter_records(path)) == [payload]


# ------------------------------------------------------------------ the report (built, never saved)
def test_report_has_parallel_coordinates_effects_and_figures() -> None:
    import wandb_workspaces.reports.v2 as wr

    from harness.wandb_logging.workspace_report import build_report, varying_knobs

    trials = pd.DataFrame({"knob_adaptive_tau": [True, False, True], "knob_top_k": [3, 3, 3],
                           "knob_seed": [0, 1, 2], "knob_chunk_by": ["out", "out", "in"]})
    knobs = varying_knobs(trials)
    assert knobs == ["adaptive_tau", "chunk_by"]
    effects = pd.DataFrame({"term": ["adaptive_tau", "chunk_by"], "effect": [-0.0123456, 0.002], "ci_low": [None, 1.0]})
    report = build_report("exp-1", "proj", "ent", knobs, effects, ["figures/effects_forest", "figures/cumulative_mse"])
    assert isinstance(report, wr.Report) and report.entity == "ent" and report.project == "proj"
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    panels = [p for g in grids for p in g.panels]
    (pc,) = [p for p in panels if isinstance(p, wr.ParallelCoordinatesPlot)]
    assert [c.metric for c in pc.columns] == [wr.Config("adaptive_tau"), wr.Config("chunk_by"), wr.SummaryMetric("mse")]
    for grid in grids:
        (runset,) = grid.runsets
        assert runset.entity == "ent" and runset.project == "proj"
        assert "Metric(\"Group\") == 'exp-1'" in str(runset.filters) and "JobType" in str(runset.filters)
    tables = [p.table_name for p in panels if isinstance(p, wr.WeavePanelSummaryTable)]
    assert tables == ["effects", "ranking"]
    media = [k for p in panels if isinstance(p, wr.MediaBrowser) for k in p.media_keys]
    assert media == ["figures/effects_forest", "figures/cumulative_mse"]
    (markdown,) = [b for b in report.blocks if isinstance(b, wr.MarkdownBlock)]
    assert "| term | effect | ci_low |" in markdown.text and "| adaptive_tau | -0.01235 |  |" in markdown.text
    assert any(isinstance(p, wr.LinePlot) for p in panels)


# ------------------------------------------------------------------ sweeps
def _emit(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    path = tmp_path / "sweep.yaml"
    assert ablate.main([*argv, "--emit-sweep", str(path)]) == 0, capsys.readouterr().err
    assert "wandb sweep" in capsys.readouterr().out
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("design", ["loo", "oat", "factorial"])
def test_grid_sweep_names_every_planned_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                design: str) -> None:
    config = _emit(tmp_path, capsys, "--space", "ultra", "--design", design, "--seeds", "2", "--max-steps", "30",
                   "--epochs", "0", "--set", "lr=0.002")
    names = [v.name for v in design_variants(get_space("ultra"), design)]
    assert config["method"] == "grid" and config["metric"] == {"name": "mse", "goal": "minimize"}
    params = config["parameters"]
    assert params["variant"] == {"values": names} and params["seed"] == {"values": [0, 1]}
    assert params["lr"] == {"value": 0.002}
    command = config["command"]
    assert command[:4] == ["${env}", "${interpreter}", "-m", "harness.trial"] and command[-1] == "${args}"
    for flag, value in (("--space", "ultra"), ("--design", design), ("--max-steps", "30"), ("--epochs", "0"),
                        ("--preset", "ultra" if design == "loo" else "advanced")):
        assert command[command.index(flag) + 1] == value
    assert "--json" in command and "--wandb-agent" in command and config["program"] == "harness/trial.py"


def test_optuna_sweep_is_bayes_with_distributions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wandb.sdk.sweeps.scheduler.optuna import sweep_parameter_to_distribution

    config = _emit(tmp_path, capsys, "--space", "hparams", "--design", "optuna", "--seeds", "3")
    assert config["method"] == "bayes" and config["metric"] == {"name": "mse", "goal": "minimize"}
    params = config["parameters"]
    for c in get_space("hparams").continuous:
        low, high = c.bounds()
        spec = params[c.knob]
        kind = "int_uniform" if c.is_int else "log_uniform_values" if c.log else "uniform"
        assert spec == {"distribution": kind, "min": type(spec["min"])(low), "max": type(spec["max"])(high)}
        sweep_parameter_to_distribution(spec)  # wandb's own reading of a sweep parameter
    assert params["lr"]["distribution"] == "log_uniform_values" and params["seed"] == {"values": [0, 1, 2]}


def test_emit_sweep_refuses_bad_input_and_starts_no_ray(tmp_path: Path) -> None:
    code = ("import sys; from harness import ablate; s = ablate.main(sys.argv[1:]); "
            "print('ray' in sys.modules); sys.exit(s)")
    done = subprocess.run([PY, "-c", code, "--space", "advanced", "--emit-sweep", str(tmp_path / "s.yaml")],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "False", done.stderr
    bad = subprocess.run([PY, "-m", "harness.ablate", "--space", "ultra", "--set", "memory_heads=2",
                          "--emit-sweep", str(tmp_path / "bad.yaml")], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and not (tmp_path / "bad.yaml").exists()


def test_agent_args_and_variants_map_back_to_knobs() -> None:
    argv = ["--json", "--set", "lr=0.1", "--variant=ultra -memory_heads", "--seed=1", "weight_decay=0.02",
            "--max-steps", "5"]
    rest, params = sweeps.split_agent_args(argv)
    assert rest == ["--json", "--set", "lr=0.1", "--max-steps", "5"]
    assert params == {"variant": "ultra -memory_heads", "seed": "1", "weight_decay": "0.02"}
    preset, variant, seed, config = sweeps.agent_trial("ultra", "loo", "innovation", "ultra", 0, params)
    assert (preset, variant, seed) == ("ultra", "ultra -memory_heads", 1)
    assert config["memory_heads"] == 1 and config["gated_controller"] is True and config["weight_decay"] == 0.02
    assert config["epochs"] == 0 and config["seed"] == 1
    topk = INNOVATIONS["topk_temperature"]
    _, _, _, config = sweeps.agent_trial("advanced", "oat", "innovation", "fsnet", None,
                                         {"variant": "fsnet +topk_temperature", "seed": 0})
    assert {k: config[k] for k in topk.knobs} == topk.on_values() and config["preset"] == "fsnet"
    _, _, _, config = sweeps.agent_trial("baselines", "presets", "innovation", "ogd", None, {"variant": "er"})
    assert config["preset"] == "er"
    preset, variant, _, config = sweeps.agent_trial("hparams", "optuna", "innovation", "ultra", None,
                                                    {"lr": 0.003, "t_min": 0.45, "t_max": 0.35,
                                                     "memory_slots": "37.0", "seed": 2})
    assert preset == "ultra" and variant.startswith("ultra sample-") and config["t_max"] == config["t_min"] == 0.45
    assert config["memory_slots"] == 37 and config["lr"] == 0.003 and config["seed"] == 2
    with pytest.raises(KnobError, match="unknown variant"):
        sweeps.agent_trial("ultra", "loo", "innovation", "ultra", None, {"variant": "nope"})
    with pytest.raises(KnobError, match="needs the 'variant' parameter"):
        sweeps.agent_trial("ultra", "loo", "innovation", "ultra", None, {"seed": 0})


@pytest.mark.integration
def test_trial_as_a_sweep_agent_runs_it_logs_and_prints_json(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args
    from wandb.sdk.lib import config_util

    config = _emit(tmp_path, capsys, "--space", "advanced", "--design", "loo", "--seeds", "2", "--max-steps", "10",
                   "--epochs", "0")
    variant = config["parameters"]["variant"]["values"][2]
    # what `wandb agent` does: the run's parameters in WANDB_SWEEP_PARAM_PATH and as ${args} (--name=value)
    params = {"variant": {"value": variant}, "seed": {"value": config["parameters"]["seed"]["values"][1]}}
    config_util.save_config_file_from_dict(str(tmp_path / "params.yaml"), params)
    args = create_sweep_command_args({"args": params})["args"]
    command = [PY if c == "${interpreter}" else c for c in config["command"] if c != "${env}"]
    command = [part for c in command for part in (args if c == "${args}" else [c])]
    env = _env(WANDB_DIR=str(tmp_path), WANDB_SWEEP_ID="sweep01", WANDB_RUN_ID="agentrun1",
               WANDB_SWEEP_PARAM_PATH=str(tmp_path / "params.yaml"))
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["steps"] == 10 and result["seed"] == 1 and result["preset"] == "advanced"
    assert result["knobs"]["adaptive_tau"] is False and result["knobs"]["chunk_by"] == "out"  # "advanced -adaptive_tau"
    (run,) = offline_runs(tmp_path / "wandb")
    assert run.run_id == "agentrun1" and run.job_type == "trial" and run.exited
    assert run.config["variant"] == variant and run.config["seed"] == 1 and run.config["adaptive_tau"] is False
    assert run.summary["mse"] == pytest.approx(result["mse"]) and run.summary["steps"] == 10
    assert run.history and run.history[-1]["step"] == 10 and "cum_mse" in run.history[-1]


# ------------------------------------------------------------------ ablate with W&B (Ray)
def _ablate(tmp_path: Path, name: str, *flags: str, steps: str = "30", limit: str = "2") -> subprocess.CompletedProcess:
    cmd = [PY, "-m", "harness.ablate", "--space", "advanced", "--design", "loo", "--seeds", "1", "--max-steps", steps,
           "--epochs", "0", "--limit", limit, "--results", str(tmp_path), "--experiment", name, *flags]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)


@pytest.mark.integration
def test_ablate_offline_writes_a_run_per_trial_and_the_analysis_run(tmp_path: Path) -> None:
    done = _ablate(tmp_path, "wb", "--wandb", "offline", "--wandb-project", "proj")
    assert done.returncode == 0, done.stderr[-2000:]
    folder = tmp_path / "wb"
    trials = pd.read_parquet(folder / "trials.parquet").set_index("trial_id")
    assert "analysis: " in done.stdout and str(folder / "analysis" / "report.md") in done.stdout
    assert "it needs --wandb online" in done.stdout and f"wandb sync {folder}/wandb/offline-run-*" in done.stdout
    runs = offline_runs(folder / "wandb")
    assert all(r.path.parent == folder / "wandb" and r.exited for r in runs)
    assert all(r.project == "proj" and r.group == "wb" for r in runs)
    per_trial = {r.run_id: r for r in runs if r.job_type == "trial"}
    assert set(per_trial) == set(trials.index)
    for trial_id, run in per_trial.items():
        row = trials.loc[trial_id]
        assert run.config["variant"] == row["variant"] and run.config["preset"] == "advanced"
        assert run.config["seed"] == 0 and run.config["epochs"] == 0
        assert all(run.config[k] == row[f"knob_{k}"] for k in ("chunk_by", "adaptive_tau", "top_k", "memory_slots"))
        for metric in ("mse", "mae", "rmse", "mape", "smape", "rel_mse_persistence", "trial_seconds"):
            assert run.summary[metric] == pytest.approx(row[metric]), metric
        assert run.history[-1]["step"] == 30 and run.history[-1]["cum_mse"] == pytest.approx(row["mse"])
    (analysis,) = [r for r in runs if r.job_type == "analysis"]
    ranking = json.loads((analysis.path / "files" / analysis.summary["ranking"]["path"]).read_text())
    effects = json.loads((analysis.path / "files" / analysis.summary["effects"]["path"]).read_text())
    assert "variant" in ranking["columns"] and "mse_mean" in ranking["columns"]
    assert sorted(r[ranking["columns"].index("variant")] for r in ranking["data"]) == sorted(trials["variant"])
    assert analysis.summary["effects"]["nrows"] == len(effects["data"]) and effects["columns"]
    images = {k: v for k, v in analysis.summary.items() if k.startswith("figures/")}
    assert "figures/cumulative_mse" in images and all(v["_type"] == "image-file" for v in images.values())
    assert all((analysis.path / "files" / v["path"]).is_file() for v in images.values())
    text = "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file() and p.suffix in
                   (".json", ".yaml", ".txt"))
    assert "WANDB_API_KEY" not in text


@pytest.mark.integration
def test_ablate_wandb_off_writes_no_wandb_folder_and_analyze_can_log_later(tmp_path: Path) -> None:
    done = _ablate(tmp_path, "off", "--wandb", "off", steps="10", limit="1")
    assert done.returncode == 0, done.stderr[-2000:]
    folder = tmp_path / "off"
    assert (folder / "analysis" / "report.md").is_file() and "analysis: " in done.stdout
    assert not list(tmp_path.rglob("wandb")) and "W&B" not in done.stdout
    later = subprocess.run([PY, "-m", "harness.analyze", str(folder), "--bootstrap", "200", "--wandb", "offline"],
                           cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert later.returncode == 0, later.stderr[-2000:]
    (run,) = offline_runs(folder / "wandb")
    assert run.job_type == "analysis" and run.group == "off" and run.project == "fsnet-harness"
    assert {"ranking", "effects"} <= set(run.summary) and "it needs --wandb online" in later.stdout
