"""The associative memory of FSNet (MODELS.md sections 2, 4 and 5), batched over G layers.

All functions work on a stack of G memories `M` of shape [G, D, S] (D = calibration length,
S = slots; slots are columns) and run without autograd: the memory is a buffer, never trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MemoryRead:
    """What one triggered read returns, per layer.

    retrieved: [G, D] the attention-weighted sum of the chosen slots (concatenated over heads).
    memory:    [G, D, S] the memory after the write, renormalised (and diversity step, if any).
    entropy:   [G] mean over heads of the attention entropy (nats).
    """

    retrieved: torch.Tensor
    memory: torch.Tensor
    entropy: torch.Tensor


def head_bounds(rows: int, heads: int) -> list[tuple[int, int]]:
    """(start, stop) of each of `heads` contiguous parts of `rows` rows, as torch.tensor_split
    cuts them (the first rows % heads parts one row longer); plain ints, no tensor read back."""
    if heads > rows:
        raise ValueError(f"memory_heads = {heads} is more than the {rows} rows of the memory")
    size, longer = divmod(rows, heads)
    bounds, start = [], 0
    for head in range(heads):
        stop = start + size + (1 if head < longer else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def normalize_memory(memory: torch.Tensor) -> torch.Tensor:
    """Divide each layer's [D, S] memory by max(||M||_F, 1) (shape kept: [G, D, S])."""
    norm = torch.linalg.matrix_norm(memory).clamp_min(1.0)
    return memory / norm[:, None, None]


def slot_mean_squared_cosine(memory: torch.Tensor) -> torch.Tensor:
    """P(M) = mean over slot pairs i != j of cos(M_i, M_j)^2, per layer: [G, D, S] -> [G]."""
    slots = memory.shape[-1]
    unit = memory / torch.linalg.vector_norm(memory, dim=1, keepdim=True).clamp_min(1e-8)
    cos = unit.transpose(1, 2) @ unit
    off_diagonal = cos.square().sum((1, 2)) - torch.diagonal(cos, dim1=1, dim2=2).square().sum(1)
    return off_diagonal / (slots * (slots - 1))


def diversity_kernel(memory: torch.Tensor) -> torch.Tensor:
    """K [G, S, S] with dP/dM = M @ K per layer, P(M) being `slot_mean_squared_cosine`.

    With slot lengths n_j, inv_j = 1 / max(n_j, 1e-8), unit slots U = M diag(inv) and their
    cosines C = U^T U (from the Gram matrix M^T M): dP/dU = U A with A = 4 (C - diag C) /
    (S (S - 1)), and through the normalisation a slot with n_j >= 1e-8 loses its radial part
    r_j = U_j . (U A)_j = sum_i C_ij A_ij, so dP/dM = M (diag(inv) A diag(inv) - diag(inv^2 r)).
    Everything but the two products with M happens on [G, S, S]: no pass over the [G, D, S]
    memory beyond the Gram matrix and the final product, and no autograd graph (equal to
    autograd's gradient to float rounding, tested).
    """
    slots = memory.shape[-1]
    gram = memory.transpose(1, 2) @ memory
    lengths = torch.diagonal(gram, dim1=1, dim2=2).sqrt()
    inv = lengths.clamp_min(1e-8).reciprocal()
    cos = gram * inv[:, :, None] * inv[:, None, :]
    pull = cos * (4 / (slots * (slots - 1)))
    pull.diagonal(dim1=1, dim2=2).zero_()
    radial = torch.where(lengths >= 1e-8, (cos * pull).sum(1), 0.0)
    return inv[:, :, None] * pull * inv[:, None, :] - torch.diag_embed(radial * inv.square())


def diversity_step(memory: torch.Tensor, step_size: float) -> torch.Tensor:
    """One gradient step of size `step_size` on P(M) per layer, then rescale to norm <= 1 ([G, D, S])."""
    return normalize_memory(torch.baddbmm(memory, memory, diversity_kernel(memory), alpha=-step_size))


@torch.no_grad()
def read_and_write(
    memory: torch.Tensor,
    query: torch.Tensor,
    temperature: torch.Tensor,
    top_k: int,
    heads: int,
    write_tau: float,
    index_weighted: bool,
    diversity: float,
) -> MemoryRead:
    """Read the memory with `query` and write the read back into the chosen slots.

    memory [G, D, S]; query [G, D]; temperature [G] (> 0). Rows are split into `heads`
    contiguous parts (torch.tensor_split); each head attends over all S slots with
    softmax(query_h . M_h / T), keeps its top_k slots (values v, indices idx) and retrieves
    r_h = sum_j v_j M_h[:, idx_j] (or sum_j idx_j M_h[:, idx_j] when `index_weighted`: the
    public code's bug, kept for `fsnet_bug`). Write: M_h[:, idx_j] <- tau M_h[:, idx_j] +
    (1 - tau) v_j r_h, then M / max(||M||_F, 1), then the optional diversity step.
    """
    reads, parts, entropies = [], [], []
    for start, stop in head_bounds(memory.shape[1], heads):
        mem_h = memory[:, start:stop, :]
        logits = torch.bmm(query[:, None, start:stop], mem_h).squeeze(1) / temperature[:, None]
        attention = torch.softmax(logits, dim=-1)
        values, index = attention.topk(top_k, dim=-1)
        gather_index = index[:, None, :].expand(-1, stop - start, -1)
        chosen = mem_h.gather(2, gather_index)
        weights = index.to(memory.dtype) if index_weighted else values
        read = (chosen * weights[:, None, :]).sum(-1)
        written = write_tau * chosen + (1.0 - write_tau) * values[:, None, :] * read[:, :, None]
        parts.append(mem_h.scatter(2, gather_index, written))
        reads.append(read)
        entropies.append(-(attention * attention.clamp_min(1e-30).log()).sum(-1))
    new_memory = normalize_memory(torch.cat(parts, dim=1))
    if diversity > 0:
        new_memory = diversity_step(new_memory, diversity)
    return MemoryRead(torch.cat(reads, dim=1), new_memory, torch.stack(entropies).mean(0))
