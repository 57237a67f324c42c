"""Ablations on Ray Tune: `python -m harness.ablate --space ultra [--design loo] [--seeds K] ...`.

Plans every trial of a design over a search space (see harness.designs and search_spaces), checks
every config and the data before Ray starts, writes <results>/<experiment>/experiment.json, runs
the trials on Ray Tune (fault tolerant: checkpoints, retries, --resume), writes trials.parquet and
curves.parquet as each trial finishes, and ends with a ranking table and the analysis
(harness.analysis). With --wandb offline|online (default: online when W&B credentials are configured,
else offline) every trial is a W&B run and the analysis one more (harness.wandb_logging);
--emit-sweep writes a W&B sweep configuration instead (harness.sweeps). Bad input exits with status 2
and one line on stderr, before anything is written.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from data import DataError
from fsnet_models.knobs import KnobError, parse_knob_value
from harness.cli import OneLineParser, fail, interrupted
from harness.designs import DESIGNS, GRID_DESIGNS, UNITS, optuna_base, plan_trials
from harness.experiment import (
    EXPERIMENT_FILE,
    experiment_folder,
    git_commit,
    package_versions,
    read_experiment,
    write_experiment,
)
from harness.trial import load_data, parse_sets
from search_spaces.spaces import SPACES, get_space

# Flags that define an experiment; --resume takes them from experiment.json instead.
_DEFINING = ("space", "design", "unit", "seeds", "samples", "multi_objective", "scheduler", "max_steps", "epochs",
             "sets", "data", "cpus_per_trial", "gpus_per_trial", "report_every", "checkpoint_every", "max_failures",
             "storage", "limit")
_DEFAULTS = {"design": "loo", "unit": "innovation", "seeds": 3, "samples": 20, "multi_objective": False,
             "scheduler": "none", "epochs": None, "sets": [], "data": None, "cpus_per_trial": 1.0,
             "report_every": 500, "checkpoint_every": 2000, "max_failures": 3, "limit": None, "max_steps": None}
PRESETS_DESIGN = "presets"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")
# URI schemes pyarrow.fs.FileSystem.from_uri resolves (what Ray Tune's storage_path goes through).
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (experiment-defining flags default to None: see _DEFAULTS)."""
    p = OneLineParser(prog="python -m harness.ablate", description=__doc__.split("\n")[0])
    p.add_argument("--space", default=None, help=f"one of {', '.join(SPACES)}")
    p.add_argument("--design", default=None, help=f"one of {', '.join(DESIGNS)} (default loo)")
    p.add_argument("--unit", default=None, help=f"what a design switches: {' or '.join(UNITS)} (default innovation)")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..K-1 per configuration (default 3)")
    p.add_argument("--samples", type=int, default=None, help="optuna: configurations to sample (default 20)")
    p.add_argument("--multi-objective", action="store_const", const=True, default=None,
                   help="optuna: minimise mse and trial seconds together")
    p.add_argument("--scheduler", default=None, choices=("none", "asha"), help="optuna: asha stops bad trials early")
    p.add_argument("--max-steps", type=int, default=None, help="online steps per trial (default: the whole stream)")
    p.add_argument("--epochs", type=int, default=None, help="warm-up epochs (presets that train)")
    p.add_argument("--set", dest="sets", action="append", default=None, metavar="KNOB=VALUE",
                   help="fix a knob for every trial (repeatable)")
    p.add_argument("--data", default=None, help="CSV file or folder (default: $FSNET_DATA_DIR, cache, download)")
    p.add_argument("--results", default="results", help="results folder (default results)")
    p.add_argument("--experiment", default=None, help="experiment name (default <space>-<design>-<UTC time>)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted --experiment NAME")
    p.add_argument("--address", default=None, help="join the Ray cluster at ADDR (default: start a local one)")
    p.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs per trial, fractions ok (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="GPUs per trial, fractions ok (default 0.25 when CUDA is visible, else 0)")
    p.add_argument("--report-every", type=int, default=None, help="online steps between reports (default 500)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="online steps between checkpoints "
                   "(default 2000)")
    p.add_argument("--max-failures", type=int, default=None, help="retries of a failed trial (default 3)")
    p.add_argument("--wandb", default=None, choices=("off", "offline", "online"),
                   help="Weights & Biases: a run per trial plus an analysis run (default online when W&B "
                   "credentials are configured, else offline)")
    p.add_argument("--wandb-project", default=None, help="W&B project (default $WANDB_PROJECT, else fsnet-harness)")
    p.add_argument("--emit-sweep", default=None, metavar="PATH",
                   help="write a W&B sweep configuration of this space and design to PATH and exit")
    p.add_argument("--storage", default=None, help="Ray storage_path, path or URI (default <results>/ray)")
    p.add_argument("--limit", type=int, default=None, help="run only the first N planned trials (smoke runs)")
    p.add_argument("--dry-run", action="store_true", help="print the planned trials and exit")
    return p


def _check_numbers(s: dict[str, Any]) -> None:
    """Range checks of the numeric flags (KnobError, one line)."""
    for flag, low in (("seeds", 1), ("samples", 1), ("max_steps", 1), ("report_every", 1), ("checkpoint_every", 1),
                      ("max_failures", 0), ("limit", 1)):
        if s.get(flag) is not None and s[flag] < low:
            raise KnobError(f"--{flag.replace('_', '-')} must be >= {low}, got {s[flag]}")
    cpus, gpus = s["resources"]["cpus_per_trial"], s["resources"]["gpus_per_trial"]
    if not (math.isfinite(cpus) and cpus > 0):
        raise KnobError(f"--cpus-per-trial must be > 0, got {cpus}")
    if not (math.isfinite(gpus) and gpus >= 0):
        raise KnobError(f"--gpus-per-trial must be >= 0, got {gpus}")


def check_storage(storage: str) -> None:
    """--storage is a local path or a URI Ray Tune and pyarrow understand (KnobError otherwise; no network)."""
    if "://" not in storage:
        return
    scheme, _, rest = storage.partition("://")
    if scheme.lower() not in STORAGE_SCHEMES:
        raise KnobError(f"--storage {storage!r}: unsupported URI scheme '{scheme}'; use a path or one of "
                        f"{', '.join(f'{x}://' for x in STORAGE_SCHEMES)}")
    if not rest.strip("/"):
        raise KnobError(f"--storage {storage!r}: the URI names no bucket or path")


def cuda_devices() -> int:
    """Number of CUDA devices torch sees here (harness.tuning, imported late: Ray is slow to import)."""
    from harness.tuning import cuda_devices as count

    return count()


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """A new experiment's settings: flags, the validated plan, innovations, references, provenance."""
    if args.space is None:
        raise KnobError("--space is required (or --resume --experiment NAME)")
    values = {k: getattr(args, k) if getattr(args, k) is not None else _DEFAULTS.get(k) for k in _DEFINING}
    space = get_space(values["space"])
    if values["design"] not in DESIGNS:
        raise KnobError(f"unknown design '{values['design']}'; known designs: {', '.join(DESIGNS)}")
    if values["unit"] not in UNITS:
        raise KnobError(f"unknown unit '{values['unit']}'; known units: {', '.join(UNITS)}")
    gpus = values["gpus_per_trial"]
    if gpus is None:
        gpus = 0.25 if cuda_devices() else 0.0
    # A space of plain presets has one design whatever --design says: every preset ("presets").
    design = PRESETS_DESIGN if space.is_plain and values["design"] in GRID_DESIGNS else values["design"]
    name = args.experiment or f"{space.name}-{design}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    s: dict[str, Any] = {
        "name": name, "experiment": name, "created_at": datetime.now(timezone.utc).isoformat(),
        "space": space.name, "design": design, "requested_design": values["design"], "unit": values["unit"],
        "plain": space.is_plain, "seeds": values["seeds"],
        "max_steps": values["max_steps"], "epochs": values["epochs"], "samples": None, "multi_objective": False,
        "scheduler": None, "limit": values["limit"], "report_every": values["report_every"],
        "checkpoint_every": values["checkpoint_every"], "max_failures": values["max_failures"],
        "resources": {"cpus_per_trial": float(values["cpus_per_trial"]), "gpus_per_trial": float(gpus)},
        "storage": values["storage"] or str(Path(args.results).expanduser().absolute() / "ray"),
        "data_path": str(Path(values["data"]).expanduser().absolute()) if values["data"] else None,
        "wandb": args.wandb, "base_preset": space.base_preset, "full_preset": space.full_preset,
        "innovations": list(space.innovations), "plain_presets": list(space.presets),
    }
    _check_numbers({**s, "samples": values["samples"]})
    check_storage(s["storage"])
    sets = parse_sets(values["sets"])
    soft = {} if values["epochs"] is None else {"epochs": parse_knob_value("epochs", str(values["epochs"]))}
    s["sets"] = sets
    if values["design"] in GRID_DESIGNS:
        if values["multi_objective"] or values["scheduler"] != "none":
            raise KnobError("--multi-objective and --scheduler apply to --design optuna only")
        planned = [t.to_json() for t in plan_trials(space, values["design"], values["unit"], values["seeds"], sets,
                                                    soft)]
        s["planned_trials"] = planned[:values["limit"]] if values["limit"] else planned
        s["n_trials"] = len(s["planned_trials"])
        s["reference_variant"] = {"loo": space.full_preset, "oat": space.base_preset}.get(values["design"])
        if space.is_plain:
            s["reference_variant"] = None
    else:
        if values["limit"]:
            raise KnobError("--limit applies to the grid designs; use --samples with --design optuna")
        preset, overrides = optuna_base(space, sets, soft)
        s.update(samples=values["samples"], multi_objective=bool(values["multi_objective"]),
                 scheduler=None if values["scheduler"] == "none" else values["scheduler"], planned_trials=[],
                 n_trials=values["samples"] * values["seeds"], reference_variant=None,
                 optuna={"preset": preset, "overrides": overrides, "continuous": [
                     {"knob": c.knob, "low": c.bounds()[0], "high": c.bounds()[1], "log": c.log,
                      "at_least": c.at_least} for c in space.continuous]})
    variants = {t["variant"] for t in s["planned_trials"]}
    s["baseline_variant"] = "ogd" if "ogd" in variants else None
    return s


def check_data(s: dict[str, Any]) -> None:
    """Prepare each distinct dataset of the plan once (DataError/ValueError when unusable); sets stream_steps."""
    from fsnet_models.presets import resolve_config

    configs = [t["config"] for t in s["planned_trials"]]
    if not configs:
        configs = [resolve_config(s["optuna"]["preset"], s["optuna"]["overrides"])]
    keys = {(c["dataset"], c["features"], c["target"], c["seq_len"], c["pred_len"]) for c in configs}
    lengths = [len(load_data(dict(zip(("dataset", "features", "target", "seq_len", "pred_len"), key, strict=True)),
                             s["data_path"]).test) for key in sorted(keys)]
    stream = min(lengths)
    s["stream_steps"] = min(stream, s["max_steps"]) if s["max_steps"] else stream


def describe(s: dict[str, Any]) -> str:
    """The plan as text (--dry-run)."""
    head = (f"experiment {s['name']}: space {s['space']}, design {s['design']}, unit {s['unit']}, "
            f"{s['n_trials']} trials, seeds {s['seeds']}, steps {s['stream_steps']}")
    lines = [head]
    for t in s["planned_trials"]:
        shown = {k: v for k, v in t["overrides"].items() if k != "seed"}
        lines.append(f"{t['plan_id']:4d}  {t['variant']:<40s} seed {t['seed']}  preset {t['preset']}  {shown}")
    if s["design"] == "optuna":
        lines.append(f"optuna on preset {s['optuna']['preset']} {s['optuna']['overrides']}: {s['samples']} samples x "
                     f"{s['seeds']} seeds, multi-objective {s['multi_objective']}, scheduler {s['scheduler']}")
        lines += [f"  {c['knob']}: {c['low']:g} .. {c['high']:g}{' (log)' if c['log'] else ''}"
                  + (f", >= {c['at_least']}" if c["at_least"] else "") for c in s["optuna"]["continuous"]]
    return "\n".join(lines)


def prepare(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Validate everything and return (settings, experiment folder); nothing is written here."""
    if args.experiment is not None and not _NAME.match(args.experiment):
        raise KnobError(f"--experiment {args.experiment!r}: use letters, digits and . _ = + - only")
    if args.resume:
        if args.experiment is None:
            raise KnobError("--resume needs --experiment NAME")
        given = [k for k in _DEFINING if getattr(args, k) is not None]
        if given:
            raise KnobError(f"--resume takes the settings from {EXPERIMENT_FILE}; drop --{given[0].replace('_', '-')}")
        folder = experiment_folder(args.results, args.experiment)
        s = read_experiment(folder)
        s["wandb"] = args.wandb
        check_data(s)
        return s, folder
    s = settings_from_args(args)
    folder = experiment_folder(args.results, s["name"])
    if (folder / EXPERIMENT_FILE).exists():
        raise KnobError(f"experiment '{s['name']}' already exists in {folder.parent}; use --resume or another name")
    check_data(s)
    if s["resources"]["gpus_per_trial"] > 0 and not args.address and not cuda_devices():
        raise KnobError("--gpus-per-trial > 0 but no CUDA device is visible here")
    return s, folder


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    if args.emit_sweep:
        from harness.sweeps import emit_sweep

        return emit_sweep(args)
    if args.wandb is None:
        from harness.wandb_logging import default_mode

        args.wandb = default_mode()
    try:
        settings, folder = prepare(args)
    except (KnobError, DataError, ValueError) as exc:
        return fail(exc)
    except KeyboardInterrupt:
        return interrupted()
    if args.dry_run:
        try:
            print(describe(settings), flush=True)
        except BrokenPipeError:  # e.g. piped into `head`
            sys.stderr.close()
        return 0
    from harness.wandb_logging import resolve_project

    settings["wandb_project"] = resolve_project(args.wandb_project)
    if not args.resume:
        settings["git_commit"] = git_commit()
        settings["package_versions"] = package_versions()
        write_experiment(folder, settings)
    from harness.driver import run_experiment

    return run_experiment(settings, folder, resume=args.resume, address=args.address)


if __name__ == "__main__":
    sys.exit(main())
