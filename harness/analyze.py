"""Analyse one experiment from the shell: `python -m harness.analyze RESULTS_DIR/<experiment> [--out DIR]`.

Reads trials.parquet, curves.parquet and experiment.json; writes effects/ranking tables, figures and
report.md under `<experiment>/analysis/` (or --out) and prints the paths written, one per line.
`python -m harness.analyze --simulate-sequential --experiments N [--alpha A] [--json]` instead simulates the
sequential (--until-resolved) rule and prints its error rates, power and seeds spent (docs/sequential.md).
`python -m harness.analyze --compare EXP_A EXP_B [--metric mse] [--json]` sets two experiments side by side:
per variant both ran, seeds, means with 95% t intervals, B - A with Welch's (and, on the same seeds, the paired)
interval, in % of A, and a verdict (docs/analysis.md).
A missing folder, a missing or malformed parquet file, or a bad flag exits with status 2 and one line
on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.analysis.load import AnalysisInputError, load_experiment
from harness.cli import OneLineParser, fail, run_entry

CI_METHODS = ("expanded", "percentile")  # harness.analysis.stats.CI_METHODS, kept here to keep start-up light


def build_parser() -> OneLineParser:
    """The command-line parser."""
    p = OneLineParser(prog="python -m harness.analyze", description=__doc__.splitlines()[0])
    p.add_argument("experiment", type=Path, nargs="?", default=None,
                   help="experiment folder (holds trials.parquet, curves.parquet); not with --simulate-sequential")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <experiment>/analysis)")
    p.add_argument("--bootstrap", type=int, default=10000, metavar="N", help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the bootstrap generator (default 0)")
    p.add_argument("--ci", choices=CI_METHODS, default="expanded",
                   help="interval method: expanded (default; corrects few-seed under-coverage) or percentile")
    p.add_argument("--wandb", choices=("off", "offline", "online"), default="off",
                   help="also log an analysis run to W&B (group = experiment); online also saves a W&B Report")
    p.add_argument("--wandb-project", default=None, help="W&B project (default $WANDB_PROJECT, else fsnet-harness)")
    sim = p.add_argument_group("sequential-rule simulation (harness.analysis.sequential; no experiment folder)")
    sim.add_argument("--simulate-sequential", action="store_true",
                     help="Monte Carlo of the --until-resolved rule on loo designs with effects 0, 2, 5, 15%%")
    sim.add_argument("--experiments", type=int, default=500, metavar="N", help="simulated experiments (default 500)")
    sim.add_argument("--alpha", type=float, default=0.05, metavar="A", help="family-wise alpha (default 0.05)")
    cmp = p.add_argument_group("two experiments side by side (harness.analysis.compare; no experiment folder)")
    cmp.add_argument("--compare", nargs=2, type=Path, default=None, metavar=("EXP_A", "EXP_B"),
                     help="compare two experiment folders (each with trials.parquet), variant by variant: B - A")
    cmp.add_argument("--metric", default=None, metavar="M", help="the metric compared (default mse)")
    cmp.add_argument("--figure", type=Path, default=None, metavar="PNG",
                     help="--compare: also draw both experiments' means and intervals per variant into PNG; "
                     "--claims: the same for the two protocols")
    claims = p.add_argument_group("the technical report's claims (harness.analysis.claims; no experiment folder)")
    claims.add_argument("--claims", nargs="+", type=Path, default=None, metavar="EXP",
                        help="test every claim of the report on these experiments of the baselines space "
                        "(e.g. one per protocol); EXP@v1,v2 keeps only those variants of EXP")
    claims.add_argument("--pool-settings", action="store_true",
                        help="--claims: pool experiments by feedback_delay alone, whatever online_lr or revin they "
                        "set (each preset at the settings chosen for it, with EXP@VARIANT to pick its run)")
    claims.add_argument("--markdown", action="store_true", help="--claims: print one Markdown table")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object instead of a table (--simulate-sequential, --compare, --claims)")
    return p


def compare_main(args: argparse.Namespace) -> int:
    """--compare: print the side-by-side table (or its JSON object); 2 (one line on stderr) on bad input."""
    if args.experiment is not None:
        return fail("--compare takes its two experiment folders, not a third")
    if args.simulate_sequential:
        return fail("--compare and --simulate-sequential exclude each other")
    from harness.analysis.compare import compare_folders, compare_text

    try:
        payload = compare_folders(args.compare[0], args.compare[1], args.metric or "mse")
    except AnalysisInputError as exc:
        return fail(exc)
    if args.json:
        print(json.dumps(payload, allow_nan=False, default=str))
    else:
        print(compare_text(payload), end="")
    if args.figure is not None:
        import pandas as pd

        from harness.analysis.figures import two_experiments

        table = pd.DataFrame(payload["variants"]).astype({"mean_a": float, "mean_b": float})
        path = two_experiments(table, Path(payload["a"]).name, Path(payload["b"]).name, args.figure,
                               payload["metric"])
        print(f"figure: {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def claims_main(args: argparse.Namespace) -> int:
    """--claims: every claim of the report on each experiment, as a table, Markdown (--markdown) or JSON."""
    if args.experiment is not None or args.compare is not None or args.simulate_sequential:
        return fail("--claims takes its experiment folders and excludes --compare and --simulate-sequential")
    from harness.analysis.claims import claims_markdown, claims_of_pooled, claims_text, pooled_trials

    try:
        # read once: the claims, the per-variant table and the figure use it
        pooled = pooled_trials(args.claims, pool_settings=args.pool_settings)
    except AnalysisInputError as exc:
        return fail(exc)
    results = claims_of_pooled(pooled)
    if args.json:
        print(json.dumps({"experiments": results}, allow_nan=False, default=str))
    elif args.markdown:
        print(claims_markdown(results), end="")
        if len(results) == 2:  # every variant's mean under both protocols, below the claims
            from harness.analysis.claims import protocols_markdown, protocols_table

            print()
            print(protocols_markdown(*protocols_table(pooled)), end="")
    else:
        print(claims_text(results), end="")
    if args.figure is not None:
        from harness.analysis.claims import protocols_table
        from harness.analysis.figures import two_experiments

        try:
            table, name_a, name_b = protocols_table(pooled)
        except AnalysisInputError as exc:
            return fail(exc)
        path = two_experiments(table, name_a, name_b, args.figure, "mse", "under two protocols")
        print(f"figure: {path}", file=sys.stderr if args.json or args.markdown else sys.stdout)
    return 0


def simulate_main(args: argparse.Namespace) -> int:
    """--simulate-sequential: print the simulation's JSON object (--json) or a short table; 2 on bad values."""
    if args.experiment is not None:
        return fail("--simulate-sequential takes no experiment folder")
    if args.experiments < 1:
        return fail(f"--experiments must be at least 1, got {args.experiments}")
    if not 0 < args.alpha < 1:
        return fail(f"--alpha must be in (0, 1), got {args.alpha}")
    from harness.analysis.sequential import simulate_sequential

    try:
        out = simulate_sequential(args.experiments, alpha=args.alpha, seed=args.seed)
    except ValueError as exc:
        return fail(exc)
    if args.json:
        print(json.dumps(out, allow_nan=False, default=str))
        return 0
    print(f"{out['method']}; {out['experiments']} experiments, alpha {out['alpha']:g}, {out['design']}")
    print(f"fwer {out['fwer']:.3f} (s.e. {out['fwer_se']:.3f}); all-null design {out['fwer_global_null']:.3f}")
    for k, v in out["power"].items():
        print(f"power at {k}: {v:.3f} (s.e. {out['power_se'][k]:.3f})")
    print(f"mean seeds per configuration {out['mean_seeds']:.1f}; fixed design with the same power at "
          f"{out['fixed_design_effect']:g}: {out['fixed_design_seeds']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the analysis; 0 on success, 2 (one line on stderr) on bad input, 1 when the output cannot be written."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.claims is not None:
        return claims_main(args)
    if args.pool_settings:
        return fail("--pool-settings applies to --claims only")
    if args.markdown:
        return fail("--markdown applies to --claims only")
    if args.compare is not None:
        return compare_main(args)
    if args.metric is not None:
        return fail("--metric applies to --compare only")
    if args.simulate_sequential:
        return simulate_main(args)
    if args.experiment is None:
        parser.error("the following arguments are required: experiment")
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
        from harness.wandb_logging.analysis_run import publish_analysis

        publish_analysis(result, args.wandb, resolve_project(args.wandb_project))
    return 0


if __name__ == "__main__":
    run_entry(main)
