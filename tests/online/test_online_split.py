"""The `online_split` knob: the online phase over the validation windows (for tuning without the test stream)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data import PreparedData
from fsnet_models.knobs import KnobError
from fsnet_models.presets import resolve_config
from harness import ablate
from harness.online.group_runner import GroupRunner
from harness.online.runner import TrialRunner


def test_the_online_phase_runs_over_the_validation_windows_when_asked(etth1: PreparedData, one_thread: None) -> None:
    val = TrialRunner(resolve_config("ogd", {"epochs": 0, "online_split": "val"}), etth1)
    test = TrialRunner(resolve_config("ogd", {"epochs": 0}), etth1)
    assert val.n_steps == len(etth1.val) and test.n_steps == len(etth1.test) and val.n_steps != test.n_steps
    assert torch.equal(val.stream.y, etth1.val.y) and torch.equal(test.stream.y, etth1.test.y)
    short = TrialRunner(resolve_config("ogd", {"epochs": 0, "online_split": "val"}), etth1, max_steps=30)
    short.run_warmup()
    short.run_online()
    assert short.step == 30 and short.result()["protocol"]["stream_steps"] == len(etth1.val)
    persistence = TrialRunner(resolve_config("persistence", {"online_split": "val"}), etth1, max_steps=30)
    persistence.run_online()
    # errors in original units are against the validation targets (mape: mean |p - t| / |t|)
    pred_raw = etth1.to_original(persistence.preds[:30]).double()
    true_raw = etth1.val.y_raw[:30].double()
    assert persistence.metrics()["mape"] == pytest.approx(float(((pred_raw - true_raw).abs() / true_raw.abs()).mean()),
                                                          rel=1e-9)
    group = GroupRunner(resolve_config("ogd", {"epochs": 0, "online_split": "val"}), etth1, [0, 1], max_steps=30)
    assert group.n_steps == 30 and torch.equal(group.stream.y, etth1.val.y)


def test_online_split_takes_test_or_val_only() -> None:
    with pytest.raises(KnobError, match="online_split"):
        resolve_config("ogd", {"online_split": "train"})


def test_an_ablation_on_the_validation_stream_plans_its_length(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                etth1: PreparedData) -> None:
    status = ablate.main(["--space", "baselines", "--seeds", "1", "--set", "online_split=val", "--dry-run",
                          "--results", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0 and f"steps {len(etth1.val)}" in out
