"""Analyse one experiment from the shell: `python -m harness.analyze RESULTS_DIR/<experiment> [--out DIR]`.

Reads trials.parquet, curves.parquet and experiment.json; writes effects/ranking tables, figures and
report.md under `<experiment>/analysis/` (or --out) and prints the paths written, one per line.
A missing folder, a missing or malformed parquet file, or a bad flag exits with status 2 and one line
on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from harness.analysis.load import AnalysisInputError, load_experiment
from harness.cli import OneLineParser, fail

CI_METHODS = ("expanded", "percentile")  # harness.analysis.stats.CI_METHODS, kept here to keep start-up light


def build_parser() -> OneLineParser:
    """The command-line parser."""
    p = OneLineParser(prog="python -m harness.analyze", description=__doc__.splitlines()[0])
    p.add_argument("experiment", type=Path, help="experiment folder (holds trials.parquet, curves.parquet)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <experiment>/analysis)")
    p.add_argument("--bootstrap", type=int, default=10000, metavar="N", help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the bootstrap generator (default 0)")
    p.add_argument("--ci", choices=CI_METHODS, default="expanded",
                   help="interval method: expanded (default; corrects few-seed under-coverage) or percentile")
    p.add_argument("--wandb", choices=("off", "offline", "online"), default="off",
                   help="also log an analysis run to W&B (group = experiment); online also saves a W&B Report")
    p.add_argument("--wandb-project", default=None, help="W&B project (default $WANDB_PROJECT, else fsnet-harness)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the analysis; 0 on success, 2 (one line on stderr) on bad input, 1 when the output cannot be written."""
    args = build_parser().parse_args(argv)
    if args.bootstrap < 100:
        return fail(f"--bootstrap must be at least 100, got {args.bootstrap}")
    try:
        data = load_experiment(args.experiment)  # bad input fails here, before scipy/matplotlib/optuna load
        from harness.analysis.pipeline import analyze_loaded

        result = analyze_loaded(data, args.out, n_boot=args.bootstrap, seed=args.seed, ci_method=args.ci)
    except AnalysisInputError as exc:
        return fail(exc)
    except OSError as exc:  # e.g. the output folder cannot be written
        return fail(f"cannot write the analysis: {exc}", status=1)
    for path in result.written:
        print(path)
    if args.wandb != "off":
        from harness.wandb_logging import resolve_project
        from harness.wandb_logging.analysis import publish_analysis

        publish_analysis(result, args.wandb, resolve_project(args.wandb_project))
    return 0


if __name__ == "__main__":
    sys.exit(main())
