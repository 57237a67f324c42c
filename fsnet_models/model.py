"""Forecasting models with the verbs the online protocol calls (the same for every preset).

  begin_step()  adaptive layers compute this step's calibrations (and read/write memory) once
  forward(x)    any number of times: prediction, learning, replay
  end_step()    after the optimiser step: gradient EMAs and drift trigger
  set_online(b) switch between warm-up (memory off) and the online phase (memory on)

Baselines implement the verbs as no-ops, so the online loop has no preset switch in it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fsnet_models.adaptive import AdaptiveConvBank, AdaptiveSettings, select_layers
from fsnet_models.backbone import KERNEL, OUTPUT, ConvParams, Encoder, conv_shapes
from fsnet_models.revin import revin_denormalise, revin_normalise


@dataclass(frozen=True)
class BankSource:
    """Where a bank's layers come from in the all-taps layout: bank index, layers in it, centre only."""

    bank: int
    layers: tuple[int, ...]
    centre_only: bool


class AdaptiveLayers(nn.Module):
    """The 22 adaptive convs of the backbone, grouped into banks of equal weight shape.

    Layers from index `first_last_only` on are computed at the last position only; their banks
    keep only the centre tap (AdaptiveConvBank's `centre_only`). The model is first built in the
    all-taps layout (one bank per weight shape: the reference's parameters, from the same random
    numbers), then split: each bank's all-positions layers and last-position-only layers become
    two banks. `sources` says, for every bank, where in the all-taps layout it came from.
    """

    def __init__(self, settings: AdaptiveSettings, first_last_only: int | None = None) -> None:
        super().__init__()
        n_layers = len(conv_shapes())
        first_last_only = n_layers if first_last_only is None else first_last_only
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for layer, shape in enumerate(conv_shapes()):
            groups[shape].append(layer)
        all_taps = [AdaptiveConvBank(len(layers), c_in, c_out, KERNEL, settings)
                    for (c_in, c_out), layers in groups.items()]
        banks: list[AdaptiveConvBank] = []
        self.sources: list[BankSource] = []
        self.location = [(0, 0)] * n_layers  # layer -> (bank, index in bank)
        for canonical, (bank, layers) in enumerate(zip(all_taps, groups.values(), strict=True)):
            for centre_only in (False, True):
                kept = tuple(i for i, layer in enumerate(layers) if (layer >= first_last_only) == centre_only)
                if not kept:
                    continue
                whole = len(kept) == len(layers) and not centre_only
                banks.append(bank if whole else bank.take_layers(kept, centre_only))
                self.sources.append(BankSource(canonical, kept, centre_only))
                for index, i in enumerate(kept):
                    self.location[layers[i]] = (len(banks) - 1, index)
        self.banks = nn.ModuleList(banks)
        self.layer_names = [f"block{layer // 2}.conv{layer % 2 + 1}" for layer in range(n_layers)]

    def calibrate(self, memory_active: bool) -> list[ConvParams]:
        """Every layer's calibrated conv for this step, in layer order."""
        per_bank = [bank.calibrate(memory_active) for bank in self.banks]
        return [per_bank[b][i] for b, i in self.location]

    def all_taps_name(self, name: str) -> str:
        """The all-taps layout's name of tensor `name` of this module ("banks.3.weight" -> "banks.2.weight")."""
        parts = name.split(".")
        if parts[0] != "banks":
            return name
        return ".".join(["banks", str(self.sources[int(parts[1])].bank), *parts[2:]])

    def to_own_layout(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """This layout's tensor `name` made from `value`, the all-taps tensor of `all_taps_name(name)`.

        Works for parameters, buffers, gradients and optimiser moments alike (same shapes).
        """
        parts = name.split(".")
        if parts[0] != "banks":
            return value.clone()
        source = self.sources[int(parts[1])]
        return select_layers(name, value, torch.tensor(source.layers), source.centre_only, KERNEL)

    def update_gradient_state(self, online: bool) -> None:
        """Gradient EMAs and triggers of every bank (after the optimiser step)."""
        for bank in self.banks:
            bank.update_gradient_state(online)

    def diagnostics(self) -> dict[str, Any]:
        """Memory diagnostics over all layers: reads per layer, mean entropy, tau/temperature stats, P(M)."""
        per_bank = [bank.diagnostics() for bank in self.banks]
        if not per_bank[0]:
            return {}
        reads = [0.0] * len(self.location)
        slot_cos = [0.0] * len(self.location)
        for layer, (b, i) in enumerate(self.location):
            reads[layer] = per_bank[b]["reads"][i]
            slot_cos[layer] = per_bank[b]["slot_mean_sq_cos"][i]
        total = sum(reads)

        def mean_of(key: str) -> float:
            return sum(d[key] for d in per_bank) / total if total else float("nan")

        def extreme(key: str, pick: int) -> float:
            values = [d[key][pick] for d in per_bank]
            best = min(values) if pick == 0 else max(values)
            return best if total else float("nan")

        return {
            "memory_triggers": int(total),
            "memory_triggers_per_layer": {n: int(r) for n, r in zip(self.layer_names, reads, strict=True)},
            "attention_entropy_mean": mean_of("entropy_sum"),
            "tau_mean": mean_of("tau_sum"),
            "tau_min": extreme("tau_range", 0),
            "tau_max": extreme("tau_range", 1),
            "temperature_mean": mean_of("temperature_sum"),
            "temperature_min": extreme("temperature_range", 0),
            "temperature_max": extreme("temperature_range", 1),
            "slot_mean_sq_cos": sum(slot_cos) / len(slot_cos),
        }


class ForecastNet(nn.Module):
    """Backbone + linear head; plain convs (baselines) or adaptive convs (FSNet family).

    `revin` (the knob): each window's n_in data columns are instance-normalised before the
    backbone and the forecast is mapped back with the statistics of the target columns
    `target_index` (fsnet_models.revin; no parameters). Off (the default) the forward is the
    reference one, untouched.
    """

    def __init__(self, n_in: int, n_out: int, seq_len: int, pred_len: int,
                 adaptive: AdaptiveSettings | None, fast: bool = True, revin: bool = False,
                 target_index: Sequence[int] | None = None) -> None:
        super().__init__()
        if revin and (target_index is None or len(target_index) != n_out):
            raise ValueError(f"revin needs the {n_out} target column(s) among the {n_in} inputs (target_index)")
        self.n_in, self.n_out = n_in, n_out
        self.revin = revin
        self.target_index = list(target_index) if target_index is not None else None
        self.encoder = Encoder(n_in, seq_len, plain_convs=adaptive is None, fast=fast)
        self.head = nn.Linear(OUTPUT, pred_len * n_out)
        self.adaptive = (AdaptiveLayers(adaptive, self.encoder.last_only_layers())
                         if adaptive is not None else None)
        self.online = False
        self._convs: list[ConvParams] | None = None

    def set_online(self, online: bool) -> None:
        """Online phase: memory and trigger active (call model.eval() separately)."""
        self.online = online

    def begin_step(self) -> None:
        """Compute this step's calibrated convs once (adaptive models); plain models: nothing."""
        if self.adaptive is not None:
            self._convs = self.adaptive.calibrate(self.online)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, seq_len, n_in + 7] -> forecast [B, pred_len * n_out] (time-major)."""
        if self.adaptive is None:
            convs = self.encoder.plain_params()
        else:
            if self._convs is None:
                raise RuntimeError("begin_step() must be called before forward() on an adaptive model")
            convs = self._convs
        if not self.revin:
            return self.head(self.encoder(x, convs))
        assert self.target_index is not None
        x, mean, std = revin_normalise(x, self.n_in)  # [B, seq_len, n_in + 7], [B, n_in] x 2
        out = self.head(self.encoder(x, convs))  # [B, pred_len * n_out]
        return revin_denormalise(out, mean, std, self.target_index, self.n_out)  # [B, pred_len * n_out]

    def end_step(self) -> None:
        """After the optimiser step: gradient EMAs and trigger; drops this step's calibrations."""
        if self.adaptive is not None:
            self.adaptive.update_gradient_state(self.online)
        self._convs = None

    def diagnostics(self) -> dict[str, Any]:
        """Memory diagnostics (empty for models without memory)."""
        return self.adaptive.diagnostics() if self.adaptive is not None else {}

    def all_taps_name(self, name: str) -> str:
        """Name, in the all-taps layout (the reference network, `fast=False`), of tensor `name`."""
        if self.adaptive is None or not name.startswith("adaptive."):
            return name
        return "adaptive." + self.adaptive.all_taps_name(name.removeprefix("adaptive."))

    def to_own_layout(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """This model's tensor `name` (parameter, buffer, gradient or optimiser moment) made from
        `value`, the tensor of the all-taps layout named `all_taps_name(name)`."""
        if name.startswith("encoder."):
            return self.encoder.to_own_layout(name.removeprefix("encoder."), value)
        if self.adaptive is None or not name.startswith("adaptive."):
            return value.clone()
        return self.adaptive.to_own_layout(name.removeprefix("adaptive."), value)

    def state_from_all_taps(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This model's state_dict made from `state`, a state_dict of the all-taps layout (the
        reference network, `fast=False`, of the same config)."""
        return {name: self.to_own_layout(name, state[self.all_taps_name(name)]) for name in self.state_dict()}

    def memory_buffers(self) -> dict[str, torch.Tensor]:
        """Name -> tensor of the associative memories (restored with the best warm-up epoch)."""
        return {n: b for n, b in self.named_buffers() if n.endswith(".memory")}
