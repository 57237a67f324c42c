"""The MSE of each stretch of the online stream, from experiments' cumulative curves.

    python scripts/window_mse.py FOLDER:VARIANT [FOLDER:VARIANT ...] [--edges 500,1000,1500,2000]

curves.parquet holds each trial's cumulative MSE at the reported steps; the MSE of the steps (a, b] is
(cum_mse(b) * b - cum_mse(a) * a) / (b - a). Prints a Markdown table: one row per FOLDER:VARIANT, one column per
stretch (the last ends at the stream's end), each the mean over the variant's seeds, and the seeds. Every edge must
be a reported step of every trial (the curves report every 500 steps by default).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from harness.cli import OneLineParser, fail, run_entry


def window_mse(curves: pd.DataFrame, edges: list[int]) -> pd.DataFrame:
    """[stretches, seeds]: each seed's MSE over the steps (a, b] between consecutive edges (0 first, the last
    reported step last). Raises ValueError naming the step that some seed did not report."""
    last = int(curves["step"].max())
    cuts = [0, *[e for e in edges if 0 < e < last], last]
    sse = curves.assign(sse=curves["cum_mse"] * curves["step"]).pivot_table(index="step", columns="seed", values="sse")
    sse.loc[0] = 0.0
    missing = [e for e in cuts if e not in sse.index]
    if missing or sse.loc[cuts].isna().any().any():
        raise ValueError(f"step {missing[0] if missing else cuts} is not reported for every seed")
    at = sse.loc[cuts]  # [len(cuts), seeds]: the summed squared error up to each cut
    widths = pd.Series(cuts, index=cuts, dtype=float).diff().iloc[1:]
    out = at.diff().iloc[1:].div(widths, axis=0)  # [stretches, seeds]
    out.index = [f"{a}-{b}" for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    return out


def main(argv: list[str]) -> int:
    """Print the table; 2 with one line on a bad argument or folder."""
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="FOLDER:VARIANT")
    p.add_argument("--edges", default="500,1000,1500,2000", help="steps where a stretch ends (comma-separated)")
    args = p.parse_args(argv)
    try:
        edges = sorted({int(e) for e in args.edges.split(",")})
    except ValueError:
        return fail(f"--edges takes comma-separated steps, got {args.edges!r}")
    rows = []
    for run in args.runs:
        folder, sep, variant = run.rpartition(":")
        path = Path(folder) / "curves.parquet"
        if not sep or not path.is_file():
            return fail(f"{run}: expected FOLDER:VARIANT with FOLDER/curves.parquet")
        curves = pd.read_parquet(path)
        curves = curves[curves["variant"] == variant]
        if curves.empty:
            return fail(f"{run}: no curve of variant {variant!r}")
        try:
            table = window_mse(curves, edges)
        except ValueError as exc:
            return fail(f"{run}: {exc}")
        rows.append((run, table.mean(axis=1), table.shape[1]))
    header = list(rows[0][1].index)
    print("| run | " + " | ".join(f"steps {h}" for h in header) + " | seeds |")
    print("| --- | " + " | ".join("--:" for _ in header) + " | --: |")
    for run, means, seeds in rows:
        print(f"| {run} | " + " | ".join(f"{means.get(h, float('nan')):.3f}" for h in header) + f" | {seeds} |")
    return 0


if __name__ == "__main__":
    run_entry(lambda: main(sys.argv[1:]))
