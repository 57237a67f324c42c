"""One factory for every preset: `build_model(preset, **knobs)`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fsnet_models.adaptive import AdaptiveSettings
from fsnet_models.model import ForecastNet
from fsnet_models.presets import preset as get_preset
from fsnet_models.presets import resolve_config

ETT_VALUE_COLUMNS = 7


class Persistence(nn.Module):
    """Forecast = the last observed value of each target column, repeated pred_len times."""

    def __init__(self, target_index: list[int], pred_len: int) -> None:
        super().__init__()
        self.target_index = target_index
        self.pred_len = pred_len
        self.online = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, seq_len, n_in + 7] -> [B, pred_len * n_out] (time-major)."""
        return x[:, -1, self.target_index].repeat(1, self.pred_len)

    def set_online(self, online: bool) -> None:
        """No state."""
        self.online = online

    def begin_step(self) -> None:
        """Nothing to calibrate."""

    def end_step(self) -> None:
        """Nothing to update."""

    def diagnostics(self) -> dict[str, Any]:
        """No memory."""
        return {}

    def memory_buffers(self) -> dict[str, torch.Tensor]:
        """No memory."""
        return {}


def io_sizes(features: str, n_columns: int = ETT_VALUE_COLUMNS) -> tuple[int, int, list[int]]:
    """(n_in, n_out, target indices within the inputs) for features S / M / MS."""
    if features == "S":
        return 1, 1, [0]
    if features == "M":
        return n_columns, n_columns, list(range(n_columns))
    return n_columns, 1, [n_columns - 1]


def build_from_config(config: dict[str, Any], n_columns: int = ETT_VALUE_COLUMNS, fast: bool = True) -> nn.Module:
    """The model a resolved config describes, initialised from torch's global RNG (seed it first)."""
    spec = get_preset(config["preset"])
    n_in, n_out, target_index = io_sizes(config["features"], n_columns)
    if spec.conv == "none":
        return Persistence(target_index, config["pred_len"])
    adaptive = None
    if spec.conv == "adaptive":
        adaptive = AdaptiveSettings.from_config(config, memory=spec.memory,
                                                index_weighted_read=spec.retrieval == "bug")
    return ForecastNet(n_in, n_out, config["seq_len"], config["pred_len"], adaptive, fast=fast,
                       revin=config.get("revin", False), target_index=target_index)


def build_model(preset: str, *, n_columns: int = ETT_VALUE_COLUMNS, fast: bool = True, **knobs: Any) -> nn.Module:
    """Validate `knobs` for `preset`, seed torch with the `seed` knob, and build the model."""
    config = resolve_config(preset, knobs)
    torch.manual_seed(config["seed"])
    return build_from_config(config, n_columns, fast)
