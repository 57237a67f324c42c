"""FSNet's adaptive conv (MODELS.md section 2, knobs of sections 4-5), batched over layers of one shape.

`AdaptiveConvBank` holds G conv layers whose weights share the shape [out, in, k]; their
controllers, gradient EMAs, triggers and memories are stacked along a leading axis G so that
one step costs a handful of batched operators instead of G times as many small ones. Each
layer's math is exactly MODELS.md's per-layer formula; layers never interact.

Verbs (called by the model, in this order within a step):
  calibrate(memory_active) -> one ConvParams per layer (calibrated weight, bias, scales)
  ... forward(s) and backward ...
  update_gradient_state(online) after the optimiser step.

Trial groups (fsnet_models.group) fold a member axis into the layer axis: a bank built with
`members=M` holds, for each of its L layers, the M members' copies of that layer, layer-major
(row l * M + m is layer l of member m). In such a bank the first-query choice is a mask, the
diagnostics range is kept per member, each member's dropout comes from its own generator
(`member_generators`), and with `sync_free` the memory reads are masks too, so that the bank
reads nothing back to the host.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fsnet_models.backbone import ConvParams, centre_tap
from fsnet_models.member_ops import member_dropout
from fsnet_models.memory import normalize_memory, read_and_write, slot_mean_squared_cosine


@dataclass(frozen=True)
class AdaptiveSettings:
    """The knobs one adaptive conv layer reads (names as in the knob registry)."""

    memory: bool = True
    index_weighted_read: bool = False
    chunk_by: str = "in"
    adaptive_tau: bool = False
    top_k: int = 2
    dynamic_temperature: bool = False
    controller_dropout: float = 0.0
    memory_heads: int = 1
    gated_controller: bool = False
    memory_slots: int = 32
    grad_second_moment: bool = False
    adaptive_trigger: bool = False
    diversity_penalty: float = 0.0
    tau: float = 0.75
    gamma: float = 0.9
    f_gamma: float = 0.3
    trigger_threshold: float = 0.75
    temperature: float = 0.5
    t_min: float = 0.3
    t_max: float = 0.7
    trigger_beta: float = 0.99
    trigger_kappa: float = 2.0
    controller_hidden: int = 64

    @classmethod
    def from_config(cls, config: dict[str, Any], memory: bool, index_weighted_read: bool) -> AdaptiveSettings:
        """Pick this dataclass's fields out of a resolved trial config (others ignored)."""
        names = {f.name for f in fields(cls)} - {"memory", "index_weighted_read"}
        return cls(memory=memory, index_weighted_read=index_weighted_read,
                   **{n: config[n] for n in names if n in config})


def normalize_over_inputs(grad: torch.Tensor) -> torch.Tensor:
    """F.normalize(grad, dim=2) of a [G, out, in, k] gradient: L2 over `in`, eps 1e-12.

    Squares, a sum over dim 2 and one broadcast division (measured the quickest of the forms
    tried on CPU; equal to F.normalize up to summation order).
    """
    norm = grad.square().sum(2, keepdim=True).sqrt_().clamp_min_(1e-12)
    return grad / norm


def sqrt_nonnegative(values: torch.Tensor) -> torch.Tensor:
    """Square root of a tensor of values >= 0 (any shape), as 1 / rsqrt (within float rounding).

    aten's float sqrt on CPU goes through MKL's vector math, which on this machine's CPU takes
    ~10x longer on zeros than on positive values (~2 ms per 307k zeros against ~0.2 ms), and
    the second-moment state is mostly exact zeros at the taps that only see zero padding.
    rsqrt(0) = inf and 1 / inf = 0, so zeros stay exact zeros.
    """
    return values.rsqrt().reciprocal_()


def layers_of(stacked: torch.Tensor) -> list[torch.Tensor]:
    """The G layers of a stacked [G, ...] tensor; a view when G = 1 (unbind's backward would copy
    the whole gradient into a fresh stacked tensor every step)."""
    if stacked.shape[0] == 1:
        return [stacked.view(stacked.shape[1:])]
    return list(stacked.unbind(0))


def cosine_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Cosine similarity of matching rows of a, b [G, n] -> [G]: a.b / (max(|a|, eps) max(|b|, eps))."""
    dot = torch.linalg.vecdot(a, b)
    return dot / (torch.linalg.vector_norm(a, dim=1).clamp_min(eps) * torch.linalg.vector_norm(b, dim=1).clamp_min(eps))


PER_LAYER_ON_DIM_1 = ("cos_stats", "diag_sums")  # [rows, G] buffers
GROUP_CHUNK_ELEMENTS = 2**17  # group banks update their gradient state in slices of about this size
SHARED_BY_LAYERS = ("q_started", "diag_range")
CENTRE_SLICED = ("weight", "ctrl_w1", "e_fast", "e_slow", "e_square")


def select_layers(name: str, value: torch.Tensor, layers: torch.Tensor, centre_only: bool,
                  kernel: int) -> torch.Tensor:
    """The part of an all-taps bank's tensor `name` (parameter, buffer, gradient or optimiser
    moment of the same shape) that a bank of `layers` keeps, as a new contiguous tensor.

    Per-layer tensors are indexed on their layer axis; `centre_only` then keeps the centre tap:
    weight [G, out, in, k] -> [G', out, in, 1]; ctrl_w1 [G, ctrl_in, h] -> rows centre::k
    (every chunk starts at a multiple of k, with the tap innermost); gradient EMAs [G, numel] ->
    columns centre::k. Scalars and bank-wide buffers are copied whole.
    """
    leaf = name.rsplit(".", 1)[-1]
    if value.dim() == 0 or leaf in SHARED_BY_LAYERS:
        return value.clone()
    part = value.index_select(1 if leaf in PER_LAYER_ON_DIM_1 else 0, layers.to(value.device))
    if centre_only and leaf in CENTRE_SLICED:
        part = centre_tap(part) if leaf == "weight" else part[:, kernel // 2::kernel]
    return part.contiguous()


def _uniform(shape: tuple[int, ...], bound: float) -> nn.Parameter:
    """A parameter drawn from U(-bound, bound), as nn.Linear/nn.Conv1d initialise theirs."""
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class AdaptiveConvBank(nn.Module):
    """G adaptive conv layers of weight shape [out, in, k]: adapter (slow) and memory (fast).

    `centre_only`: the layers are computed at the last position only and their outer taps only
    ever see zero padding, so the outer taps' weights, gradients, gradient EMAs and the
    controller rows that read those EMAs are exact zeros or never used. Such a bank keeps only
    the centre tap of each (weight [G, out, in, 1], EMAs [G, out * in], ctrl_w1 rows of the
    centre taps): a third of the state and of the controller's products. The calibrations keep
    all k taps (the memory's query holds them). Build one with `take_layers`.
    """

    def __init__(self, count: int, in_channels: int, out_channels: int, kernel: int,
                 settings: AdaptiveSettings, centre_only: bool = False, members: int | None = None) -> None:
        """`count` layers in all; `members`: None for a solo bank, else the number of trial-group
        members folded layer-major into `count` (sync-free paths, per-member diagnostics range)."""
        super().__init__()
        s = settings
        self.settings = s
        self.count, self.in_channels, self.out_channels, self.kernel = count, in_channels, out_channels, kernel
        self.centre_only = centre_only
        if members is not None and count % members:
            raise ValueError(f"a bank of {count} rows cannot hold {members} members")
        self.members = members
        self.member_generators: list[torch.Generator] | None = None  # per-member dropout (groups)
        self.memory_read: torch.Tensor | None = None  # groups: [members] bool, any layer read this step
        self.sync_free = False  # groups: memory reads as masks, no host read (set by the group)
        live_taps = 1 if centre_only else kernel
        numel = out_channels * in_channels * live_taps  # live weights per layer
        if s.chunk_by == "in":  # reference: rows of the flat [out, in, k] gradient, one per input channel
            if out_channels % in_channels:
                raise ValueError("chunk_by='in' needs out_channels to be a multiple of in_channels")
            self.n_chunks, self.b_per_chunk = in_channels, out_channels // in_channels
        else:  # structure-aligned: one chunk per output channel
            self.n_chunks, self.b_per_chunk = out_channels, 1
        self.chunk_len = numel // self.n_chunks  # live gradient values per chunk
        self.w_per_chunk = kernel
        self.calib_len = self.n_chunks * (kernel + 2 * self.b_per_chunk)  # D
        g, nh = count, s.controller_hidden
        ctrl_in = self.chunk_len * (2 if s.grad_second_moment else 1)
        ctrl_bound = 1 / math.sqrt(ctrl_in * kernel // live_taps)  # the full layer's fan-in
        head_out = self.w_per_chunk + 2 * self.b_per_chunk

        self.weight = _uniform((g, out_channels, in_channels, live_taps), 1 / math.sqrt(in_channels * kernel))
        self.beta = nn.Parameter(torch.zeros(g, out_channels))
        self.ctrl_w1 = _uniform((g, ctrl_in, nh), ctrl_bound)
        self.ctrl_b1 = _uniform((g, 1, nh), ctrl_bound)
        if s.gated_controller:
            self.ctrl_w2 = _uniform((g, nh, nh), 1 / math.sqrt(nh))
            self.ctrl_b2 = _uniform((g, 1, nh), 1 / math.sqrt(nh))
            self.gate_w = _uniform((g, nh, nh), 1 / math.sqrt(nh))
            self.gate_b = _uniform((g, 1, nh), 1 / math.sqrt(nh))
        # the three calibration heads (w, b, f) fused into one matrix, columns [w | b | f]
        self.head_w = _uniform((g, nh, head_out), 1 / math.sqrt(nh))
        self.head_b = _uniform((g, 1, head_out), 1 / math.sqrt(nh))

        self.register_buffer("e_fast", torch.zeros(g, numel))
        self.register_buffer("e_slow", torch.zeros(g, numel))
        if s.grad_second_moment:
            self.register_buffer("e_square", torch.zeros(g, numel))
        if s.memory:
            if s.adaptive_tau:  # Linear(n_chunks -> 1), weight 0 and bias logit(tau): starts at tau
                self.tau_w = nn.Parameter(torch.zeros(g, self.n_chunks))
                self.tau_b = nn.Parameter(torch.full((g,), math.log(s.tau / (1 - s.tau))))
            if s.dynamic_temperature:  # Linear(D -> 1), nn.Linear's initialisation
                self.temp_w = _uniform((g, self.calib_len), 1 / math.sqrt(self.calib_len))
                self.temp_b = _uniform((g,), 1 / math.sqrt(self.calib_len))
            memory = torch.empty(g, self.calib_len, s.memory_slots)
            for layer in memory:
                nn.init.xavier_uniform_(layer)
            self.register_buffer("memory", normalize_memory(memory))
            self.register_buffer("q_ema", torch.zeros(g, self.calib_len))
            self.register_buffer("q_started", torch.zeros((), dtype=torch.bool))
            self.register_buffer("trigger", torch.zeros(g, dtype=torch.bool))
            self.register_buffer("cos_stats", torch.zeros(3, g))  # count, EMA mean, EMA variance
            # diagnostics: per layer [reads, entropy sum, tau sum, temperature sum]; global min/max
            self.register_buffer("diag_sums", torch.zeros(4, g, dtype=torch.float64))
            diag_range = torch.tensor([[math.inf, -math.inf]] * 2, dtype=torch.float64)
            if members is not None:  # per member: [members, 2, 2]
                diag_range = diag_range.expand(members, 2, 2).clone()
            self.register_buffer("diag_range", diag_range)

    def take_layers(self, layers: Sequence[int], centre_only: bool) -> AdaptiveConvBank:
        """A new bank with copies of `layers` of this (all-taps) bank; `centre_only` keeps the live part.

        Uses no random numbers: the new bank is built under a forked RNG and then overwritten,
        so a model split into such banks starts exactly as the unsplit one.
        """
        if self.centre_only:
            raise ValueError("take_layers reads an all-taps bank")
        with torch.random.fork_rng(devices=[]):
            bank = AdaptiveConvBank(len(layers), self.in_channels, self.out_channels, self.kernel,
                                    self.settings, centre_only)
        index = torch.tensor(list(layers), dtype=torch.long)
        bank.load_state_dict({name: select_layers(name, value, index, centre_only, self.kernel)
                              for name, value in self.state_dict().items()})
        return bank.to(self.weight.device)

    # ------------------------------------------------------------------ slow learning: the adapter
    def _controller(self) -> torch.Tensor:
        """Controller hidden state per chunk: [G, n_chunks, controller_hidden]."""
        s = self.settings
        chunks = self.e_slow.view(self.count, self.n_chunks, self.chunk_len)
        if s.grad_second_moment:
            # input [mean | spread] per chunk, as two products with the matching rows of ctrl_w1
            # (no concatenated copy of the state)
            spread = sqrt_nonnegative(torch.addcmul(self.e_square, self.e_slow, self.e_slow, value=-1).clamp_min_(0))
            w_mean, w_spread = self.ctrl_w1.split(self.chunk_len, dim=1)
            pre = torch.baddbmm(torch.baddbmm(self.ctrl_b1, chunks, w_mean), spread.view_as(chunks), w_spread)
        else:
            pre = torch.baddbmm(self.ctrl_b1, chunks, self.ctrl_w1)
        hidden = F.silu(pre)
        if s.gated_controller:
            second = F.silu(torch.baddbmm(self.ctrl_b2, hidden, self.ctrl_w2))
            gate = torch.sigmoid(torch.baddbmm(self.gate_b, hidden, self.gate_w))
            hidden = gate * second + (1 - gate) * hidden
        if s.controller_dropout > 0:
            if self.member_generators is None:
                hidden = F.dropout(hidden, s.controller_dropout, training=self.training)
            else:  # rows layer-major: [L * M, n_chunks, h] -> [L, M, n_chunks, h], member axis 1
                members = len(self.member_generators)
                per_member = hidden.view(self.count // members, members, *hidden.shape[1:])
                hidden = member_dropout(per_member, s.controller_dropout, self.training, self.member_generators,
                                        dim=1).view_as(hidden)
        return hidden

    def calibrate(self, memory_active: bool) -> list[ConvParams]:
        """This step's calibrated conv of every layer of the bank, as ConvParams.

        Computes the adapter's (w, b, f) from the slow gradient EMA, updates the query EMA, and,
        when `memory_active` and a layer's trigger fired, reads/writes that layer's memory and
        blends the read into its (w, b, f). An all-taps bank's layers get the materialised
        weight W * w (one batched product); a centre-only bank's layers are computed at the last
        position only and get w's centre tap as a vector scale of their [out, in, 1] weight.
        Autograd reaches the adapter's parameters only.
        """
        stacked = self.calibrate_stacked(memory_active)
        bias, scale = layers_of(stacked.bias), layers_of(stacked.out_scale)
        if not self.centre_only:
            return [ConvParams(weight, bias[j], scale[j]) for j, weight in enumerate(layers_of(stacked.weight))]
        by_in = stacked.centre_in_scale is not None
        centres = layers_of(stacked.centre_in_scale if by_in else stacked.centre_out_scale)
        return [ConvParams(weight, bias[j], scale[j], centre_in_scale=centre if by_in else None,
                           centre_out_scale=None if by_in else centre)
                for j, (weight, centre) in enumerate(zip(layers_of(stacked.weight), centres, strict=True))]

    def calibrate_stacked(self, memory_active: bool) -> ConvParams:
        """`calibrate`'s result with every tensor stacked over the bank's rows (G = count).

        weight [G, out, in, k] (W * w) or, centre-only, the bank's own [G, out, in, 1] weight
        with centre_in_scale [G, in] (chunk_by 'in') or centre_out_scale [G, out]; bias and
        out_scale [G, out].
        """
        s = self.settings
        calib = torch.baddbmm(self.head_b, self._controller(), self.head_w)
        w, b, f = calib.split([self.w_per_chunk, self.b_per_chunk, self.b_per_chunk], dim=-1)
        if s.memory:
            w, b, f = self._fast_learning(w, b, f, memory_active)
        bias = self.beta * b.reshape(self.count, self.out_channels)  # [G, out]
        scale = f.reshape(self.count, self.out_channels)  # [G, out]
        by_in = s.chunk_by == "in"
        if not self.centre_only:
            # chunk_by 'in': W[:, i, t] * w[i, t]; chunk_by 'out': W[c, :, t] * w[c, t]. w is a
            # strided slice of calib: the product with a contiguous copy is ~7x quicker (chunk_by 'in')
            return ConvParams(self.weight * w.contiguous().unsqueeze(1 if by_in else 2), bias, scale)
        centre = w[:, :, self.kernel // 2]  # [G, in] or [G, out]
        return ConvParams(self.weight, bias, scale, centre_in_scale=centre if by_in else None,
                          centre_out_scale=None if by_in else centre)

    # ------------------------------------------------------------------ fast learning: the memory
    @torch.no_grad()
    def _query(self, w: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Memory query [G, D]: q itself on the first call ever, then q_ema = f_gamma q_ema + (1 - f_gamma) q."""
        q = torch.cat([w.flatten(1), b.flatten(1), f.flatten(1)], dim=1)
        if self.members is not None:
            return self._query_masked(q)
        if not bool(self.q_started):
            self.q_started.fill_(True)
            return q
        f_gamma = self.settings.f_gamma
        self.q_ema.mul_(f_gamma).add_(q, alpha=1 - f_gamma)
        return self.q_ema

    def _query_masked(self, q: torch.Tensor) -> torch.Tensor:
        """`_query` without reading the first-call flag on the host: q [G, D] -> query [G, D].

        Both branches are computed and the flag picks one (as a mask), with the same operators
        as `_query`: q_ema stays zero on the first call, and q_ema = f_gamma q_ema + (1 - f_gamma) q
        on every later one.
        """
        f_gamma = self.settings.f_gamma
        updated = torch.add(self.q_ema * f_gamma, q, alpha=1 - f_gamma)
        started = self.q_started
        self.q_ema.copy_(torch.where(started, updated, self.q_ema))
        self.q_started.fill_(True)
        return torch.where(started, updated, q)

    def _temperature(self, query: torch.Tensor) -> torch.Tensor:
        """Attention temperature per layer [G]: fixed, or t_min + (t_max - t_min) sigmoid(Linear(query))."""
        s = self.settings
        if not s.dynamic_temperature:
            return torch.full((self.count,), s.temperature, dtype=query.dtype, device=query.device)
        gate = torch.sigmoid((query * self.temp_w).sum(-1) + self.temp_b)
        return s.t_min + (s.t_max - s.t_min) * gate

    def _blend_tau(self) -> torch.Tensor:
        """Blend coefficient per layer [G]; adaptive: sigmoid(Linear(cos of e_f and e_s per chunk))."""
        s = self.settings
        if not s.adaptive_tau:
            return torch.full((self.count,), s.tau, dtype=self.weight.dtype, device=self.weight.device)
        shape = (self.count, self.n_chunks, self.chunk_len)
        context = F.cosine_similarity(self.e_fast.view(shape), self.e_slow.view(shape), dim=-1, eps=1e-6)
        return torch.sigmoid((context * self.tau_w).sum(-1) + self.tau_b)

    def _fast_learning(self, w: torch.Tensor, b: torch.Tensor, f: torch.Tensor,
                       memory_active: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Update the query EMA; where a trigger fired, read+write memory and blend the read into w, b, f."""
        query = self._query(w, b, f)
        if self.members is not None:
            return self._fast_learning_group(w, b, f, query, memory_active)
        if not (memory_active and bool(self.trigger.any())):
            return w, b, f
        s = self.settings
        fired = self.trigger.clone()
        self.trigger.zero_()
        with torch.no_grad():
            temperature = self._temperature(query)
            # only the fired layers read and write (layers are independent): the diversity
            # step's autograd pass over a [G, D, S] stack costs ~10 ms for the 20-layer bank
            layers = fired.nonzero().squeeze(1)
            read = read_and_write(self.memory[layers], query[layers], temperature[layers], s.top_k,
                                  s.memory_heads, s.tau, s.index_weighted_read, s.diversity_penalty)
            self.memory.index_copy_(0, layers, read.memory)
            retrieved = query.new_zeros(query.shape).index_copy_(0, layers, read.retrieved)
            entropy = temperature.new_zeros(self.count).index_copy_(0, layers, read.entropy)
        tau = self._blend_tau()
        self._record_read(fired, entropy, tau.detach(), temperature)
        stored = retrieved.split([w[0].numel(), b[0].numel(), f[0].numel()], dim=1)
        blended = []
        for raw, mem in zip((w, b, f), stored, strict=True):
            mix = tau[:, None, None] * raw + (1 - tau[:, None, None]) * mem.view_as(raw)
            blended.append(torch.where(fired[:, None, None], mix, raw))
        return blended[0], blended[1], blended[2]

    def _fast_learning_group(self, w: torch.Tensor, b: torch.Tensor, f: torch.Tensor, query: torch.Tensor,
                             memory_active: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_fast_learning` for a group bank (rows = layers x members, layer-major).

        `sync_free` (for CUDA): every layer reads and writes its memory and the fired layers
        keep the result (masks, not a gather), so nothing is read back to the host and the work
        does not depend on the data. Otherwise (the CPU default, where a host read costs
        nothing and the reads are the larger part of a step) as the solo bank: one host-side
        `any` over all members' triggers, and only the fired rows are gathered, read and
        written. w [G, n_chunks, k], b and f [G, n_chunks, b_per_chunk], query [G, D]. Sets
        `memory_read` [members]: whether any of a member's layers in this bank read (its
        adaptive tau is then trained this step), or None when nothing was read.
        """
        self.memory_read = None
        if not memory_active or not (self.sync_free or bool(self.trigger.any())):
            return w, b, f
        s = self.settings
        fired = self.trigger.clone()
        self.trigger.zero_()
        with torch.no_grad():
            temperature = self._temperature(query)
            if self.sync_free:
                read = read_and_write(self.memory, query, temperature, s.top_k, s.memory_heads, s.tau,
                                      s.index_weighted_read, s.diversity_penalty)
                self.memory.copy_(torch.where(fired[:, None, None], read.memory, self.memory))
                retrieved = torch.where(fired[:, None], read.retrieved, 0.0)
                entropy = torch.where(fired, read.entropy, 0.0)
            else:
                layers = fired.nonzero().squeeze(1)
                read = read_and_write(self.memory[layers], query[layers], temperature[layers], s.top_k,
                                      s.memory_heads, s.tau, s.index_weighted_read, s.diversity_penalty)
                self.memory.index_copy_(0, layers, read.memory)
                retrieved = query.new_zeros(query.shape).index_copy_(0, layers, read.retrieved)
                entropy = temperature.new_zeros(self.count).index_copy_(0, layers, read.entropy)
        tau = self._blend_tau()
        self._record_read_masked(fired, entropy, tau.detach(), temperature)
        assert self.members is not None
        self.memory_read = fired.view(-1, self.members).any(0)  # [L * M] -> [L, M] -> [M]
        stored = retrieved.split([w[0].numel(), b[0].numel(), f[0].numel()], dim=1)
        blended = []
        for raw, mem in zip((w, b, f), stored, strict=True):
            mix = tau[:, None, None] * raw + (1 - tau[:, None, None]) * mem.view_as(raw)
            blended.append(torch.where(fired[:, None, None], mix, raw))
        return blended[0], blended[1], blended[2]

    @torch.no_grad()
    def _record_read_masked(self, fired: torch.Tensor, entropy: torch.Tensor, tau: torch.Tensor,
                            temperature: torch.Tensor) -> None:
        """`_record_read` for a group bank (all [G] = [L * M]): the range is kept per member, as masks."""
        assert self.members is not None
        mask = fired.to(torch.float64)
        values = torch.stack([mask, entropy.double(), tau.double(), temperature.double()])
        self.diag_sums.add_(values * mask)
        fired_lm = fired.view(-1, self.members)  # [L, M]
        for row, series in enumerate((tau, temperature)):
            series_lm = series.double().view(-1, self.members)  # [L, M]
            low = torch.where(fired_lm, series_lm, math.inf).amin(0)  # [M]
            high = torch.where(fired_lm, series_lm, -math.inf).amax(0)
            self.diag_range[:, row, 0] = torch.minimum(self.diag_range[:, row, 0], low)
            self.diag_range[:, row, 1] = torch.maximum(self.diag_range[:, row, 1], high)

    @torch.no_grad()
    def _record_read(self, fired: torch.Tensor, entropy: torch.Tensor, tau: torch.Tensor,
                     temperature: torch.Tensor) -> None:
        """Accumulate the per-layer diagnostics of one read (fired layers only)."""
        mask = fired.to(torch.float64)
        values = torch.stack([mask, entropy.double(), tau.double(), temperature.double()])
        self.diag_sums.add_(values * mask)
        for row, series in enumerate((tau, temperature)):
            chosen = series[fired].double()
            self.diag_range[row, 0] = torch.minimum(self.diag_range[row, 0], chosen.min())
            self.diag_range[row, 1] = torch.maximum(self.diag_range[row, 1], chosen.max())

    # ------------------------------------------------------------------ after the optimiser step
    @torch.no_grad()
    def update_gradient_state(self, online: bool) -> None:
        """Fast EMA, then (online, memory on) the drift trigger, then slow EMA (and second moment)."""
        grad = self.weight.grad
        if grad is None:
            return
        if self.members is not None:
            self._update_gradient_state_in_chunks(grad, online)
            return
        s = self.settings
        g = normalize_over_inputs(grad).reshape(self.count, -1)
        # EMAs as lerp: e + (1 - gamma) (g - e) = gamma e + (1 - gamma) g in one pass over the state
        self.e_fast.lerp_(g, 1 - s.f_gamma)
        if online and s.memory:
            cosine = cosine_rows(self.e_fast, self.e_slow)
            self.trigger.logical_or_(cosine < self._trigger_threshold(cosine))  # in place, no Module.__setattr__
        self.e_slow.lerp_(g, 1 - s.gamma)
        if s.grad_second_moment:
            self.e_square.mul_(s.gamma).addcmul_(g, g, value=1 - s.gamma)

    @torch.no_grad()
    def _update_gradient_state_in_chunks(self, grad: torch.Tensor, online: bool) -> None:
        """`update_gradient_state` of a group bank, a few rows at a time (grad [G, out, in, k]).

        The same per-row operators on row slices (so the same numbers): a group bank's state is
        G times the solo bank's, and the passes over it run several times quicker on slices of
        up to GROUP_CHUNK_ELEMENTS values, which stay in the CPU's cache between the passes.
        """
        s = self.settings
        rows = max(1, GROUP_CHUNK_ELEMENTS // self.e_fast.shape[1])
        cosines = []
        for start in range(0, self.count, rows):
            part = slice(start, min(start + rows, self.count))
            g = normalize_over_inputs(grad[part]).reshape(-1, self.e_fast.shape[1])  # [rows, numel]
            e_fast, e_slow = self.e_fast[part], self.e_slow[part]
            e_fast.lerp_(g, 1 - s.f_gamma)
            if online and s.memory:
                cosines.append(cosine_rows(e_fast, e_slow))
            e_slow.lerp_(g, 1 - s.gamma)
            if s.grad_second_moment:
                self.e_square[part].mul_(s.gamma).addcmul_(g, g, value=1 - s.gamma)
        if cosines:
            cosine = torch.cat(cosines)
            self.trigger.logical_or_(cosine < self._trigger_threshold(cosine))

    def _trigger_threshold(self, cosine: torch.Tensor) -> torch.Tensor:
        """Threshold per layer [G] for this step's cosine; updates the adaptive statistics.

        Fixed: -trigger_threshold. Adaptive (this project's reading of the report's one line):
        EMAs (decay trigger_beta) of the cosine's mean and variance over the online steps before
        this one; threshold = clamp(mean - kappa * std, -1, 0). The first online step, which has
        no statistics yet, uses the fixed threshold and seeds the mean with its cosine.
        """
        s = self.settings
        fixed = torch.full_like(cosine, -s.trigger_threshold)
        if not s.adaptive_trigger:
            return fixed
        count, mean, var = self.cos_stats
        first = count == 0
        threshold = torch.where(first, fixed, (mean - s.trigger_kappa * var.sqrt()).clamp(-1.0, 0.0))
        diff = cosine - mean
        new_mean = torch.where(first, cosine, mean + (1 - s.trigger_beta) * diff)
        new_var = torch.where(first, torch.zeros_like(var), s.trigger_beta * (var + (1 - s.trigger_beta) * diff**2))
        self.cos_stats.copy_(torch.stack([count + 1, new_mean, new_var]))
        return threshold

    # ------------------------------------------------------------------ diagnostics
    @torch.no_grad()
    def diagnostics(self) -> dict[str, Any]:
        """Reads per layer, summed entropy/tau/temperature over reads, their ranges, and slot P(M)."""
        if not self.settings.memory:
            return {}
        reads, entropy, tau, temperature = self.diag_sums
        return {
            "reads": reads.tolist(),
            "entropy_sum": float(entropy.sum()),
            "tau_sum": float(tau.sum()),
            "temperature_sum": float(temperature.sum()),
            "tau_range": self.diag_range[0].tolist(),
            "temperature_range": self.diag_range[1].tolist(),
            "slot_mean_sq_cos": slot_mean_squared_cosine(self.memory).tolist(),
        }
