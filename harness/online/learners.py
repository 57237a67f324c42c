"""How a model learns from one online sample: plain OGD, experience replay (ER) and DER++.

A learner turns (model, x, y, out) into the step's loss and remembers what it needs; the
online loop is the same for all of them. Replay buffers use their own seeded generator so
that a checkpointed trial resumes bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class OGDLearner:
    """Online gradient descent: the loss is the MSE on the new sample."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """MSE of out [1, P] against y [1, P]."""
        return F.mse_loss(out, y)

    def remember(self, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> None:
        """Nothing to remember."""

    def state_dict(self) -> dict[str, Any]:
        """No state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """No state."""


class ReplayLearner(OGDLearner):
    """ER (and DER++ with `dark=True`): reservoir buffer, replay a random batch every step.

    loss = MSE(out, y) + weight * MSE(model(x_b), y_b) [+ weight * MSE(stored outputs_b, model(x_b))]
    with a batch b of up to `batch` buffered samples drawn without replacement.
    """

    def __init__(self, size: int, batch: int, weight: float, dark: bool, seed: int) -> None:
        self.size, self.batch, self.weight, self.dark = size, batch, weight, dark
        self.rng = np.random.default_rng(seed)
        self.seen = 0
        self.examples: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """MSE on the new sample plus the weighted replay terms."""
        loss = F.mse_loss(out, y)
        if self.seen == 0 or self.examples is None or self.labels is None:
            return loss
        filled = min(self.seen, self.size)
        choice = torch.from_numpy(self.rng.choice(filled, size=min(self.batch, filled), replace=False))
        replay_out = model(self.examples[choice])
        loss = loss + self.weight * F.mse_loss(replay_out, self.labels[choice])
        if self.dark and self.logits is not None:
            loss = loss + self.weight * F.mse_loss(self.logits[choice], replay_out)
        return loss

    def remember(self, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> None:
        """Reservoir-sample the new sample (and its outputs) into the buffer."""
        if self.examples is None:
            self.examples = x.new_zeros((self.size, *x.shape[1:]))
            self.labels = y.new_zeros((self.size, *y.shape[1:]))
            self.logits = out.new_zeros((self.size, *out.shape[1:]))
        assert self.labels is not None and self.logits is not None
        for i in range(x.shape[0]):
            index = self.seen if self.seen < self.size else int(self.rng.integers(0, self.seen + 1))
            self.seen += 1
            if index < self.size:
                self.examples[index] = x[i]
                self.labels[index] = y[i]
                self.logits[index] = out[i].detach()

    def state_dict(self) -> dict[str, Any]:
        """Buffer contents, count seen and the generator state."""
        return {"seen": self.seen, "rng": self.rng.bit_generator.state, "examples": self.examples,
                "labels": self.labels, "logits": self.logits}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict() returned (buffers are copied, never shared with `state`)."""
        self.seen = state["seen"]
        self.rng.bit_generator.state = state["rng"]
        self.examples, self.labels, self.logits = (
            None if state[k] is None else state[k].clone() for k in ("examples", "labels", "logits"))


def make_learner(kind: str, config: dict[str, Any]) -> OGDLearner | None:
    """The learner of a preset's `learner` kind ("none" -> None: the model never learns)."""
    if kind == "none":
        return None
    if kind == "ogd":
        return OGDLearner()
    return ReplayLearner(config["replay_size"], config["replay_batch"], config["replay_weight"],
                         dark=kind == "derpp", seed=config["seed"])
