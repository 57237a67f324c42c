"""Named search spaces, built as data from the knob registry.

A space names the innovations an ablation design switches (taken from INNOVATIONS by tier),
the preset they are switched on top of (`base_preset`) and the preset with all of them on
(`full_preset`), the continuous knobs an optuna design samples (ranges default to the knob's
own Knob.low/high), or, for a space of plain variants, a list of presets. Adding a space is a
few lines in SPACES.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fsnet_models.knobs import INNOVATIONS, KNOBS, Innovation, KnobError, validate_knob
from fsnet_models.presets import PRESETS


class SpaceError(KnobError):
    """An unknown space or an inconsistent space definition; str() is one line."""


@dataclass(frozen=True)
class Continuous:
    """A knob sampled by the optuna design: [low, high] (default: the knob's own bounds), maybe log scale.

    `at_least` names another continuous knob this one may not go below (e.g. t_max >= t_min):
    it is sampled after that knob, from [max(low, that value), high].
    """

    knob: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    at_least: str | None = None

    def bounds(self) -> tuple[float, float]:
        """The (low, high) sampling range, checked against the knob's allowed values."""
        spec = KNOBS[self.knob]
        low = spec.low if self.low is None else self.low
        high = spec.high if self.high is None else self.high
        if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise SpaceError(f"continuous knob '{self.knob}' needs a finite range (got {low}..{high})")
        for value in (low, high):
            validate_knob(self.knob, int(value) if spec.type is int else float(value))
        return (low, high)

    @property
    def is_int(self) -> bool:
        """True when the knob takes integers (sampled with suggest_int)."""
        return KNOBS[self.knob].type is int


@dataclass(frozen=True)
class SearchSpace:
    """What a design may vary: innovations between two presets, continuous knobs, or plain presets."""

    name: str
    base_preset: str
    full_preset: str
    innovations: tuple[str, ...] = ()
    continuous: tuple[Continuous, ...] = ()
    presets: tuple[str, ...] = ()
    description: str = ""

    def innovation_objects(self) -> list[Innovation]:
        """The Innovation entries of this space, in registry order."""
        return [INNOVATIONS[n] for n in self.innovations]

    def knob_units(self) -> list[str]:
        """The single knobs of this space's innovations (the units of `--unit knob`)."""
        return [k for inn in self.innovation_objects() for k in inn.knobs]

    @property
    def is_plain(self) -> bool:
        """True for a space of plain preset variants (no innovation switching)."""
        return bool(self.presets)


def _tier(*tiers: str) -> tuple[str, ...]:
    """Names of the registry's innovations of the given tiers, in registry order."""
    return tuple(i.name for i in INNOVATIONS.values() if i.tier in tiers)


# The optuna design's hyperparameters, sampled on top of `ultra`. The fixed `temperature` is left
# out: ultra's dynamic temperature (A3) replaces it, so it would be a dimension without effect;
# t_min/t_max are sampled instead (t_max >= t_min).
_HPARAMS: tuple[Continuous, ...] = (
    Continuous("lr", 1e-4, 1e-2, log=True),
    Continuous("tau", 0.5, 0.95),
    Continuous("gamma", 0.8, 0.99),
    Continuous("f_gamma", 0.1, 0.6),
    Continuous("trigger_threshold", 0.5, 0.95),
    Continuous("trigger_kappa", 0.5, 3.0),
    Continuous("t_min", 0.1, 0.5),
    Continuous("t_max", 0.3, 1.5, at_least="t_min"),
    Continuous("memory_slots", 16, 128, log=True),
    Continuous("controller_dropout", 0.0, 0.5),
    Continuous("diversity_penalty", 0.0, 0.5),
)

SPACES: dict[str, SearchSpace] = {
    s.name: s
    for s in (
        SearchSpace("advanced", "fsnet", "advanced", _tier("advanced"),
                    description="the 4 Advanced innovations on fsnet"),
        SearchSpace("ultra", "advanced", "ultra", _tier("ultra"),
                    description="the 6 Ultra innovations on top of advanced"),
        SearchSpace("all", "fsnet", "ultra", _tier("advanced", "ultra"),
                    description="all 10 innovations on fsnet"),
        SearchSpace("baselines", "ogd", "ultra", presets=tuple(PRESETS),
                    description="every preset as a plain variant"),
        SearchSpace("hparams", "ultra", "ultra", continuous=_HPARAMS,
                    description="continuous hyperparameters of ultra (optuna design)"),
    )
}


def get_space(name: str) -> SearchSpace:
    """The space called `name`; an unknown name raises SpaceError (one line) listing the known spaces."""
    try:
        return SPACES[name]
    except KeyError:
        raise SpaceError(f"unknown space '{name}'; known spaces: {', '.join(SPACES)}") from None
