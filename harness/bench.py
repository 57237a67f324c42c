"""Benchmark of the online step: `python -m harness.bench [--presets ...] [--steps N] [--full] [--json]`.

For each preset, in this one process: warm-up training (untimed) and 50 untimed online steps;
then the presets take turns, 50 online steps each, until each has run the timed stretch
(default 1000 steps), so that a slow minute of a shared machine falls on every preset alike.
Prints ms per online step (the mean over the stretch, and the median of its 50-step parts),
steps per second, the process's RSS and peak RSS (every preset's runner is resident), each
preset's step time relative to `ogd`'s, "ctrl ms": the controllers' matrix products alone
(harness.perf.floor), "floor ms": those plus AdamW over the parameters the adaptive layers add and one
pass over their gradient EMAs, a lower bound on what the adaptive layers add to a step, and
"floor x ogd" = 1 + floor ms / ogd's ms per step: the lowest ratio to `ogd` reachable with these
kernels. `--full` times whole trials instead, one preset after the other (warm-up included,
every online step), with each trial's RSS. A benchmark, not a test: the figures move by 10-30%
from run to run on shared machines; compare ratios measured in the same run."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from data import DataError
from fsnet_models import KnobError
from fsnet_models.presets import PRESETS
from harness.cli import OneLineParser, fail, run_entry
from harness.online.runtime import DeviceError, pick_device, set_threads
from harness.perf.timing import bench_full, bench_groups, bench_interleaved, environment

DEFAULT_PRESETS = ("ogd", "er", "derpp", "nomem", "fsnet_bug", "fsnet", "advanced", "ultra")
GROUP_PRESETS = ("ogd", "fsnet", "ultra")


def format_rows(rows: list[dict[str, Any]], env: dict[str, Any], full: bool) -> str:
    """The figures as a text table."""
    head = f"torch {env['torch']}, {env['threads']} thread(s), device {env['device']}"
    cols = ["preset", "ms/step", "steps/s", "x ogd", "ctrl ms", "floor ms", "floor x ogd", "RSS MiB",
            "peak RSS MiB"] + (
        ["trial s", "RSS@10% MiB", "mse"] if full else ["median ms"])
    lines = [head, "  ".join(f"{c:>12s}" for c in cols)]
    for r in rows:
        ratio = "n/a" if r["ratio_to_ogd"] is None else f"{r['ratio_to_ogd']:.2f}"
        cells = [r["preset"], f"{r['ms_per_step']:.2f}", f"{r['steps_per_s']:.1f}", ratio,
                 f"{r['controller_products_ms']:.2f}", f"{r['adapter_floor_ms']:.2f}",
                 f"{r['floor_ratio_to_ogd']:.2f}", f"{r['rss_mb']:.0f}", f"{r['peak_rss_mb']:.0f}"]
        if full:
            cells += [f"{r['trial_seconds']:.1f}", f"{r['rss_mb_at_10pct']:.0f}", f"{r['mse']:.4f}"]
        else:
            cells.append(f"{r['ms_per_step_median']:.2f}")
        lines.append("  ".join(f"{c:>12s}" for c in cells))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    p = OneLineParser(prog="python -m harness.bench", description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS), help="presets to time (ogd is always added)")
    p.add_argument("--steps", type=int, default=1000, help="timed online steps per preset (default 1000)")
    p.add_argument("--full", action="store_true", help="time whole trials: warm-up and the whole stream")
    p.add_argument("--epochs", type=int, default=None, help="warm-up epochs (default: 1, or 2 with --full)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one trial per core)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON list, an object per preset")
    p.add_argument("--group-sizes", type=int, nargs="+", default=None, metavar="G",
                   help="time trial groups of these sizes against the solo step, interleaved, per preset "
                   "(member-steps per second; presets default to ogd fsnet ultra)")
    return p


def format_group_rows(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    """The --group-sizes figures as a text table."""
    head = f"torch {env['torch']}, {env['threads']} thread(s), device {env['device']}"
    cols = ["preset", "path", "G", "ms/step", "ms/member-step", "member-steps/s", "x solo"]
    lines = [head, "  ".join(f"{c:>14s}" for c in cols)]
    for r in rows:
        cells = [r["preset"], r["path"], str(r["group_size"]), f"{r['ms_per_step']:.2f}",
                 f"{r['ms_per_member_step']:.2f}", f"{r['member_steps_per_s']:.1f}", f"{r['ratio_to_solo']:.3f}"]
        lines.append("  ".join(f"{c:>14s}" for c in cells))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        unknown = [p for p in args.presets if p not in PRESETS]
        if unknown:
            raise KnobError(f"unknown preset '{unknown[0]}'; known presets: {', '.join(PRESETS)}")
        if args.steps < 1 or args.threads < 1:
            raise KnobError("--steps and --threads must be >= 1")
        if args.group_sizes is not None:
            return _groups_main(args)
        presets = ["ogd"] + [p for p in args.presets if p != "ogd"]
        set_threads(args.threads)
        device = pick_device(args.device)
        epochs = args.epochs if args.epochs is not None else (None if args.full else 1)
        if args.full:
            rows = []
            for preset in presets:
                rows.append(bench_full(preset, epochs, device, args.seed))
                if not args.json:
                    print(f"{preset}: {rows[-1]['trial_seconds']:.1f} s", file=sys.stderr, flush=True)
        else:
            rows = bench_interleaved(presets, args.steps, epochs, device, args.seed, progress=not args.json)
    except (KnobError, DataError, DeviceError) as exc:
        return fail(exc)
    base = rows[0]["ms_per_step"]
    for r in rows:
        r["ratio_to_ogd"] = r["ms_per_step"] / base
        r["floor_ratio_to_ogd"] = 1 + r["adapter_floor_ms"] / base
    env = environment(device)
    if args.json:
        print(json.dumps([{**r, **env} for r in rows]))
    else:
        print(format_rows(rows, env, args.full))
    return 0


def _groups_main(args: argparse.Namespace) -> int:
    """--group-sizes: the trial-group benchmark (harness.perf.timing.bench_groups)."""
    if args.full:
        raise KnobError("--group-sizes times online stretches; drop --full")
    if any(g < 1 for g in args.group_sizes):
        raise KnobError(f"--group-sizes must be >= 1, got {args.group_sizes}")
    presets = args.presets if args.presets != list(DEFAULT_PRESETS) else list(GROUP_PRESETS)
    cannot = [p for p in presets if p == "persistence"]
    if cannot:
        raise KnobError("persistence does not learn and cannot be grouped; drop it from --presets")
    set_threads(args.threads)
    device = pick_device(args.device)
    epochs = args.epochs if args.epochs is not None else 1
    rows = bench_groups(presets, sorted(set(args.group_sizes)), args.steps, epochs, device, args.seed,
                        progress=not args.json)
    env = environment(device)
    if args.json:
        print(json.dumps([{**r, **env} for r in rows]))
    else:
        print(format_group_rows(rows, env))
    return 0


if __name__ == "__main__":
    run_entry(main)
