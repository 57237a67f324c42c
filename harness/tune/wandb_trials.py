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
  from its results (reported again with `skipped`) get no second run;
- a trial group (several seeds in one Tune trial) gets one run per member, id `<trial id>_m<index>`
  (the member's trials.parquet trial_id), written when the group's last report arrives: its history
  is the member's curve, its summary the member's final metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class MemberRun:
    """Stands for one member of a group trial where WandbLoggerCallback expects a Tune trial (its run's key)."""

    trial_id: str
    local_path: str | None


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

    def init_kwargs(self, trial: Any, member: int | None = None) -> dict[str, Any]:
        """The wandb.init arguments of a trial's run (id = Tune's trial id, config = flat knobs); with `member`,
        those of that member of a group trial (id `<trial id>_m<member>`, its seed)."""
        spec = TrialSpec.from_tune_config(trial.config)
        run_id = trial.trial_id
        if member is not None:
            spec, run_id = spec.member(member), f"{trial.trial_id}_m{member}"
        try:
            knobs = spec.knobs()
        except KnobError:  # an invalid sample still gets a run; its error is in trials.parquet
            knobs = {**spec.overrides, **spec.sampled}
        extra = {**self.experiment, "plan_id": spec.plan_id, "trial_id": run_id}
        if member is not None:
            extra.update(group_id=trial.trial_id, member_index=member)
        # online, a trial restarted by `--resume` (new driver, same trial id) continues its run
        resume = "allow" if self.mode == "online" else False
        init = {"id": run_id, "name": f"{spec.variant} seed {spec.seed}", "resume": resume,
                "allow_val_change": True, "group": self.group, "project": self.project,
                "config": trial_config(spec.preset, spec.variant, spec.seed, knobs, extra)}
        init.update(self.kwargs)
        return init

    def log_trial_start(self, trial: Any) -> None:
        """Nothing yet: the run starts with the trial's first fresh report (see log_trial_result)."""

    def _put(self, trial: Any, payload: dict[str, Any], key: Any = None, member: int | None = None) -> None:
        """Queue `payload` for the trial's (or, with `key` and `member`, a group member's) logging actor,
        starting the actor (and run) when needed."""
        key = trial if key is None else key
        if key not in self._trial_logging_actors:
            # Tune's result keys other than ours never reach the actor; "config" is excluded too.
            self._start_logging_actor(key, [*self._exclude_results, *self.excludes, "config"],
                                      **self.init_kwargs(trial, member))
        self._trial_queues[key].put((_QueueItem.RESULT, payload))

    def _log_members(self, trial: Any, result: Mapping[str, Any]) -> None:
        """One run per member of a group trial: its curve as history, its final metrics as summary."""
        for member in json.loads(result.get("members_json") or "[]"):
            index = int(member["member_index"])
            key = MemberRun(f"{trial.trial_id}_m{index}", getattr(trial, "local_path", None))
            for point in json.loads(member.get("curve_json") or "[]"):
                self._put(trial, history_metrics(point), key, index)
            summary = summary_metrics(member, DIAGNOSTIC_SCALARS)
            if member.get("error"):
                summary["failed"] = 1
            if result.get("trial_seconds") is not None:
                summary["trial_seconds"] = result["trial_seconds"]
            self._put(trial, summary, key, index)
            self._signal_logging_actor_stop(key)

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        """Log the running metrics as history; the final report adds the final metrics (the summary)."""
        if result.get("skipped"):  # recorded by an earlier driver: its run exists already
            return
        if TrialSpec.from_tune_config(trial.config).is_group:  # one run per member, from the last report
            if result.get("final"):
                self._log_members(trial, result)
                self._finals.add(trial.trial_id)
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
            self._cleanup_logging_actors()
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
