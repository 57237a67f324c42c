"""One Tuner.fit() of an experiment: start Ray, build or restore the Tuner with the results (and W&B)
callbacks, run it to its end, shut Ray down. The driver calls it once; --until-resolved once per round."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.experiment.results import ResultsStore
from harness.online.runtime import cuda_devices
from harness.tune.results_callback import ResultsCallback
from harness.tune.tuner import build_tuner, init_ray, make_trainable, restore_tuner


def fit_experiment(settings: dict[str, Any], folder: Path, resume: bool, address: str | None,
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


def resume_hint(settings: Mapping[str, Any], folder: Path) -> str:
    """The command that continues this experiment."""
    return (f"python -m harness.ablate --resume --experiment {shlex.quote(str(settings['name']))} "
            f"--results {shlex.quote(str(folder.parent))}")


def fit_failed(exc: BaseException, settings: Mapping[str, Any], folder: Path) -> int:
    """One line on stderr for a fit that did not finish; returns the exit status (130 interrupted, else 1)."""
    if isinstance(exc, KeyboardInterrupt):
        print(f"interrupted; resume with: {resume_hint(settings, folder)}", file=sys.stderr)
        return 130
    print(f"error: Ray Tune failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
          file=sys.stderr)
    return 1
