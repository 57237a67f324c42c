"""The report's claims tested on an experiment: contrasts, intervals, verdicts and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from harness.analysis.claims import CLAIMS, EQUAL, HIGHER, LOWER, evaluate_claims, verdict
from harness.analyze import main as cli_main
from harness.experiment.results import TRIAL_SCHEMA, build_trial_row, write_table_atomic

EXPERIMENT = {"name": "claims", "space": "baselines", "design": "presets", "unit": "innovation", "git_commit": "abc"}
# preset -> mse per seed (mape_scaled = 100 x mse here); er not run
VALUES = {
    "ogd": [1.00, 1.10, 0.90, 1.00],
    "advanced": [0.50, 0.52, 0.48, 0.50],
    "nomem": [0.600, 0.601, 0.599, 0.600],
    "fsnet": [0.6005, 0.6008, 0.5995, 0.6000],
    "fsnet_bug": [0.50, 0.70, 0.55, 0.68],
    "ultra": [0.70, 0.71, 0.69, 0.70],
}


def _write(folder: Path, delay: int, presets: tuple[str, ...] = tuple(VALUES), **settings: object) -> Path:
    """trials.parquet of `presets` at `delay` with VALUES' MSEs; `settings` are further knobs (online_lr=...)."""
    rows = []
    for preset in presets:
        for seed, mse in enumerate(VALUES[preset]):
            knobs = {"dataset": "ETTh1", "features": "S", "seq_len": 48, "pred_len": 12, "feedback_delay": delay,
                     **settings}
            rows.append(build_trial_row(EXPERIMENT, f"{preset}-{seed}", preset, preset, seed, knobs, {},
                                        {"mse": mse, "mape_scaled": 100 * mse}, "TERMINATED", None))
    rows.append(build_trial_row(EXPERIMENT, "ogd-err", "ogd", "ogd", 9, {"feedback_delay": delay}, {},
                                {"mse": 50.0}, "ERROR", "RuntimeError: boom"))  # an ERROR row never counts
    folder.mkdir(parents=True, exist_ok=True)
    write_table_atomic(pa.Table.from_pylist(rows, schema=TRIAL_SCHEMA), folder / "trials.parquet")
    return folder


def _claim(table, name: str, metric: str, variant: str, reference: str) -> dict:
    rows = table[(table["claim"] == name) & (table["metric"] == metric) & (table["variant"] == variant)
                 & (table["reference"] == reference)]
    assert len(rows) == 1
    return rows.iloc[0].to_dict()


def test_each_claim_gets_welchs_interval_in_percent_of_the_reference(tmp_path: Path) -> None:
    from harness.analysis.compare import read_trials

    table = evaluate_claims(read_trials(_write(tmp_path / "e", 0)))
    assert len(table) == len(CLAIMS)
    row = _claim(table, "Advanced vs OGD", "mse", "advanced", "ogd")
    a, b = np.array(VALUES["ogd"]), np.array(VALUES["advanced"])
    ci = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert row["pct"] == pytest.approx(100 * (b.mean() - a.mean()) / a.mean())
    assert (row["pct_low"], row["pct_high"]) == pytest.approx((100 * ci.low / a.mean(), 100 * ci.high / a.mean()))
    assert row["n_variant"] == row["n_reference"] == 4  # the ERROR row is left out
    assert row["verdict"] == "the direction holds; the effect is smaller than the report's"
    assert _claim(table, "Ultra vs Advanced", "mse", "ultra", "advanced")["verdict"] == "does not hold: the opposite"
    assert _claim(table, "Ours: does the memory help?", "mse", "fsnet", "nomem")["verdict"].startswith("holds (no")
    assert _claim(table, "Finding 2", "mape_scaled", "fsnet_bug", "nomem")["verdict"] == "unresolved at 4 seeds"
    assert _claim(table, "T4.1 ranking", "mape_scaled", "er", "ogd")["verdict"] == "not run"


def test_verdicts() -> None:
    assert verdict(LOWER, -70.0, -60.0, -65.7, 8) == "holds, and the report's size lies in the interval"
    assert verdict(LOWER, -40.0, -30.0, -65.7, 8).endswith("smaller than the report's")
    assert verdict(LOWER, -90.0, -80.0, -65.7, 8).endswith("larger than the report's")
    assert verdict(LOWER, -5.0, 3.0, -65.7, 8) == "unresolved at 8 seeds"
    assert verdict(HIGHER, 1.0, 5.0, 3.5, 8) == "holds, and the report's size lies in the interval"
    assert verdict(HIGHER, -5.0, -1.0, 3.5, 8) == "does not hold: the opposite"
    assert verdict(EQUAL, -1.5, 1.9, None, 8).startswith("holds")
    assert verdict(EQUAL, 0.5, 4.0, None, 8) == "does not hold: they differ"
    assert verdict(EQUAL, -3.0, 1.0, None, 8) == "unresolved at 8 seeds"
    assert verdict(LOWER, float("nan"), float("nan"), None, 1).startswith("not estimated")


def test_cli_claims_json_markdown_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zero, twelve = _write(tmp_path / "d0", 0), _write(tmp_path / "d12", 12)
    assert cli_main(["--claims", str(zero), str(twelve), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [e["protocol"] for e in payload["experiments"]] == ["feedback_delay 0", "feedback_delay 12"]
    assert payload["experiments"][1]["experiments"] == [str(twelve)]
    assert cli_main(["--claims", str(zero), str(twelve), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + len(CLAIMS) + 1 + 2 + len(VALUES) and "feedback_delay 12" in lines[0]
    # below the claims: every variant's mean under both protocols, best first under the first protocol
    variants = lines[2 + len(CLAIMS) + 3:]
    assert lines[2 + len(CLAIMS) + 1].startswith("| variant | seeds, feedback_delay 0 |")
    assert variants[0].startswith("| `advanced` | 4 | 0.5000 [") and variants[-1].startswith("| `ogd` | 4 | 1.0000 [")
    figure = tmp_path / "protocols.png"
    assert cli_main(["--claims", str(zero), str(twelve), "--figure", str(figure)]) == 0
    assert figure.stat().st_size > 1000 and f"figure: {figure}" in capsys.readouterr().out
    assert cli_main(["--claims", str(zero), "--figure", str(tmp_path / "one.png")]) == 2  # one protocol only
    assert "draws two protocols" in capsys.readouterr().err
    # two batches of one protocol pool into one column; the same seed of a variant in both is refused
    assert cli_main(["--claims", str(twelve), str(_write(tmp_path / "d12b", 12)), "--json"]) == 2
    assert "is in more than one of the experiments of feedback_delay 12" in capsys.readouterr().err
    assert cli_main(["--claims", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not found" in err


def test_the_protocols_table_holds_each_variants_mean_and_interval(tmp_path: Path) -> None:
    from harness.analysis.claims import pooled_trials, protocols_markdown, protocols_table

    table, name_a, name_b = protocols_table(pooled_trials([_write(tmp_path / "d12", 12), _write(tmp_path / "d0", 0)]))
    assert (name_a, name_b) == ("feedback_delay 12", "feedback_delay 0")
    row = table.set_index("variant").loc["ogd"]
    values = np.array(VALUES["ogd"])
    ci = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert (row["n_a"], row["mean_a"]) == (4, pytest.approx(values.mean()))
    assert (row["ci_low_b"], row["ci_high_b"]) == pytest.approx(ci)
    one_side = table.copy()
    one_side.loc[one_side["variant"] == "ultra", ["n_b", "mean_b"]] = (0, float("nan"))
    shown = protocols_markdown(one_side, name_a, name_b).splitlines()
    assert "| `ultra` | 4 | 0.7000 [" in "\n".join(shown) and any(r.startswith("| `ultra` |") and r.endswith("| 0 |  |")
                                                                     for r in shown)


def test_runs_at_tuned_settings_are_a_protocol_of_their_own(tmp_path: Path) -> None:
    from harness.analysis.claims import pooled_trials

    reference = _write(tmp_path / "ref", 12)
    # each preset at its own tuned rate, in two experiments: they pool into one column beside the reference
    tuned = [_write(tmp_path / "ogd", 12, ("ogd",), online_lr=1e-6),
             _write(tmp_path / "adv", 12, ("advanced",), online_lr=1e-5)]
    with_revin = _write(tmp_path / "revin", 12, ("ogd",), online_lr=1e-6, revin=True)
    pooled = pooled_trials([reference, *tuned, with_revin])
    assert list(pooled) == ["feedback_delay 12", "feedback_delay 12, online_lr set",
                            "feedback_delay 12, online_lr set, revin"]
    names, trials = pooled["feedback_delay 12, online_lr set"]
    assert names == [str(f) for f in tuned] and set(trials["variant"]) == {"ogd", "advanced"}


def test_each_preset_at_its_chosen_settings_pools_into_one_column(tmp_path: Path) -> None:
    from harness.analysis.claims import pooled_trials

    # the reference run holds every preset; ogd's and ultra's chosen rates were run apart
    reference = _write(tmp_path / "ref", 0)
    ogd = _write(tmp_path / "ogd", 0, ("ogd",), online_lr=1e-5)
    ultra = _write(tmp_path / "ultra", 0, ("ultra",), online_lr=1e-4)
    chosen = [f"{reference}@advanced,nomem,fsnet,fsnet_bug", str(ogd), str(ultra)]
    pooled = pooled_trials(chosen, pool_settings=True)
    assert list(pooled) == ["feedback_delay 0, settings as selected"]
    names, trials = pooled["feedback_delay 0, settings as selected"]
    assert names == chosen
    assert sorted(set(trials["variant"])) == ["advanced", "fsnet", "fsnet_bug", "nomem", "ogd", "ultra"]
    assert trials.loc[trials["variant"] == "ultra", "knob_online_lr"].eq(1e-4).all()
    done = trials[trials["status"] == "TERMINATED"]
    assert done["variant"].eq("ogd").sum() == len(VALUES["ogd"])  # the reference's ogd left out
    # without the selection the reference's ogd meets the tuned one: refused, not pooled twice
    with pytest.raises(Exception, match="ogd seed 0 is in more than one"):
        pooled_trials([reference, ogd], pool_settings=True)
    # without --pool-settings the same selection keeps the reference rate and the tuned ones apart
    assert list(pooled_trials(chosen)) == ["feedback_delay 0", "feedback_delay 0, online_lr set"]
    # the selection in its own: only the named variants
    assert set(pooled_trials([f"{reference}@ogd"])["feedback_delay 0"][1]["variant"]) == {"ogd"}


def test_a_bad_selection_or_flag_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reference = _write(tmp_path / "ref", 0)
    assert cli_main(["--claims", f"{reference}@er", "--json"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "has no variant er" in err
    assert cli_main(["--claims", f"{reference}@", "--json"]) == 2
    assert "at least one variant after @" in capsys.readouterr().err
    assert cli_main([str(reference), "--pool-settings"]) == 2
    assert "--pool-settings applies to --claims only" in capsys.readouterr().err
    ultra = _write(tmp_path / "u", 0, ("ultra",), online_lr=1e-4)
    assert cli_main(["--claims", f"{reference}@ogd,advanced", str(ultra), "--pool-settings", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["experiments"]
    assert [e["protocol"] for e in out] == ["feedback_delay 0, settings as selected"]
    row = [c for c in out[0]["claims"] if c["variant"] == "ultra" and c["reference"] == "advanced"][0]
    assert row["n_variant"] == 4 and row["n_reference"] == 4
