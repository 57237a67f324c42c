"""The FSNet model family: knob registry, presets, the model factory and trial groups."""

from fsnet_models.factory import build_from_config, build_model
from fsnet_models.group import GroupNet, build_group
from fsnet_models.group_optim import GroupAdamW
from fsnet_models.knobs import INNOVATIONS, KNOBS, Innovation, Knob, KnobError, parse_knob_value
from fsnet_models.presets import PRESETS, applicable_knobs, resolve_config

__all__ = [
    "INNOVATIONS", "KNOBS", "PRESETS", "GroupAdamW", "GroupNet", "Innovation", "Knob", "KnobError",
    "applicable_knobs", "build_from_config", "build_group", "build_model", "parse_knob_value", "resolve_config",
]
