"""The FSNet protocol (MODELS.md section 7): warm-up training, then predict-score-learn online.

The functions here know nothing about presets: every model offers begin_step / forward /
end_step / set_online, and every learner offers loss / remember.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from data import SplitWindows
from harness.learners import OGDLearner


@dataclass
class WarmupReport:
    """What warm-up did: epochs run, validation MSE per epoch, the restored (best) epoch."""

    epochs_run: int
    val_mse: list[float]
    best_epoch: int


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               learner: OGDLearner, out: torch.Tensor | None = None) -> torch.Tensor:
    """One optimiser step on (x, y); `out` = model(x) if already computed this step. Returns the output."""
    if out is None:
        out = model(x)
    optimizer.zero_grad(set_to_none=True)
    learner.loss(model, x, y, out).backward()
    optimizer.step()
    model.end_step()
    return out


@torch.no_grad()
def validate(model: nn.Module, split: SplitWindows, batch_size: int) -> float:
    """Mean over batches (in order, last partial kept) of the batch MSE, in eval mode, as the reference."""
    model.eval()
    losses = []
    for start in range(0, len(split), batch_size):
        model.begin_step()
        out = model(split.x[start:start + batch_size])
        losses.append(float(F.mse_loss(out, split.y[start:start + batch_size])))
    return sum(losses) / len(losses)


def warm_up(model: nn.Module, optimizer: torch.optim.Optimizer, train: SplitWindows, val: SplitWindows,
            epochs: int, batch_size: int, patience: int, lr: float, generator: torch.Generator,
            progress: Callable[[str], None] | None = None) -> WarmupReport:
    """Mini-batch training with the reference's schedule and early stopping.

    Shuffled batches of `batch_size` (last partial dropped). After epoch k (1-based) the
    learning rate becomes lr * 0.5**(k-1). Early stopping on validation MSE with `patience`;
    at the end the best epoch's parameters and memory are restored, while gradient EMAs, the
    query EMA and the optimiser's moments carry on from the last epoch (as in the reference).
    """
    learner = OGDLearner()
    model.set_online(False)
    best, best_epoch, bad, history = math.inf, 0, 0, []
    snapshot: dict[str, torch.Tensor] = {}
    tracked = dict(model.named_parameters()) | model.memory_buffers()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        for i in range(len(train) // batch_size):
            idx = order[i * batch_size:(i + 1) * batch_size]
            model.begin_step()
            train_step(model, optimizer, train.x[idx], train.y[idx], learner)
        val_mse = validate(model, val, batch_size)
        history.append(val_mse)
        if progress:
            progress(f"warm-up epoch {epoch + 1}/{epochs}: validation MSE {val_mse:.6f}")
        if val_mse <= best:
            best, best_epoch, bad = val_mse, epoch + 1, 0
            snapshot = {n: t.detach().clone() for n, t in tracked.items()}
        else:
            bad += 1
            if bad >= patience:
                break
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5**epoch
    with torch.no_grad():
        for name, value in snapshot.items():
            tracked[name].copy_(value)
    return WarmupReport(len(history), history, best_epoch)


def online_step(model: nn.Module, optimizer: torch.optim.Optimizer, learner: OGDLearner | None,
                stream: SplitWindows, t: int, delay: int) -> torch.Tensor:
    """Step t of the stream: predict window t, then learn from window t - delay (if any).

    Returns the forecast [P] for window t, made before any learning on this step. With delay
    0 the prediction's forward is the one learnt from (as in the reference); with delay >= 1
    the model learns from the window predicted `delay` steps earlier, whose truth (for
    delay >= pred_len) lies entirely inside the current input window.
    """
    model.begin_step()
    x = stream.x[t:t + 1]
    if learner is None:
        with torch.no_grad():
            return model(x)[0]
    if delay == 0:
        out = model(x)
        train_step(model, optimizer, x, stream.y[t:t + 1], learner, out)
        learner.remember(x, stream.y[t:t + 1], out)
        return out.detach()[0]
    with torch.no_grad():
        pred = model(x)[0]
    learn = t - delay
    if learn >= 0:
        x_l, y_l = stream.x[learn:learn + 1], stream.y[learn:learn + 1]
        out = train_step(model, optimizer, x_l, y_l, learner)
        learner.remember(x_l, y_l, out)
    return pred
