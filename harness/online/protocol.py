"""The FSNet protocol (MODELS.md section 7): warm-up training, then the online loop predict -> score -> learn.

The functions here know nothing about presets: they are typed against the verbs of
harness.online.interface (every model offers begin_step / forward / end_step / set_online, every
learner loss / remember). `run_stream` is the whole online loop, the feedback delay a queue of
pending windows inside it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from data import SplitWindows
from harness.online.interface import Learner, OnlineModel
from harness.online.learners import OGDLearner


@dataclass
class WarmupReport:
    """What warm-up did: epochs run, validation MSE per epoch, the restored (best) epoch."""

    epochs_run: int
    val_mse: list[float]
    best_epoch: int


def train_step(model: OnlineModel, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               learner: Learner, out: torch.Tensor | None = None) -> torch.Tensor:
    """One optimiser step on (x, y); `out` = model(x) if already computed this step. Returns the output."""
    if out is None:
        out = model(x)
    optimizer.zero_grad(set_to_none=True)
    learner.loss(model, x, y, out).backward()
    optimizer.step()
    model.end_step()
    return out


@torch.no_grad()
def validate(model: OnlineModel, split: SplitWindows, batch_size: int) -> float:
    """Mean over batches (in order, last partial kept) of the batch MSE, in eval mode, as the reference."""
    model.eval()
    losses = []
    for start in range(0, len(split), batch_size):
        model.begin_step()
        out = model(split.x[start:start + batch_size])
        losses.append(float(F.mse_loss(out, split.y[start:start + batch_size])))
    return sum(losses) / len(losses)


def warm_up(model: OnlineModel, optimizer: torch.optim.Optimizer, train: SplitWindows, val: SplitWindows,
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


def set_online_learning_rate(optimizer: Any, config: Mapping[str, Any]) -> None:
    """The online phase's learning rate: when config["online_lr"] is not None, set "lr" of every
    entry of optimizer.param_groups to it; None (or absent, as for persistence): leave the rate
    warm-up's schedule left (the reference: lr * 0.5**(E-1) when all E >= 1 epochs ran; an
    early stop skips the halving after its last epoch, and 0 epochs leave lr).

    Call it once, after `warm_up` and before `run_stream`. `optimizer` is a torch optimiser or
    anything whose param_groups are live dicts (fsnet_models.group_optim.GroupAdamW).
    """
    online_lr = config.get("online_lr")
    if online_lr is None:
        return
    for group in optimizer.param_groups:
        group["lr"] = float(online_lr)


@dataclass
class StepRecords:
    """Per-step records of an online stream, preallocated for n_steps.

    preds [n_steps, P] the forecasts; sq_err / abs_err [n_steps] float64, the mean squared and
    absolute error of each step's forecast over its P values (scaled data).
    """

    preds: torch.Tensor
    sq_err: torch.Tensor
    abs_err: torch.Tensor

    @classmethod
    def zeros(cls, n_steps: int, width: int, device: torch.device) -> StepRecords:
        """Zeroed records for n_steps forecasts of `width` values."""
        return cls(torch.zeros(n_steps, width, device=device),
                   torch.zeros(n_steps, dtype=torch.float64, device=device),
                   torch.zeros(n_steps, dtype=torch.float64, device=device))


def pending_windows(start: int, delay: int) -> deque[int]:
    """The windows predicted before step `start` whose truth has not yet been learnt from (delay >= 1)."""
    return deque(range(max(0, start - delay), start))


def run_stream(model: OnlineModel, optimizer: torch.optim.Optimizer | None, learner: Learner | None,
               stream: SplitWindows, start: int, stop: int, delay: int, records: StepRecords) -> None:
    """Steps [start, stop) of the online protocol: predict -> score -> learn, feedback `delay` steps late.

    At step t the model predicts window t (stream.x[t], eval mode) and the forecast is scored against
    window t's truth into `records`. Window t then joins the queue of pending windows; the window whose
    truth has arrived, t - delay, leaves it and the model learns from it (one optimiser step, then
    the gradient-EMA/trigger update). With delay 0 the prediction's own forward is the one learnt
    from, as in the reference; with delay >= pred_len the window learnt from lies entirely inside the
    current input window (the honest protocol). `learner` None: the model never learns.
    """
    pending = pending_windows(start, delay)
    for t in range(start, stop):
        model.begin_step()
        x, y = stream.x[t:t + 1], stream.y[t:t + 1]  # window t: [1, seq_len, C], truth [1, P]
        if learner is not None and delay == 0:  # the forward that predicts is the one learnt from
            out = model(x)
            pred = out.detach()[0]
        else:
            with torch.no_grad():
                pred = model(x)[0]
        err = pred.double() - stream.y[t].double()
        records.preds[t] = pred
        records.sq_err[t] = err.square().mean()
        records.abs_err[t] = err.abs().mean()
        if learner is None:
            continue
        assert optimizer is not None
        if delay == 0:
            train_step(model, optimizer, x, y, learner, out)
            learner.remember(x, y, out)
            continue
        pending.append(t)
        if pending[0] <= t - delay:
            learn = pending.popleft()
            x_l, y_l = stream.x[learn:learn + 1], stream.y[learn:learn + 1]
            out = train_step(model, optimizer, x_l, y_l, learner)
            learner.remember(x_l, y_l, out)
