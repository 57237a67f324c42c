"""Trial groups in ablations: packing seeds into groups, --group-size validation, the group checkpoint,
and one Ray Tune run whose groups give one row, curve and W&B run per member, survive a worker crash,
and match a GroupRunner of the same seeds run here, bit for bit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from data import PreparedData
from fsnet_models.knobs import KnobError
from fsnet_models.presets import resolve_config
from harness import ablate
from harness.experiment.groups import AUTO_GROUP_SIZE, auto_group_size, pack_groups, parse_group_size
from harness.online.group_runner import GroupRunner
from harness.online.runner import CheckpointError

ROOT = Path(__file__).resolve().parents[2]


def _planned(variants: dict[str, str], seeds: int) -> list[dict]:
    """Planned trials in plan_trials' order (seed-major), as experiment.json holds them."""
    out = []
    for seed in range(seeds):
        for variant, preset in variants.items():
            out.append({"plan_id": len(out), "variant": variant, "seed": seed, "preset": preset,
                        "overrides": {"seed": seed}})
    return out


def test_seeds_pack_into_groups_per_configuration_in_order() -> None:
    groups = pack_groups(_planned({"fsnet": "fsnet", "ogd": "ogd"}, 5), 2)
    assert [(g["variant"], g["seeds"]) for g in groups] == [
        ("fsnet", [0, 1]), ("ogd", [0, 1]), ("fsnet", [2, 3]), ("ogd", [2, 3]), ("fsnet", [4]), ("ogd", [4])]
    assert all(g["seed"] == g["seeds"][0] and g["overrides"]["seed"] == g["seeds"][0] for g in groups)
    assert sum(len(g["seeds"]) for g in groups) == 10


def test_a_preset_that_does_not_learn_runs_alone_and_auto_reads_the_measured_table() -> None:
    groups = pack_groups(_planned({"persistence": "persistence", "ultra": "ultra"}, 3), "auto")
    assert [g["seeds"] for g in groups if g["variant"] == "persistence"] == [[0], [1], [2]]
    assert [g["seeds"] for g in groups if g["variant"] == "ultra"] == [[0, 1, 2]]
    assert auto_group_size("ultra") == AUTO_GROUP_SIZE["cpu"]["ultra"]
    assert auto_group_size("advanced") == AUTO_GROUP_SIZE["cpu"]["ultra"]  # closest measured preset
    assert parse_group_size("4") == 4 and parse_group_size("auto") == "auto"
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(KnobError, match="--group-size"):
            parse_group_size(bad)


@pytest.mark.parametrize("argv, message", [
    (["--space", "advanced", "--group-size", "0"], "--group-size must be an integer >= 1"),
    (["--space", "advanced", "--group-size", "many"], "--group-size must be an integer >= 1 or 'auto'"),
    (["--space", "hparams", "--design", "optuna", "--group-size", "2"], "--group-size applies to the grid designs"),
])
def test_bad_group_size_exits_2_with_one_line(argv: list[str], message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    status = ablate.main([*argv, "--dry-run", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_a_group_resumed_from_its_checkpoint_ends_with_the_same_bits(etth1: PreparedData, one_thread: None,
                                                                     tmp_path: Path) -> None:
    config = resolve_config("fsnet", {"epochs": 1, "seed": 0})
    straight = GroupRunner(config, etth1, [3, 5], max_steps=30)
    straight.run_warmup()
    straight.run_online()
    interrupted = GroupRunner(config, etth1, [3, 5], max_steps=30)
    interrupted.run_warmup()
    interrupted.run_online(13)
    interrupted.save(tmp_path / "group.pt")
    resumed = GroupRunner(config, etth1, [3, 5], max_steps=30)
    resumed.load(tmp_path / "group.pt")
    assert resumed.step == 13 and resumed.warmed_up
    resumed.run_online()
    for name in ("preds", "sq_err", "abs_err"):
        assert torch.equal(getattr(resumed.records, name), getattr(straight.records, name)), name
    assert [r["mse"] for r in resumed.results()] == [r["mse"] for r in straight.results()]
    other = GroupRunner(config, etth1, [3, 6], max_steps=30)
    with pytest.raises(CheckpointError, match="different group"):
        other.load(tmp_path / "group.pt")


@pytest.mark.integration
def test_an_ablation_in_groups_writes_a_row_curve_and_run_per_member(etth1: PreparedData, one_thread: None,
                                                                      tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.wandb_logging.offline import offline_runs

    marker, results = tmp_path / "crashed", tmp_path / "r"
    monkeypatch.setenv("FSNET_TEST_CRASH_ONCE", f"{marker}:20")
    monkeypatch.setenv("FSNET_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    argv = ["--space", "advanced", "--variants", "advanced,advanced -chunk_by", "--seeds", "3", "--group-size", "2",
            "--max-steps", "40", "--epochs", "0",
            "--report-every", "20", "--checkpoint-every", "20", "--wandb", "offline", "--results", str(results),
            "--experiment", "groups"]
    status = ablate.main(argv)
    out, err = capsys.readouterr()
    assert status == 0, err[-2000:]
    assert marker.exists() and "[retry]" in out  # a group's worker crashed and resumed from its checkpoint
    trials = pq.read_table(results / "groups" / "trials.parquet").to_pandas()
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert not trials.duplicated(["variant", "seed"]).any() and set(trials["status"]) == {"TERMINATED"}
    paired = trials[trials["group_size"] == 2]
    assert len(paired) == 4 and set(trials.loc[trials["group_size"] == 1, "seed"]) == {2}
    for _, members in paired.groupby("group_id"):
        assert sorted(members["member_index"]) == [0, 1] and sorted(members["seed"]) == [0, 1]
        assert set(members["trial_id"]) == {f"{members['group_id'].iloc[0]}_m{i}" for i in (0, 1)}
    curves = pq.read_table(results / "groups" / "curves.parquet").to_pandas()
    assert set(curves["trial_id"]) == set(trials["trial_id"])
    assert (curves.groupby("trial_id")["step"].max() == 40).all()
    member_runs = {r.run_id for r in offline_runs(results / "groups" / "wandb")}
    assert set(paired["trial_id"]) <= member_runs

    # each member computes what the same group computes here (same code, one thread): bit for bit
    row = paired[paired["variant"] == "advanced"].sort_values("member_index")
    config = resolve_config("advanced", {"epochs": 0, "seed": 0})
    here = GroupRunner(config, etth1, [0, 1], max_steps=40)
    here.run_warmup()
    here.run_online()
    assert [r["mse"] for r in here.results()] == list(row["mse"])
    assert all(math.isfinite(v) for v in trials["mse"])

    # --resume of the finished experiment reruns nothing and keeps every row
    status = ablate.main(["--resume", "--experiment", "groups", "--results", str(results)])
    out, err = capsys.readouterr()
    assert status == 0, err[-2000:]
    again = pq.read_table(results / "groups" / "trials.parquet").to_pandas()
    assert again.sort_values("trial_id")["ended_at"].tolist() == trials.sort_values("trial_id")["ended_at"].tolist()
    assert ": mse " not in out  # no trial ran (or was recorded) again
    assert json.loads((results / "groups" / "experiment.json").read_text())["group_size"] == 2
