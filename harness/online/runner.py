"""One trial as a resumable object: config -> warm-up -> online stream -> metrics.

`TrialRunner` owns everything a trial changes (model, optimiser, learner, predictions,
per-step errors, RNG state, timings) and can be checkpointed after warm-up and after any
online step; a runner restored from a checkpoint ends with the same metrics, bit for bit, as
one run straight through (same device and thread count).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from data import PreparedData, SplitWindows
from fsnet_models import build_from_config
from fsnet_models.factory import io_sizes
from fsnet_models.presets import preset as get_preset
from harness.online.interface import Learner, OnlineModel
from harness.online.learners import make_learner
from harness.online.metrics import cumulative_curve, stream_metrics
from harness.online.protocol import StepRecords, run_stream, set_online_learning_rate, warm_up
from harness.online.runtime import fast_kernels, peak_rss_mb, rss_mb, wait_for_device
from harness.online.trial_data import online_split

CHECKPOINT_VERSION = 2  # 2: last-position adaptive layers keep only the centre tap


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: missing, unreadable, or written for another trial or version."""


def on_device(split: SplitWindows, device: torch.device) -> SplitWindows:
    """The split's model inputs and scaled targets on `device` (raw values stay on the CPU)."""
    return dataclasses.replace(split, x=split.x.to(device), y=split.y.to(device))


class TrialRunner:
    """A trial of `config` (a resolved knob dict) on `data`, stepped by the caller or run to the end."""

    def __init__(self, config: dict[str, Any], data: PreparedData, device: str = "cpu",
                 max_steps: int | None = None, fast: bool = True) -> None:
        self.config = config
        self.data = data
        self.device = torch.device(device)
        self.spec = get_preset(config["preset"])
        torch.manual_seed(config["seed"])
        self.model: OnlineModel = build_from_config(config, n_columns=data.n_in, fast=fast).to(self.device)
        self.learner: Learner | None = make_learner(self.spec.learner, config)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = (torch.optim.AdamW(params, lr=config["lr"], weight_decay=config["weight_decay"],
                                            fused=True) if params else None)
        self.generator = torch.Generator().manual_seed(config["seed"])
        self.online_windows = online_split(data, config)
        self.train, self.val, self.stream = (on_device(s, self.device) for s in (data.train, data.val,
                                                                               self.online_windows))
        self.n_steps = len(self.stream) if max_steps is None else min(max_steps, len(self.stream))
        self.step = 0
        self.warmed_up = self.spec.conv == "none"
        self.warmup_report: dict[str, Any] = {}
        self._allocate_step_records()
        self.warmup_seconds = 0.0
        self.online_seconds = 0.0
        self.rss_at_10pct: float | None = None

    def _allocate_step_records(self) -> None:
        """Zeroed per-step records for n_steps: forecasts [n_steps, P], squared/absolute errors [n_steps]."""
        self.records = StepRecords.zeros(self.n_steps, self.stream.y.shape[1], self.device)

    @property
    def preds(self) -> torch.Tensor:
        """The forecasts [n_steps, P] (zeros past the current step)."""
        return self.records.preds

    @property
    def step_sq_err(self) -> torch.Tensor:
        """Per-step mean squared error [n_steps], float64."""
        return self.records.sq_err

    @property
    def step_abs_err(self) -> torch.Tensor:
        """Per-step mean absolute error [n_steps], float64."""
        return self.records.abs_err

    # ------------------------------------------------------------------ running
    def run_warmup(self, progress: Callable[[str], None] | None = None) -> None:
        """Warm-up training (no-op for models that do not learn, and when already done)."""
        if self.warmed_up:
            return
        started = time.perf_counter()
        assert self.optimizer is not None
        with fast_kernels():
            report = warm_up(self.model, self.optimizer, self.train, self.val, self.config["epochs"],
                             self.config["batch_size"], self.config["patience"], self.config["lr"],
                             self.generator, progress)
        set_online_learning_rate(self.optimizer, self.config)
        self.warmup_report = {"epochs_run": report.epochs_run, "val_mse": report.val_mse,
                              "best_epoch": report.best_epoch}
        self.warmup_seconds += time.perf_counter() - started
        self.warmed_up = True

    def run_online(self, steps: int | None = None) -> int:
        """Advance the online stream by `steps` (default: to the end); returns the new step index."""
        if not self.warmed_up:
            raise RuntimeError("run_warmup() must come before run_online()")
        self.model.eval()
        self.model.set_online(True)
        stop = self.n_steps if steps is None else min(self.n_steps, self.step + steps)
        delay = self.config["feedback_delay"]
        rss_step = max(1, self.n_steps // 10)  # resident memory is read once, after this many steps
        started = time.perf_counter()
        with fast_kernels():
            for begin, end in ((self.step, min(stop, rss_step)), (max(self.step, rss_step), stop)):
                if begin >= end:
                    continue
                run_stream(self.model, self.optimizer, self.learner, self.stream, begin, end, delay, self.records)
                if self.rss_at_10pct is None and end >= rss_step:
                    self.rss_at_10pct = rss_mb()
        self.step = stop
        wait_for_device(self.device)  # a CUDA step only queues kernels: the clock must see them done
        self.online_seconds += time.perf_counter() - started
        return self.step

    @property
    def finished(self) -> bool:
        """True when warm-up and every online step are done."""
        return self.warmed_up and self.step >= self.n_steps

    # ------------------------------------------------------------------ results
    def running_metrics(self) -> dict[str, float]:
        """Cumulative MSE and MAE over the steps run so far."""
        n = max(self.step, 1)
        return {"step": self.step, "cum_mse": float(self.step_sq_err[:n].mean()),
                "cum_mae": float(self.step_abs_err[:n].mean())}

    def persistence_mse(self) -> float:
        """MSE of the last-value forecast over the same steps (scaled data)."""
        _, _, index = io_sizes(self.config["features"], self.data.n_in)
        last = self.stream.x[:self.step, -1, index].repeat(1, self.config["pred_len"])
        return float((last.double() - self.stream.y[:self.step].double()).square().mean())

    def metrics(self) -> dict[str, float]:
        """Whole-stream metrics over the steps run (see harness.online.metrics.stream_metrics)."""
        n = self.step
        pred, true = self.preds[:n].cpu(), self.stream.y[:n].cpu()
        return stream_metrics(pred, true, self.data.to_original(pred), self.online_windows.y_raw[:n],
                              self.persistence_mse())

    def curve(self, every: int = 100) -> list[dict[str, float]]:
        """Cumulative MSE/MAE every `every` steps."""
        return cumulative_curve(self.step_sq_err[:self.step].cpu(), self.step_abs_err[:self.step].cpu(), every)

    def result(self) -> dict[str, Any]:
        """Everything a results row needs: config, metrics, diagnostics, protocol, timings, memory."""
        diagnostics = self.model.diagnostics()
        return {
            "preset": self.config["preset"],
            "knobs": {k: v for k, v in self.config.items() if k != "preset"},
            "seed": self.config["seed"],
            "dataset": self.config["dataset"],
            "protocol": {"features": self.config["features"], "seq_len": self.config["seq_len"],
                         "pred_len": self.config["pred_len"], "feedback_delay": self.config["feedback_delay"],
                         "epochs": self.config.get("epochs", 0), "stream_steps": len(self.stream)},
            **self.metrics(),
            "steps": self.step,
            "warmup": self.warmup_report,
            "warmup_seconds": self.warmup_seconds,
            "online_seconds": self.online_seconds,
            "steps_per_s": self.step / self.online_seconds if self.online_seconds > 0 else float("nan"),
            "rss_mb_at_10pct": self.rss_at_10pct,
            "rss_mb_end": rss_mb(),
            "peak_rss_mb": peak_rss_mb(),
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "diagnostics": diagnostics,
        }

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this trial exactly."""
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.config,
            "n_steps": self.n_steps,
            "step": self.step,
            "warmed_up": self.warmed_up,
            "warmup_report": self.warmup_report,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "learner": self.learner.state_dict() if self.learner is not None else None,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "preds": self.preds[:self.step].cpu(),
            "step_sq_err": self.step_sq_err[:self.step].cpu(),
            "step_abs_err": self.step_abs_err[:self.step].cpu(),
            "warmup_seconds": self.warmup_seconds,
            "online_seconds": self.online_seconds,
            "rss_at_10pct": self.rss_at_10pct,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict() of a runner built with the same config."""
        if state.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"checkpoint format version {state.get('version')} is not this code's "
                                  f"version {CHECKPOINT_VERSION}; rerun the trial from the start")
        if state.get("config") != self.config:
            raise CheckpointError("checkpoint was written for a different trial configuration")
        self.n_steps = state["n_steps"]
        self.step, self.warmed_up = state["step"], state["warmed_up"]
        self.warmup_report = state["warmup_report"]
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.learner is not None:
            self.learner.load_state_dict(state["learner"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self._allocate_step_records()
        self.preds[:self.step] = state["preds"].to(self.device)
        self.step_sq_err[:self.step] = state["step_sq_err"].to(self.device)
        self.step_abs_err[:self.step] = state["step_abs_err"].to(self.device)
        self.warmup_seconds, self.online_seconds = state["warmup_seconds"], state["online_seconds"]
        self.rss_at_10pct = state["rss_at_10pct"]

    def save(self, path: str | os.PathLike) -> None:
        """Write state_dict() to `path` atomically (write_state)."""
        write_state(self.state_dict(), path)

    def load(self, path: str | os.PathLike) -> None:
        """Restore from a file written by save(); CheckpointError when it cannot be resumed."""
        self.load_state_dict(read_state(path, self.device, "trial"))


def write_state(state: dict[str, Any], path: str | os.PathLike) -> None:
    """torch.save `state` to `path` atomically (temp file in the same folder, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_state(path: str | os.PathLike, device: torch.device, kind: str) -> dict[str, Any]:
    """The state dict written by write_state to `path` (tensors on `device`); CheckpointError, naming the
    `kind` of checkpoint ("trial", "group"), when it cannot be read or is not a dict."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"cannot read {'group ' if kind == 'group' else ''}checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a {kind} checkpoint")
    return state
