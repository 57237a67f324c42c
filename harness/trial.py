"""One trial from the shell: `python -m harness.trial --preset fsnet [--set knob=value ...]`.

Without --max-steps the whole online stream runs. With --json one JSON object is printed:
preset, every knob, seed, dataset, protocol, metrics (mse, mae, rmse, mape, smape,
mape_scaled, rel_mse_persistence), steps, timings, steps/s, memory and diagnostics.
Bad input (unknown knob, value out of range, missing/corrupt data file, bad flag) exits with
status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from data import DataError
from fsnet_models import KnobError, applicable_knobs, parse_knob_value, resolve_config
from fsnet_models.knobs import format_knob_table
from fsnet_models.presets import PRESETS
from harness.cli import OneLineParser, fail, interrupted, parse_sets, run_entry
from harness.online.result import json_safe
from harness.online.runner import CheckpointError
from harness.online.runtime import DeviceError
from harness.online.session import TrialOptions, parse_seeds, run_group, run_solo, summary


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of one trial."""
    p = OneLineParser(prog="python -m harness.trial", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="fsnet", help=f"one of {', '.join(PRESETS)} (default fsnet)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KNOB=VALUE",
                   help="set a knob (repeatable); see --list-knobs")
    p.add_argument("--max-steps", type=int, default=None, help="stop the online stream after N steps")
    p.add_argument("--epochs", type=int, default=None, help="warm-up epochs (same as --set epochs=E)")
    p.add_argument("--seed", type=int, default=None, help="random seed (same as --set seed=S)")
    p.add_argument("--seeds", default=None, metavar="LIST",
                   help="run these seeds as one trial group (e.g. 0,1,2,3 or 0-7); prints one line per member")
    p.add_argument("--data", default=None, help="CSV file or folder (default: $FSNET_DATA_DIR, cache, download)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--curve-every", type=int, default=100, help="cumulative MSE every N steps (JSON 'curve')")
    p.add_argument("--checkpoint", default=None, help="write the trial state here (atomically)")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="online steps between checkpoints")
    p.add_argument("--resume", default=None, help="resume from a checkpoint file written by --checkpoint")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.add_argument("--list-knobs", action="store_true", help="print the knob registry and exit")
    p.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    w = p.add_argument_group("W&B sweep agent (see harness.wandb_logging.sweeps; also on when WANDB_SWEEP_ID is set)")
    w.add_argument("--wandb-agent", action="store_true",
                   help="take knobs from wandb.config and --<knob>=VALUE / --variant=NAME; log to the run")
    w.add_argument("--space", default=None, help="agent: the search space the sweep's variants come from")
    w.add_argument("--design", default=None, help="agent: the design (loo, oat, factorial, presets, optuna)")
    w.add_argument("--unit", default="innovation", help="agent: what the design switches (innovation or knob)")
    w.add_argument("--wandb-project", default=None, help="agent: W&B project (default $WANDB_PROJECT, "
                   "fsnet-harness; a sweep's own project wins)")
    return p


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved knob config of the command line (raises KnobError on bad input)."""
    overrides = parse_sets(args.sets)
    if args.seed is not None:
        overrides["seed"] = parse_knob_value("seed", str(args.seed))
    # --epochs is a convenience flag: ignored by presets that do not train (persistence)
    if args.epochs is not None and "epochs" in applicable_knobs(args.preset):
        overrides["epochs"] = parse_knob_value("epochs", str(args.epochs))
    return resolve_config(args.preset, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from harness.wandb_logging.sweeps import agent_mode

    if agent_mode(argv):
        from harness.wandb_logging.sweeps import run_agent, split_agent_args

        argv, params = split_agent_args(argv)
        return run_agent(build_parser().parse_args(argv), params)
    args = build_parser().parse_args(argv)
    if args.list_knobs:
        print(format_knob_table())
        return 0
    if args.list_presets:
        for p in PRESETS.values():
            print(f"{p.name:12s} {p.description}")
        return 0
    if args.seeds is not None:
        return _group_main(args)
    try:
        result = run_solo(config_from_args(args), TrialOptions.from_namespace(args))
    except (KnobError, DataError, CheckpointError, DeviceError) as exc:
        return fail(exc)
    except KeyboardInterrupt:
        return interrupted()
    if args.json:
        print(json.dumps(json_safe(result)))
    else:
        print(summary(result))
    return 0


def _group_main(args: argparse.Namespace) -> int:
    """--seeds: one trial group; one JSON object (--json) or one summary per member, in seed order."""
    try:
        if args.seed is not None:
            raise KnobError("--seed and --seeds exclude each other")
        seeds = parse_seeds(args.seeds)
        results = run_group(config_from_args(args), seeds, TrialOptions.from_namespace(args))
    except (KnobError, DataError, CheckpointError, DeviceError) as exc:
        return fail(exc)
    except KeyboardInterrupt:
        return interrupted()
    for result in results:
        print(json.dumps(json_safe(result)) if args.json else summary(result))
    return 1 if any(r["error"] for r in results) else 0


if __name__ == "__main__":
    run_entry(main)
