"""Ray Tune search for the optuna design: the define-by-run space, seed repeats and the ASHA scheduler."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Repeater, Searcher
from ray.tune.search.optuna import OptunaSearch

from search_spaces.spaces import Continuous

OBJECTIVE = "mse"
TIME_OBJECTIVE = "trial_seconds"
RUNNING_METRIC = "cum_mse"


class OptunaSpace:
    """Define-by-run optuna space over continuous knobs (a picklable callable for OptunaSearch)."""

    def __init__(self, continuous: Sequence[Continuous]) -> None:
        self.continuous = tuple(continuous)

    def __call__(self, trial: Any) -> None:
        """Suggest every knob; an `at_least` knob is drawn from [max(low, partner), high]."""
        values: dict[str, float] = {}
        for c in self.continuous:
            low, high = c.bounds()
            if c.at_least is not None:
                low = max(low, values[c.at_least])
                high = max(high, low)
            if c.is_int:
                values[c.knob] = trial.suggest_int(c.knob, int(math.ceil(low)), int(high), log=c.log)
            else:
                values[c.knob] = trial.suggest_float(c.knob, float(low), float(high), log=c.log)


class SeedRepeater(Repeater):
    """Repeater (one suggestion run at seeds 0..K-1) that also averages multi-objective metrics."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, **kwargs: Any) -> None:
        """Record a seed's metrics; when all seeds of a suggestion are in, tell the searcher their means."""
        group = self._trial_id_to_group.get(trial_id)
        if group is None:
            return
        metrics = self.searcher.metric if isinstance(self.searcher.metric, list) else [self.searcher.metric]
        score = [float(result[m]) if result and result.get(m) is not None else math.nan for m in metrics]
        group.report(trial_id, score)
        if group.finished_reporting():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                means = np.nanmean(np.array(group.scores(), dtype=float), axis=0)
            summary = dict(zip(metrics, (float(m) for m in means), strict=True))
            self.searcher.on_trial_complete(group.primary_trial_id, result=summary, **kwargs)


def make_searcher(continuous: Sequence[Continuous], seeds: int, multi_objective: bool, seed: int = 0) -> Searcher:
    """OptunaSearch (TPE, seeded) over `continuous`, each suggestion repeated at `seeds` seeds."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if multi_objective:
        search = OptunaSearch(OptunaSpace(continuous), metric=[OBJECTIVE, TIME_OBJECTIVE], mode=["min", "min"],
                              seed=seed)
    else:
        search = OptunaSearch(OptunaSpace(continuous), metric=OBJECTIVE, mode="min", seed=seed)
    return SeedRepeater(search, repeat=seeds, set_index=True)


def make_scheduler(name: str | None, max_steps: int, report_every: int) -> ASHAScheduler | None:
    """ASHA on the running stream MSE (time = online steps), or None."""
    if name is None:
        return None
    return ASHAScheduler(time_attr="step", metric=RUNNING_METRIC, mode="min", max_t=max_steps,
                         grace_period=min(report_every, max_steps), reduction_factor=3)
