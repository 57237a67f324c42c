"""Trial groups in an experiment's plan: the seeds of each configuration packed into groups of G.

A group is one configuration x G seeds, run by one Ray Tune trial as one batched network
(harness.online.group_runner). `--group-size G` packs each configuration's planned seeds, in
order, into groups of at most G (the last one may be smaller); `--group-size auto` takes G from
AUTO_GROUP_SIZE, the best G per device and preset that `python -m harness.bench --group-sizes`
measured (docs/benchmarks.md). Presets that never learn (persistence) always run alone.
trials.parquet keeps one row per (configuration, seed); the group's trial id, size and each
member's index are columns of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fsnet_models.knobs import KnobError
from fsnet_models.presets import preset as get_preset

AUTO = "auto"
# Best G per preset, from `python -m harness.bench --group-sizes 1 4 8 16 --presets ogd fsnet ultra
# --steps 300` on the project's 2-core CPU machine (docs/benchmarks.md): the G with the lowest ms per
# member-step. Presets not measured take the value of the closest measured one (see auto_group_size).
# No GPU has been measured yet; until the GPU check fills in a row, `cuda` uses the CPU's values.
AUTO_GROUP_SIZE: dict[str, dict[str, int]] = {"cpu": {"ogd": 8, "fsnet": 16, "ultra": 16}}
_CLOSEST = {"er": "ogd", "derpp": "ogd", "nomem": "fsnet", "fsnet_bug": "fsnet", "advanced": "ultra"}


def parse_group_size(text: str | int) -> int | str:
    """`--group-size` text -> an integer >= 1 or "auto" (KnobError, one line, otherwise)."""
    if isinstance(text, int) or str(text).strip() != AUTO:
        try:
            size = int(text)
        except (TypeError, ValueError):
            raise KnobError(f"--group-size must be an integer >= 1 or 'auto', got {text!r}") from None
        if size < 1:
            raise KnobError(f"--group-size must be an integer >= 1 or 'auto', got {size}")
        return size
    return AUTO


def groupable(preset: str) -> bool:
    """Whether `preset` can run as a group (it trains; persistence does not)."""
    spec = get_preset(preset)
    return spec.conv != "none" and spec.learner != "none"


def auto_group_size(preset: str, device: str = "cpu") -> int:
    """G for `--group-size auto`: AUTO_GROUP_SIZE[device][preset] (measured), else its closest measured preset."""
    table = AUTO_GROUP_SIZE.get(device, AUTO_GROUP_SIZE["cpu"])
    return table.get(preset) or table.get(_CLOSEST.get(preset, "fsnet"), 1)


def pack_groups(planned: Sequence[Mapping[str, Any]], group_size: int | str, device: str = "cpu"
                ) -> list[dict[str, Any]]:
    """The grid's trials: `planned` (one entry per configuration and seed, as plan_trials gives them) packed.

    Each entry of the result is a Tune trial: plan_id, variant, seed (its first seed), preset and overrides
    (of its first seed) as a planned trial has them, plus `seeds` (every member's seed, in order). A
    configuration's seeds go in plan order into groups of at most G; a preset that does not train, and
    G = 1, give groups of one.
    """
    by_variant: dict[str, list[Mapping[str, Any]]] = {}
    for trial in planned:
        by_variant.setdefault(trial["variant"], []).append(trial)
    out: list[dict[str, Any]] = []
    for trials in by_variant.values():
        preset = trials[0]["preset"]
        size = auto_group_size(preset, device) if group_size == AUTO else int(group_size)
        size = size if groupable(preset) else 1
        for start in range(0, len(trials), size):
            chunk = trials[start:start + size]
            first = chunk[0]
            out.append({"plan_id": first["plan_id"], "variant": first["variant"], "seed": first["seed"],
                        "preset": preset, "overrides": dict(first["overrides"]),
                        "seeds": [int(t["seed"]) for t in chunk]})
    return sorted(out, key=lambda t: t["plan_id"])
