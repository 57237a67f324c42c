"""Trial groups: G members (one configuration, G seeds) as ONE network with a leading member axis.

Each member holds exactly what the solo trial of its seed holds (parameters, gradient EMAs,
triggers, q_ema, memories, diagnostics, its dropout generator; AdamW state in
`fsnet_models.group_optim.GroupAdamW`), and the members step in lockstep. Every small operator
of the solo step runs once for all G (HFTA-style):

- backbone layers (input_fc, the plain convs, projectors, head): parameters [G, *solo shape].
  The full-length blocks (kernel 3, dilation 1 on the fast path) run as grouped convs
  (`groups=G` over activations [B, G*C, n], `member_conv`): on one CPU thread that measured
  quicker than an im2col with one batched product per layer (`stacked_conv`, kept for the
  comparison: `python -m fsnet_models.group_bench --convs`). The last-position-only layers,
  input_fc and the head are batched products (`stacked_linear`, activations [G, C, B]);
- adaptive banks: the solo model's banks of L layers of one shape become banks of L * G rows
  (layer-major: row l * G + m is layer l of member m), so one bank's controller, memory read
  and EMA update serve every member at once (`AdaptiveConvBank(members=G)`). No Python branch
  per member. With `set_sync_free(True)` (the default off the CPU) the data-dependent work is
  masks only and the step reads nothing back to the host; on the CPU the default reads the
  memories as the solo banks do (one host-side `any` per bank over all members, then a gather
  of the fired rows), because there a host read is free and masked reads of every layer on
  every step cost more than the rest of the adaptive step.

The layout is the solo model's fast one (needed positions, last-position-only blocks, centre-tap
banks); `fast=False` models cannot be grouped. Member i computes the function of the solo model
of seed i: the same parameters at step 0 (each member is built from its own seed exactly as the
solo path builds it, then stacked: `build_group`), the same arithmetic up to float rounding (the
batched products sum in another order than F.conv1d / F.linear).

Verbs as the solo model's (fsnet_models.model): begin_step(), forward(x [G, B, seq_len, n_in+7])
-> [G, B, pred_len*n_out], end_step(), set_online(bool), state_dict(), memory_buffers(); and
diagnostics() -> one dict per member. `member_state(i)` / `from_members(...)` convert between the
group's state and the members' solo state_dicts.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fsnet_models.adaptive import PER_LAYER_ON_DIM_1, AdaptiveConvBank
from fsnet_models.backbone import ConvParams
from fsnet_models.factory import build_from_config
from fsnet_models.kernels import conv1d
from fsnet_models.member_ops import member_dropout
from fsnet_models.model import ForecastNet
from fsnet_models.revin import revin_denormalise, revin_normalise

BANK_PREFIX = "adaptive.banks."
CONV_LAYOUT = "grouped"  # the default of GroupNet.conv_layout (see the module docstring)


# ---------------------------------------------------------------------- layout of the group's state
def member_part(name: str, value: torch.Tensor, member: int, members: int) -> torch.Tensor:
    """Member `member`'s part, in the solo layout, of the group's tensor `name` (a view).

    Works for parameters, buffers, gradients and optimiser moments alike (same shapes).
    Backbone tensors [G, ...] -> value[member]. Bank tensors hold L layers of G members
    layer-major: [L * G, ...] -> [L, ...]; per-layer statistics on dim 1 [rows, L * G] -> [rows, L];
    the first-call flag q_started is shared (members step in lockstep); the diagnostics range
    [G, 2, 2] -> [2, 2].
    """
    if not name.startswith(BANK_PREFIX):
        return value[member]
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "q_started":
        return value
    if leaf == "diag_range":
        return value[member]
    if leaf in PER_LAYER_ON_DIM_1:
        return value.view(value.shape[0], -1, members)[:, :, member]  # [rows, L, G] -> [rows, L]
    return value.view(-1, members, *value.shape[1:])[:, member]  # [L, G, ...] -> [L, ...]


def stack_members(name: str, values: Sequence[torch.Tensor]) -> torch.Tensor:
    """The group's tensor `name` made from the members' solo tensors of that name (inverse of
    `member_part`); a new tensor."""
    if not name.startswith(BANK_PREFIX):
        return torch.stack(list(values))  # [G, ...]
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "q_started":
        if any(not torch.equal(v, values[0]) for v in values):
            raise ValueError(f"{name}: members that have not taken the same number of steps cannot be grouped")
        return values[0].clone()
    if leaf == "diag_range":
        return torch.stack(list(values))  # [G, 2, 2]
    if leaf in PER_LAYER_ON_DIM_1:
        stacked = torch.stack(list(values), dim=2)  # [rows, L, G]
        return stacked.reshape(stacked.shape[0], -1)  # [rows, L * G]
    stacked = torch.stack(list(values), dim=1)  # [L, G, ...]
    return stacked.reshape(-1, *stacked.shape[2:])  # [L * G, ...]


def member_mask(name: str, value: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """A bool mask broadcastable to the group's tensor `name` (`value`), True on the parts of the
    members where chosen [G] is True: e.g. torch.where(mask, best, current) restores the best
    warm-up epoch of some members only. The shared q_started flag is left to the caller (mask all False)."""
    members = chosen.shape[0]
    if not name.startswith(BANK_PREFIX):
        return chosen.view(members, *[1] * (value.dim() - 1))  # [G, 1, ...]
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "q_started":
        return torch.zeros_like(value, dtype=torch.bool)
    if leaf == "diag_range":
        return chosen.view(members, 1, 1)
    layers = (value.shape[1] if leaf in PER_LAYER_ON_DIM_1 else value.shape[0]) // members
    rows = chosen.repeat(layers)  # [L * G], layer-major
    if leaf in PER_LAYER_ON_DIM_1:
        return rows.view(1, -1)  # [1, L * G]
    return rows.view(-1, *[1] * (value.dim() - 1))  # [L * G, 1, ...]


# ---------------------------------------------------------------------- batched layers
class StackedAffine(nn.Module):
    """G members' copies of one nn.Linear or nn.Conv1d: weight [G, *solo weight], bias [G, out].

    Built with zeros of the right shapes; `GroupNet.from_members` loads the members' values.
    """

    def __init__(self, members: int, layer: nn.Linear | nn.Conv1d) -> None:
        super().__init__()
        self.weight = nn.Parameter(layer.weight.new_zeros(members, *layer.weight.shape))
        self.bias = (nn.Parameter(layer.bias.new_zeros(members, *layer.bias.shape))
                     if layer.bias is not None else None)


def stacked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Each member's W @ x + b, channels first: x [G, in, ...], weight [G, out, in] (or
    [G, out, in, 1], or [G, out, c, k] for in = c * k, tap innermost), bias [G, out] or None
    -> [G, out, ...].

    The weight is the left operand, so its gradient (grad_y @ x^T) comes out contiguous in the
    parameter's own layout (no copy in the backward).
    """
    members, out = weight.shape[0], weight.shape[1]
    flat = x.reshape(members, x.shape[1], -1)  # [G, in, N]
    w = weight.reshape(members, out, -1)  # [G, out, in]
    y = torch.bmm(w, flat) if bias is None else torch.baddbmm(bias.unsqueeze(2), w, flat)  # [G, out, N]
    return y.view(members, out, *x.shape[2:])  # [G, out, ...]


def member_conv(x: torch.Tensor, params: ConvParams) -> torch.Tensor:
    """Same-padded dilation-1 conv of each member as one grouped conv: x [B, G * in, n] ->
    [B, G * out, n] (member m's channels are the m-th block of each).

    params: weight [G, out, in, k], bias and out_scale [G, out] or None (out_scale multiplies bias
    too, as in backbone.dilated_conv).
    """
    members, out, c_in, k = params.weight.shape
    weight = params.weight.reshape(members * out, c_in, k)  # [G * out, in, k]
    bias = None if params.bias is None else params.bias.reshape(members * out)  # [G * out]
    y = conv1d(x, weight, bias, k // 2, 1, groups=members)  # [B, G * out, n]
    if params.out_scale is not None:
        y = y * params.out_scale.reshape(members * out, 1)
    return y


def stacked_conv(x: torch.Tensor, params: ConvParams) -> torch.Tensor:
    """`member_conv` as an im2col and one batched product, members first: x [G, in, B, n] ->
    [G, out, B, n] (GroupNet's conv_layout "im2col")."""
    members, c_in, batch, n = x.shape
    k = params.weight.shape[-1]
    cols = F.pad(x, (k // 2, k // 2)).unfold(3, k, 1)  # [G, in, B, n, k]
    cols = cols.permute(0, 1, 4, 2, 3).reshape(members, c_in * k, batch * n)  # [G, in * k, B * n]
    y = stacked_linear(cols, params.weight, params.bias).view(members, -1, batch, n)  # [G, out, B, n]
    if params.out_scale is not None:
        y = y * params.out_scale[:, :, None, None]
    return y


def stacked_centre(x: torch.Tensor, params: ConvParams) -> torch.Tensor:
    """A last-position-only layer of each member (its centre tap): x [G, in, B] -> [G, out, B].

    params: weight [G, out, in, 1]; bias [G, out]; optional centre_in_scale [G, in] /
    centre_out_scale [G, out] (an adaptive layer's centre-tap calibration) and out_scale [G, out].
    """
    vec = x if params.centre_in_scale is None else x * params.centre_in_scale[:, :, None]
    if params.centre_out_scale is None:
        y = stacked_linear(vec, params.weight, params.bias)
    else:
        y = stacked_linear(vec, params.weight, None) * params.centre_out_scale[:, :, None]
        if params.bias is not None:
            y = y + params.bias[:, :, None]
    if params.out_scale is not None:
        y = y * params.out_scale[:, :, None]
    return y


def layers_for_all_members(params: ConvParams, members: int) -> list[ConvParams]:
    """The L layers of a group bank's stacked calibration (rows [L * G, ...], layer-major), each
    for all members: layer l's tensors are rows l * G ... l * G + G - 1 -> [G, ...].

    One unbind per tensor ([L * G, ...] -> [L, G, ...] -> L views): its backward stacks the L
    gradients once, where L narrow()s would each zero-fill a whole [L * G, ...] gradient.
    """
    def split(t: torch.Tensor | None) -> list[torch.Tensor | None]:
        if t is None:
            return [None] * (params.weight.shape[0] // members)
        return list(t.view(-1, members, *t.shape[1:]).unbind(0))  # L x [G, ...]

    weights = split(params.weight)
    parts = zip(weights, split(params.bias), split(params.out_scale), split(params.centre_in_scale),
                split(params.centre_out_scale), strict=True)
    return [ConvParams(w, b, f, ci, co) for w, b, f, ci, co in parts if w is not None]


# ---------------------------------------------------------------------- the grouped network
class GroupNet(nn.Module):
    """G members of one ForecastNet configuration as one network (see the module docstring).

    Build it with `build_group(config, seeds)` or `GroupNet.from_members(models, generators)`.
    State names are the solo model's; tensors carry the member axis (`member_part`).
    """

    def __init__(self, template: ForecastNet, members: int,
                 generators: Sequence[torch.Generator] | None = None) -> None:
        """The group's structure for `members` copies of `template` (a fast-layout ForecastNet);
        parameters are zeros until `load_state_dict` (use `from_members`)."""
        super().__init__()
        if not isinstance(template, ForecastNet):
            raise TypeError(f"only ForecastNet models can be grouped (got {type(template).__name__}); "
                            "persistence has nothing to group")
        solo = template.encoder
        if not solo.fast:
            raise ValueError("a group uses the fast layout; build the members with fast=True")
        if members < 1:
            raise ValueError(f"a group needs at least one member (got {members})")
        self.members = members
        self._template = (template,)  # a tuple: not registered as a submodule
        self.dilations = list(solo.dilations)
        self.prune_from = solo.prune_from
        self.dropout_p = float(solo.repr_dropout.p)
        self.encoder = nn.Module()
        self.encoder.input_fc = StackedAffine(members, solo.input_fc)
        self.encoder.projectors = nn.ModuleDict({i: StackedAffine(members, p) for i, p in solo.projectors.items()})
        self.encoder.convs = (nn.ModuleList(StackedAffine(members, c) for c in solo.convs)
                              if solo.convs is not None else None)
        self.head = StackedAffine(members, template.head)
        self.adaptive: nn.Module | None = None
        self.location: list[tuple[int, int]] = []
        self.layer_names: list[str] = []
        if template.adaptive is not None:
            self.adaptive = nn.Module()
            with torch.random.fork_rng(devices=[]):  # draws no numbers from the caller's RNG
                banks = [AdaptiveConvBank(bank.count * members, bank.in_channels, bank.out_channels, bank.kernel,
                                          bank.settings, bank.centre_only, members=members)
                         for bank in template.adaptive.banks]
            self.adaptive.banks = nn.ModuleList(b.to(template.head.weight.device) for b in banks)
            self.location = list(template.adaptive.location)
            self.layer_names = list(template.adaptive.layer_names)
        self.online = False
        self._convs: list[ConvParams] | None = None
        self.generators: list[torch.Generator] | None = None
        if generators is not None:
            self.set_generators(generators)
        self.sync_free: bool | None = None
        self.set_sync_free(None)
        self.conv_layout = CONV_LAYOUT

    def set_conv_layout(self, layout: str) -> None:
        """How the full-length blocks run: "grouped" (grouped convs over [B, G * C, n]) or
        "im2col" (an im2col and a batched product over [G, C, B, n]); the same function."""
        if layout not in ("grouped", "im2col"):
            raise ValueError(f"conv layout must be 'grouped' or 'im2col', got {layout!r}")
        self.conv_layout = layout

    def set_sync_free(self, sync_free: bool | None) -> None:
        """True: the step reads nothing back to the host (memory reads as masks over every layer:
        for CUDA). False: the banks read their memories as the solo banks do (one host-side `any`
        per bank, then only the fired rows), much the cheaper on CPU, where reads are rare and a
        host read costs nothing. None: True off the CPU, False on it (decided at each step)."""
        self.sync_free = sync_free

    @classmethod
    def from_members(cls, models: Sequence[ForecastNet],
                     generators: Sequence[torch.Generator] | None = None) -> GroupNet:
        """The group of `models` (solo ForecastNets of one configuration, fast layout), each
        member's state copied bit for bit; `generators[i]` draws member i's dropout (give each
        the state torch's global RNG has in member i's solo trial; `build_group` does)."""
        if not models:
            raise ValueError("a group needs at least one member")
        template = models[0]
        for model in models[1:]:
            same = (isinstance(model, ForecastNet) and model.state_dict().keys() == template.state_dict().keys()
                    and (model.adaptive is None) == (template.adaptive is None)
                    and (model.adaptive is None or all(a.settings == b.settings for a, b in
                                                       zip(model.adaptive.banks, template.adaptive.banks,
                                                           strict=True))))
            if not same:
                raise ValueError("the members of a group must share one configuration")
        group = cls(copy.deepcopy(template), len(models), generators)
        states = [m.state_dict() for m in models]
        group.load_state_dict({name: stack_members(name, [s[name] for s in states]) for name in states[0]})
        group.online = template.online
        group.train(template.training)
        return group

    def set_generators(self, generators: Sequence[torch.Generator]) -> None:
        """Member i's dropout draws come from generators[i] (representation and controller dropout)."""
        if len(generators) != self.members:
            raise ValueError(f"{len(generators)} generators for {self.members} members")
        self.generators = list(generators)
        for bank in self.banks():
            bank.member_generators = self.generators

    def banks(self) -> list[AdaptiveConvBank]:
        """The group's adaptive banks (none for plain models)."""
        return [] if self.adaptive is None else list(self.adaptive.banks)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ the verbs
    def set_online(self, online: bool) -> None:
        """Online phase: memory and trigger active (call model.eval() separately)."""
        self.online = online

    def begin_step(self) -> None:
        """Compute this step's calibrated convs of every member once (adaptive models)."""
        if self.adaptive is None:
            return
        banks = self.banks()
        sync_free = self.sync_free if self.sync_free is not None else banks[0].weight.device.type != "cpu"
        for bank in banks:
            bank.sync_free = sync_free
        per_bank = [layers_for_all_members(bank.calibrate_stacked(self.online), self.members) for bank in banks]
        self._convs = [per_bank[b][index] for b, index in self.location]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [G, B, seq_len, n_in + 7] (member i's batch in x[i]) -> forecast [G, B, pred_len * n_out].

        With the template's `revin` on, each member's windows are normalised and its forecasts
        mapped back exactly as the solo ForecastNet does (the same per-sample functions over the
        leading [G, B] dims).
        """
        if x.dim() != 4 or x.shape[0] != self.members:
            raise ValueError(f"expected input [{self.members}, B, seq_len, features], got {list(x.shape)}")
        if self.adaptive is None:
            assert self.encoder.convs is not None
            convs = [ConvParams(c.weight, c.bias) for c in self.encoder.convs]
        else:
            if self._convs is None:
                raise RuntimeError("begin_step() must be called before forward() on an adaptive model")
            convs = self._convs
        template = self._template[0]
        revin = template.revin
        if revin:
            x, mean, std = revin_normalise(x, template.n_in)  # [G, B, seq_len, n_in + 7], [G, B, n_in] x 2
        rep = self._encode(x, convs).transpose(1, 2)  # [G, 320, B]
        out = stacked_linear(rep, self.head.weight, self.head.bias)  # [G, P, B]
        out = out.transpose(1, 2).contiguous()  # [G, B, P]
        if revin:
            assert template.target_index is not None
            out = revin_denormalise(out, mean, std, template.target_index, template.n_out)  # [G, B, P]
        return out

    def _encode(self, x: torch.Tensor, convs: Sequence[ConvParams]) -> torch.Tensor:
        """The solo Encoder's fast path for every member: x [G, B, T, F] -> representation [G, B, 320].

        The full-length blocks run in `self.conv_layout` ("grouped": [B, G * C, n], grouped
        convs; "im2col": [G, C, B, n], batched products); the last-position-only blocks on
        [G, C, B] (batched products).
        """
        members, batch, steps, features = x.shape
        grouped = self.conv_layout == "grouped"
        conv = member_conv if grouped else stacked_conv
        fc = self.encoder.input_fc
        inputs = x.reshape(members, batch * steps, features).transpose(1, 2)  # [G, F, B * T]
        h = stacked_linear(inputs, fc.weight, fc.bias).view(members, -1, batch, steps)  # [G, 64, B, T]
        if grouped:
            h = h.permute(2, 0, 1, 3).reshape(batch, -1, steps)  # [B, G * 64, T]
        last_only = False
        for i in range(len(self.dilations)):
            if i == self.prune_from:
                h, last_only = self._last_position(h), True  # [G, C, B]
            proj = self.encoder.projectors[str(i)] if str(i) in self.encoder.projectors else None
            if not last_only:  # needed positions: dilation-1 convs of the subsequence, every second kept
                keep = slice((h.shape[-1] - 1) % 2, None, 2)
                residual = (h if proj is None else member_conv(h, ConvParams(proj.weight, proj.bias)) if grouped
                            else stacked_linear(h, proj.weight, proj.bias))
                h = conv(F.gelu(h), convs[2 * i])
                h = conv(F.gelu(h), convs[2 * i + 1])[..., keep]  # positions: ceil(n / 2)
                h = h + residual[..., keep]
                continue
            residual = h if proj is None else stacked_linear(h, proj.weight, proj.bias)
            h = stacked_centre(F.gelu(h), convs[2 * i])
            h = stacked_centre(F.gelu(h), convs[2 * i + 1])
            h = h + residual
        rep = (h if last_only else self._last_position(h)).transpose(1, 2)  # [G, B, 320]
        if self.training and self.dropout_p > 0 and self.generators is None:
            raise RuntimeError("training-mode dropout needs the members' generators (set_generators)")
        return member_dropout(rep, self.dropout_p, self.training, self.generators or [], dim=0)

    def _last_position(self, h: torch.Tensor) -> torch.Tensor:
        """The last position of the full-length layout, members first: [G, C, B] (a view)."""
        if self.conv_layout == "grouped":  # [B, G * C, n] -> [B, G, C] -> [G, C, B]
            return h[:, :, -1].view(h.shape[0], self.members, -1).permute(1, 2, 0)
        return h[..., -1]  # [G, C, B, n] -> [G, C, B]

    def end_step(self) -> None:
        """After the optimiser step: every member's gradient EMAs and trigger; drops the calibrations."""
        for bank in self.banks():
            bank.update_gradient_state(self.online)
        self._convs = None

    # ------------------------------------------------------------------ what the optimiser needs
    def conditional_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters a member's solo AdamW steps only on some steps: the adaptive blend's tau
        (tau_w [L * G, n_chunks], tau_b [L * G]), which gets a gradient in a solo bank only on a
        step where one of its layers read the memory. Name -> parameter."""
        return {name: p for name, p in self.named_parameters()
                if name.startswith(BANK_PREFIX) and name.rsplit(".", 1)[-1] in ("tau_w", "tau_b")}

    def live_rows(self, name: str) -> torch.Tensor:
        """For a conditional parameter `name`: bool [L * G], the rows whose member's solo optimiser
        steps it this step (that member's bank read its memory in this step's begin_step)."""
        bank = self.banks()[int(name.removeprefix(BANK_PREFIX).split(".", 1)[0])]
        rows = bank.count
        if bank.memory_read is None:
            return torch.zeros(rows, dtype=torch.bool, device=bank.weight.device)
        return bank.memory_read.repeat(rows // self.members)  # [G] -> [L * G], layer-major

    # ------------------------------------------------------------------ members
    def member_state(self, member: int) -> dict[str, torch.Tensor]:
        """Member `member`'s state_dict in the solo model's layout (copies)."""
        return {name: member_part(name, value, member, self.members).clone()
                for name, value in self.state_dict().items()}

    def member_model(self, member: int) -> ForecastNet:
        """A solo ForecastNet holding member `member`'s state (a copy, on the group's device and dtype)."""
        template = self._template[0]
        weight = self.head.weight
        model = copy.deepcopy(template).to(weight.device)
        if template.head.weight.dtype != weight.dtype:
            model = model.to(weight.dtype)
        model.load_state_dict(self.member_state(member))
        model.online = self.online
        return model.train(self.training)

    def triggers(self) -> torch.Tensor | None:
        """Armed drift triggers per member and layer: bool [G, 22] (None without memory)."""
        banks = self.banks()
        if not banks or not hasattr(banks[0], "trigger"):
            return None
        per_layer = [banks[b].trigger.view(-1, self.members)[index] for b, index in self.location]  # [G] each
        return torch.stack(per_layer, dim=1)

    def diagnostics(self) -> list[dict[str, Any]]:
        """Each member's memory diagnostics, as its solo model reports them (outside the step:
        reads values back to the host)."""
        return [self.member_model(i).diagnostics() for i in range(self.members)]

    def memory_buffers(self) -> dict[str, torch.Tensor]:
        """Name -> tensor of the associative memories ([L * G, D, S] per bank), group layout."""
        return {n: b for n, b in self.named_buffers() if n.endswith(".memory")}


def build_group(config: dict[str, Any], seeds: Sequence[int], n_columns: int = 7) -> GroupNet:
    """The group of `config` (a resolved config) for `seeds`, member i exactly as the solo trial
    of seeds[i] builds its model: torch.manual_seed(seed), then build_from_config (fast layout).

    Member i's dropout generator takes the state torch's global RNG has right after that build
    (where the solo trial's dropout draws start). Leaves the global RNG as the last build did.
    """
    models, generators = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        model = build_from_config(config, n_columns, fast=True)
        if not isinstance(model, ForecastNet):
            raise ValueError(f"preset {config['preset']!r} has nothing to group")
        models.append(model)
        generators.append(torch.Generator().set_state(torch.get_rng_state()))
    return GroupNet.from_members(models, generators)
