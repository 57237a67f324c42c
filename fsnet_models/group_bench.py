"""Timing of trial groups against solo trials (prints a table; not a test).

    python -m fsnet_models.group_bench [--presets ogd fsnet ultra] [--members 1 2 4 8 16]
                                       [--steps 20] [--rounds 5] [--threads 1] [--convs] [--sync-free]

One online step as the protocol runs it (eval mode, memory on, batch 1 per member): begin_step,
forward, MSE, backward, AdamW (fused), end_step; float32 on CPU inside `native_eltwise()` and
with glibc's thresholds raised, as the harness runs trials. Solo and every group size are timed
in interleaved rounds (each round times `steps` steps of every variant in turn) and the median
round is kept, so that drifting machine load hits all variants alike. Inputs and targets are
random: the triggers fire rarely, so the solo step mostly skips the memory; so does the group on
the CPU by default (one host-side `any` per bank), while with `--sync-free` (the CUDA default)
it reads every bank's memory on every online step, masks instead of a gather.

`--convs` times the 12 full-length convs (forward + backward, 64 channels, positions 48 ... 2) as
a grouped conv (input [B, G*C, n], groups=G) against an im2col and one batched product;
`--layouts grouped im2col` times whole steps with each (GroupNet.set_conv_layout).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fsnet_models.backbone import ConvParams
from fsnet_models.factory import build_from_config
from fsnet_models.group import CONV_LAYOUT, GroupNet, build_group, member_conv, stacked_conv
from fsnet_models.group_optim import GroupAdamW
from fsnet_models.kernels import native_eltwise
from fsnet_models.presets import resolve_config

Step = Callable[[], None]


def keep_freed_memory() -> None:
    """glibc's mmap and trim thresholds raised, as a trial's process has them (the same setting as
    harness.online.runtime.keep_freed_memory, which this layer may not import): without it the
    group's multi-MB gradients and EMAs come from fresh pages every step."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD: glibc's maximum on 64-bit
    libc.mallopt(-1, 256 * 2**20)  # M_TRIM_THRESHOLD


def solo_step(preset: str, steps: int, seed: int = 0) -> Step:
    """A closure running one online step of the solo model of `preset` (inputs cycle over `steps`)."""
    config = resolve_config(preset)
    torch.manual_seed(seed)
    model = build_from_config(config)
    model.eval()
    model.set_online(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01, fused=True)
    xs = torch.randn(steps, 1, config["seq_len"], 8)  # [steps, B=1, T, F]
    ys = torch.randn(steps, 1, config["pred_len"])
    t = [0]

    def step() -> None:
        i = t[0] % steps
        t[0] += 1
        model.begin_step()
        out = model(xs[i])
        optimizer.zero_grad(set_to_none=True)
        F.mse_loss(out, ys[i]).backward()
        optimizer.step()
        model.end_step()

    return step


def group_step(preset: str, members: int, steps: int, sync_free: bool | None = None,
               layout: str = CONV_LAYOUT) -> Step:
    """A closure running one online step of a group of `members` seeds of `preset`."""
    config = resolve_config(preset)
    model: GroupNet = build_group(config, list(range(members)))
    model.set_sync_free(sync_free)
    model.set_conv_layout(layout)
    model.eval()
    model.set_online(True)
    optimizer = GroupAdamW(model, lr=5e-4, weight_decay=0.01, fused=True)
    xs = torch.randn(steps, members, 1, config["seq_len"], 8)  # [steps, G, B=1, T, F]
    ys = torch.randn(steps, members, 1, config["pred_len"])
    t = [0]

    def step() -> None:
        i = t[0] % steps
        t[0] += 1
        model.begin_step()
        out = model(xs[i])  # [G, 1, P]
        optimizer.zero_grad(set_to_none=True)
        (out - ys[i]).square().mean(dim=(1, 2)).sum().backward()  # sum of the members' MSEs
        optimizer.step()
        model.end_step()

    return step


def time_interleaved(variants: dict[str, Step], steps: int, rounds: int, warmup: int = 5) -> dict[str, float]:
    """Median over `rounds` of the ms per call of each variant, rounds interleaving the variants."""
    for step in variants.values():
        for _ in range(warmup):
            step()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, step in variants.items():
            started = time.perf_counter()
            for _ in range(steps):
                step()
            samples[name].append((time.perf_counter() - started) * 1e3 / steps)
    return {name: statistics.median(values) for name, values in samples.items()}


def bench_steps(presets: list[str], members: list[int], steps: int, rounds: int, sync_free: bool | None,
                layouts: list[str]) -> None:
    """Print ms per step and per member-step for solo and each group size (and conv layout), per preset."""
    print(f"threads {torch.get_num_threads()}, {steps} steps x {rounds} interleaved rounds, median round")
    print(f"{'preset':<8} {'variant':<14} {'ms/step':>9} {'ms/member-step':>15} {'vs solo':>8}")
    for preset in presets:
        variants = {"solo": solo_step(preset, steps)}
        for g in members:
            for layout in layouts:
                name = f"G={g}" if len(layouts) == 1 else f"G={g} {layout}"
                variants[name] = group_step(preset, g, steps, sync_free, layout)
        with native_eltwise():
            ms = time_interleaved(variants, steps, rounds)
        for name, value in ms.items():
            g = 1 if name == "solo" else int(name.removeprefix("G=").split()[0])
            per_member = value / g
            print(f"{preset:<8} {name:<14} {value:>9.2f} {per_member:>15.2f} {ms['solo'] / per_member:>7.2f}x")


def conv_variants(members: int) -> dict[str, Step]:
    """Forward + backward of the 12 full-length 64-channel convs (2 per block at 48 ... 2
    positions, batch 1) for `members` members: grouped conv against the group's im2col product."""
    positions = [48, 24, 12, 6, 3, 2]
    channels, k = 64, 3
    weight = torch.randn(members, channels, channels, k, requires_grad=True)
    bias = torch.randn(members, channels, requires_grad=True)
    channels_grouped = [torch.randn(1, members * channels, n, requires_grad=True) for n in positions]  # [B, G*C, n]
    members_first = [torch.randn(members, channels, 1, n, requires_grad=True) for n in positions]  # [G, C, B, n]

    def grouped() -> None:
        total = torch.zeros(())
        for x in channels_grouped:
            for _ in range(2):
                total = total + member_conv(x, ConvParams(weight, bias)).sum()
        total.backward()

    def im2col() -> None:
        total = torch.zeros(())
        for x in members_first:
            for _ in range(2):
                total = total + stacked_conv(x, ConvParams(weight, bias)).sum()
        total.backward()

    return {"grouped": grouped, "im2col": im2col}


def bench_convs(members: list[int], rounds: int) -> None:
    """Print forward + backward ms of the 12 full-length convs: grouped conv vs im2col product."""
    print(f"{'G':>3} {'grouped conv ms':>16} {'im2col bmm ms':>14} (12 convs, forward + backward)")
    for g in members:
        with native_eltwise():
            ms = time_interleaved(conv_variants(g), 20, rounds)
        print(f"{g:>3} {ms['grouped']:>16.3f} {ms['im2col']:>14.3f}")


def main() -> None:
    """Parse the flags and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["ogd", "fsnet", "ultra"])
    parser.add_argument("--members", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--convs", action="store_true", help="also time the conv layouts")
    parser.add_argument("--sync-free", action="store_true", help="memory reads as masks (the CUDA default)")
    parser.add_argument("--layouts", nargs="+", default=[CONV_LAYOUT], choices=["grouped", "im2col"],
                        help="conv layouts of the full-length blocks to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    if args.convs:
        bench_convs(args.members, args.rounds)
    bench_steps(args.presets, args.members, args.steps, args.rounds, True if args.sync_free else None, args.layouts)


if __name__ == "__main__":
    main()
