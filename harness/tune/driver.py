"""Run a validated experiment on Ray Tune and report: the part of `harness.ablate` after validation."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from harness.analysis.tables import ranking_from_trials
from harness.experiment.console import format_ranking
from harness.experiment.results import ResultsStore
from harness.online.runtime import cuda_devices
from harness.tune.results_callback import ResultsCallback
from harness.tune.tuner import build_tuner, init_ray, make_trainable, ray_experiment_path, restore_tuner


def _resume_hint(settings: dict[str, Any], folder: Path) -> str:
    """The command that continues this experiment."""
    return (f"python -m harness.ablate --resume --experiment {shlex.quote(settings['name'])} "
            f"--results {shlex.quote(str(folder.parent))}")


def _fit(settings: dict[str, Any], folder: Path, resume: bool, address: str | None,
         tuner_settings: dict[str, Any] | None = None) -> None:
    """Start Ray, run (or restore and continue) the Tuner, shut Ray down.

    tuner_settings: what the Tuner is built or restored from, when not `settings` (a round of --until-resolved:
    its own Ray name and trials); the callbacks always write the experiment's rows.
    """
    import ray

    store = ResultsStore(folder)
    experiment = {k: settings[k] for k in ("name", "space", "design", "unit", "plain")}
    callbacks = [ResultsCallback(folder, experiment, settings["n_trials"])]
    # W&B: `--wandb offline|online` adds a WandbLoggerCallback (one run per trial, under <folder>/wandb);
    # `--wandb off` adds nothing.
    from harness.tune.wandb_trials import make_trial_callback

    wandb_callback = make_trial_callback(settings, folder)
    if wandb_callback is not None:
        callbacks.append(wandb_callback)
    resources = settings["resources"]
    init_ray(address, cuda_devices())
    try:
        trainable = make_trainable(store.finished(), resources["cpus_per_trial"], resources["gpus_per_trial"])
        tuned = tuner_settings or settings
        tuner = restore_tuner(tuned, trainable) if resume else None
        if tuner is None:
            tuner = build_tuner(tuned, trainable, callbacks)
        tuner.fit()
    finally:
        ray.shutdown()


def run_experiment(settings: dict[str, Any], folder: Path, resume: bool, address: str | None) -> int:
    """Run the experiment, print the ranking table and the written paths; returns the exit status.

    0: every trial TERMINATED; 1: some trial ended in ERROR; 130: interrupted (resume to finish).
    An --until-resolved experiment (settings `sequential`) runs in rounds: harness.tune.rounds.
    """
    if settings.get("sequential"):
        from harness.tune.rounds import run_until_resolved

        return run_until_resolved(settings, folder, resume, address)
    total = settings["n_trials"]
    print(f"experiment {settings['name']}: {total} trials ({settings['space']} / {settings['design']}"
          f" / {settings['unit']}); results in {folder}", flush=True)
    try:
        _fit(settings, folder, resume, address)
    except KeyboardInterrupt:
        print(f"interrupted; resume with: {_resume_hint(settings, folder)}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        print(f"error: Ray Tune failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return 1
    store = ResultsStore(folder)
    frame = store.frame()
    print()
    print(format_ranking(ranking_from_trials(frame)))
    print()
    print(f"written: {folder / 'experiment.json'}")
    print(f"         {store.trials_path}")
    print(f"         {store.curves_path}")
    print(f"         {ray_experiment_path(settings['storage'], settings['name'])} (Ray state, checkpoints)")
    finished = int((frame["status"] == "TERMINATED").sum()) if len(frame) else 0
    failed = int((frame["status"] == "ERROR").sum()) if len(frame) else 0
    if finished and finished + failed >= total:  # the analysis, then (unless --wandb off) its W&B run
        from harness.wandb_logging import resolve_project
        from harness.wandb_logging.analysis_run import finish_experiment

        print()
        finish_experiment(folder, settings.get("wandb") or "off", resolve_project(settings.get("wandb_project")))
    if finished + failed < total:
        print(f"incomplete: {finished + failed} of {total} trials recorded; resume with: "
              f"{_resume_hint(settings, folder)}", file=sys.stderr)
        return 130
    if failed:
        print(f"{failed} of {total} trials ended in ERROR (see the error column); --resume retries them",
              file=sys.stderr)
        return 1
    return 0
