"""--until-resolved: the flags, the rounds loop (stopping rule, resume in the middle of a round, a round whose
trials all errored) and the analysis's Sequential rule section.

The loop is tested without Ray: harness.tune.rounds.run_until_resolved takes the Ray part as `run_round`, and
FakeRounds stands in for it, writing the rows a Tuner's trials would write (MSE from known effects) into
trials.parquet through the same ResultsStore. One integration test runs a real tiny design on Ray Tune.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from harness import ablate
from harness.analysis import rounds as replay_rounds
from harness.analysis import sequential as sq
from harness.experiment.files import write_experiment
from harness.experiment.results import ResultsStore, build_trial_row
from harness.experiment.settings import DEFAULTS, settings_from_args
from harness.tune import driver, rounds

ROOT = Path(__file__).resolve().parents[2]
FULL = "advanced"
UNITS = ("chunk_by", "adaptive_tau", "topk_temperature", "controller_dropout")  # advanced's innovations, in order
REF_MSE = 0.06


def _settings(tmp_path: Path, *flags: str) -> dict[str, Any]:
    """Validated settings of an advanced loo --until-resolved design (no data check, no Ray)."""
    args = ablate.build_parser().parse_args(["--space", "advanced", "--until-resolved", "--results", str(tmp_path),
                                             "--experiment", "seq", "--wandb", "off", "--gpus-per-trial", "0",
                                             *flags])
    return settings_from_args(args)


class FakeRounds:
    """run_round without Ray: records each call and writes the rows of the round's trials, as the trainable and the
    results callback would (trials already finished are skipped, like the trainable's `done` map).

    rel: variant -> its MSE relative to the full variant's (+0.3: switching that innovation off costs 30%);
    spread: independent noise per trial, fraction of the reference; error(round name, trial) -> message or None;
    interrupt_after: raise KeyboardInterrupt after writing that many rows in one call.
    """

    def __init__(self, folder: Path, rel: dict[str, float], spread: float = 0.01, error: Any = None,
                 interrupt_after: int | None = None) -> None:
        self.folder, self.rel, self.spread, self.error = folder, rel, spread, error
        self.interrupt_after = interrupt_after
        self.calls: list[dict[str, Any]] = []

    def value(self, variant: str, seed: int) -> float:
        shared = np.random.default_rng([seed]).standard_normal()  # seed noise shared by every configuration
        own = np.random.default_rng([seed, sorted(self.rel).index(variant)]).standard_normal()
        return REF_MSE * (1 + self.rel[variant]) + 0.1 * REF_MSE * shared + self.spread * REF_MSE * own

    def __call__(self, tuner_settings: dict[str, Any], callback_settings: dict[str, Any], resume: bool) -> None:
        trials = tuner_settings["planned_trials"]
        self.calls.append({"name": tuner_settings["name"], "resume": resume, "total": callback_settings["n_trials"],
                           "callback_name": callback_settings["name"],
                           "trials": [(t["variant"], t["seed"]) for t in trials]})
        store = ResultsStore(self.folder)
        done = store.finished()
        written = 0
        for t in trials:
            if f"{t['variant']}|{t['seed']}" in done:
                continue
            if self.interrupt_after is not None and written >= self.interrupt_after:
                raise KeyboardInterrupt
            message = self.error(tuner_settings["name"], t) if self.error else None
            result = {} if message else {"mse": self.value(t["variant"], t["seed"]), "mae": 0.1, "steps": 30}
            row = build_trial_row({"name": "seq", "space": "advanced", "design": "loo", "unit": "innovation"},
                                  f"{tuner_settings['name']}-{t['plan_id']}", t["variant"], t["preset"], t["seed"],
                                  {}, {}, result, "ERROR" if message else "TERMINATED", message)
            store.upsert(row)
            written += 1


def _rel(**by_unit: float) -> dict[str, float]:
    return {FULL: 0.0, **{f"{FULL} -{u}": by_unit.get(u, 0.0) for u in UNITS}}


def _run(settings: dict[str, Any], folder: Path, fake: FakeRounds, resume: bool = False) -> tuple[int, list]:
    finished: list[Path] = []
    status = rounds.run_until_resolved(settings, folder, resume, None, run_round=fake,
                                       finish=lambda f, s: finished.append(f))
    return status, finished


# ------------------------------------------------------------------ flags and settings (no Ray)
BAD = [
    (["--space", "hparams", "--design", "optuna", "--until-resolved"], "runs the loo, oat, factorial designs, not "
                                                                       "design 'optuna'"),
    (["--space", "baselines", "--until-resolved"], "not design 'presets'"),
    (["--space", "advanced", "--until-resolved", "--seeds", "3"], "drop --seeds"),
    (["--space", "advanced", "--until-resolved", "--limit", "2"], "--limit cannot be combined with --until-resolved"),
    (["--space", "advanced", "--until-resolved", "--precision", "0"], "--precision must be in (0, 1), got 0.0"),
    (["--space", "advanced", "--until-resolved", "--alpha", "1.5"], "--alpha must be in (0, 1), got 1.5"),
    (["--space", "advanced", "--until-resolved", "--seeds-per-round", "1"], "--seeds-per-round must be >= 2"),
    (["--space", "advanced", "--until-resolved", "--max-seeds", "3"], "--max-seeds must be >= --seeds-per-round (4)"),
    (["--space", "advanced", "--max-seeds", "8"], "--max-seeds applies to --until-resolved only"),
    (["--space", "advanced", "--alpha", "0.1"], "--alpha applies to --until-resolved only"),
    (["--space", "advanced", "--until-resolved", "--emit-sweep", "x.yaml"], "drop --until-resolved"),
]


@pytest.mark.parametrize(("argv", "message"), BAD)
def test_bad_sequential_flags_exit_2_with_one_line(argv: list[str], message: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    status = ablate.main([*argv, "--gpus-per-trial", "0"])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_settings_store_the_rule_and_plan_the_worst_case(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    assert (DEFAULTS.precision, DEFAULTS.max_seeds, DEFAULTS.seeds_per_round, DEFAULTS.alpha) == (0.02, 16, 4, 0.05)
    seq = s["sequential"]
    assert {k: seq[k] for k in ("precision", "max_seeds", "seeds_per_round", "alpha", "spending")} == {
        "precision": 0.02, "max_seeds": 16, "seeds_per_round": 4, "alpha": 0.05, "spending": "obrien-fleming"}
    assert seq["reference"] == FULL and seq["units"] == list(UNITS)
    assert seq["cells"][FULL] == dict.fromkeys(UNITS, True)
    assert seq["cells"][f"{FULL} -topk_temperature"] == {**dict.fromkeys(UNITS, True), "topk_temperature": False}
    assert s["seeds"] == 16 and s["n_trials"] == len(s["planned_trials"]) == 5 * 16
    assert sorted({t["seed"] for t in s["planned_trials"]}) == list(range(16))
    plan = replay_rounds.sequential_plan(s)
    assert [e.name for e in plan.effects] == list(UNITS) and plan.n_rounds == 4

    oat = _settings(tmp_path, "--design", "oat", "--max-seeds", "6", "--seeds-per-round", "3", "--precision", "0.05",
                    "--alpha", "0.1")
    assert oat["sequential"]["reference"] == "fsnet" and oat["n_trials"] == 5 * 6
    assert {k: oat["sequential"][k] for k in ("precision", "max_seeds", "seeds_per_round", "alpha")} == {
        "precision": 0.05, "max_seeds": 6, "seeds_per_round": 3, "alpha": 0.1}
    fact = _settings(tmp_path, "--design", "factorial", "--max-seeds", "4", "--seeds-per-round", "2")
    effects = replay_rounds.sequential_plan(fact).effects
    assert len(effects) == 4 + 6 and sum(e.kind == "interaction" for e in effects) == 6  # mains and every pair
    assert fact["sequential"]["reference"] == FULL and all(len(e.configs) == 16 for e in effects)
    assert "sequential" not in settings_from_args(ablate.build_parser().parse_args(
        ["--space", "advanced", "--results", str(tmp_path), "--gpus-per-trial", "0"]))


def test_dry_run_says_up_to_and_resume_refuses_the_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = ablate.main(["--space", "advanced", "--until-resolved", "--max-seeds", "8", "--seeds-per-round", "2",
                          "--dry-run", "--results", str(tmp_path / "r"), "--gpus-per-trial", "0"])
    out = capsys.readouterr().out
    assert status == 0 and "until resolved: rounds of 2 seeds, up to 8 seeds per configuration, up to 40 trials" in out
    assert len(out.strip().splitlines()) == 1 + 40 and not (tmp_path / "r").exists()
    folder = tmp_path / "r" / "x"
    write_experiment(folder, _settings(tmp_path))
    status = ablate.main(["--resume", "--experiment", "x", "--results", str(tmp_path / "r"), "--max-seeds", "32"])
    err = capsys.readouterr().err
    assert status == 2 and "drop --max-seeds" in err


def test_the_driver_hands_a_sequential_experiment_to_the_rounds_loop(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple] = []
    monkeypatch.setattr(rounds, "run_until_resolved", lambda *a: seen.append(a) or 7)
    s = _settings(tmp_path)
    assert driver.run_experiment(s, tmp_path / "seq", resume=True, address="auto") == 7
    assert seen == [(s, tmp_path / "seq", True, "auto")]


# ------------------------------------------------------------------ the rounds loop (no Ray)
def test_stopping_rule_drops_resolved_configurations_and_stops_when_all_resolved(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = _settings(tmp_path, "--max-seeds", "12", "--seeds-per-round", "2")
    folder = tmp_path / "seq"
    fake = FakeRounds(folder, _rel(chunk_by=0.3, adaptive_tau=0.3, topk_temperature=0.08), spread=0.005)
    status, finished = _run(s, folder, fake)
    out = capsys.readouterr().out
    assert status == 0 and finished == [folder]
    lines = [line for line in out.splitlines() if line.startswith("round ")]
    assert len(lines) == len(fake.calls) < 6  # stopped before max seeds
    assert lines[0].startswith("round 1 of up to 6: 5 configurations x seeds 0..1; 0 of 4 effects resolved")
    assert "sequential: " in out and "stopped: all resolved" in out and "unresolved: none" in out
    # Round 1 runs every configuration; a later round only those some unresolved effect needs.
    assert {v for v, _ in fake.calls[0]["trials"]} == set(_rel())
    plan = replay_rounds.sequential_plan(s)
    for r, call in enumerate(fake.calls):
        assert sorted({seed for _, seed in call["trials"]}) == list(plan.round_seeds(r))
        assert call["name"] == rounds.round_name(s, r, [t for t in s["planned_trials"]
                                                        if (t["variant"], t["seed"]) in set(call["trials"])])
        assert call["callback_name"] == "seq" and not call["resume"]
        if r:
            values = replay_rounds.table_values(ResultsStore(folder).frame(), plan.configs,
                                                range(plan.seeds_through(r - 1)))
            need = sq.configs_needed(plan.decide(r - 1, values))
            assert {v for v, _ in call["trials"]} == need
    assert len({v for v, _ in fake.calls[-1]["trials"]}) < 5
    # The decisions are those of sequential.run_sequential on the same values.
    ref = sq.run_sequential(plan, lambda r, configs, reps: {c: {x: fake.value(c, x) for x in reps} for c in configs})
    replayed = replay_rounds.replay_experiment(s, ResultsStore(folder).frame()).result
    assert [d.to_dict() for d in replayed.decisions] == [d.to_dict() for d in ref.decisions]
    assert replayed.seeds_per_config == ref.seeds_per_config and replayed.rounds_run == ref.rounds_run
    assert all(d.resolved for d in ref.decisions) and ref.stopped == "all resolved"


def test_a_round_runs_in_trial_groups(tmp_path: Path) -> None:
    """With --group-size, each round's Tuner grid packs the round's seeds of a configuration into groups (the round's
    trials only: round 2's groups hold seeds 4..7, never a seed of round 1)."""
    from harness.tune.tuner import grid_trials

    s = _settings(tmp_path, "--max-seeds", "8", "--seeds-per-round", "4", "--group-size", "2")
    plan = replay_rounds.sequential_plan(s)
    for r in range(2):
        trials = rounds.round_trials(s, plan.configs, plan.round_seeds(r))
        grid = grid_trials(rounds.round_settings(s, r, trials))
        assert len(grid) == len(plan.configs) * 2
        want = list(plan.round_seeds(r))
        for variant in plan.configs:
            groups = [g["seeds"] for g in grid if g["variant"] == variant]
            assert groups == [want[:2], want[2:]]


def test_max_seeds_stops_and_names_the_unresolved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = _settings(tmp_path, "--max-seeds", "4", "--seeds-per-round", "2")
    folder = tmp_path / "seq"
    fake = FakeRounds(folder, _rel(chunk_by=0.3), spread=0.05)
    status, _ = _run(s, folder, fake)
    out = capsys.readouterr().out
    assert status == 0 and len(fake.calls) == 2
    assert "stopped: max seeds" in out
    replayed = replay_rounds.replay_experiment(s, ResultsStore(folder).frame()).result
    assert replayed.unresolved and f"unresolved: {', '.join(replayed.unresolved)}" in out
    assert "adaptive_tau" in replayed.unresolved  # a zero effect cannot be shown inside +-2% at 4 seeds


def test_resume_in_the_middle_of_a_round_continues_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = _settings(tmp_path, "--max-seeds", "8", "--seeds-per-round", "2")
    rel = _rel(chunk_by=0.3, adaptive_tau=0.3, topk_temperature=0.05, controller_dropout=0.0)
    folder = tmp_path / "seq"
    # The uninterrupted run, for comparison.
    whole = FakeRounds(tmp_path / "whole", rel)
    assert _run(s, tmp_path / "whole", whole)[0] == 0
    capsys.readouterr()

    class Interrupting(FakeRounds):
        def __call__(self, tuner_settings: dict[str, Any], callback_settings: dict[str, Any], resume: bool) -> None:
            self.interrupt_after = 3 if len(self.calls) == 1 else None  # round 2: three trials, then Ctrl-C
            super().__call__(tuner_settings, callback_settings, resume)

    first = Interrupting(folder, rel)
    status, finished = _run(s, folder, first)
    err = capsys.readouterr().err
    assert status == 130 and not finished and len(first.calls) == 2
    assert "resume with: python -m harness.ablate --resume --experiment seq" in err
    before = ResultsStore(folder).frame()
    assert len(before) == 10 + 3

    second = FakeRounds(folder, rel)
    status, finished = _run(s, folder, second, resume=True)
    out = capsys.readouterr().out
    assert status == 0 and finished == [folder]
    assert out.splitlines()[1].startswith("round 1 of up to 4") and "(recorded before)" in out.splitlines()[1]
    # Round 1 is replayed from trials.parquet, round 2 is restored (same Ray name, resume) and finished.
    assert second.calls[0]["name"] == first.calls[1]["name"] and second.calls[0]["resume"]
    assert second.calls[0]["trials"] == first.calls[1]["trials"]
    assert [c["trials"] for c in second.calls] == [c["trials"] for c in whole.calls[1:]]
    after = ResultsStore(folder).frame()
    kept = after.set_index("trial_id").loc[before["trial_id"], "mse"]
    assert list(kept) == list(before["mse"])  # nothing finished before the interruption ran again
    assert after[["variant", "seed"]].value_counts().max() == 1
    one = replay_rounds.replay_experiment(s, after).result
    two = replay_rounds.replay_experiment(s, ResultsStore(tmp_path / "whole").frame()).result
    assert [d.to_dict() for d in one.decisions] == [d.to_dict() for d in two.decisions]
    assert one.seeds_per_config == two.seeds_per_config


def test_a_round_whose_trials_all_errored_stops_with_one_line(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    s = _settings(tmp_path, "--max-seeds", "8", "--seeds-per-round", "2")
    folder = tmp_path / "seq"
    fake = FakeRounds(folder, _rel(), error=lambda name, t: "RuntimeError: boom" if "-round2-" in name else None)
    status, finished = _run(s, folder, fake)
    captured = capsys.readouterr()
    assert status == 1 and len(fake.calls) == 2 and finished == [folder]  # round 1's seeds are still analysed
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == ["error: round 2 of up to 4: all 10 trials ended in ERROR (first error: RuntimeError: boom); "
                      "the design stops here (fix the cause, then --resume retries them)"]
    assert "stopped: round 2 of up to 4: all 10 trials ended in ERROR" in captured.out
    replayed = replay_rounds.replay_experiment(s, ResultsStore(folder).frame())
    assert replayed.stop is not None and replayed.stop.kind == "errored" and replayed.result.rounds_run == 1

    first = FakeRounds(tmp_path / "first", _rel(), error=lambda name, t: "ValueError: no data")
    status, finished = _run(s, tmp_path / "first", first)
    err = capsys.readouterr().err
    assert status == 1 and len(first.calls) == 1 and not finished
    assert err.strip().splitlines() == ["error: round 1 of up to 4: all 10 trials ended in ERROR (first error: "
                                        "ValueError: no data); the design stops here (fix the cause, then --resume "
                                        "retries them)"]


def test_a_round_left_incomplete_asks_for_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = _settings(tmp_path, "--max-seeds", "4", "--seeds-per-round", "2")
    status, finished = _run(s, tmp_path / "seq", lambda *a: None)  # a Tuner that ended without its trials
    err = capsys.readouterr().err
    assert status == 130 and not finished
    assert err.strip().splitlines() == ["incomplete: round 1 of up to 2 has 0 of 10 trials recorded; resume with: "
                                        f"python -m harness.ablate --resume --experiment seq --results {tmp_path}"]


def test_some_errored_trials_do_not_stop_the_rounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = _settings(tmp_path, "--max-seeds", "4", "--seeds-per-round", "2")
    folder = tmp_path / "seq"
    fake = FakeRounds(folder, _rel(chunk_by=0.3), spread=0.05,
                      error=lambda name, t: "RuntimeError: once" if (t["variant"], t["seed"]) == (FULL, 1) else None)
    status, _ = _run(s, folder, fake)
    err = capsys.readouterr().err
    assert status == 1 and len(fake.calls) == 2
    assert "1 trials ended in ERROR" in err and "--resume retries them" in err


# ------------------------------------------------------------------ the analysis
def test_analysis_reports_the_rule_with_the_drivers_decisions(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from harness.analysis import analyze_experiment

    s = _settings(tmp_path, "--max-seeds", "8", "--seeds-per-round", "2")
    folder = tmp_path / "seq"
    write_experiment(folder, s)
    fake = FakeRounds(folder, _rel(chunk_by=0.3, adaptive_tau=0.3, topk_temperature=0.05), spread=0.01)
    assert _run(s, folder, fake)[0] == 0
    capsys.readouterr()
    driver_view = replay_rounds.replay_experiment(s, ResultsStore(folder).frame())
    # Rows the rule never asked for (a dropped configuration at a later seed) change nothing.
    recorded = {(v, int(x)) for v, x in ResultsStore(folder).frame()[["variant", "seed"]].itertuples(index=False)}
    late = [t for t in s["planned_trials"] if t["variant"] == f"{FULL} -chunk_by"
            and (t["variant"], t["seed"]) not in recorded]
    assert late  # chunk_by was resolved before the last round: its configuration was dropped
    extra = FakeRounds(folder, {**fake.rel, f"{FULL} -chunk_by": -0.5})
    extra({"name": "seq-late", "planned_trials": late}, {"name": "seq", "n_trials": 1}, False)
    res = analyze_experiment(folder, n_boot=200)
    table = pd.read_csv(folder / "analysis" / "sequential.csv")
    assert list(table["effect"]) == list(UNITS)
    want = [d.status for d in driver_view.result.decisions]
    assert list(table["status"]) == want and list(table["n_seeds"]) == [d.n_seeds for d in
                                                                         driver_view.result.decisions]
    assert np.allclose(table["rel_pct"], [d.rel_pct for d in driver_view.result.decisions])
    for col in ("iqm_with", "iqm_without", "probability_of_improvement", "power", "rel_ci_low_pct"):
        assert table[col].notna().all(), col
    assert table.loc[table["effect"] == "chunk_by", "probability_of_improvement"].item() == 1.0
    report = res.report_path.read_text()
    section = report.split("## Sequential rule", 1)[1].split("\n## ", 1)[0]
    assert "Method: group-sequential paired t-tests" in section and "Family-wise alpha 0.05" in section
    assert "round(s) run, stopped:" in section and "Seeds per configuration: advanced 8" in section
    assert "would have been found with probability" in section and "IQM" in section
    assert "| chunk_by | loo | resolved_effect |" in section
    assert "### Seeds and time spent" in section and "A fixed design of 8 seeds per configuration: 40 trials" in section


def test_round_cost_counts_groups_once_and_skips_the_pause(tmp_path: Path) -> None:
    """round_cost: a group's seconds are counted once (shared by its members), the wall time is the union of the
    trials' spans (a pause between runs does not count), and the fixed design scales each configuration's mean."""
    s = _settings(tmp_path, "--seeds-per-round", "2")
    folder = tmp_path / "seq"
    write_experiment(folder, s)
    fake = FakeRounds(folder, _rel(chunk_by=0.5, adaptive_tau=0.3, topk_temperature=0.2, controller_dropout=0.4))
    _run(s, folder, fake)
    trials = ResultsStore(folder).frame()
    replayed = replay_rounds.replay_experiment(s, trials)
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    n = len(trials)
    trials = trials.assign(trial_seconds=100.0, group_size=1,
                           started_at=[t0 + pd.Timedelta(seconds=50 * i) for i in range(n)],
                           ended_at=[t0 + pd.Timedelta(seconds=50 * i + 100) for i in range(n)])
    # the last two rows: one group of two members, run after a ten-hour pause; 300 s for the group
    trials.loc[trials.index[-2:], ["trial_seconds", "group_size"]] = [300.0, 2]
    late = t0 + pd.Timedelta(hours=10)
    trials.loc[trials.index[-2:], "started_at"] = late
    trials.loc[trials.index[-2:], "ended_at"] = late + pd.Timedelta(seconds=300)
    cost = replay_rounds.round_cost(trials, replayed)
    assert cost["trials"] == n
    assert cost["compute_hours"] == pytest.approx((100 * (n - 2) + 300) / 3600)
    assert cost["wall_hours"] == pytest.approx((50 * (n - 3) + 100 + 300) / 3600)  # overlapping spans, then the group
    assert cost["fixed_trials"] == 5 * 16
    per_trial = (trials["trial_seconds"] / trials["group_size"]).groupby(trials["variant"]).mean()
    assert cost["fixed_compute_hours"] == pytest.approx(per_trial.sum() * 16 / 3600)
    assert cost["fixed_wall_hours"] == pytest.approx(cost["wall_hours"] * cost["fixed_compute_hours"]
                                                     / cost["compute_hours"])
    assert math.isnan(replay_rounds.round_cost(trials.drop(columns=["trial_seconds"]), replayed)["compute_hours"])


# ------------------------------------------------------------------ one real run on Ray Tune
@pytest.mark.integration
def test_a_tiny_until_resolved_design_on_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSNET_DATA_DIR", os.environ.get("FSNET_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    status = ablate.main(["--space", "advanced", "--until-resolved", "--max-seeds", "4", "--seeds-per-round", "2",
                          "--max-steps", "30", "--epochs", "0", "--report-every", "10", "--checkpoint-every", "10",
                          "--wandb", "off", "--results", str(tmp_path), "--experiment", "tiny",
                          "--gpus-per-trial", "0"])
    out, err = capsys.readouterr()
    assert status == 0, err[-2000:]
    folder = tmp_path / "tiny"
    trials = pq.read_table(folder / "trials.parquet").to_pandas()
    assert set(trials["status"]) == {"TERMINATED"} and trials[["variant", "seed"]].value_counts().max() == 1
    assert trials["mse"].map(math.isfinite).all() and (trials["steps"] == 30).all()
    assert set(trials["experiment"]) == {"tiny"}
    lines = [line for line in out.splitlines() if line.startswith("round ")]
    assert lines[0].startswith("round 1 of up to 2: 5 configurations x seeds 0..1")
    assert len(trials) == sum(int(line.split(": ", 1)[1].split(" configurations")[0]) * 2 for line in lines)
    ray_dirs = sorted(p.name for p in (tmp_path / "ray").iterdir() if p.name.startswith("tiny-round"))
    assert len(ray_dirs) == len(lines)
    settings = json.loads((folder / "experiment.json").read_text())
    assert settings["sequential"]["max_seeds"] == 4 and settings["n_trials"] == 20
    table = pd.read_csv(folder / "analysis" / "sequential.csv")
    assert list(table["effect"]) == list(UNITS)
    assert "## Sequential rule" in (folder / "analysis" / "report.md").read_text()
