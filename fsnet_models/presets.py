"""Named variants (MODELS.md section 3) and the resolution of a preset plus overrides into a config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fsnet_models.knobs import (
    KNOBS,
    SCOPE_ADAPTIVE,
    SCOPE_ALL,
    SCOPE_MEMORY,
    SCOPE_NEURAL,
    SCOPE_REPLAY,
    KnobError,
    knob,
    validate_knob,
)


@dataclass(frozen=True)
class Preset:
    """How a named variant is built: backbone conv kind, learner and memory retrieval."""

    name: str
    conv: str  # "none" (persistence), "plain" or "adaptive"
    learner: str  # "none", "ogd", "er", "derpp"
    memory: bool  # associative memory and trigger on (adaptive only)
    retrieval: str  # "fixed" or "bug" (salesforce/fsnet's index-weighted read)
    description: str

    @property
    def scopes(self) -> frozenset[str]:
        """Knob scopes that apply to this preset."""
        s = {SCOPE_ALL}
        if self.conv != "none":
            s.add(SCOPE_NEURAL)
        if self.learner in ("er", "derpp"):
            s.add(SCOPE_REPLAY)
        if self.conv == "adaptive":
            s.add(SCOPE_ADAPTIVE)
        if self.memory:
            s.add(SCOPE_MEMORY)
        return frozenset(s)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("persistence", "none", "none", False, "fixed", "last observed value repeated; no learning"),
        Preset("ogd", "plain", "ogd", False, "fixed", "plain TCN, online gradient descent"),
        Preset("er", "plain", "er", False, "fixed", "ogd + experience replay"),
        Preset("derpp", "plain", "derpp", False, "fixed", "er + dark experience replay of outputs"),
        Preset("nomem", "adaptive", "ogd", False, "fixed", "adaptive conv, adapter only"),
        Preset("fsnet_bug", "adaptive", "ogd", True, "bug", "reference code's index-weighted retrieval"),
        Preset("fsnet", "adaptive", "ogd", True, "fixed", "FSNet with the retrieval fixed"),
        Preset("advanced", "adaptive", "ogd", True, "fixed", "fsnet + the 4 Advanced innovations"),
        Preset("ultra", "adaptive", "ogd", True, "fixed", "advanced + the 6 Ultra innovations"),
    )
}

# Presets of the report's table 4.1 plus the honest floor, in table order.
TABLE_PRESETS: tuple[str, ...] = tuple(PRESETS)


def preset(name: str) -> Preset:
    """The preset called `name`; an unknown name raises KnobError listing the known presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KnobError(f"unknown preset '{name}'; known presets: {', '.join(PRESETS)}") from None


def applicable_knobs(preset_name: str) -> list[str]:
    """Names of the knobs that mean something for `preset_name`, in registry order."""
    scopes = preset(preset_name).scopes
    return [k.name for k in KNOBS.values() if k.scope in scopes]


def resolve_config(preset_name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every applicable knob's value for `preset_name` with `overrides` applied and validated.

    Returns a dict {"preset": name, knob: value, ...}. Refuses (KnobError, one line) an unknown
    knob, a wrong type, a value out of range, a knob that does not apply to the preset, and
    inconsistent combinations (memory_slots < top_k, t_min > t_max).
    """
    spec = preset(preset_name)
    names = applicable_knobs(preset_name)
    config: dict[str, Any] = {"preset": preset_name}
    config.update({n: KNOBS[n].value_for(preset_name) for n in names})
    for name, value in (overrides or {}).items():
        entry = knob(name)
        if entry.scope not in spec.scopes:
            raise KnobError(f"knob '{name}' does not apply to preset '{preset_name}' (it is for {entry.scope}"
                            " models)")
        config[name] = validate_knob(name, value)
    if "memory_slots" in config and config["memory_slots"] < config["top_k"]:
        raise KnobError(f"knob 'memory_slots' got {config['memory_slots']}: expected an integer >= top_k "
                        f"({config['top_k']})")
    if "t_min" in config and config["t_min"] > config["t_max"]:
        raise KnobError(f"knob 't_min' got {config['t_min']}: expected <= t_max ({config['t_max']})")
    return config
