"""Trial groups in the protocol (harness.online.group_runner): whole short trials, grouped against solo.

Float32, warm-up included, so the comparison is to a stated tolerance: forecasts within 1e-4
(absolute, on scaled data of unit variance) and each member's stream MSE within 1e-4 relative of
its solo trial. Over longer horizons the FSNet family drifts apart at the rounding level (the
trajectories are chaotic; a rounding change acts like a new seed), which is why the FSNet presets
are compared over 40 steps here and statistically over the whole stream in docs/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from data import PreparedData, SplitWindows
from fsnet_models import resolve_config
from harness.online import group_runner
from harness.online.group_runner import GroupRunner
from harness.online.protocol import StepRecords
from harness.online.runner import TrialRunner
from harness.online.session import parse_seeds

SEEDS = [0, 3, 5]


pytestmark = pytest.mark.usefixtures("one_thread")


def group_and_solos(data: PreparedData, preset: str, steps: int, **knobs: Any) -> tuple[GroupRunner, list]:
    """A group of SEEDS and the solo trials of the same seeds, each run for `steps` online steps."""
    config = resolve_config(preset, {"epochs": 1, **knobs})
    group = GroupRunner(config, data, SEEDS, max_steps=steps)
    group.run_warmup()
    group.run_online()
    solos = []
    for seed in SEEDS:
        solo = TrialRunner({**config, "seed": seed}, data, max_steps=steps)
        solo.run_warmup()
        solo.run_online()
        solos.append(solo)
    return group, solos


@pytest.mark.parametrize(("preset", "steps"), [("ogd", 150), ("er", 150), ("derpp", 150), ("fsnet", 40),
                                               ("ultra", 40)])
def test_a_group_runs_the_solo_trials_of_its_seeds(etth1: PreparedData, preset: str, steps: int) -> None:
    group, solos = group_and_solos(etth1, preset, steps)
    for member, solo in enumerate(solos):
        assert torch.allclose(group.records.preds[member], solo.preds, atol=1e-4, rtol=0), member
        assert group.metrics(member)["mse"] == pytest.approx(solo.metrics()["mse"], rel=1e-4)
        assert group.warmup_reports[member]["val_mse"] == pytest.approx(solo.warmup_report["val_mse"], rel=1e-5)
    results = group.results()
    assert [r["seed"] for r in results] == SEEDS and [r["member_index"] for r in results] == [0, 1, 2]
    assert all(r["group_size"] == 3 and r["error"] is None for r in results)
    # the members are different trials, not copies of one
    assert not torch.equal(group.records.preds[0], group.records.preds[1])


def test_a_group_with_delayed_feedback_matches_its_solo_trials(etth1: PreparedData) -> None:
    group, solos = group_and_solos(etth1, "ogd", 60, feedback_delay=12)
    for member, solo in enumerate(solos):
        assert torch.allclose(group.records.preds[member], solo.preds, atol=1e-4, rtol=0), member


def test_the_same_group_run_twice_gives_the_same_bits(etth1: PreparedData) -> None:
    config = resolve_config("fsnet", {"epochs": 1})
    runs = []
    for _ in range(2):
        group = GroupRunner(config, etth1, SEEDS, max_steps=30)
        group.run_warmup()
        group.run_online()
        runs.append(group)
    assert torch.equal(runs[0].records.preds, runs[1].records.preds)
    assert torch.equal(runs[0].records.sq_err, runs[1].records.sq_err)


def test_a_diverging_member_fails_alone(etth1: PreparedData) -> None:
    group = GroupRunner(resolve_config("ogd", {"epochs": 0}), etth1, SEEDS, max_steps=20)
    group.run_warmup()
    group.run_online(5)
    with torch.no_grad():
        group.model.head.weight[1] = float("nan")  # member 1 only
    group.run_online()
    results = group.results()
    assert results[1]["error"] == "diverged: non-finite forecast at online step 5"
    assert results[0]["error"] is None and results[2]["error"] is None
    assert torch.isfinite(group.records.preds[[0, 2]]).all()


def test_each_member_restores_its_own_best_warm_up_epoch(etth1: PreparedData,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation MSEs chosen per member: member 0 is best after epoch 1, the others after epoch 2."""
    scores = iter([torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64),
                   torch.tensor([1.5, 1.0, 1.0], dtype=torch.float64)])
    kept: dict[int, dict[str, torch.Tensor]] = {}

    def scripted(model: Any, split: Any, batch_size: int) -> torch.Tensor:
        kept[len(kept)] = {n: p.detach().clone() for n, p in model.named_parameters()}
        return next(scores)

    monkeypatch.setattr(group_runner, "validate_group", scripted)
    group = GroupRunner(resolve_config("ogd", {"epochs": 2}), etth1, SEEDS, max_steps=1)
    group.run_warmup()
    assert [r["best_epoch"] for r in group.warmup_reports] == [1, 2, 2]
    for name, value in group.model.named_parameters():
        assert torch.equal(value[0], kept[0][name][0]), name  # member 0: the parameters after epoch 1
        assert torch.equal(value[1:], kept[1][name][1:]), name  # members 1, 2: after epoch 2


def test_members_that_stop_at_different_epochs_each_leave_with_their_own_state(
        etth1: PreparedData, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripted validation MSEs: member 0 stops after epoch 2 (patience 1), the others run 3 epochs
    (once refused with "members [0] stop warm-up at epoch 2"). Member 0 leaves with its state at
    its stop, parameters back at epoch 1, and the rate its solo loop leaves (not halved after its
    stop); it then steps with 2 epochs' AdamW steps, the others with 3 epochs'."""
    scores = iter([torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64),
                   torch.tensor([2.0, 0.5, 0.5], dtype=torch.float64),
                   torch.tensor([0.1, 0.4, 0.4], dtype=torch.float64)])  # member 0's 0.1 comes after its stop
    kept: list[dict[str, torch.Tensor]] = []

    def scripted(model: Any, split: Any, batch_size: int) -> torch.Tensor:
        kept.append(model.member_state(0))
        return next(scores)

    monkeypatch.setattr(group_runner, "validate_group", scripted)
    group = GroupRunner(resolve_config("ogd", {"epochs": 3, "patience": 1}), etth1, SEEDS, max_steps=1)
    shown: list[str] = []
    group.run_warmup(progress=shown.append)
    reports = group.warmup_reports
    assert [r["epochs_run"] for r in reports] == [2, 3, 3]
    assert [r["best_epoch"] for r in reports] == [1, 3, 3]
    assert reports[0]["val_mse"] == [1.0, 2.0] and "stopped" in shown[2]
    lr = group.config["lr"]
    assert group.optimizer.per_member
    assert group.optimizer.member_lrs(0) == [lr] and group.optimizer.member_lrs(1) == [lr * 0.25]
    batches = len(etth1.train) // group.config["batch_size"]
    steps = [float(s["step"]) for s in (group.optimizer.member_state(m)["head.weight"] for m in range(3))]
    assert steps == [2.0 * batches, 3.0 * batches, 3.0 * batches]
    for name, value in group.model.member_state(0).items():
        assert torch.equal(value, kept[0][name]), name  # epoch 1's parameters (no buffers in ogd)
    group.run_online()  # steps on in the per-member mode


def float64_split(split: SplitWindows, n: int) -> SplitWindows:
    """The first n windows of `split`, model inputs and scaled targets in float64."""
    return dataclasses.replace(split, x=split.x[:n].double(), y=split.y[:n].double(), y_raw=split.y_raw[:n],
                               last_raw=split.last_raw[:n])


def in_float64(runner: GroupRunner | TrialRunner) -> None:
    """A runner built on float64 data made float64 throughout: its model (the optimiser holds the
    same parameters and has no state yet) and its forecast records."""
    runner.model.double()
    preds = runner.records.preds
    runner.records = StepRecords(torch.zeros_like(preds, dtype=torch.float64), runner.records.sq_err,
                                 runner.records.abs_err)


# members 0, 1, 2 of this float64 subset stop warm-up after epochs 2, 3 and 4 (patience 1)
EARLY_STOP_KNOBS = {"epochs": 4, "patience": 1, "lr": 2e-3, "trigger_threshold": 0.0}
EARLY_STOP_SEEDS = [0, 1, 2]
PARAM_TOL = {"rtol": 1e-7, "atol": 1e-9}  # those of tests/models/test_group_model.py (float64)
STAT_TOL = {"rtol": 1e-5, "atol": 1e-5}
GRADIENT_STATISTICS = ("e_fast", "e_slow", "e_square", "q_ema", "memory", "cos_stats", "diag_sums", "diag_range")


def assert_member_matches_solo(group: GroupRunner, member: int, solo: TrialRunner) -> None:
    """Member `member`'s model state, AdamW state (step counts exactly) and learning rates equal
    its solo trial's (tolerances of tests/models/test_group_model.py)."""
    mine, reference = group.model.member_state(member), solo.model.state_dict()
    assert mine.keys() == reference.keys()
    for name, want in reference.items():
        got = mine[name]
        if not want.is_floating_point():
            assert torch.equal(got, want), (member, name)
            continue
        tol = STAT_TOL if name.rsplit(".", 1)[-1] in GRADIENT_STATISTICS else PARAM_TOL
        assert torch.allclose(got, want, **tol), (member, name, float((got - want).abs().max()))
    assert solo.optimizer is not None
    names = {p: n for n, p in solo.model.named_parameters()}
    want_state = {names[p]: s for p, s in solo.optimizer.state.items()}
    got_state = group.optimizer.member_state(member)
    assert got_state.keys() == want_state.keys(), (member, set(got_state) ^ set(want_state))
    for name, want in want_state.items():
        assert float(got_state[name]["step"]) == float(want["step"]), (member, name)
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(got_state[name][key], want[key], rtol=1e-7, atol=1e-16), (member, name, key)
    solo_lrs = {g["lr"] for g in solo.optimizer.param_groups}
    assert len(solo_lrs) == 1 and group.optimizer.member_lrs(member) == [solo_lrs.pop()] * 2, member


def test_members_that_stop_warm_up_at_different_epochs_run_their_solo_trials(etth1: PreparedData,
                                                                             tmp_path: Path) -> None:
    """Float64, real early stopping: every member's state after warm-up (parameters, buffers,
    AdamW moments and step counts, learning rate) and 30 online steps (memory on, triggers
    firing, the adaptive tau stepped per member) against its solo trial; and a checkpoint taken
    in the per-member mode resumes bit for bit."""
    data = dataclasses.replace(etth1, train=float64_split(etth1.train, 192), val=float64_split(etth1.val, 64),
                               test=float64_split(etth1.test, 30))
    config = resolve_config("advanced", EARLY_STOP_KNOBS)
    group = GroupRunner(config, data, EARLY_STOP_SEEDS)
    in_float64(group)
    group.run_warmup()
    assert [r["epochs_run"] for r in group.warmup_reports] == [2, 3, 4]  # members stop at different epochs
    assert group.optimizer.per_member
    group.save(tmp_path / "group.pt")
    solos = []
    for member, seed in enumerate(EARLY_STOP_SEEDS):
        solo = TrialRunner({**config, "seed": seed}, data)
        in_float64(solo)
        solo.run_warmup()
        mine, want = group.warmup_reports[member], solo.warmup_report
        assert (mine["epochs_run"], mine["best_epoch"]) == (want["epochs_run"], want["best_epoch"]), member
        assert mine["val_mse"] == pytest.approx(want["val_mse"], rel=1e-9), member
        assert_member_matches_solo(group, member, solo)
        solos.append(solo)
    assert len({group.optimizer.member_lrs(m)[0] for m in range(3)}) == 3  # each its own rate
    group.run_online()
    for member, solo in enumerate(solos):
        solo.run_online()
        assert torch.allclose(group.records.preds[member], solo.preds, rtol=1e-9, atol=1e-10), (
            member, float((group.records.preds[member] - solo.preds).abs().max()))
        assert_member_matches_solo(group, member, solo)
    stepped_tau = [m for m in range(3) if "adaptive.banks.0.tau_b" in group.optimizer.member_state(m)]
    assert stepped_tau, "some member's memory should have been read (tau stepped in the per-member mode)"
    resumed = GroupRunner(config, data, EARLY_STOP_SEEDS)
    in_float64(resumed)
    resumed.load(tmp_path / "group.pt")
    assert resumed.optimizer.per_member and resumed.step == 0
    in_float64(resumed)  # the float64 records (none written yet)
    resumed.run_online()
    assert torch.equal(resumed.records.preds, group.records.preds)


def test_members_that_stop_together_keep_the_fused_adamw(etth1: PreparedData,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The default epochs (2) and patience (3): nobody stops early, the per-member mode stays off,
    and every step is the inner fused torch AdamW's."""
    group = GroupRunner(resolve_config("fsnet", {}), etth1, SEEDS, max_steps=5)
    group.train = dataclasses.replace(group.train, x=group.train.x[:96], y=group.train.y[:96])
    group.val = dataclasses.replace(group.val, x=group.val.x[:64], y=group.val.y[:64])
    assert group.optimizer.inner.defaults["fused"]

    def refused() -> None:
        raise AssertionError("the per-member step ran")

    monkeypatch.setattr(group.optimizer, "_step_members", refused)
    group.run_warmup()
    group.run_online()
    assert [r["epochs_run"] for r in group.warmup_reports] == [2, 2, 2]
    assert not group.optimizer.per_member and group.optimizer.state_dict()["per_member"] is None


def test_groups_refuse_what_they_cannot_hold(etth1: PreparedData) -> None:
    with pytest.raises(ValueError, match="does not learn"):
        GroupRunner(resolve_config("persistence", {}), etth1, [0, 1])
    with pytest.raises(ValueError, match="must differ"):
        GroupRunner(resolve_config("ogd", {}), etth1, [1, 1])
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
