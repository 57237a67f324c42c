"""Ray set-up and the Tuner of an experiment: new (grid or optuna) or restored from its Ray state."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import ray
from ray import tune

from harness.experiment.groups import pack_groups
from harness.tune.search import make_scheduler, make_searcher
from harness.tune.trainable import run_trial
from search_spaces.spaces import get_space

# Tune's console reporter would interleave tables with our per-trial lines; verbose=0 below and
# the classic output engine keep it silent. Set before Tune reads it.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def init_ray(address: str | None, num_gpus: int) -> None:
    """Join the cluster at `address`, or start a quiet local Ray with every CPU and `num_gpus` GPUs."""
    quiet: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=num_gpus, **quiet)
    # Tune logs every trial failure with a full traceback; the results callback prints one line
    # instead (and the trial's error.txt keeps the trace).
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)


def trial_dirname(trial: Any) -> str:
    """Short trial folder names (the configs are too long to spell into a path)."""
    return f"trial_{trial.trial_id}"


def storage_uri(storage: str) -> str:
    """The Ray storage_path: a URI as is, a local path made absolute."""
    return storage if "://" in storage else os.path.abspath(os.path.expanduser(storage))


def ray_experiment_path(storage: str, name: str) -> str:
    """Where Ray Tune keeps the experiment's state (what Tuner.restore reads)."""
    base = storage_uri(storage)
    return f"{base.rstrip('/')}/{name}" if "://" in base else os.path.join(base, name)


def make_trainable(done: Mapping[str, Mapping[str, Any]], cpus: float, gpus: float) -> Any:
    """run_trial with the finished-trial map bound (tune.with_parameters) and its resources."""
    return tune.with_resources(tune.with_parameters(run_trial, done=dict(done)), {"cpu": cpus, "gpu": gpus})


def run_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The `run` part of every trial config: stream length, cadence, threads, data path."""
    return {"max_steps": settings["max_steps"], "report_every": settings["report_every"],
            "checkpoint_every": settings["checkpoint_every"], "cpus_per_trial": settings["resources"]["cpus_per_trial"],
            "data_path": settings.get("data_path")}


def _run_config(settings: Mapping[str, Any], callbacks: list[tune.Callback]) -> tune.RunConfig:
    return tune.RunConfig(
        name=settings["name"], storage_path=storage_uri(settings["storage"]), callbacks=callbacks, verbose=0,
        failure_config=tune.FailureConfig(max_failures=settings["max_failures"]),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2))


# reuse_actors=True: a worker process runs trial after trial (its prepared data cached), which
# saves seconds of process start per trial; peak_rss_mb is then that worker's peak so far.


def grid_trials(settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `trial` entries of a grid: one per planned (configuration, seed), or per group of seeds
    when the experiment has a --group-size (harness.experiment.groups.pack_groups)."""
    planned = [{k: t[k] for k in ("plan_id", "variant", "seed", "preset", "overrides")}
               for t in settings["planned_trials"]]
    group_size = settings.get("group_size", 1)
    if group_size == 1:
        return planned
    device = "cuda" if settings["resources"]["gpus_per_trial"] > 0 else "cpu"
    return pack_groups(planned, group_size, device)


def build_tuner(settings: Mapping[str, Any], trainable: Any, callbacks: list[tune.Callback]) -> tune.Tuner:
    """A new Tuner: grid over the planned trials, or OptunaSearch (+ ASHA) for the optuna design."""
    run = run_settings(settings)
    if settings["design"] != "optuna":
        trials = grid_trials(settings)
        return tune.Tuner(trainable, param_space={"run": run, "trial": tune.grid_search(trials)},
                          tune_config=tune.TuneConfig(num_samples=1, trial_dirname_creator=trial_dirname,
                                                      reuse_actors=True),
                          run_config=_run_config(settings, callbacks))
    space = get_space(settings["space"])
    optuna = settings["optuna"]
    base = {"plan_id": None, "variant": None, "seed": 0, "preset": optuna["preset"], "overrides": optuna["overrides"]}
    tune_config = tune.TuneConfig(
        search_alg=make_searcher(space.continuous, settings["seeds"], settings["multi_objective"]),
        scheduler=make_scheduler(settings["scheduler"], settings["stream_steps"], settings["report_every"]),
        num_samples=settings["samples"] * settings["seeds"], trial_dirname_creator=trial_dirname,
        reuse_actors=True)
    return tune.Tuner(trainable, param_space={"run": run, "trial": base}, tune_config=tune_config,
                      run_config=_run_config(settings, callbacks))


def restore_tuner(settings: Mapping[str, Any], trainable: Any) -> tune.Tuner | None:
    """The experiment's Tuner restored from its Ray state (errored trials resume from their checkpoints).

    None when Ray saved no state yet (the driver died first): the caller starts a new Tuner.
    """
    path = ray_experiment_path(settings["storage"], settings["name"])
    if not tune.Tuner.can_restore(path):
        return None
    return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
