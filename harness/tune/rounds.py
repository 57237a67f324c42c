"""`--until-resolved`: run a grid design in rounds of seeds until every effect is resolved (docs/sequential.md).

Round r runs the configurations that some effect still unresolved after round r - 1 needs, at the seeds of round r
(seed s belongs to round s // seeds_per_round), as one Tuner.fit() under its own Ray experiment name,
`<name>-round<r+1>-<digest of its trials>`; its trials are rows of trials.parquet like any others. After each round
the rule (harness.analysis.sequential, replayed by harness.analysis.rounds) decides every effect of the design and
prints one line. It stops when every effect is resolved or at max_seeds.

Everything is re-derived from trials.parquet, so `--resume` needs no state of its own: the rounds whose trials all
finished are replayed without Ray, and the first round that is not finished is run again, its Tuner restored from
its Ray state when there is one (finished trials are skipped, errored ones retried). A round whose trials all end in
ERROR stops the design with one line and exit status 1.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from harness.analysis import sequential as sq
from harness.analysis.rounds import Rounds, check_round, replay, round_line, sequential_plan, table_values
from harness.analysis.tables import ranking_from_trials
from harness.experiment.console import format_ranking
from harness.experiment.results import ResultsStore
from harness.tune.fit import fit_experiment, fit_failed, resume_hint

# run_round(tuner_settings, callback_settings, resume): run one round's Tuner to its end (tune.fit.fit_experiment).
RunRound = Callable[[dict[str, Any], dict[str, Any], bool], None]
Finish = Callable[[Path, dict[str, Any]], None]



def round_trials(settings: Mapping[str, Any], configs: Sequence[str], reps: range) -> list[dict[str, Any]]:
    """The planned trials of a round: its configurations at its seeds, in plan order."""
    want, seeds = set(configs), set(reps)
    return [t for t in settings["planned_trials"] if t["variant"] in want and int(t["seed"]) in seeds]


def round_name(settings: Mapping[str, Any], round_index: int, trials: Sequence[Mapping[str, Any]]) -> str:
    """The Ray experiment name of a round: a resume whose earlier decisions changed (an errored trial retried)
    plans other trials for it, and gets a new Tuner instead of restoring one of other trials."""
    keys = sorted(f"{t['variant']}|{t['seed']}" for t in trials)
    digest = hashlib.sha1(json.dumps(keys).encode()).hexdigest()[:8]
    return f"{settings['name']}-round{round_index + 1}-{digest}"


def round_settings(settings: Mapping[str, Any], round_index: int, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The settings the round's Tuner is built (or restored) from: its own Ray name and its trials only."""
    return {**settings, "name": round_name(settings, round_index, trials), "planned_trials": trials,
            "n_trials": len(trials)}


def _keys(frame: pd.DataFrame, status: str | None = None) -> set[tuple[str, int]]:
    """(variant, seed) of the rows of `frame` (with that status when given)."""
    if frame.empty:
        return set()
    rows = frame if status is None else frame[frame["status"].astype(str).str.upper() == status]
    return {(str(v), int(s)) for v, s in zip(rows["variant"], rows["seed"], strict=True)}


def finished(frame: pd.DataFrame, trials: Sequence[Mapping[str, Any]]) -> bool:
    """True when every trial of the round has a TERMINATED row (the round is replayed, not run)."""
    done = _keys(frame, "TERMINATED")
    return all((t["variant"], int(t["seed"])) in done for t in trials)


def _default_run_round(folder: Path, address: str | None) -> RunRound:
    """The round on Ray Tune: fit_experiment, callbacks from the experiment's settings, Tuner from the round's."""
    def run(tuner_settings: dict[str, Any], callback_settings: dict[str, Any], resume: bool) -> None:
        fit_experiment(callback_settings, folder, resume, address, tuner_settings=tuner_settings)
    return run


def _default_finish(folder: Path, settings: dict[str, Any]) -> None:
    """The analysis, then (unless --wandb off) its W&B run, as after any experiment."""
    from harness.wandb_logging import resolve_project
    from harness.wandb_logging.analysis_run import finish_experiment

    finish_experiment(folder, settings.get("wandb") or "off", resolve_project(settings.get("wandb_project")))


def run_until_resolved(settings: dict[str, Any], folder: Path, resume: bool, address: str | None,
                       run_round: RunRound | None = None, finish: Finish | None = None) -> int:
    """Run the design round after round (see the module docstring); returns the exit status.

    0: stopped with every trial TERMINATED; 1: some trial ended in ERROR, or a round's trials all did (the design
    stops there); 130: interrupted or a round incomplete (resume to finish); 2: settings that make no plan.
    run_round and finish replace the Ray part and the analysis (tests).
    """
    folder = Path(folder)
    try:
        plan = sequential_plan(settings)
    except (KeyError, ValueError) as exc:
        print(f"error: --until-resolved: {exc}", file=sys.stderr)
        return 2
    run_round = run_round or _default_run_round(folder, address)
    finish = finish or _default_finish
    seq = settings["sequential"]
    print(f"experiment {settings['name']}: {settings['design']} of {len(plan.configs)} configurations, "
          f"{len(plan.effects)} effects ({settings['space']} / {settings['unit']}), until resolved: rounds of "
          f"{plan.seeds_per_round} seeds, up to {plan.max_seeds} seeds per configuration (up to {settings['n_trials']} "
          f"trials), alpha {plan.alpha:g}, precision {100 * plan.precision:g}% of {seq['reference']}; results in "
          f"{folder}", flush=True)
    notes: dict[int, str] = {}

    def fetch(r: int, configs: Sequence[str], reps: range) -> dict[str, dict[int, float]]:
        trials = round_trials(settings, configs, reps)
        frame = ResultsStore(folder).frame()
        if finished(frame, trials):
            notes[r] = " (recorded before)"
        else:
            keys = {(t["variant"], int(t["seed"])) for t in trials}
            total = len(_keys(frame) - keys) + len(trials)
            run_round(round_settings(settings, r, trials), {**settings, "n_trials": total}, resume)
            frame = ResultsStore(folder).frame()
        check_round(frame, configs, reps, r, plan.n_rounds)
        return table_values(frame, configs, reps)

    def on_round(r: int, configs: Sequence[str], decisions: Sequence[sq.EffectDecision]) -> None:
        print(round_line(r, plan, configs, decisions, notes.get(r, "")), flush=True)

    try:
        rounds = replay(plan, fetch, on_round)
    except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - one line, never a traceback
        return fit_failed(exc, settings, folder)
    return _conclude(settings, folder, plan, rounds, finish)


def _conclude(settings: dict[str, Any], folder: Path, plan: sq.SequentialPlan, rounds: Rounds, finish: Finish) -> int:
    """Print the ranking, the stop, the files; run the analysis; return the exit status."""
    result, stop = rounds.result, rounds.stop
    store = ResultsStore(folder)
    frame = store.frame()
    print()
    print(format_ranking(ranking_from_trials(frame)))
    print()
    print(f"sequential: {result.rounds_run} round(s) run, stopped: {result.stopped}; seeds per configuration: "
          + ", ".join(f"{c} {n}" for c, n in result.seeds_per_config.items()))
    print("unresolved: " + (", ".join(result.unresolved) if result.unresolved else "none"))
    print()
    print(f"written: {folder / 'experiment.json'}")
    print(f"         {store.trials_path}")
    print(f"         {store.curves_path}")
    from harness.tune.tuner import ray_experiment_path

    print(f"         {ray_experiment_path(settings['storage'], settings['name'])}-round* (Ray state, checkpoints)")
    if stop is not None and stop.kind == "incomplete":
        print(f"{stop}; resume with: {resume_hint(settings, folder)}", file=sys.stderr)
        return 130
    ran = set()
    for r, configs in enumerate(rounds.configs_by_round):
        ran |= {(c, s) for c in configs for s in plan.round_seeds(r)}
    errored = _keys(frame, "ERROR") - _keys(frame, "TERMINATED")
    failed = len({k for k in errored if k in ran})
    if len(frame) and (frame["status"].astype(str).str.upper() == "TERMINATED").any():
        print()
        finish(folder, settings)
    if stop is not None:  # a round whose trials all ended in ERROR
        print(f"error: {stop}; the design stops here (fix the cause, then --resume retries them)", file=sys.stderr)
        return 1
    if failed:
        print(f"{failed} trials ended in ERROR (see the error column); the rounds used the seeds that finished; "
              "--resume retries them", file=sys.stderr)
        return 1
    return 0
