"""Timing of the online step for the bench: interleaved stretches of several presets, whole trials, or groups.

`bench_interleaved` warms every preset up, then lets the presets take turns, STRETCH online steps
each, so that a slow minute of a shared machine falls on every preset alike; `bench_full` times
whole trials one after the other. Both return one figures row per preset (see `figures`).
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from fsnet_models import KnobError, resolve_config
from harness.online.group_runner import GroupRunner
from harness.online.runner import TrialRunner
from harness.online.runtime import peak_rss_mb, rss_mb
from harness.online.trial_data import load_data
from harness.perf.floor import controller_products_ms, state_updates_ms

UNTIMED_STEPS = 50
STRETCH = 50  # online steps a preset runs before the next one takes its turn


def make_runner(preset: str, steps: int | None, epochs: int | None, device: str, seed: int) -> TrialRunner:
    """A runner of `preset` for `steps` online steps (None: the whole stream)."""
    overrides: dict[str, Any] = {"seed": seed}
    if epochs is not None and preset != "persistence":
        overrides["epochs"] = epochs
    config = resolve_config(preset, overrides)
    data = load_data(config, None)
    return TrialRunner(config, data, device=device, max_steps=steps)


def bench_full(preset: str, epochs: int | None, device: str, seed: int) -> dict[str, Any]:
    """Time one whole trial of `preset` (warm-up and every online step); returns its figures."""
    started = time.perf_counter()
    runner = make_runner(preset, None, epochs, device, seed)
    runner.run_warmup()
    runner.run_online()
    result = figures(preset, runner, runner.step, runner.online_seconds, [])
    result.update(trial_seconds=time.perf_counter() - started, mse=runner.metrics()["mse"],
                  rss_mb_at_10pct=runner.rss_at_10pct)
    return result


def bench_interleaved(presets: Sequence[str], steps: int, epochs: int | None, device: str, seed: int,
                      progress: bool) -> list[dict[str, Any]]:
    """Time `steps` online steps of every preset, the presets taking turns in STRETCH-step parts."""
    runners = {}
    for preset in presets:
        runner = make_runner(preset, UNTIMED_STEPS + steps, epochs, device, seed)
        if runner.n_steps < UNTIMED_STEPS + steps:
            raise KnobError(f"--steps {steps} is longer than the stream allows: at most "
                            f"{runner.n_steps - UNTIMED_STEPS} after the {UNTIMED_STEPS} untimed steps")
        runner.run_warmup()
        runner.run_online(UNTIMED_STEPS)
        runners[preset] = runner
        if progress:
            print(f"{preset}: warmed up ({runner.warmup_seconds:.1f} s)", file=sys.stderr, flush=True)
    parts: dict[str, list[tuple[float, int]]] = {preset: [] for preset in presets}
    done = 0
    while done < steps:
        count = min(STRETCH, steps - done)
        for preset, runner in runners.items():
            before = runner.online_seconds
            runner.run_online(count)
            parts[preset].append((runner.online_seconds - before, count))
        done += count
        if progress:
            print(f"{done}/{steps} steps each", file=sys.stderr, flush=True)
    return [figures(preset, runner, steps, sum(seconds for seconds, _ in parts[preset]), parts[preset])
            for preset, runner in runners.items()]


def figures(preset: str, runner: TrialRunner, steps: int, seconds: float,
            parts: list[tuple[float, int]]) -> dict[str, Any]:
    """One preset's row: ms/step (mean; median of the parts, if any), steps/s, memory, ctrl and floor ms."""
    products = controller_products_ms(runner.model)
    row = {
        "preset": preset,
        "steps": steps,
        "ms_per_step": 1000 * seconds / steps,
        "steps_per_s": steps / seconds,
        "rss_mb": rss_mb(),
        "peak_rss_mb": peak_rss_mb(),
        "warmup_seconds": runner.warmup_seconds,
        "controller_products_ms": products,
        "adapter_floor_ms": products + state_updates_ms(runner.model),
    }
    if parts:
        row["ms_per_step_median"] = 1000 * statistics.median(part / count for part, count in parts)
    return row


def environment(device: str) -> dict[str, Any]:
    """What the figures were measured on."""
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": device,
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version()}


def make_group_runner(preset: str, size: int, steps: int, epochs: int | None, device: str, seed: int) -> GroupRunner:
    """A group of `size` members of `preset` (seeds seed..seed+size-1) for `steps` online steps."""
    overrides: dict[str, Any] = {"seed": seed}
    if epochs is not None:
        overrides["epochs"] = epochs
    config = resolve_config(preset, overrides)
    return GroupRunner(config, load_data(config, None), list(range(seed, seed + size)), device=device, max_steps=steps)


def bench_groups(presets: Sequence[str], group_sizes: Sequence[int], steps: int, epochs: int | None, device: str,
                 seed: int, progress: bool) -> list[dict[str, Any]]:
    """Member-steps per second of trial groups against the solo step, per preset, interleaved.

    For each preset: the solo runner (TrialRunner, the solo path) and a GroupRunner of every size in
    `group_sizes` are warmed up and run UNTIMED_STEPS untimed steps; then they take turns, STRETCH
    online steps each, until each has run `steps`. A row per (preset, runner): group_size, path
    ("solo" or "group"), ms_per_member_step (ms per online step / G), member_steps_per_s and
    ratio_to_solo (ms_per_member_step / the solo row's ms per step).
    """
    rows: list[dict[str, Any]] = []
    for preset in presets:
        runners: dict[tuple[str, int], TrialRunner | GroupRunner] = {
            ("solo", 1): make_runner(preset, UNTIMED_STEPS + steps, epochs, device, seed)}
        for size in group_sizes:
            runners[("group", size)] = make_group_runner(preset, size, UNTIMED_STEPS + steps, epochs, device, seed)
        for (path, size), runner in runners.items():
            if runner.n_steps < UNTIMED_STEPS + steps:
                raise KnobError(f"--steps {steps} is longer than the stream allows: at most "
                                f"{runner.n_steps - UNTIMED_STEPS} after the {UNTIMED_STEPS} untimed steps")
            runner.run_warmup()
            runner.run_online(UNTIMED_STEPS)
            if progress:
                print(f"{preset} {path} G={size}: warmed up ({runner.warmup_seconds:.1f} s)", file=sys.stderr,
                      flush=True)
        seconds = dict.fromkeys(runners, 0.0)
        done = 0
        while done < steps:
            count = min(STRETCH, steps - done)
            for key, runner in runners.items():
                before = runner.online_seconds
                runner.run_online(count)
                seconds[key] += runner.online_seconds - before
            done += count
        solo_ms = 1000 * seconds[("solo", 1)] / steps
        for (path, size), total in seconds.items():
            per_member = 1000 * total / steps / size
            rows.append({"preset": preset, "group_size": size, "path": path, "steps": steps,
                         "ms_per_step": 1000 * total / steps, "ms_per_member_step": per_member,
                         "member_steps_per_s": 1000 / per_member, "ratio_to_solo": per_member / solo_ms,
                         "rss_mb": rss_mb(), "peak_rss_mb": peak_rss_mb()})
        if progress:
            print(f"{preset}: " + ", ".join(f"{r['path']} G={r['group_size']} {r['ms_per_member_step']:.2f} ms"
                                            for r in rows if r["preset"] == preset), file=sys.stderr, flush=True)
        del runners
    return rows
