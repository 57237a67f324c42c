"""RevIN, reversible instance normalisation (Kim et al., ICLR 2022), without the learnable affine.

The `revin` knob. Each input window is normalised per sample and per data column over its time
axis (mean and population variance of that window), the network forecasts in the normalised
space, and the forecast is mapped back with the statistics of its target column. The affine
weight and bias of the paper are left out, so the knob adds no parameters (the optimiser state,
the group layout and the all-taps layout are those of the model without it).

Both functions work on any leading dims (a solo batch [B, ...] or a group's [G, B, ...]): the
operation is per sample. Nothing is detached: the gradient flows through the statistics, as in
RevIN. The eps inside the square root makes the map exactly shift-invariant but scale-invariant
only up to O(eps / var) (a window with variance v scaled by s is normalised with
sqrt(s^2 v + eps), not s * sqrt(v + eps)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

REVIN_EPS = 1e-5  # added to the variance before the square root, as in RevIN


def revin_normalise(x: torch.Tensor, n_data: int,
                    eps: float = REVIN_EPS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalise the data columns of each window: (x_norm, mean, std).

    x [..., T, n_data + k]: the first n_data columns are data, the last k (the 7 calendar
    features) pass through unchanged. mean and std [..., n_data] are the per-window, per-column
    mean and sqrt(population variance + eps) over T; x_norm has x's shape, its data columns
    (x - mean) / std.
    """
    data, rest = x[..., :n_data], x[..., n_data:]  # [..., T, n_data], [..., T, k]
    mean = data.mean(dim=-2, keepdim=True)  # [..., 1, n_data]
    var = data.var(dim=-2, keepdim=True, unbiased=False)  # [..., 1, n_data]
    std = torch.sqrt(var + eps)  # [..., 1, n_data]
    x_norm = torch.cat(((data - mean) / std, rest), dim=-1)  # [..., T, n_data + k]
    return x_norm, mean.squeeze(-2), std.squeeze(-2)  # [..., T, n_data + k], [..., n_data] x 2


def revin_denormalise(out: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                      target_index: Sequence[int], n_out: int) -> torch.Tensor:
    """Map a forecast made in the normalised space back: out * std + mean of each target column.

    out [..., P * n_out], time-major (index t * n_out + c is step t of target c); mean and std
    [..., n_data] from `revin_normalise`; target_index: the n_out input columns the targets are
    (fsnet_models.factory.io_sizes: S [0], M [0..6], MS [6]). Returns [..., P * n_out].
    """
    if len(target_index) != n_out:
        raise ValueError(f"{len(target_index)} target columns for {n_out} outputs")
    index = list(target_index)
    m = mean[..., index].unsqueeze(-2)  # [..., n_data] -> [..., 1, n_out]
    s = std[..., index].unsqueeze(-2)  # [..., n_data] -> [..., 1, n_out]
    steps = out.reshape(*out.shape[:-1], -1, n_out)  # [..., P * n_out] -> [..., P, n_out]
    return (steps * s + m).reshape(out.shape)  # [..., P, n_out] -> [..., P * n_out]
