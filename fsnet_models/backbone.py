"""The TS2Vec dilated-convolution backbone shared by every neural model (MODELS.md section 1).

input_fc: Linear(n_in + 7 -> 64); 11 residual blocks, channels [64]*10 + [320], kernel 3,
dilation 2**i, "same" padding; representation = last time step (dropout 0.1); head
Linear(320 -> pred_len * n_out).

Exact pruning: a block whose dilation is >= the window length reaches only zero padding with
its outer taps, so each output position is the centre tap applied to the same position; the
head reads only the last position, so from the first such block on only the last position is
computed, as a matrix-vector product. Those layers' outer-tap weights only ever meet zero
padding (their gradients are exact zeros in the full network), so the fast path keeps only the
centre tap of them: kernel-1 plain convs here (`centre_tap_conv`), centre-only adaptive banks in
fsnet_models.adaptive; `to_own_layout` maps a full network's tensors into this layout.

Before that point, block i (dilation d = 2**i) is needed only at the positions T-1, T-1-2d, ...
and its input only at T-1, T-1-d, ...: a dilated conv evaluated on one residue class of
positions reads only that class, so each full-length block runs as dilation-1 convs on the
subsequence it needs, and hands every second position on (48 -> 24 -> 12 -> 6 -> 3 -> 2 -> 1
positions for T = 48). Exact: the positions left out never reach the output. The fast path
picks its conv kernel by batch size (fsnet_models.kernels.conv1d).
`fast=False` is the straightforward network (F.conv1d, every position), for the equality tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fsnet_models.kernels import conv1d


@dataclass
class ConvParams:
    """One (calibrated) conv for this step's forwards.

    weight [out, in, k]; bias [out] or None; out_scale [out] or None (multiplies bias too).
    For a layer computed at the last position only, an adaptive layer's per-tap calibration
    comes as centre_in_scale [in] (chunk_by 'in': W[:, i, t] * w[i, t]) or centre_out_scale
    [out] (chunk_by 'out': W[c, :, t] * w[c, t]) of the centre tap, applied to the vectors.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    out_scale: torch.Tensor | None = None
    centre_in_scale: torch.Tensor | None = None
    centre_out_scale: torch.Tensor | None = None

HIDDEN = 64
OUTPUT = 320
DEPTH = 10
KERNEL = 3


def block_channels() -> list[tuple[int, int]]:
    """(in, out) channels of the 11 residual blocks."""
    chans = [HIDDEN] * DEPTH + [OUTPUT]
    return [(chans[i - 1] if i else HIDDEN, chans[i]) for i in range(len(chans))]


def conv_shapes() -> list[tuple[int, int]]:
    """(in, out) channels of the 22 block convs in order (conv1, conv2 of block 0, ...)."""
    shapes = []
    for c_in, c_out in block_channels():
        shapes += [(c_in, c_out), (c_out, c_out)]
    return shapes


def dilated_conv(x: torch.Tensor, params: ConvParams, dilation: int, last_only: bool,
                 fast: bool = True) -> torch.Tensor:
    """Same-padded dilated conv1d of x [B, in, T] -> [B, out, T] (T = 1 in `last_only` mode).

    `last_only`: x holds only the last position and the dilation reaches past the window, so
    the conv is the centre tap alone (exact), and the weight is that tap alone, [out, in, 1]
    (a centre-only adaptive bank or a `centre_tap_conv`). The output scale, if any, multiplies
    bias too.
    """
    weight, bias = params.weight, params.bias
    if last_only:
        vec = x[:, :, 0] if params.centre_in_scale is None else x[:, :, 0] * params.centre_in_scale
        vec = F.linear(vec, weight.reshape(weight.shape[0], -1))
        if params.centre_out_scale is not None:
            vec = vec * params.centre_out_scale
        y = (vec if bias is None else vec + bias).unsqueeze(-1)
    else:
        padding = dilation * (weight.shape[-1] // 2)
        y = (conv1d(x, weight, bias, padding, dilation) if fast
             else F.conv1d(x, weight, bias, padding=padding, dilation=dilation))
    if params.out_scale is not None:
        y = y * params.out_scale[:, None]
    return y


def centre_tap(weight: torch.Tensor) -> torch.Tensor:
    """The centre tap of a conv weight [..., k] as a contiguous [..., 1] tensor (also its
    gradients and optimiser moments, which share the shape)."""
    tap = weight.shape[-1] // 2
    return weight[..., tap:tap + 1].contiguous()


def centre_tap_conv(conv: nn.Conv1d) -> nn.Conv1d:
    """A kernel-1 Conv1d holding `conv`'s centre tap and bias (for a layer computed at the last
    position only, whose outer taps only ever meet zero padding); draws no random numbers."""
    with torch.random.fork_rng(devices=[]):
        centre = nn.Conv1d(conv.in_channels, conv.out_channels, 1)
    with torch.no_grad():
        centre.weight.copy_(centre_tap(conv.weight))
        centre.bias.copy_(conv.bias)
    return centre


class Encoder(nn.Module):
    """input_fc + 11 residual dilated-conv blocks; returns the last position's representation [B, 320]."""

    def __init__(self, n_in: int, seq_len: int, plain_convs: bool, fast: bool = True) -> None:
        super().__init__()
        self.input_fc = nn.Linear(n_in + 7, HIDDEN)
        self.dilations = [2**i for i in range(len(block_channels()))]
        n_blocks = len(self.dilations)
        first_wide = next((i for i, d in enumerate(self.dilations) if d >= seq_len), n_blocks)
        self.fast = fast
        self.prune_from = first_wide if fast else n_blocks
        self.projectors = nn.ModuleDict({
            str(i): nn.Conv1d(c_in, c_out, 1)
            for i, (c_in, c_out) in enumerate(block_channels())
            if c_in != c_out or i == len(self.dilations) - 1
        })
        # plain Conv1d layers (baselines); adaptive models get their convs from outside each step
        self.convs = nn.ModuleList(
            nn.Conv1d(c_in, c_out, KERNEL) for c_in, c_out in conv_shapes()) if plain_convs else None
        if self.convs is not None:
            for layer in range(self.last_only_layers(), len(self.convs)):
                self.convs[layer] = centre_tap_conv(self.convs[layer])
        self.repr_dropout = nn.Dropout(0.1)

    def to_own_layout(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """This encoder's tensor `name` made from `value`, the same-named tensor of the all-taps
        encoder (`fast=False`): a last-position plain conv keeps the centre tap of its weight."""
        parts = name.split(".")
        if self.convs is not None and parts[0] == "convs" and parts[-1] == "weight" and value.dim() == 3:
            if self.convs[int(parts[1])].kernel_size[0] == 1:
                return centre_tap(value)
        return value.clone()

    def plain_params(self) -> list[ConvParams]:
        """The plain convs' parameters in ConvParams form (baselines)."""
        assert self.convs is not None
        return [ConvParams(c.weight, c.bias) for c in self.convs]

    def last_only_layers(self) -> int:
        """Index of the first of the 22 convs computed at the last position only (22: none)."""
        return 2 * self.prune_from

    def forward(self, x: torch.Tensor, convs: Sequence[ConvParams]) -> torch.Tensor:
        """x [B, T, n_in + 7] -> representation [B, 320] of the last time step."""
        h = self.input_fc(x).transpose(1, 2)
        last_only = False
        for i, dilation in enumerate(self.dilations):
            if i == self.prune_from:
                h, last_only = h[:, :, -1:], True
            proj = self.projectors[str(i)] if str(i) in self.projectors else None
            if self.fast and not last_only:
                h = self._needed_positions_block(h, convs[2 * i], convs[2 * i + 1], proj)
                continue
            residual = h if proj is None else proj(h)
            h = dilated_conv(F.gelu(h), convs[2 * i], dilation, last_only, self.fast)
            h = dilated_conv(F.gelu(h), convs[2 * i + 1], dilation, last_only, self.fast)
            h = h + residual
        return self.repr_dropout(h[:, :, -1])

    @staticmethod
    def _needed_positions_block(h: torch.Tensor, conv1: ConvParams, conv2: ConvParams,
                                proj: nn.Module | None) -> torch.Tensor:
        """One full-length block on the positions the last position depends on (exact).

        h [B, C, n] holds the block's input at the positions p = T-1, T-1-d, T-1-2d, ... (d =
        2**i, the block's dilation; all T positions for block 0). A conv of dilation d at those
        positions reads only those positions (and zero padding past either end), so it is a
        dilation-1 conv of h. The next block needs the output only at every second of them,
        ending at T-1; returns those [B, C_out, ceil(n / 2)].
        """
        keep = slice((h.shape[-1] - 1) % 2, None, 2)
        residual = (h if proj is None else proj(h))[:, :, keep]
        h = dilated_conv(F.gelu(h), conv1, 1, False)
        h = dilated_conv(F.gelu(h), conv2, 1, False)[:, :, keep]
        return h + residual
