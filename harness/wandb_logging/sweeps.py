"""W&B sweeps over the same spaces and designs as `harness.ablate`, run by `harness.trial` as the agent's program.

`python -m harness.ablate --space ultra [--design loo] --emit-sweep sweep.yaml` writes a sweep
configuration and exits (no Ray, no data):

- grid designs (loo, oat, factorial, presets): method grid over one categorical parameter `variant`
  (the design's variant names; an innovation switches several knobs at once, so knob values cannot be
  gridded independently) and `seed` (0..K-1); knobs fixed with --set appear as `value` parameters;
- optuna: method bayes with every continuous knob of the space as a distribution (uniform,
  log_uniform_values or int_uniform, min/max), `seed` values 0..K-1 and metric mse (minimize).

The command runs `python -m harness.trial --json --wandb-agent --space S --design D --unit U --preset P
--threads C [--max-steps N] [--epochs E] ${args}` (C: --cpus-per-trial, the torch threads of a Ray
trial). `wandb agent` appends the run's parameters as `--name=value` (${args}); `harness.trial` in
agent mode (`--wandb-agent`, or WANDB_SWEEP_ID set) takes those and wandb.config, maps `variant`
back to knob values with the design code (harness.experiment.designs), runs the trial, logs the running metrics
as history and the final metrics as summary of the sweep's run, and prints its JSON as usual.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fsnet_models.knobs import KNOBS, KnobError, parse_knob_value, validate_knob
from fsnet_models.presets import applicable_knobs, resolve_config
from harness.cli import BAD_INPUT, INTERRUPTED, fail, interrupted
from harness.experiment.designs import GRID_DESIGNS, optuna_base, plan_trials, sample_variant_name
from harness.experiment.settings import PRESETS_DESIGN
from harness.wandb_logging import (
    TRIAL_JOB,
    default_mode,
    history_metrics,
    resolve_project,
    summary_metrics,
    trial_config,
)
from search_spaces.spaces import Continuous, SearchSpace, get_space

VARIANT = "variant"
SWEEP_PROGRAM = "harness/trial.py"
OBJECTIVE = {"name": "mse", "goal": "minimize"}
_PARAM = re.compile(r"^(?:--)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)


# ------------------------------------------------------------------ the sweep configuration
def distribution(c: Continuous) -> dict[str, Any]:
    """A continuous knob as a W&B sweep distribution (int_uniform for integer knobs, whatever their scale)."""
    low, high = c.bounds()
    if c.is_int:
        return {"distribution": "int_uniform", "min": int(low), "max": int(high)}
    kind = "log_uniform_values" if c.log else "uniform"
    return {"distribution": kind, "min": float(low), "max": float(high)}


def design_preset(settings: Mapping[str, Any]) -> str:
    """The preset a design builds on: loo the full preset, optuna its sampling preset, else the base preset."""
    if settings["design"] == "optuna":
        return str(settings["optuna"]["preset"])
    return str(settings["full_preset"] if settings["design"] == "loo" else settings["base_preset"])


def sweep_command(settings: Mapping[str, Any]) -> list[str]:
    """The agent's command: harness.trial in agent mode with the experiment's space/design/steps/epochs."""
    command = ["${env}", "${interpreter}", "-m", "harness.trial", "--json", "--wandb-agent",
               "--space", settings["space"], "--design", settings["design"], "--unit", settings["unit"],
               "--preset", design_preset(settings),
               "--threads", str(max(1, int(settings["resources"]["cpus_per_trial"])))]
    if settings.get("max_steps"):
        command += ["--max-steps", str(settings["max_steps"])]
    if settings.get("epochs") is not None:
        command += ["--epochs", str(settings["epochs"])]
    if settings.get("data_path"):
        command += ["--data", str(settings["data_path"])]
    return [*command, "${args}"]


def sweep_config(settings: Mapping[str, Any], project: str) -> dict[str, Any]:
    """The W&B sweep configuration of validated ablate settings (harness.experiment.settings.settings_from_args)."""
    space = get_space(settings["space"])
    params: dict[str, Any] = {}
    if settings["design"] == "optuna":
        method = "bayes"
        params.update({c.knob: distribution(c) for c in space.continuous})
        seeds = list(range(settings["seeds"]))
    else:
        method = "grid"
        planned = settings["planned_trials"]
        params[VARIANT] = {"values": list(dict.fromkeys(t["variant"] for t in planned))}
        seeds = sorted({int(t["seed"]) for t in planned})
    params["seed"] = {"values": seeds}
    params.update({k: {"value": v} for k, v in settings["sets"].items()})
    what = {"grid": f"every variant of design {settings['design']}", "bayes": "Bayesian search (W&B)"}[method]
    return {
        "name": f"{space.name}-{settings['design']}",
        "description": f"fsnet-harness: space {space.name} ({space.description}); {what} at seeds {seeds}",
        "project": project,
        "program": SWEEP_PROGRAM,
        "method": method,
        "metric": dict(OBJECTIVE),
        "parameters": params,
        "command": sweep_command(settings),
    }


def emit_sweep(args: argparse.Namespace) -> int:
    """`harness.ablate --emit-sweep PATH`: validate the flags, write the sweep YAML, exit (0, or 2 on bad input)."""
    from harness.experiment.settings import settings_from_args

    if args.resume:
        return fail("--emit-sweep describes a new experiment; drop --resume")
    # GPUs do not enter a sweep: skip the CUDA probe (it would import torch)
    values = {**vars(args), "gpus_per_trial": args.gpus_per_trial if args.gpus_per_trial is not None else 0.0}
    try:
        settings = settings_from_args(argparse.Namespace(**values))
        config = sweep_config(settings, resolve_project(getattr(args, "wandb_project", None)))
    except (KnobError, ValueError) as exc:
        return fail(exc)
    path = Path(args.emit_sweep)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    except OSError as exc:
        return fail(f"cannot write {path}: {exc}")
    n = len(config["parameters"].get(VARIANT, {}).get("values", [])) * len(config["parameters"]["seed"]["values"])
    runs = f"{n} runs" if config["method"] == "grid" else "runs until stopped"
    print(f"written: {path} (W&B sweep, method {config['method']}, {runs}); start it with: wandb sweep {path} "
          "then: wandb agent ENTITY/PROJECT/SWEEP_ID")
    return 0


# ------------------------------------------------------------------ the agent side (harness.trial)
def agent_mode(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> bool:
    """True when harness.trial runs under a W&B agent: `--wandb-agent` given or WANDB_SWEEP_ID set."""
    env = os.environ if environ is None else environ
    return "--wandb-agent" in argv or bool(env.get("WANDB_SWEEP_ID"))


def split_agent_args(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Separate the agent's parameters (`--name=value` or `name=value`, name a knob or `variant`) from the flags."""
    names = set(KNOBS) | {VARIANT}
    rest: list[str] = []
    params: dict[str, str] = {}
    previous = ""
    for token in argv:
        match = _PARAM.match(token)
        if match and match.group(1) in names and previous != "--set":
            params[match.group(1)] = match.group(2)
        else:
            rest.append(token)
        previous = token
    return rest, params


def coerce(name: str, value: Any) -> Any:
    """A parameter value (text from the command line, or typed from wandb.config) as the knob's type."""
    if name == VARIANT:
        return str(value)
    if isinstance(value, str):
        try:
            return parse_knob_value(name, value)
        except KnobError:
            if KNOBS[name].type is int:  # e.g. "37.0" from a quantised distribution
                try:
                    return validate_knob(name, float(value))
                except ValueError:
                    pass
            raise
    return validate_knob(name, value)


def agent_trial(space_name: str | None, design: str | None, unit: str, preset: str, epochs: int | None,
                params: Mapping[str, Any]) -> tuple[str, str, int, dict[str, Any]]:
    """(preset, variant, seed, resolved config) of an agent's parameters.

    With a space: a grid design maps `variant` to its preset and knob values (harness.experiment.designs), other knob
    parameters being the fixed --set values; optuna takes its continuous knobs as samples on the design's
    preset (a knob that must stay at least its partner, t_max >= t_min, is raised to it). Without a
    space every parameter is a knob override of `preset`. Raises KnobError on a bad parameter.
    """
    values = {k: coerce(k, v) for k, v in params.items()}
    seed = int(values.pop("seed", 0))
    variant = values.pop(VARIANT, None)
    soft = {"epochs": epochs} if epochs is not None else {}
    if space_name is None:
        if variant is not None:
            raise KnobError("parameter 'variant' needs --space and --design (see --emit-sweep)")
        if epochs is not None and "epochs" in applicable_knobs(preset):
            values.setdefault("epochs", epochs)
        return preset, preset, seed, resolve_config(preset, {**values, "seed": seed})
    space = get_space(space_name)
    design = design or "loo"
    if design == "optuna":
        return _optuna_trial(space, values, soft, seed)
    if design == PRESETS_DESIGN:
        design = "loo"  # a space of plain presets has the same variants under every grid design
    if design not in GRID_DESIGNS:
        raise KnobError(f"unknown design '{design}'; known designs: {', '.join((*GRID_DESIGNS, 'optuna'))}")
    if variant is None:
        raise KnobError(f"a grid sweep of design '{design}' needs the 'variant' parameter")
    planned = {t.variant: t for t in plan_trials(space, design, unit, 1, values, soft)}
    if variant not in planned:
        raise KnobError(f"unknown variant {variant!r} of design '{design}' on space '{space.name}'; known: "
                        f"{', '.join(planned)}")
    chosen = planned[variant]
    return chosen.preset, variant, seed, resolve_config(chosen.preset, {**chosen.overrides, "seed": seed})


def _optuna_trial(space: SearchSpace, values: dict[str, Any], soft: Mapping[str, Any],
                  seed: int) -> tuple[str, str, int, dict[str, Any]]:
    """An optuna-design sample: the continuous knobs on top of the design's preset and fixed knobs."""
    sampled = {c.knob: values.pop(c.knob) for c in space.continuous if c.knob in values}
    preset, overrides = optuna_base(space, values, soft)
    for c in space.continuous:
        if c.at_least is not None and c.knob in sampled and c.at_least in sampled:
            sampled[c.knob] = max(sampled[c.knob], sampled[c.at_least])
    config = resolve_config(preset, {**overrides, **sampled, "seed": seed})
    return preset, sample_variant_name(preset, sampled), seed, config


def run_agent(args: argparse.Namespace, params: Mapping[str, str]) -> int:
    """harness.trial under a W&B agent: knobs from wandb.config and the agent's args, history and summary to the run.

    Returns the exit status (2 and one line on stderr for bad parameters or data, like harness.trial).
    """
    import wandb

    from data import DataError
    from harness.online.result import json_safe
    from harness.online.runner import CheckpointError
    from harness.online.runtime import DeviceError
    from harness.online.session import TrialOptions, run_solo, summary

    mode = os.environ.get("WANDB_MODE") or default_mode()
    typed = {}
    for k, v in params.items():
        try:
            typed[k] = coerce(k, v)
        except KnobError:
            typed[k] = v  # reported below, with the run open
    wb = wandb.init(project=resolve_project(args.wandb_project), job_type=TRIAL_JOB, mode=mode, config=typed,
                    allow_val_change=True)
    try:
        names = set(KNOBS) | {VARIANT}
        merged = {**params, **{k: v for k, v in dict(wb.config).items() if k in names}}
        if args.seed is not None and "seed" not in merged:
            merged["seed"] = args.seed
        preset, variant, seed, config = agent_trial(args.space, args.design, args.unit, args.preset, args.epochs,
                                                    merged)
        extra = {k: v for k, v in (("space", args.space), ("design", args.design), ("unit", args.unit)) if v}
        flat = trial_config(preset, variant, seed, config, extra)
        wb.config.update({k: v for k, v in flat.items() if k not in wb.config}, allow_val_change=True)
        result = run_solo(config, TrialOptions.from_namespace(args),
                          on_chunk=lambda metrics: wb.log(history_metrics(metrics)))
        wb.summary.update(summary_metrics(result))
        wb.summary["device"] = result.get("device")
    except (KnobError, DataError, CheckpointError, DeviceError) as exc:
        wb.finish(exit_code=BAD_INPUT)
        return fail(exc)
    except KeyboardInterrupt:
        wb.finish(exit_code=INTERRUPTED)
        return interrupted()
    wb.finish()
    print(json.dumps(json_safe(result)) if args.json else summary(result))
    return 0
