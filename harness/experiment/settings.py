"""An ablation's settings: the flags that define it (each default written once), validated into the plan.

`settings_from_args` turns parsed `harness.ablate` flags into the settings dict that experiment.json
holds (the same dict --resume reads back): the flags, the validated trial plan, innovations,
references and storage. `prepare` adds the data check and the resume logic; nothing is written here.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fsnet_models.knobs import KnobError, parse_knob_value
from harness.cli import parse_sets
from harness.experiment.designs import DESIGNS, GRID_DESIGNS, UNITS, optuna_base, plan_trials, units
from harness.experiment.files import EXPERIMENT_FILE, experiment_folder, read_experiment
from harness.experiment.groups import parse_group_size
from harness.online.runtime import cuda_devices
from harness.online.trial_data import data_key, load_data, online_split
from search_spaces.spaces import get_space


@dataclass(frozen=True)
class ExperimentFlags:
    """The flags that define an experiment, with their defaults (--resume takes them from experiment.json).

    `gpus_per_trial` None means 0.25 when CUDA is visible, else 0; `storage` None means <results>/ray.
    """

    space: str | None = None
    design: str = "loo"
    unit: str = "innovation"
    seeds: int = 3
    samples: int = 20
    multi_objective: bool = False
    scheduler: str = "none"
    max_steps: int | None = None
    epochs: int | None = None
    sets: tuple[str, ...] = ()
    data: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None
    report_every: int = 500
    checkpoint_every: int = 2000
    max_failures: int = 3
    storage: str | None = None
    limit: int | None = None
    until_resolved: bool = False
    precision: float = 0.02
    max_seeds: int = 16
    seeds_per_round: int = 4
    alpha: float = 0.05
    group_size: int | str = 1
    variants: str | None = None


DEFAULTS = ExperimentFlags()
DEFINING = tuple(f.name for f in fields(ExperimentFlags))  # flags --resume refuses
GPUS_WITH_CUDA = 0.25
PRESETS_DESIGN = "presets"
SEQUENTIAL_FLAGS = ("precision", "max_seeds", "seeds_per_round", "alpha")  # --until-resolved only
SPENDING = "obrien-fleming"  # harness.analysis.sequential's default alpha-spending function
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")
# URI schemes pyarrow.fs.FileSystem.from_uri resolves (what Ray Tune's storage_path goes through).
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


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


def _check_sequential(args: argparse.Namespace, values: dict[str, Any], design: str) -> None:
    """--until-resolved and its flags: where they apply and their ranges (KnobError, one line)."""
    if not values["until_resolved"]:
        given = [k for k in SEQUENTIAL_FLAGS if getattr(args, k, None) is not None]
        if given:
            raise KnobError(f"--{given[0].replace('_', '-')} applies to --until-resolved only")
        return
    if design not in GRID_DESIGNS:
        raise KnobError(f"--until-resolved runs the {', '.join(GRID_DESIGNS)} designs, not design '{design}'")
    if getattr(args, "seeds", None) is not None:
        raise KnobError("--until-resolved runs seeds in rounds up to --max-seeds; drop --seeds")
    if values["limit"]:
        raise KnobError("--limit cannot be combined with --until-resolved: every round needs its configurations")
    for flag in ("precision", "alpha"):
        v = values[flag]
        if not (math.isfinite(v) and 0 < v < 1):
            raise KnobError(f"--{flag} must be in (0, 1), got {v}")
    if values["seeds_per_round"] < 2:
        raise KnobError(f"--seeds-per-round must be >= 2 (a paired test needs two seeds), got "
                        f"{values['seeds_per_round']}")
    if values["max_seeds"] < values["seeds_per_round"]:
        raise KnobError(f"--max-seeds must be >= --seeds-per-round ({values['seeds_per_round']}), got "
                        f"{values['max_seeds']}")


def _sequential_settings(space: Any, design: str, unit: str, values: dict[str, Any],
                         planned: list[dict[str, Any]]) -> dict[str, Any]:
    """experiment.json's `sequential`: the rule's settings, the design's units, every configuration's on/off
    cell (read from its resolved config) and the reference the percentages are of."""
    parts = units(space, unit)
    cells: dict[str, dict[str, bool]] = {}
    for t in planned:
        if t["variant"] not in cells:
            cells[t["variant"]] = {u.name: all(t["config"].get(k) == v for k, v in u.on.items()) for u in parts}
    if len({tuple(c.values()) for c in cells.values()}) != len(cells):
        raise KnobError(f"--until-resolved: two configurations of design '{design}' switch the same units")
    return {"precision": float(values["precision"]), "max_seeds": int(values["max_seeds"]),
            "seeds_per_round": int(values["seeds_per_round"]), "alpha": float(values["alpha"]), "spending": SPENDING,
            "reference": space.base_preset if design == "oat" else space.full_preset,
            "units": [u.name for u in parts], "cells": cells}


def only_variants(planned: list[dict[str, Any]], names: str, until_resolved: bool) -> list[dict[str, Any]]:
    """The planned trials of the --variants named (comma-separated); KnobError names an unknown one."""
    if until_resolved:
        raise KnobError("--variants cannot be combined with --until-resolved: its effects need every configuration")
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = list(dict.fromkeys(t["variant"] for t in planned))
    unknown = [n for n in wanted if n not in known]
    if unknown or not wanted:
        raise KnobError(f"--variants: unknown variant {unknown[0] if unknown else names!r}; this design has: "
                        f"{', '.join(known)}")
    return [t for t in planned if t["variant"] in wanted]


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


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """A new experiment's settings: flags, the validated plan, innovations, references, provenance."""
    if args.space is None:
        raise KnobError("--space is required (or --resume --experiment NAME)")
    values = {k: getattr(args, k) if getattr(args, k, None) is not None else getattr(DEFAULTS, k) for k in DEFINING}
    space = get_space(values["space"])
    if values["design"] not in DESIGNS:
        raise KnobError(f"unknown design '{values['design']}'; known designs: {', '.join(DESIGNS)}")
    if values["unit"] not in UNITS:
        raise KnobError(f"unknown unit '{values['unit']}'; known units: {', '.join(UNITS)}")
    gpus = values["gpus_per_trial"]
    if gpus is None:
        gpus = GPUS_WITH_CUDA if cuda_devices() else 0.0
    # A space of plain presets has one design whatever --design says: every preset ("presets").
    design = PRESETS_DESIGN if space.is_plain and values["design"] in GRID_DESIGNS else values["design"]
    _check_sequential(args, values, design)
    if values["until_resolved"]:  # the plan holds every seed a round may run: the worst case
        values["seeds"] = values["max_seeds"]
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
        "group_size": parse_group_size(values["group_size"]),
    }
    _check_numbers({**s, "samples": values["samples"]})
    check_storage(s["storage"])
    sets = parse_sets(list(values["sets"]))
    soft = {} if values["epochs"] is None else {"epochs": parse_knob_value("epochs", str(values["epochs"]))}
    s["sets"] = sets
    if values["design"] in GRID_DESIGNS:
        if values["multi_objective"] or values["scheduler"] != "none":
            raise KnobError("--multi-objective and --scheduler apply to --design optuna only")
        planned = [t.to_json() for t in plan_trials(space, values["design"], values["unit"], values["seeds"], sets,
                                                    soft)]
        if values["variants"]:
            planned = only_variants(planned, values["variants"], bool(values["until_resolved"]))
            s["variants"] = sorted({t["variant"] for t in planned})
        s["planned_trials"] = planned[:values["limit"]] if values["limit"] else planned
        s["n_trials"] = len(s["planned_trials"])
        s["reference_variant"] = {"loo": space.full_preset, "oat": space.base_preset}.get(values["design"])
        if space.is_plain:
            s["reference_variant"] = None
        if values["until_resolved"]:
            s["sequential"] = _sequential_settings(space, design, values["unit"], values, planned)
    else:
        if values["limit"]:
            raise KnobError("--limit applies to the grid designs; use --samples with --design optuna")
        if s["group_size"] != 1:
            raise KnobError("--group-size applies to the grid designs (optuna suggests one configuration per trial)")
        if values["variants"]:
            raise KnobError("--variants applies to the grid designs (optuna samples its configurations)")
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
    keys = {data_key(c): c for c in configs}
    lengths = [len(online_split(load_data(keys[key], s["data_path"]), keys[key])) for key in sorted(keys)]
    stream = min(lengths)
    s["stream_steps"] = min(stream, s["max_steps"]) if s["max_steps"] else stream


def describe(s: dict[str, Any]) -> str:
    """The plan as text (--dry-run)."""
    head = (f"experiment {s['name']}: space {s['space']}, design {s['design']}, unit {s['unit']}, "
            f"{s['n_trials']} trials, seeds {s['seeds']}, steps {s['stream_steps']}")
    seq = s.get("sequential")
    if seq:
        head = (f"experiment {s['name']}: space {s['space']}, design {s['design']}, unit {s['unit']}, until resolved: "
                f"rounds of {seq['seeds_per_round']} seeds, up to {seq['max_seeds']} seeds per configuration, up to "
                f"{s['n_trials']} trials (alpha {seq['alpha']:g}, precision {100 * seq['precision']:g}% of "
                f"{seq['reference']}), steps {s['stream_steps']}")
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
        given = [k for k in DEFINING if getattr(args, k) is not None]
        if given:
            raise KnobError(f"--resume takes the settings from {EXPERIMENT_FILE}; drop --{given[0].replace('_', '-')}")
        folder = experiment_folder(args.results, args.experiment)
        s = read_experiment(folder)
        # Ray Tune restores a round's callbacks as they were pickled, so the W&B mode and project are the
        # experiment's: the flags may repeat them, not change them.
        for key in ("wandb", "wandb_project"):
            given, recorded, flag = getattr(args, key, None), s.get(key), "--" + key.replace("_", "-")
            if given is not None and recorded is not None and given != recorded:
                raise KnobError(f"--resume keeps the experiment's {flag} {recorded}; drop {flag} {given}")
        s["wandb"] = s.get("wandb") or args.wandb or "off"
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


