"""Ablation designs: which configurations a space's innovations (or single knobs) are switched into.

loo       the full variant, and each unit switched off alone (on the full preset)
oat       the base variant, and each unit switched on alone (on the base preset)
factorial every on/off combination of the units (on the base preset; all-on is the full preset)
optuna    OptunaSearch over the space's continuous knobs (configurations are sampled by Ray Tune)

A unit is an innovation (on = Innovation.on_values(), off = off_values(); A3 switches top_k and
dynamic_temperature together) or, with `--unit knob`, a single knob of the space's innovations.
A space of plain presets (`baselines`) has one configuration per preset for every grid design.
Each configuration is planned once per seed 0..K-1, seeds in the outer loop.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from fsnet_models.knobs import INNOVATIONS, KNOBS, KnobError
from fsnet_models.presets import applicable_knobs, resolve_config
from search_spaces.spaces import SearchSpace

GRID_DESIGNS = ("loo", "oat", "factorial")
DESIGNS = (*GRID_DESIGNS, "optuna")
UNITS = ("innovation", "knob")


@dataclass(frozen=True)
class Unit:
    """What a design switches as one: a name and the knob values that turn it on and off."""

    name: str
    on: dict[str, Any]
    off: dict[str, Any]


@dataclass(frozen=True)
class Variant:
    """One configuration of a design: a readable name, a preset and the design's knob values."""

    name: str
    preset: str
    switches: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedTrial:
    """One planned trial: a variant at a seed, with every override and the resolved config."""

    plan_id: int
    variant: str
    seed: int
    preset: str
    overrides: dict[str, Any]
    config: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (experiment.json's planned trials, Ray Tune's trial config)."""
        return asdict(self)


def units(space: SearchSpace, unit: str) -> list[Unit]:
    """The units a design switches in `space`: its innovations, or their single knobs."""
    if unit not in UNITS:
        raise KnobError(f"unknown unit '{unit}'; known units: {', '.join(UNITS)}")
    if unit == "innovation":
        return [Unit(i.name, i.on_values(), i.off_values()) for i in space.innovation_objects()]
    found = []
    for inn in space.innovation_objects():
        for k in inn.knobs:
            found.append(Unit(k, {k: KNOBS[k].value_for(inn.tier)}, {k: KNOBS[k].default}))
    return found


def design_variants(space: SearchSpace, design: str, unit: str = "innovation") -> list[Variant]:
    """The configurations of a grid design over `space` (without seeds)."""
    if design not in DESIGNS:
        raise KnobError(f"unknown design '{design}'; known designs: {', '.join(DESIGNS)}")
    if design == "optuna":
        raise KnobError("design 'optuna' samples its configurations; it has no fixed variants")
    if space.is_plain:
        return [Variant(p, p) for p in space.presets]
    parts = units(space, unit)
    if not parts:
        raise KnobError(f"space '{space.name}' has no innovations to switch; use --design optuna")
    base, full = space.base_preset, space.full_preset
    if design == "loo":
        return [Variant(full, full)] + [Variant(f"{full} -{u.name}", full, dict(u.off)) for u in parts]
    if design == "oat":
        return [Variant(base, base)] + [Variant(f"{base} +{u.name}", base, dict(u.on)) for u in parts]
    variants = []
    for mask in itertools.product((False, True), repeat=len(parts)):
        if not any(mask):
            variants.append(Variant(base, base))
        elif all(mask):
            variants.append(Variant(full, full))
        else:
            switches: dict[str, Any] = {}
            for u, on in zip(parts, mask, strict=True):
                switches.update(u.on if on else u.off)
            name = base + " " + " ".join(f"+{u.name}" for u, on in zip(parts, mask, strict=True) if on)
            variants.append(Variant(name, base, switches))
    return variants


def switched_knobs(space: SearchSpace, design: str, unit: str = "innovation") -> set[str]:
    """Knobs the design sets itself (a --set on one of them is refused)."""
    if space.is_plain:
        return set()
    if design == "optuna":
        return {c.knob for c in space.continuous}
    return {k for u in units(space, unit) for k in u.on}


def check_sets(space: SearchSpace, design: str, unit: str, sets: Mapping[str, Any]) -> None:
    """Refuse --set values the design would overwrite (one-line KnobError)."""
    clash = sorted(set(sets) & switched_knobs(space, design, unit))
    if clash:
        raise KnobError(f"knob '{clash[0]}' is varied by design '{design}' of space '{space.name}'; it cannot be"
                        " fixed with --set")
    if "seed" in sets:
        raise KnobError("knob 'seed' is set by --seeds (seeds 0..K-1); it cannot be fixed with --set")


def overrides_for(preset: str, sets: Mapping[str, Any], soft: Mapping[str, Any], plain: bool) -> dict[str, Any]:
    """--set values for `preset`: all of them, or on a plain space only those that apply to it.

    `soft` values (e.g. --epochs) apply only where the knob applies, on every space.
    """
    names = set(applicable_knobs(preset))
    chosen = {k: v for k, v in sets.items() if not plain or k in names}
    chosen.update({k: v for k, v in soft.items() if k in names})
    return chosen


def plan_trials(space: SearchSpace, design: str, unit: str, seeds: int, sets: Mapping[str, Any],
                soft: Mapping[str, Any] | None = None) -> list[PlannedTrial]:
    """Every (variant, seed) trial of a grid design, each config validated by resolve_config."""
    if seeds < 1:
        raise KnobError(f"--seeds must be >= 1, got {seeds}")
    check_sets(space, design, unit, sets)
    variants = design_variants(space, design, unit)
    if space.is_plain:
        unused = [k for k in sets if not any(k in applicable_knobs(v.preset) for v in variants)]
        if unused:
            raise KnobError(f"knob '{unused[0]}' applies to none of the presets of space '{space.name}'")
    planned: list[PlannedTrial] = []
    for seed in range(seeds):
        for v in variants:
            overrides = {**overrides_for(v.preset, sets, soft or {}, space.is_plain), **v.switches, "seed": seed}
            config = resolve_config(v.preset, overrides)
            planned.append(PlannedTrial(len(planned), v.name, seed, v.preset, overrides, config))
    return planned


def optuna_base(space: SearchSpace, sets: Mapping[str, Any], soft: Mapping[str, Any] | None = None
                ) -> tuple[str, dict[str, Any]]:
    """The preset and fixed overrides an optuna design samples on; the range corners are validated."""
    if space.is_plain or not space.continuous:
        raise KnobError(f"space '{space.name}' has no continuous knobs for design 'optuna'; try --space hparams")
    check_sets(space, "optuna", "innovation", sets)
    preset = space.full_preset
    overrides = overrides_for(preset, sets, soft or {}, False)
    for pick in (0, 1):  # all lows, then all highs (an at_least knob starts at its partner's value)
        corner = dict(overrides)
        for c in space.continuous:
            value = c.bounds()[pick]
            if c.at_least is not None:
                value = max(value, corner[c.at_least])
            corner[c.knob] = int(value) if c.is_int else float(value)
        resolve_config(preset, corner)
    resolve_config(preset, overrides)
    return preset, overrides


def innovation_states(config: Mapping[str, Any], plain: bool) -> dict[str, bool | None]:
    """Per innovation of the registry: on (True), off (False), or neither/plain variant (None)."""
    states: dict[str, bool | None] = {}
    for name, inn in INNOVATIONS.items():
        state: bool | None = None
        if not plain and all(k in config for k in inn.knobs):
            values = {k: config[k] for k in inn.knobs}
            state = True if values == inn.on_values() else False if values == inn.off_values() else None
        states[name] = state
    return states


def sample_variant_name(preset: str, values: Mapping[str, Any]) -> str:
    """The name of an optuna sample: its preset and a short digest of the sampled values.

    The values themselves are in the knob_<name> columns; the digest keeps the seeds of one
    suggestion together under one short name (e.g. "ultra sample-3f2a9c").
    """
    if not values:
        return preset
    digest = hashlib.sha1(json.dumps(dict(sorted(values.items())), sort_keys=True).encode()).hexdigest()[:6]
    return f"{preset} sample-{digest}"
