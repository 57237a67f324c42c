"""AdamW for a trial group: per member, the solo trial's torch.optim.AdamW, bit for bit in formula.

AdamW is elementwise, and so is its weight decay: one torch.optim.AdamW over the group's stacked
parameters, with loss = sum over members of each member's loss (so each member's gradient is
its own), steps every member exactly as its own AdamW would, moments included. The only catch
is a parameter that a solo AdamW steps on some steps only: torch skips a parameter whose grad is
None (no decay, no moment decay, no step count). In the FSNet family that is the adaptive blend's
tau (`GroupNet.conditional_parameters`): a solo bank's tau gets a gradient only on a step where
one of its layers read the memory, which differs between members. Those few parameters get a
masked AdamW here (`masked_adamw_`): per-row step counts, the update kept only on the rows whose
member's solo optimiser would have stepped (`GroupNet.live_rows`); no host synchronisation.

Members whose solo optimisers differ in step count or learning rate (members that stopped
warm-up at different epochs: harness.online.group_runner.warm_up_group) put the optimiser in its
per-member mode (`load_member`): a step count per member for every parameter and a learning rate
per member for every parameter group, both [G] float64 tensors, broadcast onto each parameter's
layout (`member_index`), and torch's AdamW formula applied per parameter (`member_adamw_`; the
masked AdamW takes the per-member rates too). No Python branch on tensor values, no host read.
Until a member's state is loaded the mode is off (the default case: the members step in
lockstep, as with the default epochs and patience), and the fused torch AdamW runs as before,
bit for bit. In the per-member mode, writing a parameter group's "lr" sets every member's rate;
`member_lrs(i)` reads member i's; state_dict / load_state_dict carry the mode.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import torch
from torch import nn

from fsnet_models.group import GroupNet, member_mask, member_part


@torch.no_grad()
def masked_adamw_(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                  step: torch.Tensor, live: torch.Tensor, lr: float | torch.Tensor, beta1: float, beta2: float,
                  eps: float, weight_decay: float) -> None:
    """One AdamW step (torch's formula, decoupled decay) on the rows of `param` where `live`, in place.

    param, grad, exp_avg, exp_avg_sq [R, ...]; step [R] float64 (steps taken per row); live [R]
    bool; lr a float, or [R] float64 (each row's rate: the per-member mode). Rows not live keep
    param, moments and step unchanged, as a solo AdamW leaves a parameter whose grad is None.
    """
    shape = (-1,) + (1,) * (param.dim() - 1)  # [R] -> [R, 1, ...]
    new_step = step + live.to(step.dtype)
    bias_correction1 = 1 - torch.pow(beta1, new_step)
    bias_correction2 = 1 - torch.pow(beta2, new_step)
    step_size = (lr / bias_correction1).to(param.dtype).view(shape)
    bias_correction2_sqrt = bias_correction2.sqrt().to(param.dtype).view(shape)
    decay = lr * weight_decay
    if isinstance(decay, torch.Tensor):
        decay = decay.to(param.dtype).view(shape)
    decayed = param - param * decay
    new_avg = exp_avg.lerp(grad, 1 - beta1)
    new_avg_sq = torch.addcmul(exp_avg_sq * beta2, grad, grad, value=1 - beta2)
    denom = new_avg_sq.sqrt() / bias_correction2_sqrt + eps
    updated = decayed - step_size * new_avg / denom
    mask = live.view(shape)
    param.copy_(torch.where(mask, updated, param))
    exp_avg.copy_(torch.where(mask, new_avg, exp_avg))
    exp_avg_sq.copy_(torch.where(mask, new_avg_sq, exp_avg_sq))
    step.copy_(new_step)


@torch.no_grad()
def member_adamw_(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                  step: torch.Tensor, lr: torch.Tensor, beta1: float, beta2: float, eps: float,
                  weight_decay: float) -> None:
    """One AdamW step of every member, in place, in the order of torch's single-tensor AdamW
    (decay, moments, bias-corrected update), with each member's own step count and rate.

    param, grad, exp_avg, exp_avg_sq: one group tensor; step (the count including this step) and
    lr: float64, broadcastable to param (a member's value on each of its elements: `member_index`).
    """
    param.mul_((1 - lr * weight_decay).to(param.dtype))
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - torch.pow(beta1, step)
    bias_correction2 = 1 - torch.pow(beta2, step)
    step_size = (lr / bias_correction1).to(param.dtype)
    bias_correction2_sqrt = bias_correction2.sqrt().to(param.dtype)
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    param.sub_(step_size * exp_avg / denom)


def member_index(name: str, value: torch.Tensor, members: int) -> torch.Tensor:
    """The member each element of the group's tensor `name` (`value`) belongs to: int64,
    broadcastable to value (built from `member_mask`, so every layout it knows: backbone [G, ...],
    bank rows [L * G, ...] layer-major, per-layer statistics on dim 1). Per-member values
    v [G] on value's layout: v[member_index(...)]."""
    index = torch.zeros((), dtype=torch.long, device=value.device)
    for m in range(1, members):
        chosen = torch.zeros(members, dtype=torch.bool, device=value.device)
        chosen[m] = True
        index = index + member_mask(name, value, chosen).long() * m
    return index


class _MemberGroup(MutableMapping):
    """A parameter group in the per-member mode: reads and writes the group's dict, and writing
    "lr" sets every member's rate (as set_online_learning_rate means it)."""

    def __init__(self, group: dict[str, Any], lr: torch.Tensor) -> None:
        self.group, self.lr = group, lr

    def __getitem__(self, key: str) -> Any:
        return self.group[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.group[key] = value
        if key == "lr":
            self.lr.fill_(float(value))

    def __delitem__(self, key: str) -> None:
        del self.group[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.group)

    def __len__(self) -> int:
        return len(self.group)


class GroupAdamW:
    """torch.optim.AdamW over a GroupNet's stacked parameters (fused where asked), plus the masked
    AdamW of its conditional parameters. Offers what the protocol uses of an optimiser:
    step(), zero_grad(set_to_none), param_groups (lr settable), state_dict(), load_state_dict();
    member_state(i), member i's state in the layout of a solo AdamW's state; and
    member_snapshot(i) / load_member(i, snapshot), which save and restore one member's state
    (the second switches to the per-member mode: see the module docstring).
    """

    def __init__(self, model: GroupNet, lr: float, weight_decay: float = 0.01,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, fused: bool | None = None) -> None:
        """AdamW(lr, betas, eps, weight_decay, fused) as the solo trial builds it, for every member."""
        self.model = model
        conditional = model.conditional_parameters()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = {p: n for n, p in named}
        self.inner = torch.optim.AdamW([p for n, p in named if n not in conditional], lr=lr, betas=betas,
                                       eps=eps, weight_decay=weight_decay, fused=fused)
        self.conditional: list[tuple[str, nn.Parameter]] = list(conditional.items())
        self.masked_group: dict[str, Any] = {"params": [p for _, p in self.conditional], "lr": lr,
                                             "betas": betas, "eps": eps, "weight_decay": weight_decay}
        self.masked_state: dict[str, dict[str, torch.Tensor]] = {}
        # per-member mode (None: off): each member's rate per parameter group [G] float64, and
        # each member's step count per inner parameter [G] float64
        self.member_lr: list[torch.Tensor] | None = None
        self.member_step: dict[str, torch.Tensor] = {}
        self._index: dict[str, torch.Tensor] = {}

    @property
    def per_member(self) -> bool:
        """True in the per-member mode (members with their own step counts and rates)."""
        return self.member_lr is not None

    def _groups(self) -> list[dict[str, Any]]:
        return self.inner.param_groups + ([self.masked_group] if self.conditional else [])

    @property
    def param_groups(self) -> list[MutableMapping[str, Any]]:
        """The parameter groups (the inner AdamW's, then the masked one's); setting "lr" works (in
        the per-member mode it sets every member's rate; `member_lrs` reads them)."""
        if self.member_lr is None:
            return self._groups()  # type: ignore[return-value]
        return [_MemberGroup(g, lr) for g, lr in zip(self._groups(), self.member_lr, strict=True)]

    def member_lrs(self, member: int) -> list[float]:
        """Member `member`'s learning rate in each parameter group (reads back to the host)."""
        if self.member_lr is None:
            return [float(g["lr"]) for g in self._groups()]
        return [float(lr[member]) for lr in self.member_lr]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's gradient."""
        self.inner.zero_grad(set_to_none=set_to_none)
        for _, p in self.conditional:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def _member_index(self, name: str, value: torch.Tensor) -> torch.Tensor:
        index = self._index.get(name)
        if index is None or index.device != value.device:
            index = member_index(name, value, self.model.members)
            self._index[name] = index
        return index

    def step(self) -> None:
        """One AdamW step for every member (call after backward of the summed loss)."""
        if self.member_lr is None:
            self.inner.step()
        else:
            self._step_members()
        group = self.masked_group
        beta1, beta2 = group["betas"]
        for name, p in self.conditional:
            if p.grad is None:  # no member's solo optimiser sees a gradient (memory inactive)
                continue
            state = self.masked_state.get(name)
            if state is None:
                state = self._new_masked_state(p)
                self.masked_state[name] = state
            lr = group["lr"] if self.member_lr is None else self.member_lr[-1][self._member_index(name, p)].view(-1)
            masked_adamw_(p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"],
                          self.model.live_rows(name), lr, beta1, beta2, group["eps"], group["weight_decay"])

    @staticmethod
    def _new_masked_state(p: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"step": torch.zeros(p.shape[0], dtype=torch.float64, device=p.device),
                "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}

    def _new_inner_state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """A fresh AdamW state of `p` (as torch makes it) and, in the per-member mode, its step counts."""
        state = self.inner.state[p]
        state.update(step=torch.zeros((), dtype=torch.float32, device=p.device),
                     exp_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
                     exp_avg_sq=torch.zeros_like(p, memory_format=torch.preserve_format))
        if self.member_lr is not None:
            self.member_step[self.names[p]] = torch.zeros(self.model.members, dtype=torch.float64, device=p.device)
        return state

    def _step_members(self) -> None:
        """The inner AdamW's step in the per-member mode: each member with its own count and rate."""
        assert self.member_lr is not None
        inner_groups = self.inner.param_groups
        for group, lr in zip(inner_groups, self.member_lr[:len(inner_groups)], strict=True):
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:  # as torch's AdamW: no decay, no moments, no count
                    continue
                name = self.names[p]
                state = self.inner.state[p] if self.inner.state.get(p) else self._new_inner_state(p)
                steps = self.member_step[name]
                steps.add_(1)
                index = self._member_index(name, p)
                member_adamw_(p, p.grad, state["exp_avg"], state["exp_avg_sq"], steps[index], lr[index],
                              beta1, beta2, group["eps"], group["weight_decay"])

    def _enter_per_member(self) -> None:
        """Switch to the per-member mode, every member keeping its count and rate (all equal so far)."""
        if self.member_lr is not None:
            return
        for group in self.inner.param_groups:
            if group.get("amsgrad") or group.get("maximize") or group.get("differentiable"):
                raise ValueError("the per-member mode offers plain AdamW only (no amsgrad, maximize, differentiable)")
        members = self.model.members
        device = self.model.head.weight.device
        self.member_step = {self.names[p]: state["step"].to(p.device, torch.float64).expand(members).clone()
                            for p, state in self.inner.state.items() if state}
        self.member_lr = [torch.full((members,), float(g["lr"]), dtype=torch.float64, device=device)
                          for g in self._groups()]
        self._build_indices()

    def _build_indices(self) -> None:
        """Every parameter's `member_index` (built once, before any step of the per-member mode)."""
        for p, name in self.names.items():
            self._member_index(name, p)

    def member_snapshot(self, member: int) -> dict[str, Any]:
        """Copies of member `member`'s optimiser state (group layout parts): moments and step count of
        every parameter holding state, and its rate in each parameter group. For `load_member`."""
        members = self.model.members
        inner = {}
        for p, state in self.inner.state.items():
            if not state:
                continue
            name = self.names[p]
            step = state["step"] if self.member_lr is None else self.member_step[name][member]
            inner[name] = {"step": step.to(torch.float64).clone(),
                           "exp_avg": member_part(name, state["exp_avg"], member, members).clone(),
                           "exp_avg_sq": member_part(name, state["exp_avg_sq"], member, members).clone()}
        masked = {name: {k: member_part(name, v, member, members).clone() for k, v in s.items()}
                  for name, s in self.masked_state.items()}
        return {"inner": inner, "masked": masked, "lr": self.member_lrs(member)}

    @torch.no_grad()
    def load_member(self, member: int, snapshot: dict[str, Any]) -> None:
        """Give member `member` the optimiser state `snapshot` (from `member_snapshot`): moments, step
        counts and rates; the other members keep theirs. Switches to the per-member mode. A parameter
        without state in the snapshot gets zero moments and count for that member (as a solo AdamW
        that never stepped it)."""
        self._enter_per_member()
        assert self.member_lr is not None
        members = self.model.members
        for group in self.inner.param_groups:
            for p in group["params"]:
                name = self.names[p]
                saved = snapshot["inner"].get(name)
                state = self.inner.state.get(p)
                if not state:
                    if saved is None:
                        continue
                    state = self._new_inner_state(p)
                for key in ("exp_avg", "exp_avg_sq"):
                    part = member_part(name, state[key], member, members)
                    if saved is None:
                        part.zero_()
                    else:
                        part.copy_(saved[key])
                self.member_step[name][member] = 0.0 if saved is None else saved["step"]
        for name, p in self.conditional:
            saved = snapshot["masked"].get(name)
            state = self.masked_state.get(name)
            if state is None:
                if saved is None:
                    continue
                state = self._new_masked_state(p)
                self.masked_state[name] = state
            for key, value in state.items():
                part = member_part(name, value, member, members)
                if saved is None:
                    part.zero_()
                else:
                    part.copy_(saved[key])
        for lr, value in zip(self.member_lr, snapshot["lr"], strict=True):
            lr[member] = value

    def state_dict(self) -> dict[str, Any]:
        """The inner AdamW's state_dict, the masked state (copies), the masked group's settings, and
        the per-member mode's rates and step counts (copies; None when the mode is off)."""
        settings = {k: v for k, v in self.masked_group.items() if k != "params"}
        per_member = (None if self.member_lr is None else
                      {"lr": [lr.clone() for lr in self.member_lr],
                       "step": {n: s.clone() for n, s in self.member_step.items()}})
        return {"inner": self.inner.state_dict(), "settings": settings,
                "masked": {n: {k: v.clone() for k, v in s.items()} for n, s in self.masked_state.items()},
                "per_member": per_member}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (the per-member mode on or off as it was)."""
        self.inner.load_state_dict(state["inner"])
        self.masked_group.update(state["settings"])
        self.masked_state = {n: {k: v.clone() for k, v in s.items()} for n, s in state["masked"].items()}
        per_member = state.get("per_member")
        if per_member is None:
            self.member_lr, self.member_step = None, {}
            return
        device = self.model.head.weight.device
        params = {n: p for p, n in self.names.items()}
        self.member_lr = [lr.to(device=device, dtype=torch.float64).clone() for lr in per_member["lr"]]
        self.member_step = {n: s.to(device=params[n].device, dtype=torch.float64).clone()
                            for n, s in per_member["step"].items()}
        self._build_indices()

    def member_state(self, member: int) -> dict[str, dict[str, torch.Tensor]]:
        """Member `member`'s optimiser state: solo parameter name -> {"step", "exp_avg", "exp_avg_sq"}
        (views), for the parameters its solo AdamW holds state for (a conditional parameter it
        never stepped has none, as in the solo optimiser; in the per-member mode, neither has a
        parameter whose count for this member is 0)."""
        members = self.model.members
        out: dict[str, dict[str, torch.Tensor]] = {}
        for p, state in self.inner.state.items():
            if not state:
                continue
            name = self.names[p]
            step = state["step"]
            if self.member_lr is not None:
                step = self.member_step[name][member]
                if not bool(step > 0):
                    continue
            out[name] = {"step": step, "exp_avg": member_part(name, state["exp_avg"], member, members),
                         "exp_avg_sq": member_part(name, state["exp_avg_sq"], member, members)}
        for name, state in self.masked_state.items():
            steps = member_part(name, state["step"], member, members)  # [L], equal within a member
            if not bool(steps[0] > 0):
                continue
            out[name] = {"step": steps[0], "exp_avg": member_part(name, state["exp_avg"], member, members),
                         "exp_avg_sq": member_part(name, state["exp_avg_sq"], member, members)}
        return out
