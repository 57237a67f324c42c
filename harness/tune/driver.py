"""Run a validated experiment on Ray Tune and report: the part of `harness.ablate` after validation."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from harness.analysis.tables import ranking_from_trials
from harness.experiment.console import format_ranking
from harness.experiment.results import ResultsStore
from harness.tune.fit import fit_experiment, fit_failed, resume_hint
from harness.tune.tuner import ray_experiment_path


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
        fit_experiment(settings, folder, resume, address)
    except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - one line, never a traceback
        return fit_failed(exc, settings, folder)
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
              f"{resume_hint(settings, folder)}", file=sys.stderr)
        return 130
    if failed:
        print(f"{failed} of {total} trials ended in ERROR (see the error column); --resume retries them",
              file=sys.stderr)
        return 1
    return 0
