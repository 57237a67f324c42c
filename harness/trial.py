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
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from data import DataError, PreparedData, prepare_data
from fsnet_models import KnobError, applicable_knobs, parse_knob_value, resolve_config
from fsnet_models.knobs import format_knob_table
from fsnet_models.presets import PRESETS
from harness.cli import OneLineParser, fail, interrupted
from harness.runner import CheckpointError, TrialRunner


def parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """`["knob=value", ...]` -> {knob: typed value}; raises KnobError on a malformed pair or value."""
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise KnobError(f"--set expects knob=value, got {pair!r}")
        values[name.strip()] = parse_knob_value(name.strip(), text)
    return values


def pick_device(name: str) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; anything else must be usable by torch."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KnobError(f"--device {name}: CUDA is not available on this machine")
    return name


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of one trial."""
    p = OneLineParser(prog="python -m harness.trial", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="fsnet", help=f"one of {', '.join(PRESETS)} (default fsnet)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KNOB=VALUE",
                   help="set a knob (repeatable); see --list-knobs")
    p.add_argument("--max-steps", type=int, default=None, help="stop the online stream after N steps")
    p.add_argument("--epochs", type=int, default=None, help="warm-up epochs (same as --set epochs=E)")
    p.add_argument("--seed", type=int, default=None, help="random seed (same as --set seed=S)")
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
    w = p.add_argument_group("W&B sweep agent (see harness.sweeps; also on when WANDB_SWEEP_ID is set)")
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


def load_data(config: dict[str, Any], path: str | None) -> PreparedData:
    """The prepared dataset a config asks for."""
    return prepare_data(config["dataset"], config["features"], config["target"], config["seq_len"],
                        config["pred_len"], path)


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats by None so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def run(args: argparse.Namespace, config: dict[str, Any] | None = None,
        on_chunk: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Run the trial the parsed arguments describe and return its result dict.

    `config` replaces the knob config of the flags (the W&B agent resolves its own); `on_chunk` gets the
    running metrics (step, cum_mse, cum_mae) after every chunk of online steps.
    """
    if args.max_steps is not None and args.max_steps < 1:
        raise KnobError(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    config = config if config is not None else config_from_args(args)
    device = pick_device(args.device)
    data = load_data(config, args.data)
    runner = TrialRunner(config, data, device=device, max_steps=args.max_steps)
    if args.resume:
        runner.load(args.resume)
    show = not args.json and sys.stderr.isatty()
    say = (lambda msg: print(msg, file=sys.stderr)) if not args.json else None
    runner.run_warmup(progress=say)
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=runner.n_steps, initial=runner.step, desc=f"{config['preset']} online", unit="step")
    chunk = args.checkpoint_every if args.checkpoint else 200
    while not runner.finished:
        before = runner.step
        runner.run_online(chunk)
        if bar is not None:
            bar.update(runner.step - before)
            bar.set_postfix(cum_mse=f"{runner.running_metrics()['cum_mse']:.4f}")
        if args.checkpoint:
            runner.save(args.checkpoint)
        if on_chunk is not None:
            on_chunk(runner.running_metrics())
    if bar is not None:
        bar.close()
    result = runner.result()
    result["curve"] = runner.curve(args.curve_every)
    result["data_sha256"] = data.sha256
    return result


def summary(result: dict[str, Any]) -> str:
    """A short human-readable summary of a result."""
    lines = [
        f"preset {result['preset']}  seed {result['seed']}  {result['dataset']} {result['protocol']}",
        f"steps {result['steps']}  mse {result['mse']:.4f}  mae {result['mae']:.4f}  rmse {result['rmse']:.4f}"
        f"  mape {result['mape']:.4f}  smape {result['smape']:.4f}  rel_mse_persistence "
        f"{result['rel_mse_persistence']:.3f}",
        f"warm-up {result['warmup_seconds']:.1f} s  online {result['online_seconds']:.1f} s"
        f"  ({result['steps_per_s']:.1f} steps/s)  peak RSS {result['peak_rss_mb']:.0f} MiB",
    ]
    diag = result.get("diagnostics") or {}
    if diag:
        lines.append(f"memory triggers {diag['memory_triggers']}  attention entropy "
                     f"{diag['attention_entropy_mean']:.3f}  slot mean sq cos {diag['slot_mean_sq_cos']:.4f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from harness.sweeps import agent_mode

    if agent_mode(argv):
        from harness.sweeps import run_agent, split_agent_args

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
    try:
        result = run(args)
    except (KnobError, DataError, CheckpointError) as exc:
        return fail(exc)
    except KeyboardInterrupt:
        return interrupted()
    if args.json:
        print(json.dumps(_json_safe(result)))
    else:
        print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
