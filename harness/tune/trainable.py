"""The Ray Tune trainable: a thin function-of-config wrapper around TrialRunner.

On start it restores the runner from `tune.get_checkpoint()` when one exists, runs warm-up
(then checkpoints), and loops `run_online(report_every)` with a `tune.report` of the running
metrics, attaching a checkpoint (runner.save into a temp dir, plus meta.json) every
`checkpoint_every` steps. The last report carries the flattened final result and the curve.
The test and debugging hooks (events log, crash once, report delay) are in harness.tune.hooks.

A trial of a group (several seeds, harness.experiment.groups) runs a GroupRunner the same way:
checkpoints hold the whole group; its running reports carry the members' mean cumulative MSE
(what a scheduler would read), and its last report lists every member's final result in
`members_json`, from which the results callback writes one row (and curve) per member.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune

from harness.experiment.spec import TrialSpec
from harness.online.group_runner import GroupRunner
from harness.online.result import flatten_result
from harness.online.runner import TrialRunner
from harness.online.runtime import pick_device, set_threads
from harness.online.trial_data import cached_data
from harness.tune.hooks import log_event, maybe_crash, maybe_delay, utc_now

RUNNER_FILE = "runner.pt"
# Checkpoints are staged in <tmp>/fsnet-harness-ckpt/<pid>-*: a worker killed inside tune.report
# leaves its folder behind, and the next trial on the node removes those of dead processes.
STAGING = Path(tempfile.gettempdir()) / "fsnet-harness-ckpt"
META_FILE = "meta.json"


def trial_device() -> str:
    """`cuda` when Ray assigned this trial a GPU (and CUDA works), else `cpu` (runtime.pick_device).

    Ray sets CUDA_VISIBLE_DEVICES to the trial's GPU(s) (a fractional --gpus-per-trial shares one),
    so `cuda` (cuda:0) inside the trial is the GPU Ray assigned. A trial given no GPU never touches
    CUDA, even on a GPU node.
    """
    return pick_device("auto" if ray.get_gpu_ids() else "cpu")


def placement() -> dict[str, Any]:
    """Where this trial runs: Ray node id, host name and the GPU ids Ray assigned (for the events log)."""
    return {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}


def _alive(pid: int) -> bool:
    """Whether a process with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_staging() -> None:
    """Remove checkpoint staging folders left by dead worker processes."""
    for folder in STAGING.glob("*-*"):
        pid = folder.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _restore(runner: TrialRunner | GroupRunner, meta: dict[str, Any]) -> bool:
    """Load the runner and meta.json from tune.get_checkpoint() when there is one.

    Returns False when a checkpoint exists but cannot be read (e.g. a node died while Ray was
    copying it): the caller then starts the trial afresh with a new runner rather than fail it.
    """
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return True
    try:
        with checkpoint.as_directory() as folder:
            saved_meta = json.loads((Path(folder) / META_FILE).read_text())
            runner.load(Path(folder) / RUNNER_FILE)
    except Exception as exc:  # noqa: BLE001 - an unreadable checkpoint must not kill the trial
        log_event("unreadable_checkpoint", error=f"{type(exc).__name__}: {exc}"[:300])
        return False
    meta.update(saved_meta)
    meta["attempt"] += 1
    return True


class _Session:
    """Reporting state of one attempt of a trial: timings, meta and checkpoint cadence."""

    def __init__(self, runner: TrialRunner | GroupRunner, meta: dict[str, Any], run: Mapping[str, Any]) -> None:
        self.runner, self.meta, self.run = runner, meta, run
        self.attempt_started = time.perf_counter()
        self.start_step = runner.step
        self.last_checkpoint_step = runner.step

    def seconds(self) -> float:
        """Seconds spent on this trial over all attempts so far."""
        return self.meta["seconds"] + time.perf_counter() - self.attempt_started

    def running(self) -> dict[str, Any]:
        """The running metrics reported on every step chunk (ASHA and searchers read these)."""
        metrics = running_summary(self.runner.running_metrics())
        return {**metrics, "mse": metrics["cum_mse"], "trial_seconds": self.seconds(), "final": False,
                "start_step": self.start_step, "attempt": self.meta["attempt"], "started_at": self.meta["started_at"]}

    def report(self, metrics: dict[str, Any], checkpoint: bool) -> None:
        """tune.report, with a checkpoint of the runner when asked."""
        if not checkpoint:
            tune.report(metrics)
            return
        STAGING.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{os.getpid()}-", dir=STAGING) as folder:
            self.runner.save(Path(folder) / RUNNER_FILE)
            meta = {**self.meta, "seconds": self.seconds()}
            (Path(folder) / META_FILE).write_text(json.dumps(meta))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        self.last_checkpoint_step = self.runner.step

    def due(self) -> bool:
        """True when checkpoint_every steps have passed since the last checkpoint."""
        return self.runner.step - self.last_checkpoint_step >= self.run["checkpoint_every"]

    def drive(self, trial_id: str) -> None:
        """Warm the runner up when it is not yet (then checkpoint), and step it online to the end,
        reporting every report_every steps and checkpointing every checkpoint_every steps; the
        final report is the caller's."""
        runner = self.runner
        if not runner.warmed_up:
            runner.run_warmup()
            self.report(self.running(), checkpoint=True)
        while not runner.finished:
            runner.run_online(self.run["report_every"])
            if runner.finished:
                break
            checkpoint = self.due()
            self.report(self.running(), checkpoint=checkpoint)
            if checkpoint:
                log_event("checkpoint", trial_id=trial_id, step=runner.step, attempt=self.meta["attempt"])
                maybe_crash(runner.step)
            maybe_delay()


def running_summary(metrics: dict[str, float] | list[dict[str, float]]) -> dict[str, float]:
    """A solo runner's running metrics as they are; a group's as step plus the mean over its members
    whose running MSE is finite (NaN when none is) of cum_mse and cum_mae."""
    if isinstance(metrics, dict):
        return metrics
    finite = [m for m in metrics if math.isfinite(m["cum_mse"])]
    mean = (lambda key: sum(m[key] for m in finite) / len(finite)) if finite else (lambda key: math.nan)
    return {"step": metrics[0]["step"], "cum_mse": mean("cum_mse"), "cum_mae": mean("cum_mae")}


def run_trial(config: dict[str, Any], done: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Run (or resume) the trial of a Ray Tune config and report to Tune (see the module docstring).

    `done` maps trial ids and `variant|seed` keys of trials an earlier driver already recorded as
    finished to their final metrics: such a trial reports them again at once and runs nothing.
    """
    run = config["run"]
    spec = TrialSpec.from_tune_config(config)
    if spec.is_group:
        run_group_trial(config, spec, done or {})
        return
    trial_id = tune.get_context().get_trial_id()
    recorded = (done or {}).get(trial_id) or (done or {}).get(spec.key)
    if recorded is not None:
        log_event("skip", trial_id=trial_id, variant=spec.variant, seed=spec.seed)
        tune.report({**recorded, "final": True, "skipped": True})
        return
    set_threads(int(run["cpus_per_trial"]))
    sweep_staging()
    knobs = spec.knobs()
    data = cached_data(knobs, run.get("data_path"))
    device = trial_device()
    runner = TrialRunner(knobs, data, device=device, max_steps=run.get("max_steps"))
    meta: dict[str, Any] = {"started_at": utc_now(), "seconds": 0.0, "attempt": 1}
    if not _restore(runner, meta):
        runner = TrialRunner(knobs, data, device=device, max_steps=run.get("max_steps"))
    session = _Session(runner, meta, run)
    log_event("start", trial_id=trial_id, variant=spec.variant, seed=spec.seed, step=runner.step,
              attempt=meta["attempt"], device=device, **placement())
    session.drive(trial_id)
    final = {**runner.running_metrics(), **flatten_result(runner.result()), "trial_seconds": session.seconds(),
             "started_at": meta["started_at"], "ended_at": utc_now(), "node_ip": ray.util.get_node_ip_address(),
             "curve_json": json.dumps(runner.curve(run["report_every"])), "final": True,
             "start_step": session.start_step, "attempt": meta["attempt"],
             "gpu_ids": ",".join(placement()["gpu_ids"])}  # in Ray's result.json; trials.parquet has `device`
    log_event("end", trial_id=trial_id, variant=spec.variant, seed=spec.seed, step=runner.step,
              attempt=meta["attempt"], device=device, **placement())
    session.report(final, checkpoint=True)


def _group_runner(spec: TrialSpec, run: Mapping[str, Any], device: str) -> GroupRunner:
    """A fresh GroupRunner of the group `spec` (its configuration x its seeds)."""
    knobs = spec.knobs()
    return GroupRunner(knobs, cached_data(knobs, run.get("data_path")), list(spec.seeds), device=device,
                       max_steps=run.get("max_steps"))


def _member_finals(runner: GroupRunner, every: int) -> list[dict[str, Any]]:
    """Each member's final result: flattened scalars, curve (JSON), member index and error (None when fine)."""
    finals = []
    for member, result in enumerate(runner.results()):
        finals.append({**flatten_result(result), "seed": result["seed"], "member_index": member,
                       "group_size": runner.members, "error": result["error"],
                       "curve_json": json.dumps(runner.curve(member, every))})
    return finals


def run_group_trial(config: dict[str, Any], spec: TrialSpec, done: Mapping[str, Mapping[str, Any]]) -> None:
    """Run (or resume) the group of `spec` and report to Tune (see the module docstring).

    A group whose every member an earlier driver recorded as finished reports at once and runs nothing.
    """
    run = config["run"]
    trial_id = tune.get_context().get_trial_id()
    recorded = [done.get(spec.member(i).key) for i in range(len(spec.seeds))]
    if all(r is not None for r in recorded):
        log_event("skip", trial_id=trial_id, variant=spec.variant, seeds=list(spec.seeds))
        tune.report({**running_summary([dict(r) for r in recorded if r is not None]), "final": True,
                     "skipped": True})
        return
    set_threads(int(run["cpus_per_trial"]))
    sweep_staging()
    device = trial_device()
    runner = _group_runner(spec, run, device)
    meta: dict[str, Any] = {"started_at": utc_now(), "seconds": 0.0, "attempt": 1}
    if not _restore(runner, meta):
        runner = _group_runner(spec, run, device)
    session = _Session(runner, meta, run)
    log_event("start", trial_id=trial_id, variant=spec.variant, seeds=list(spec.seeds), step=runner.step,
              attempt=meta["attempt"], device=device, **placement())
    session.drive(trial_id)
    finals = _member_finals(runner, run["report_every"])
    final = {**session.running(), "trial_seconds": session.seconds(), "started_at": meta["started_at"],
             "ended_at": utc_now(), "node_ip": ray.util.get_node_ip_address(), "final": True,
             "start_step": session.start_step, "attempt": meta["attempt"],
             "gpu_ids": ",".join(placement()["gpu_ids"]), "members_json": json.dumps(finals)}
    finite = [f["mse"] for f in finals if f["error"] is None and f.get("mse") is not None]
    final["mse"] = sum(finite) / len(finite) if finite else math.nan
    log_event("end", trial_id=trial_id, variant=spec.variant, seeds=list(spec.seeds), step=runner.step,
              attempt=meta["attempt"], device=device, **placement())
    session.report(final, checkpoint=True)
