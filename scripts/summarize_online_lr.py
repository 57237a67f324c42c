"""Summarise scripts/tune_online_lr.sh: the validation-stream MSE per preset, protocol and online_lr.

    python scripts/summarize_online_lr.py [OUT]      (default docs/results/online-lr-val)

Prints a Markdown table (mean MSE over the group's seeds with a 95% t interval, and the mean MSE
over persistence's on the same windows) and, per preset and feedback delay, the online_lr with the
lowest mean validation MSE: the tuned setting that the test-stream runs then use.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

from harness.analysis.compare import mean_interval


def read_runs(folder: Path) -> dict[tuple[str, int, str], list[dict]]:
    """Every member line of every finished <preset>-d<delay>-lr<lr>.jsonl, keyed (preset, delay, lr); a preset
    `P+revin` is P with RevIN on."""
    runs: dict[tuple[str, int, str], list[dict]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        name = re.fullmatch(r"(?P<preset>\w+(?:\+revin)?)-d(?P<delay>\d+)-lr(?P<lr>.+)", path.stem)
        if name is not None:
            lines = path.read_text().splitlines()
            runs[(name["preset"], int(name["delay"]), name["lr"])] = [json.loads(line) for line in lines]
    return runs


def lr_key(lr: str) -> float:
    """Sort key: the reference first, then the rates from high to low."""
    return -math.inf if lr == "ref" else -float(lr)


def main(argv: list[str]) -> int:
    """Print the table and the chosen rates; 2 with one line when the folder holds no runs."""
    folder = Path(argv[0] if argv else "docs/results/online-lr-val")
    runs = read_runs(folder) if folder.is_dir() else {}
    if not runs:
        print(f"error: no finished runs (*.jsonl) in {folder}", file=sys.stderr)
        return 2
    print("| preset | delay | online_lr | seeds | val MSE [95% CI] | MSE / persistence's |")
    print("| --- | --: | --- | --: | --- | --: |")
    best: dict[tuple[str, int], tuple[float, str]] = {}
    for preset, delay, lr in sorted(runs, key=lambda k: (k[1], k[0], lr_key(k[2]))):
        members = [m for m in runs[(preset, delay, lr)] if m.get("error") is None and math.isfinite(m["mse"])]
        if not members:
            print(f"| `{preset}` | {delay} | {lr} | 0 | every member failed | |")
            continue
        mean, low, high = mean_interval([m["mse"] for m in members])  # low, high NaN for one member
        shown = f"{mean:.4f} [{low:.4f}, {high:.4f}]" if len(members) > 1 else f"{mean:.4f}"
        rel = sum(m["rel_mse_persistence"] for m in members) / len(members)
        print(f"| `{preset}` | {delay} | {lr} | {len(members)} | {shown} | {rel:.3f} |")
        if (preset, delay) not in best or mean < best[(preset, delay)][0]:
            best[(preset, delay)] = (mean, lr)
    print()
    for (preset, delay), (mean, lr) in sorted(best.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"- `{preset}`, delay {delay}: online_lr {lr} (val MSE {mean:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
