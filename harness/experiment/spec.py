"""The trial a Ray Tune config dict describes: variant, seed, preset and knob overrides.

A config is {"run": {...run settings...}, "trial": {plan_id, variant, seed, preset, overrides[, seeds]}}
plus, for the optuna design, the sampled knobs at top level and the seed repeat index
`__trial_index__` (ray.tune.search.repeater.TRIAL_INDEX). A trial group (harness.experiment.groups)
lists every member's seed in `seeds`; `seed` is then its first. The trainable and the driver's
results callback read it the same way through TrialSpec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fsnet_models.knobs import KNOBS
from fsnet_models.presets import resolve_config
from harness.experiment.designs import sample_variant_name

TRIAL_INDEX = "__trial_index__"


@dataclass(frozen=True)
class TrialSpec:
    """One trial's identity and knob overrides."""

    plan_id: int | None
    variant: str
    seed: int
    preset: str
    overrides: dict[str, Any]
    sampled: dict[str, Any]
    seeds: tuple[int, ...] = ()

    @classmethod
    def from_tune_config(cls, config: Mapping[str, Any]) -> TrialSpec:
        """Read a Ray Tune trial config (see the module docstring)."""
        trial = config["trial"]
        sampled = {k: v for k, v in config.items() if k in KNOBS}
        seed = int(config[TRIAL_INDEX]) if TRIAL_INDEX in config else int(trial["seed"])
        variant = trial.get("variant") or sample_variant_name(trial["preset"], sampled)
        seeds = tuple(int(s) for s in trial.get("seeds") or (seed,))
        return cls(trial.get("plan_id"), variant, seed, trial["preset"], dict(trial["overrides"]), sampled, seeds)

    @property
    def is_group(self) -> bool:
        """Whether this trial runs a group of more than one seed."""
        return len(self.seeds) > 1

    def member(self, index: int) -> TrialSpec:
        """The solo trial of member `index` of this group (its seed; the same configuration)."""
        seed = self.seeds[index]
        return TrialSpec(self.plan_id, self.variant, seed, self.preset, {**self.overrides, "seed": seed},
                         self.sampled, (seed,))

    def knobs(self) -> dict[str, Any]:
        """The resolved config of this trial (resolve_config of preset, overrides, samples and seed)."""
        return resolve_config(self.preset, {**self.overrides, **self.sampled, "seed": self.seed})

    @property
    def key(self) -> str:
        """`variant|seed`: identifies a planned trial across driver restarts."""
        return f"{self.variant}|{self.seed}"
