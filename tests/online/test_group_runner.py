"""Trial groups in the protocol (harness.online.group_runner): whole short trials, grouped against solo.

Float32, warm-up included, so the comparison is to a stated tolerance: forecasts within 1e-4
(absolute, on scaled data of unit variance) and each member's stream MSE within 1e-4 relative of
its solo trial. Over longer horizons the FSNet family drifts apart at the rounding level (the
trajectories are chaotic; a rounding change acts like a new seed), which is why the FSNet presets
are compared over 40 steps here and statistically over the whole stream in docs/benchmarks.md.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from data import PreparedData
from fsnet_models import resolve_config
from harness.online import group_runner
from harness.online.group_runner import GroupRunner
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


def test_members_that_would_stop_at_different_epochs_are_refused(etth1: PreparedData,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    scores = iter([torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64),
                   torch.tensor([2.0, 0.5, 0.5], dtype=torch.float64)])
    monkeypatch.setattr(group_runner, "validate_group", lambda *args: next(scores))
    group = GroupRunner(resolve_config("ogd", {"epochs": 3, "patience": 1}), etth1, SEEDS, max_steps=1)
    with pytest.raises(ValueError, match=r"members \[0\] stop warm-up at epoch 2"):
        group.run_warmup()


def test_groups_refuse_what_they_cannot_hold(etth1: PreparedData) -> None:
    with pytest.raises(ValueError, match="does not learn"):
        GroupRunner(resolve_config("persistence", {}), etth1, [0, 1])
    with pytest.raises(ValueError, match="must differ"):
        GroupRunner(resolve_config("ogd", {}), etth1, [1, 1])
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
