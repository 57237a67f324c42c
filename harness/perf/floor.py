"""The controllers' matrix products: arithmetic that every exact FSNet-family step must do.

Each adaptive bank's controller multiplies its chunked slow gradient EMA [G, n_chunks, ctrl_in]
by ctrl_w1 [G, ctrl_in, hidden] in the forward, and the backward forms ctrl_w1's gradient as the
transposed input times the hidden gradient [G, n_chunks, hidden]; the gated controller adds two
[n_chunks, hidden] x [hidden, hidden] products, each needing a weight gradient and an input
gradient in the backward. The input changes every step (it is an EMA of the newest gradient) and
so do the weights (AdamW), so none of this can be cached across steps. Timed alone, on random
data of the model's real shapes and hot in cache, the sum is a lower bound on what the adaptive
layers add to an online step, not an estimate of it (the EMAs, the memory and the larger AdamW
come on top).

`state_updates_ms` times the least of the EMA and AdamW work, which the adaptive layers cannot
skip either, the same way: one fused AdamW step over the parameters they add to a plain network
(everything in the banks but the conv weights and biases, which `ogd` has too), and one pass
(`lerp_`) over each gradient EMA value. An exact step of an FSNet-family preset costs at least
an `ogd` step (the same backbone, forward and backward, and AdamW over the same conv weights)
plus the floor (the products and these updates), so 1 + floor / ogd's step time is the lowest
ratio to `ogd` that any implementation with these kernels can reach while `ogd` keeps its speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from fsnet_models.adaptive import AdaptiveConvBank


def _best_ms(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Fastest of `repeats` timed calls of `run`, in milliseconds (after one untimed call)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    run()
    best = float("inf")
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - started)
    return 1000 * best


def controller_products_ms(model: nn.Module, repeats: int = 20) -> float:
    """Milliseconds per step of the controllers' products (forward and backward) of `model`'s banks.

    0.0 for models without adaptive layers. See the module docstring for what is counted.
    """
    with torch.no_grad():
        return sum((_bank_products_ms(bank, repeats) for bank in adaptive_banks(model)), 0.0)


def adaptive_banks(model: nn.Module) -> list[AdaptiveConvBank]:
    """The adaptive conv banks of `model` (none for a model without adaptive layers)."""
    adaptive = getattr(model, "adaptive", None)
    return [] if adaptive is None else list(adaptive.banks)


def _bank_products_ms(bank: AdaptiveConvBank, repeats: int) -> float:
    """One adaptive bank's controller products, forward and backward, in milliseconds."""
    groups, ctrl_in, hidden = bank.ctrl_w1.shape
    device = bank.ctrl_w1.device
    chunks = torch.randn(groups, bank.n_chunks, ctrl_in, device=device)
    hidden_grad = torch.randn(groups, bank.n_chunks, hidden, device=device)
    weight = torch.randn(groups, ctrl_in, hidden, device=device)
    bias = torch.randn(groups, 1, hidden, device=device)
    total = _best_ms(lambda: torch.baddbmm(bias, chunks, weight), repeats, device)
    total += _best_ms(lambda: torch.bmm(chunks.transpose(1, 2), hidden_grad), repeats, device)
    if bank.settings.gated_controller:
        square = torch.randn(groups, hidden, hidden, device=device)
        forward = _best_ms(lambda: torch.baddbmm(bias, hidden_grad, square), repeats, device)
        weight_grad = _best_ms(lambda: torch.bmm(hidden_grad.transpose(1, 2), hidden_grad), repeats, device)
        input_grad = _best_ms(lambda: torch.bmm(hidden_grad, square.transpose(1, 2)), repeats, device)
        total += 2 * (forward + weight_grad + input_grad)
    return total


SHARED_WITH_PLAIN = ("weight", "beta")  # bank parameters a plain network has too (conv weights, biases)
GRADIENT_EMAS = ("e_fast", "e_slow", "e_square")


def state_updates_ms(model: nn.Module, repeats: int = 20) -> float:
    """Milliseconds per step of the state updates the adaptive layers of `model` add at least.

    One fused AdamW step over the values of the parameters the banks add and one `lerp_` over
    every gradient EMA value, each timed hot in cache. 0.0 for models without adaptive layers.
    With `controller_products_ms`, this makes the adapter's floor (see the module docstring).
    """
    if not adaptive_banks(model):
        return 0.0
    device = next(model.parameters()).device
    return (_adamw_ms(added_parameter_values(model), repeats, device)
            + _lerp_ms(gradient_ema_values(model), repeats, device))


def added_parameter_values(model: nn.Module) -> int:
    """Number of parameter values the adaptive banks of `model` add to a plain network (0 if none)."""
    return sum(p.numel() for bank in adaptive_banks(model) for name, p in bank.named_parameters()
               if name not in SHARED_WITH_PLAIN)


def gradient_ema_values(model: nn.Module) -> int:
    """Number of gradient-EMA values (fast, slow, second moment) the adaptive banks of `model` keep."""
    return sum(t.numel() for bank in adaptive_banks(model) for name, t in bank.named_buffers()
               if name in GRADIENT_EMAS)


def _adamw_ms(values: int, repeats: int, device: torch.device) -> float:
    """One fused AdamW step over one parameter of `values` values, in milliseconds."""
    param = nn.Parameter(torch.randn(values, device=device))
    param.grad = torch.randn_like(param)
    optimizer = torch.optim.AdamW([param], lr=1e-3, fused=True)
    return _best_ms(optimizer.step, repeats, device)


def _lerp_ms(values: int, repeats: int, device: torch.device) -> float:
    """One in-place lerp_ over `values` values (an EMA update), in milliseconds."""
    state = torch.zeros(values, device=device)
    update = torch.randn(values, device=device)
    with torch.no_grad():
        return _best_ms(lambda: state.lerp_(update, 0.1), repeats, device)
