"""`python -m harness.bench`: the JSON figures exist and are consistent (no timing assertions)."""

from __future__ import annotations

import json

import pytest

from harness.bench import main


def test_bench_json_has_a_row_per_preset_with_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--presets", "fsnet", "--steps", "5", "--epochs", "0", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["preset"] for r in rows] == ["ogd", "fsnet"]
    for r in rows:
        for key in ("ms_per_step", "steps_per_s", "peak_rss_mb", "ratio_to_ogd", "torch", "threads", "device"):
            assert key in r, key
        assert r["steps"] == 5 and r["ms_per_step"] > 0
        assert r["steps_per_s"] == pytest.approx(1000 / r["ms_per_step"])
        assert r["ms_per_step_median"] == pytest.approx(r["ms_per_step"])  # one 5-step part
    assert rows[0]["ratio_to_ogd"] == 1.0
    assert rows[1]["ratio_to_ogd"] == pytest.approx(rows[1]["ms_per_step"] / rows[0]["ms_per_step"])
    assert rows[0]["controller_products_ms"] == 0.0 and rows[1]["controller_products_ms"] > 0
    assert rows[0]["adapter_floor_ms"] == 0.0 and rows[0]["floor_ratio_to_ogd"] == 1.0
    assert rows[1]["adapter_floor_ms"] > rows[1]["controller_products_ms"]
    assert rows[1]["floor_ratio_to_ogd"] == pytest.approx(1 + rows[1]["adapter_floor_ms"] / rows[0]["ms_per_step"])


def test_bench_refuses_an_unknown_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--presets", "fsnet9", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fsnet9" in err


def test_bench_refuses_a_stretch_longer_than_the_stream(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--presets", "persistence", "--steps", "20000", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "--steps 20000" in captured.err


def test_bench_interleaves_the_presets_in_stretches(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Each preset runs STRETCH steps, then the next one does; every timed step is counted once."""
    from harness.online.runner import TrialRunner
    from harness.perf import timing

    monkeypatch.setattr(timing, "STRETCH", 3)
    turns: list[tuple[str, int | None]] = []
    run_online = TrialRunner.run_online

    def recording(self: TrialRunner, steps: int | None = None) -> int:
        turns.append((self.config["preset"], steps))
        return run_online(self, steps)

    monkeypatch.setattr(TrialRunner, "run_online", recording)
    assert main(["--presets", "persistence", "--steps", "7", "--epochs", "0", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    untimed = [("ogd", timing.UNTIMED_STEPS), ("persistence", timing.UNTIMED_STEPS)]
    timed = [("ogd", 3), ("persistence", 3), ("ogd", 3), ("persistence", 3), ("ogd", 1), ("persistence", 1)]
    assert turns == untimed + timed
    assert [r["steps"] for r in rows] == [7, 7]


@pytest.mark.parametrize("preset", ["fsnet", "ultra"])
def test_floor_counts_exactly_what_the_adaptive_layers_add(preset: str) -> None:
    """The AdamW part of the floor covers the parameters a plain (`ogd`) network does not have."""
    from fsnet_models.factory import build_model
    from harness.perf.floor import added_parameter_values, gradient_ema_values

    plain, adaptive = build_model("ogd"), build_model(preset)
    total = sum(p.numel() for p in adaptive.parameters())
    assert added_parameter_values(adaptive) == total - sum(p.numel() for p in plain.parameters())
    assert added_parameter_values(plain) == 0 and gradient_ema_values(plain) == 0
    per_ema = sum(bank.weight.numel() for bank in adaptive.adaptive.banks)  # one EMA value per live weight
    assert gradient_ema_values(adaptive) == per_ema * (3 if preset == "ultra" else 2)


def test_group_sizes_report_member_steps_against_the_solo_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--group-sizes", "2", "1", "--presets", "ogd", "--steps", "5", "--epochs", "0", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["path"], r["group_size"]) for r in rows] == [("solo", 1), ("group", 1), ("group", 2)]
    for r in rows:
        assert r["preset"] == "ogd" and r["ms_per_member_step"] > 0
        assert r["member_steps_per_s"] == pytest.approx(1000 / r["ms_per_member_step"])
        assert r["ms_per_member_step"] == pytest.approx(r["ms_per_step"] / r["group_size"])
    assert rows[0]["ratio_to_solo"] == 1.0
    assert main(["--group-sizes", "0"]) == 2
    assert main(["--group-sizes", "2", "--presets", "persistence"]) == 2
