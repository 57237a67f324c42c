"""The rounds of an `--until-resolved` experiment, replayed from its trials: the driver and the analysis share this.

experiment.json's `sequential` settings give the plan (a harness.analysis.sequential.SequentialPlan over every
effect of the design: loo or oat contributions, or a factorial's main effects and pairwise interactions) and
trials.parquet gives the values: the MSE of each TERMINATED trial with a finite MSE, by variant and seed (the rep of
a seed is the seed itself). `replay` walks the rounds. Round r asks `fetch` for the configurations that the decisions
after round r - 1 still need, at the seeds of round r, and decides with nothing but what it asked for. So the analysis
never looks past the stopping round, nor at a configuration the rule had dropped, and its decisions are the driver's:
the driver's `fetch` runs the round on Ray Tune and then reads the same table (harness.tune.rounds).

A round stops the replay when one of its trials has no row yet ("incomplete": resume to finish it) or when every one
of its trials ended in ERROR ("errored"); the decisions are then those after the round before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis import sequential as sq

Fetch = Callable[[int, Sequence[str], range], Mapping[str, Mapping[int, float]]]
OnRound = Callable[[int, Sequence[str], Sequence[sq.EffectDecision]], None]
ALL_RESOLVED = "all resolved"
MAX_SEEDS = "max seeds"
STATUS_TEXT = {sq.RESOLVED_EFFECT: "effect", sq.RESOLVED_NULL: "no effect larger than P", sq.UNRESOLVED: "unresolved"}


class RoundStop(Exception):
    """A round the rule cannot decide: kind "incomplete" (a trial of it has no row) or "errored" (every trial of it
    ended in ERROR). str() is one line; round_index is 0-based."""

    def __init__(self, round_index: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.round_index = round_index
        self.kind = kind


@dataclass(frozen=True)
class Rounds:
    """What a replay gives: the SequentialResult (what report_markdown takes), the stop when a round could not be
    decided, and the configurations each round ran."""

    result: sq.SequentialResult
    stop: RoundStop | None
    configs_by_round: tuple[tuple[str, ...], ...]


def sequential_plan(settings: Mapping[str, Any]) -> sq.SequentialPlan:
    """The plan of an experiment from its settings (experiment.json): the design's effects over the `sequential`
    cells and units, the reference, alpha, precision, rounds and spending. ValueError when they do not make one."""
    seq = settings.get("sequential")
    if not isinstance(seq, Mapping):
        raise ValueError("experiment.json has no `sequential` settings (not an --until-resolved experiment)")
    effects = sq.effects_for_design(str(settings["design"]), seq["cells"], list(seq["units"]), str(seq["reference"]))
    return sq.SequentialPlan(tuple(effects), alpha=float(seq["alpha"]), precision=float(seq["precision"]),
                             max_seeds=int(seq["max_seeds"]), seeds_per_round=int(seq["seeds_per_round"]),
                             spending=str(seq.get("spending", "obrien-fleming")))


def _rows(trials: pd.DataFrame, configs: Sequence[str], reps: range) -> pd.DataFrame:
    """The rows of `trials` at these configurations and seeds."""
    if trials.empty:
        return trials
    seeds = pd.to_numeric(trials["seed"], errors="coerce")
    return trials[trials["variant"].astype(str).isin(set(configs)) & seeds.isin(list(reps))]


def table_values(trials: pd.DataFrame, configs: Sequence[str], reps: range) -> dict[str, dict[int, float]]:
    """config -> {seed: mse} over the TERMINATED rows with a finite MSE at these configurations and seeds (the mean
    if a pair has two rows)."""
    rows = _rows(trials, configs, reps)
    out: dict[str, dict[int, float]] = {c: {} for c in configs}
    if rows.empty:
        return out
    mse = pd.to_numeric(rows["mse"], errors="coerce").astype(float)
    ok = rows[(rows["status"].astype(str).str.upper() == "TERMINATED") & np.isfinite(mse)]
    for (variant, seed), value in ok.assign(mse=mse[ok.index]).groupby(["variant", "seed"])["mse"].mean().items():
        out[str(variant)][int(seed)] = float(value)
    return out


def check_round(trials: pd.DataFrame, configs: Sequence[str], reps: range, round_index: int, n_rounds: int) -> None:
    """RoundStop unless every trial of the round has a row and at least one of them did not end in ERROR."""
    rows = _rows(trials, configs, reps)
    wanted = len(configs) * len(reps)
    status = rows.assign(seed=pd.to_numeric(rows["seed"]).astype(int)).groupby(["variant", "seed"])["status"].agg(
        lambda s: "TERMINATED" if (s.astype(str).str.upper() == "TERMINATED").any() else str(s.iloc[-1]).upper()) \
        if not rows.empty else pd.Series(dtype=object)
    name = f"round {round_index + 1} of up to {n_rounds}"
    if len(status) < wanted:
        raise RoundStop(round_index, "incomplete", f"incomplete: {name} has {len(status)} of {wanted} trials recorded")
    if (status == "ERROR").all():
        errors = rows["error"].dropna().astype(str) if "error" in rows else pd.Series(dtype=str)
        first = f" (first error: {errors.iloc[0].splitlines()[0][:200]})" if len(errors) else ""
        raise RoundStop(round_index, "errored", f"{name}: all {wanted} trials ended in ERROR{first}")


def table_fetch(trials: pd.DataFrame, n_rounds: int) -> Fetch:
    """A fetch reading one trials table (the analysis's): values of the round, or RoundStop."""
    def fetch(r: int, configs: Sequence[str], reps: range) -> dict[str, dict[int, float]]:
        check_round(trials, configs, reps, r, n_rounds)
        return table_values(trials, configs, reps)
    return fetch


def replay(plan: sq.SequentialPlan, fetch: Fetch, on_round: OnRound | None = None) -> Rounds:
    """Walk the rounds as run_sequential does: round r fetches the configurations still needed at the round's seeds,
    then decides from nothing but what was fetched; stops when every effect is resolved, at the last planned round,
    or at a RoundStop (the decisions are then those after the round before). on_round(r, configs, decisions) is
    called after each decided round."""
    seen: dict[str, dict[int, float]] = {c: {} for c in plan.configs}
    spent = dict.fromkeys(plan.configs, 0)
    needed = list(plan.configs)
    ran: list[tuple[str, ...]] = []
    decisions: list[sq.EffectDecision] = plan.decide(0, seen)
    stop: RoundStop | None = None
    rounds_run = 0
    for r in range(plan.n_rounds):
        reps = plan.round_seeds(r)
        try:
            got = fetch(r, tuple(needed), reps)
        except RoundStop as exc:
            stop = exc
            break
        for c in needed:
            spent[c] += len(reps)
            for rep, x in (got.get(c) or {}).items():
                if rep in reps and math.isfinite(float(x)):
                    seen[c][int(rep)] = float(x)
        ran.append(tuple(needed))
        rounds_run = r + 1
        decisions = plan.decide(r, seen)
        if on_round is not None:
            on_round(r, tuple(needed), decisions)
        if plan.finished(decisions, r):
            break
        need = sq.configs_needed(decisions)
        needed = [c for c in plan.configs if c in need]
    if stop is not None:
        stopped = str(stop)
    else:
        stopped = ALL_RESOLVED if all(d.resolved for d in decisions) else MAX_SEEDS
    arrays = {c: np.full(plan.max_seeds, np.nan) for c in plan.configs}
    for c, values in seen.items():
        for rep, x in values.items():
            arrays[c][rep] = x
    result = sq.SequentialResult(plan, tuple(decisions), rounds_run, spent, stopped, arrays)
    return Rounds(result, stop, tuple(ran))


def replay_experiment(settings: Mapping[str, Any], trials: pd.DataFrame) -> Rounds:
    """The rounds of an --until-resolved experiment as its trials table records them (what the analysis reports)."""
    plan = sequential_plan(settings)
    return replay(plan, table_fetch(trials, plan.n_rounds))


# ----------------------------------------------------------------------------------------------- report


def _effect_seeds(d: sq.EffectDecision, result: sq.SequentialResult) -> np.ndarray:
    """The seeds (bool mask over max_seeds) the effect's last look used: through its deciding round (else the last
    round run), finite in all its configurations."""
    plan = result.plan
    last = d.decided_round if d.decided_round is not None else max(result.rounds_run - 1, 0)
    mask = np.zeros(plan.max_seeds, dtype=bool)
    mask[: plan.seeds_through(last)] = True
    for c in d.configs:
        mask &= np.isfinite(result.values[c])
    return mask


def beside_the_mean(d: sq.EffectDecision, result: sq.SequentialResult) -> dict[str, float]:
    """Mean, rliable's IQM and probability of improvement of `with` (positive weights) over `without` (negative
    weights) on the seeds the effect used; NaN for an interaction or with no seed."""
    nan = math.nan
    out = dict.fromkeys(("mean_with", "mean_without", "iqm_with", "iqm_without", "probability_of_improvement"), nan)
    spec = next(e for e in result.plan.effects if e.name == d.name)
    mask = _effect_seeds(d, result)
    if d.kind == "interaction" or not mask.any():
        return out
    with_ = np.concatenate([result.values[c][mask] for c, w in spec.weights if w > 0])
    without = np.concatenate([result.values[c][mask] for c, w in spec.weights if w < 0])
    out.update(mean_with=float(with_.mean()), mean_without=float(without.mean()))
    out.update(sq.iqm_and_probability_of_improvement(with_, without))
    return out


def sequential_rows(rounds: Rounds, power_effect: float = 0.05) -> pd.DataFrame:
    """sequential.csv: one row per effect (status, the round it was resolved in, seeds, effect and interval in % of
    the reference, test statistics, the power statement, mean, IQM and probability of improvement)."""
    result = rounds.result
    rows = []
    for d in result.decisions:
        row = {"effect": d.name, "kind": d.kind, "status": d.status,
               "round_resolved": None if d.decided_round is None else d.decided_round + 1, "n_seeds": d.n_seeds,
               "configs": " | ".join(d.configs), "estimate": d.estimate, "reference_mean": d.reference_mean,
               "rel_pct": d.rel_pct, "rel_ci_low_pct": d.rel_ci_low_pct, "rel_ci_high_pct": d.rel_ci_high_pct,
               "ci_low": d.ci_low, "ci_high": d.ci_high, "interval_level": d.interval_level, "t_stat": d.t_stat,
               "p_value": d.p_value, "nominal_level": d.nominal_level, "holm_level": d.holm_level, "sd_rel": d.sd_rel,
               "power": sq.power_statement(d, result.plan, power_effect)}
        row.update(beside_the_mean(d, result))
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["round_resolved"] = frame["round_resolved"].astype("Int64")
    return frame


def _compute_seconds(trials: pd.DataFrame) -> pd.Series:
    """Compute seconds per row: a solo trial's trial_seconds; a group member's share of its group's (trial_seconds is
    the group's, on every member's row, so each member carries trial_seconds / group_size)."""
    seconds = pd.to_numeric(trials["trial_seconds"], errors="coerce").fillna(0.0)
    if "group_size" in trials.columns:
        size = pd.to_numeric(trials["group_size"], errors="coerce").fillna(1).clip(lower=1)
        seconds = seconds / size
    return seconds


def _busy_seconds(trials: pd.DataFrame) -> float:
    """Wall seconds during which at least one trial ran: the union of the rows' [started_at, ended_at] spans (so the
    hours between an interrupted run and its --resume do not count)."""
    if not {"started_at", "ended_at"} <= set(trials.columns):
        return math.nan
    spans = sorted((s, e) for s, e in zip(pd.to_datetime(trials["started_at"], utc=True),
                                          pd.to_datetime(trials["ended_at"], utc=True), strict=True)
                   if pd.notna(s) and pd.notna(e) and e >= s)
    total, start, end = 0.0, None, None
    for s, e in spans:
        if end is None or s > end:
            if end is not None:
                total += (end - start).total_seconds()
            start, end = s, e
        else:
            end = max(end, e)
    if end is not None:
        total += (end - start).total_seconds()
    return total


def round_cost(trials: pd.DataFrame, rounds: Rounds) -> dict[str, float]:
    """What the sequential design spent, beside what a fixed design of max_seeds seeds per configuration would cost.

    trials: every row of the experiment (TERMINATED and ERROR alike: both used compute). Returns trials (rows),
    compute_hours (the rows' compute seconds summed, a group counted once), wall_hours (time with a trial running),
    fixed_trials (configurations x max_seeds), fixed_compute_hours (each configuration's mean compute seconds per
    trial x max_seeds) and fixed_wall_hours (wall_hours scaled by fixed / spent compute: the same concurrency).
    """
    plan = rounds.result.plan
    rows = trials[trials["variant"].isin(plan.configs)] if not trials.empty else trials
    nan = math.nan
    if rows.empty or "trial_seconds" not in rows.columns:
        return {"trials": float(len(rows)), "compute_hours": nan, "wall_hours": nan,
                "fixed_trials": float(len(plan.configs) * plan.max_seeds), "fixed_compute_hours": nan,
                "fixed_wall_hours": nan}
    seconds = _compute_seconds(rows)
    per_config = seconds.groupby(rows["variant"]).mean()
    overall = float(seconds.mean())
    fixed = sum(float(per_config.get(c, overall)) for c in plan.configs) * plan.max_seeds
    spent = float(seconds.sum())
    wall = _busy_seconds(rows)
    return {"trials": float(len(rows)), "compute_hours": spent / 3600, "wall_hours": wall / 3600,
            "fixed_trials": float(len(plan.configs) * plan.max_seeds), "fixed_compute_hours": fixed / 3600,
            "fixed_wall_hours": wall * fixed / spent / 3600 if spent > 0 else nan}


def cost_lines(cost: Mapping[str, float], max_seeds: int) -> list[str]:
    """The report's "Seeds and time spent" lines for round_cost's figures."""
    return ["### Seeds and time spent", "",
            f"Spent: {cost['trials']:.0f} trials, {_num(cost['compute_hours'], 3)} compute hours (the trials' "
            f"seconds summed), {_num(cost['wall_hours'], 3)} hours of wall time with a trial running. A fixed design "
            f"of {max_seeds} seeds per configuration: {cost['fixed_trials']:.0f} trials, about "
            f"{_num(cost['fixed_compute_hours'], 3)} compute hours (each configuration's mean trial seconds so far) "
            f"and {_num(cost['fixed_wall_hours'], 3)} hours of wall time at the same concurrency."]


def _num(x: float, digits: int = 5) -> str:
    """A number for the tables, '—' when not finite."""
    return f"{x:.{digits}g}" if isinstance(x, (int, float)) and math.isfinite(x) else "—"


def sequential_section(rounds: Rounds, power_effect: float = 0.05, trials: pd.DataFrame | None = None) -> str:
    """The "Sequential rule" section of report.md: sequential.report_markdown (method, alpha, rounds run, seeds per
    configuration, per effect its status, seeds, effect and interval in % of the reference, power), then rliable's
    IQM and probability of improvement beside the mean, then (given the experiment's trials) the cost beside a fixed
    design's (round_cost)."""
    result = rounds.result
    text = sq.report_markdown(result, power_effect).replace("## Sequential design", "## Sequential rule", 1)
    ref = result.plan.effects[0].reference
    lines = [text.rstrip(), "",
             f"Effects are with minus without, paired by seed, in % of the mean MSE of `{ref}` (< 0: the innovation "
             "lowers the error). Resolved: the sequential test rejects zero (effect), or the interval lies inside "
             f"±{100 * result.plan.precision:g}% (no effect larger than P). The decisions replay the rounds from "
             "trials.parquet and read only the configurations and seeds each round ran.", "",
             "### Beside the mean: rliable's IQM and probability of improvement", "",
             "Over the seeds each effect used; with = the configurations of positive weight, without = negative "
             "(unpaired, pooled over the cells of a factorial main effect; none for an interaction). P(improvement) "
             "is P(with has the lower MSE).", "",
             "| effect | mean with | mean without | IQM with | IQM without | P(improvement) |",
             "|---|---|---|---|---|---|"]
    for d in result.decisions:
        b = beside_the_mean(d, result)
        lines.append(f"| {d.name} | {_num(b['mean_with'])} | {_num(b['mean_without'])} | {_num(b['iqm_with'])} | "
                     f"{_num(b['iqm_without'])} | {_num(b['probability_of_improvement'], 3)} |")
    if trials is not None:
        lines += ["", *cost_lines(round_cost(trials, rounds), result.plan.max_seeds)]
    return "\n".join(lines) + "\n"


def round_line(r: int, plan: sq.SequentialPlan, configs: Sequence[str], decisions: Sequence[sq.EffectDecision],
               note: str = "") -> str:
    """The console line of one decided round."""
    reps = plan.round_seeds(r)
    done = [d for d in decisions if d.resolved]
    resolved = ", ".join(f"{d.name}: {STATUS_TEXT[d.status]}" for d in done)
    open_ = sq.unresolved(decisions)
    return (f"round {r + 1} of up to {plan.n_rounds}: {len(configs)} configurations x seeds "
            f"{reps.start}..{reps.stop - 1}{note}; {len(done)} of {len(decisions)} effects resolved"
            + (f" ({resolved})" if resolved else "")
            + (f"; unresolved: {', '.join(open_)}" if open_ else ""))
