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
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fsnet_models.group import GroupNet, member_part


@torch.no_grad()
def masked_adamw_(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                  step: torch.Tensor, live: torch.Tensor, lr: float, beta1: float, beta2: float, eps: float,
                  weight_decay: float) -> None:
    """One AdamW step (torch's formula, decoupled decay) on the rows of `param` where `live`, in place.

    param, grad, exp_avg, exp_avg_sq [R, ...]; step [R] float64 (steps taken per row); live [R]
    bool. Rows not live keep param, moments and step unchanged, as a solo AdamW leaves a parameter
    whose grad is None.
    """
    shape = (-1,) + (1,) * (param.dim() - 1)  # [R] -> [R, 1, ...]
    new_step = step + live.to(step.dtype)
    bias_correction1 = 1 - torch.pow(beta1, new_step)
    bias_correction2 = 1 - torch.pow(beta2, new_step)
    step_size = (lr / bias_correction1).to(param.dtype).view(shape)
    bias_correction2_sqrt = bias_correction2.sqrt().to(param.dtype).view(shape)
    decayed = param - param * (lr * weight_decay)
    new_avg = exp_avg.lerp(grad, 1 - beta1)
    new_avg_sq = torch.addcmul(exp_avg_sq * beta2, grad, grad, value=1 - beta2)
    denom = new_avg_sq.sqrt() / bias_correction2_sqrt + eps
    updated = decayed - step_size * new_avg / denom
    mask = live.view(shape)
    param.copy_(torch.where(mask, updated, param))
    exp_avg.copy_(torch.where(mask, new_avg, exp_avg))
    exp_avg_sq.copy_(torch.where(mask, new_avg_sq, exp_avg_sq))
    step.copy_(new_step)


class GroupAdamW:
    """torch.optim.AdamW over a GroupNet's stacked parameters (fused where asked), plus the masked
    AdamW of its conditional parameters. Offers what the protocol uses of an optimiser:
    step(), zero_grad(set_to_none), param_groups (lr settable), state_dict(), load_state_dict();
    and member_state(i), member i's state in the layout of a solo AdamW's state.
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

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The parameter groups (the inner AdamW's, then the masked one's); setting "lr" works."""
        return self.inner.param_groups + ([self.masked_group] if self.conditional else [])

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's gradient."""
        self.inner.zero_grad(set_to_none=set_to_none)
        for _, p in self.conditional:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def step(self) -> None:
        """One AdamW step for every member (call after backward of the summed loss)."""
        self.inner.step()
        group = self.masked_group
        beta1, beta2 = group["betas"]
        for name, p in self.conditional:
            if p.grad is None:  # no member's solo optimiser sees a gradient (memory inactive)
                continue
            state = self.masked_state.get(name)
            if state is None:
                state = {"step": torch.zeros(p.shape[0], dtype=torch.float64, device=p.device),
                         "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                self.masked_state[name] = state
            masked_adamw_(p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"],
                          self.model.live_rows(name), group["lr"], beta1, beta2, group["eps"],
                          group["weight_decay"])

    def state_dict(self) -> dict[str, Any]:
        """The inner AdamW's state_dict, the masked state (copies) and the masked group's settings."""
        settings = {k: v for k, v in self.masked_group.items() if k != "params"}
        return {"inner": self.inner.state_dict(), "settings": settings,
                "masked": {n: {k: v.clone() for k, v in s.items()} for n, s in self.masked_state.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.inner.load_state_dict(state["inner"])
        self.masked_group.update(state["settings"])
        self.masked_state = {n: {k: v.clone() for k, v in s.items()} for n, s in state["masked"].items()}

    def member_state(self, member: int) -> dict[str, dict[str, torch.Tensor]]:
        """Member `member`'s optimiser state: solo parameter name -> {"step", "exp_avg", "exp_avg_sq"}
        (views), for the parameters its solo AdamW holds state for (a conditional parameter it
        never stepped has none, as in the solo optimiser)."""
        members = self.model.members
        out: dict[str, dict[str, torch.Tensor]] = {}
        for p, state in self.inner.state.items():
            name = self.names[p]
            out[name] = {"step": state["step"], "exp_avg": member_part(name, state["exp_avg"], member, members),
                         "exp_avg_sq": member_part(name, state["exp_avg_sq"], member, members)}
        for name, state in self.masked_state.items():
            steps = member_part(name, state["step"], member, members)  # [L], equal within a member
            if not bool(steps[0] > 0):
                continue
            out[name] = {"step": steps[0], "exp_avg": member_part(name, state["exp_avg"], member, members),
                         "exp_avg_sq": member_part(name, state["exp_avg_sq"], member, members)}
        return out
