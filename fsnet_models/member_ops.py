"""Operators with a leading member axis, for trial groups (fsnet_models.group).

A trial group runs G members (one configuration, G seeds) as one network: every tensor of a
member gains a leading axis [G, ...]. These helpers are the few places where a member's own
state must be honoured inside an otherwise shared operator: its dropout draws (from its own
generator, as the solo trial draws them from torch's global one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def member_dropout(x: torch.Tensor, p: float, training: bool, generators: Sequence[torch.Generator],
                   dim: int = 0) -> torch.Tensor:
    """Dropout of x with member axis `dim` (x.shape[dim] == len(generators)), member i's mask
    drawn from generators[i].

    Member i's mask is the one F.dropout draws on CPU for x.select(dim, i) from a global
    generator in generators[i]'s state: at::dropout's CPU path is `noise = empty_like(input)
    .bernoulli_(1 - p); noise.div_(1 - p); input * noise` (tested bit for bit against
    F.dropout). One draw per member, whatever the data; identity when not `training` or p == 0.
    """
    if not training or p == 0:
        return x
    if x.shape[dim] != len(generators):
        raise ValueError(f"{len(generators)} generators for a member axis of {x.shape[dim]}")
    shape = x.shape[:dim] + x.shape[dim + 1:]
    noise = torch.stack([torch.empty(shape, dtype=x.dtype, device=g.device).bernoulli_(1 - p, generator=g)
                         for g in generators], dim=dim).to(x.device)  # [.., G, ..] like x
    if p == 1:
        return x * noise
    return x * noise.div_(1 - p)
