"""The Ray Tune W&B callback: one W&B run per trial, through Ray's WandbLoggerCallback.

`ray.air.integrations.wandb.WandbLoggerCallback` runs wandb in a logging actor per trial (a
separate process, as wandb wants) and forwards every numeric result. TrialRunsCallback keeps that
machinery and changes what goes in:

- config: the trial's flat knobs (preset, variant, seed, every knob value) plus the experiment's
  name/space/design/unit, instead of Tune's nested {"run": ..., "trial": ...} config;
- history: the running stream metrics (step, cum_mse, cum_mae) of every report;
- summary: the final metrics (mse, mae, rmse, mape, smape, rel_mse_persistence, seconds, memory,
  diagnostics), logged with the trial's last report;
- offline mode needs no API key (Ray's own setup() insists on one unless WANDB_MODE is set in the
  environment; here the mode is passed to wandb.init instead);
- a run starts with the trial's first fresh report, so the trials a resumed experiment only replays
  from its results (reported again with `skipped`) get no second run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem

from fsnet_models.knobs import KnobError
from harness.experiment.spec import TrialSpec
from harness.online.result import DIAGNOSTIC_SCALARS
from harness.wandb_logging import (
    TRIAL_JOB,
    history_metrics,
    init_dir,
    resolve_project,
    runs_dir,
    summary_metrics,
    trial_config,
)


class TrialRunsCallback(WandbLoggerCallback):
    """WandbLoggerCallback writing one run per trial: flat knob config, stream history, final summary."""

    def __init__(self, project: str, group: str, mode: str, directory: str | Path,
                 experiment: Mapping[str, Any] | None = None) -> None:
        if mode not in ("offline", "online"):
            raise ValueError(f"TrialRunsCallback needs mode offline or online, got {mode!r}")
        super().__init__(project=project, group=group, log_config=False, upload_checkpoints=False,
                         mode=mode, dir=str(directory), job_type=TRIAL_JOB)
        self.mode = mode
        self.experiment = dict(experiment or {})
        self._finals: set[str] = set()  # trial ids whose final report was logged
        self._last: dict[str, dict[str, float]] = {}  # trial id -> last running metrics

    def setup(self, *args: Any, **kwargs: Any) -> None:
        """Online: Ray's set-up (finds the API key the way wandb does). Offline: nothing to set up."""
        if self.mode == "online":
            super().setup(*args, **kwargs)

    def init_kwargs(self, trial: Any) -> dict[str, Any]:
        """The wandb.init arguments of a trial's run (id = Tune's trial id, config = flat knobs)."""
        spec = TrialSpec.from_tune_config(trial.config)
        try:
            knobs = spec.knobs()
        except KnobError:  # an invalid sample still gets a run; its error is in trials.parquet
            knobs = {**spec.overrides, **spec.sampled}
        extra = {**self.experiment, "plan_id": spec.plan_id, "trial_id": trial.trial_id}
        # online, a trial restarted by `--resume` (new driver, same trial id) continues its run
        resume = "allow" if self.mode == "online" else False
        init = {"id": trial.trial_id, "name": f"{spec.variant} seed {spec.seed}", "resume": resume,
                "allow_val_change": True, "group": self.group, "project": self.project,
                "config": trial_config(spec.preset, spec.variant, spec.seed, knobs, extra)}
        init.update(self.kwargs)
        return init

    def log_trial_start(self, trial: Any) -> None:
        """Nothing yet: the run starts with the trial's first fresh report (see log_trial_result)."""

    def _put(self, trial: Any, payload: dict[str, Any]) -> None:
        """Queue `payload` for the trial's logging actor, starting the actor (and run) when needed."""
        if trial not in self._trial_logging_actors:
            # Tune's result keys other than ours never reach the actor; "config" is excluded too.
            self._start_logging_actor(trial, [*self._exclude_results, *self.excludes, "config"],
                                      **self.init_kwargs(trial))
        self._trial_queues[trial].put((_QueueItem.RESULT, payload))

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        """Log the running metrics as history; the final report adds the final metrics (the summary)."""
        if result.get("skipped"):  # recorded by an earlier driver: its run exists already
            return
        payload: dict[str, Any] = history_metrics(result)
        if result.get("final"):
            payload.update(summary_metrics(result, DIAGNOSTIC_SCALARS))
            self._finals.add(trial.trial_id)
        else:
            self._last[trial.trial_id] = payload
        if payload:
            self._put(trial, payload)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        """Finish the trial's run; a trial stopped early (ASHA) gets its running mse/mae as final metrics."""
        if trial not in self._trial_queues:
            return
        last = self._last.pop(trial.trial_id, {})
        if not failed and trial.trial_id not in self._finals and "cum_mse" in last:
            self._put(trial, {"mse": last["cum_mse"], "mae": last.get("cum_mae"), "stopped_early": 1})
        super().log_trial_end(trial, failed=failed)


def make_trial_callback(settings: Mapping[str, Any], folder: str | Path) -> TrialRunsCallback | None:
    """The W&B callback of an experiment (None for `--wandb off`); runs go under <folder>/wandb."""
    mode = settings.get("wandb") or "off"
    if mode == "off":
        return None
    runs_dir(folder).mkdir(parents=True, exist_ok=True)
    experiment = {"experiment": settings["name"], **{k: settings.get(k) for k in ("space", "design", "unit")}}
    return TrialRunsCallback(resolve_project(settings.get("wandb_project")), settings["name"], mode, init_dir(folder),
                             experiment)
