"""Ablations on Ray Tune: `python -m harness.ablate --space ultra [--design loo] [--seeds K] ...`.

Plans every trial of a design over a search space (see harness.experiment.designs and search_spaces), checks
every config and the data before Ray starts, writes <results>/<experiment>/experiment.json, runs
the trials on Ray Tune (fault tolerant: checkpoints, retries, --resume), writes trials.parquet and
curves.parquet as each trial finishes, and ends with a ranking table and the analysis
(harness.analysis). With --wandb offline|online (default: online when W&B credentials are configured,
else offline) every trial is a W&B run and the analysis one more (harness.wandb_logging);
--emit-sweep writes a W&B sweep configuration instead (harness.wandb_logging.sweeps). --until-resolved runs a
grid design in rounds of seeds until every effect is resolved (harness.tune.rounds, docs/sequential.md). Bad input
exits with status 2 and one line on stderr, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from data import DataError
from fsnet_models.knobs import KnobError
from harness.cli import OneLineParser, fail, interrupted, run_entry
from harness.experiment.designs import DESIGNS, UNITS
from harness.experiment.files import git_commit, package_versions, write_experiment
from harness.experiment.settings import DEFAULTS, GPUS_WITH_CUDA, describe, prepare
from search_spaces.spaces import SPACES

D = DEFAULTS  # each default is written once, in harness.experiment.settings.ExperimentFlags


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (experiment-defining flags default to None: see ExperimentFlags)."""
    p = OneLineParser(prog="python -m harness.ablate", description=__doc__.split("\n")[0])
    p.add_argument("--space", default=None, help=f"one of {', '.join(SPACES)}")
    p.add_argument("--design", default=None, help=f"one of {', '.join(DESIGNS)} (default {D.design})")
    p.add_argument("--unit", default=None, help=f"what a design switches: {' or '.join(UNITS)} (default {D.unit})")
    p.add_argument("--seeds", type=int, default=None, help=f"seeds 0..K-1 per configuration (default {D.seeds})")
    p.add_argument("--samples", type=int, default=None, help=f"optuna: configurations to sample (default {D.samples})")
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
    p.add_argument("--cpus-per-trial", type=float, default=None,
                   help=f"CPUs per trial, fractions ok (default {D.cpus_per_trial:g})")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help=f"GPUs per trial, fractions ok (default {GPUS_WITH_CUDA} when CUDA is visible, else 0)")
    p.add_argument("--report-every", type=int, default=None,
                   help=f"online steps between reports (default {D.report_every})")
    p.add_argument("--checkpoint-every", type=int, default=None, help="online steps between checkpoints "
                   f"(default {D.checkpoint_every})")
    p.add_argument("--max-failures", type=int, default=None,
                   help=f"retries of a failed trial (default {D.max_failures})")
    p.add_argument("--wandb", default=None, choices=("off", "offline", "online"),
                   help="Weights & Biases: a run per trial plus an analysis run (default online when W&B "
                   "credentials are configured, else offline)")
    p.add_argument("--wandb-project", default=None, help="W&B project (default $WANDB_PROJECT, else fsnet-harness)")
    p.add_argument("--emit-sweep", default=None, metavar="PATH",
                   help="write a W&B sweep configuration of this space and design to PATH and exit")
    p.add_argument("--storage", default=None, help="Ray storage_path, path or URI (default <results>/ray)")
    p.add_argument("--limit", type=int, default=None, help="run only the first N planned trials (smoke runs)")
    p.add_argument("--until-resolved", action="store_const", const=True, default=None,
                   help="loo, oat, factorial: run seeds in rounds until every effect is resolved or --max-seeds "
                   "is reached (docs/sequential.md)")
    p.add_argument("--precision", type=float, default=None,
                   help="--until-resolved: an effect whose interval lies inside +-P of the reference MSE is resolved "
                   f"as no effect (default {D.precision:g})")
    p.add_argument("--max-seeds", type=int, default=None,
                   help=f"--until-resolved: seeds per configuration at most (default {D.max_seeds})")
    p.add_argument("--seeds-per-round", type=int, default=None,
                   help=f"--until-resolved: seeds per configuration a round adds (default {D.seeds_per_round})")
    p.add_argument("--group-size", default=None,
                   help="grid designs: run each configuration's seeds as groups of G seeds in one batched network "
                   "(one Ray trial per group; --cpus/--gpus-per-trial are per group), or 'auto' for the measured "
                   "best G "
                   f"(default {D.group_size}: every seed its own trial)")
    p.add_argument("--variants", default=None, metavar="NAME[,NAME...]",
                   help="grid designs: run only these configurations of the design (names as --dry-run lists them)")
    p.add_argument("--alpha", type=float, default=None,
                   help=f"--until-resolved: family-wise error level of the design's effects (default {D.alpha:g})")
    p.add_argument("--dry-run", action="store_true", help="print the planned trials and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    if args.emit_sweep:
        if args.until_resolved:
            return fail("--emit-sweep writes a sweep at fixed seeds; drop --until-resolved")
        from harness.wandb_logging.sweeps import emit_sweep

        return emit_sweep(args)
    if args.wandb is None and not args.resume:  # --resume keeps the experiment's mode
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

    settings["wandb_project"] = settings.get("wandb_project") or resolve_project(args.wandb_project)
    if not args.resume:
        settings["git_commit"] = git_commit()
        settings["package_versions"] = package_versions()
        write_experiment(folder, settings)
    from harness.tune.driver import run_experiment

    return run_experiment(settings, folder, resume=args.resume, address=args.address)


if __name__ == "__main__":
    run_entry(main)
