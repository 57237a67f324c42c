"""The contracts between the online protocol and what it drives: the model's verbs and the learner.

Every preset's model offers the same verbs, so the protocol has no `if preset == ...` in it:

  begin_step()   adaptive layers compute this step's calibrations (and read/write memory) once
  forward(x)     any number of times in a step: prediction, learning, replay
  end_step()     after the optimiser step: gradient EMAs and the drift trigger
  set_online(b)  warm-up (memory off) or the online phase (memory and trigger on)

Baselines implement the verbs as no-ops. A learner turns one step's (model, x, y, out) into the loss
and remembers what it needs (a replay buffer); `OGDLearner`, `ReplayLearner` (ER, DER++) implement it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class OnlineModel(Protocol):
    """A forecasting model the protocol can warm up and step (fsnet_models.model.ForecastNet)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, seq_len, n_in + 7] -> forecast [B, pred_len * n_out]."""
        ...

    def begin_step(self) -> None:
        """Compute this step's calibrations once (no-op for plain models)."""
        ...

    def end_step(self) -> None:
        """After the optimiser step: gradient EMAs and trigger (no-op for plain models)."""
        ...

    def set_online(self, online: bool) -> None:
        """Switch between warm-up (memory off) and the online phase (memory on)."""
        ...

    def train(self, mode: bool = True) -> nn.Module:
        """torch's training mode (dropout on)."""
        ...

    def eval(self) -> nn.Module:
        """torch's eval mode (dropout off)."""
        ...

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The trained parameters, by name."""
        ...

    def memory_buffers(self) -> dict[str, torch.Tensor]:
        """Name -> associative memory tensor (restored with the best warm-up epoch)."""
        ...

    def diagnostics(self) -> dict[str, Any]:
        """Memory diagnostics (empty for models without memory)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Parameters and buffers (torch's state_dict)."""
        ...


@runtime_checkable
class Learner(Protocol):
    """How a model learns from one sample: the step's loss, and what to remember of the sample."""

    def loss(self, model: OnlineModel, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The loss of out = model(x) [B, P] against y [B, P] (plus any replay terms), a scalar."""
        ...

    def remember(self, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> None:
        """Keep what later steps need of this sample (replay buffers); OGD keeps nothing."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the learner exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict() returned."""
        ...
