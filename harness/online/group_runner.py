"""A trial group: one configuration x G seeds run as one batched network (fsnet_models.group).

`GroupRunner` holds what G solo `TrialRunner`s of seeds s_0..s_{G-1} hold, with a leading member
axis: the members' parameters and AdamW state (one GroupNet, one GroupAdamW), gradient EMAs,
triggers, q_ema and memories, each member's own warm-up shuffling (a generator seeded with its
seed), dropout draws (GroupNet's member generators) and replay buffer (`GroupReplay`), early
stopping and best-epoch restore per member, and per-member step records. The members step in
lockstep: one forward, one backward of the summed loss (so each member's gradient is its own) and
one optimiser step serve all of them.

Member i computes the function of the solo trial of seed i, up to float rounding (the batched
products sum in another order than F.conv1d and F.linear); tests/online/test_group_runner.py
holds it to that. Members whose solo trials stop warm-up at different epochs (early stopping)
leave warm-up each with its solo trial's state, and then step with their own AdamW step counts
and learning rates (GroupAdamW's per-member mode): see `warm_up_group`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from data import PreparedData, SplitWindows
from fsnet_models.factory import io_sizes
from fsnet_models.group import GroupNet, build_group, member_mask, member_part
from fsnet_models.group_optim import GroupAdamW
from fsnet_models.presets import preset as get_preset
from harness.online.metrics import cumulative_curve, stream_metrics
from harness.online.protocol import StepRecords, set_online_learning_rate, train_step
from harness.online.runner import CheckpointError, on_device, read_state, write_state
from harness.online.runtime import fast_kernels, peak_rss_mb, rss_mb, wait_for_device
from harness.online.trial_data import online_split


class GroupReplay:
    """ER (and DER++ with `dark=True`) for G members: a reservoir buffer and a generator per member.

    Member i draws exactly what the solo ReplayLearner of seed i draws (numpy's default_rng(seed),
    the same calls in the same order), so its replay batches are the solo trial's.
    """

    def __init__(self, size: int, batch: int, weight: float, dark: bool, seeds: Sequence[int]) -> None:
        self.size, self.batch, self.weight, self.dark = size, batch, weight, dark
        self.rngs = [np.random.default_rng(seed) for seed in seeds]
        self.seen = 0
        self.examples: torch.Tensor | None = None  # [G, size, seq_len, C]
        self.labels: torch.Tensor | None = None  # [G, size, P]
        self.logits: torch.Tensor | None = None  # [G, size, P]

    def loss(self, model: GroupNet, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Sum over members of MSE(out, y) plus the weighted replay terms; x [G, 1, T, C], y/out [G, 1, P]."""
        loss = member_mse(out, y)
        if self.seen == 0 or self.examples is None or self.labels is None:
            return loss.sum()
        filled = min(self.seen, self.size)
        picks = [rng.choice(filled, size=min(self.batch, filled), replace=False) for rng in self.rngs]
        choice = torch.from_numpy(np.stack(picks)).to(self.examples.device)  # [G, b]
        rows = torch.arange(len(self.rngs), device=choice.device)[:, None]  # [G, 1]
        replay_out = model(self.examples[rows, choice])  # [G, b, P]
        loss = loss + self.weight * member_mse(replay_out, self.labels[rows, choice])
        if self.dark and self.logits is not None:
            loss = loss + self.weight * member_mse(self.logits[rows, choice], replay_out)
        return loss.sum()

    def remember(self, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> None:
        """Reservoir-sample each member's new sample (x [G, 1, T, C], y/out [G, 1, P]) into its buffer."""
        members = x.shape[0]
        if self.examples is None:
            self.examples = x.new_zeros((members, self.size, *x.shape[2:]))
            self.labels = y.new_zeros((members, self.size, *y.shape[2:]))
            self.logits = out.new_zeros((members, self.size, *out.shape[2:]))
        assert self.labels is not None and self.logits is not None
        for i in range(x.shape[1]):
            indices = [self.seen if self.seen < self.size else int(rng.integers(0, self.seen + 1)) for rng in self.rngs]
            self.seen += 1
            for member, index in enumerate(indices):
                if index < self.size:
                    self.examples[member, index] = x[member, i]
                    self.labels[member, index] = y[member, i]
                    self.logits[member, index] = out[member, i].detach()

    def state_dict(self) -> dict[str, Any]:
        """Buffers, count seen and every member's generator state."""
        return {"seen": self.seen, "rngs": [r.bit_generator.state for r in self.rngs], "examples": self.examples,
                "labels": self.labels, "logits": self.logits}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict() returned (buffers copied)."""
        self.seen = state["seen"]
        for rng, saved in zip(self.rngs, state["rngs"], strict=True):
            rng.bit_generator.state = saved
        self.examples, self.labels, self.logits = (
            None if state[k] is None else state[k].clone() for k in ("examples", "labels", "logits"))


class GroupOGD:
    """Online gradient descent for G members: the loss is the sum of the members' MSEs."""

    def loss(self, model: GroupNet, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Sum over members of MSE(out [G, B, P], y [G, B, P])."""
        return member_mse(out, y).sum()

    def remember(self, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> None:
        """Nothing to remember."""

    def state_dict(self) -> dict[str, Any]:
        """No state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """No state."""


def member_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's mean squared error: out, y [G, B, P] -> [G]."""
    return (out - y).square().mean(dim=(1, 2))


def make_group_learner(kind: str, config: dict[str, Any], seeds: Sequence[int]) -> GroupOGD | GroupReplay:
    """The group learner of a preset's `learner` kind (presets that never learn cannot be grouped)."""
    if kind == "ogd":
        return GroupOGD()
    if kind in ("er", "derpp"):
        return GroupReplay(config["replay_size"], config["replay_batch"], config["replay_weight"],
                           dark=kind == "derpp", seeds=seeds)
    raise ValueError(f"learner kind {kind!r} cannot be grouped")


@torch.no_grad()
def validate_group(model: GroupNet, split: SplitWindows, batch_size: int) -> torch.Tensor:
    """Every member's validation MSE [G] float64: the mean over batches (in order, last partial kept)
    of the batch MSE, in eval mode, as the solo `validate` computes it."""
    model.eval()
    losses = []
    for start in range(0, len(split), batch_size):
        model.begin_step()
        x = split.x[start:start + batch_size]  # [B, T, C], the same windows for every member
        out = model(x.expand(model.members, *x.shape))  # [G, B, P]
        losses.append(member_mse(out, split.y[start:start + batch_size].expand_as(out)).double())
    return torch.stack(losses).mean(0)


def _stop_state(model: GroupNet, optimizer: GroupAdamW, generators: Sequence[torch.Generator],
                member: int) -> dict[str, Any]:
    """What member `member` holds now (copies): its part of the model's state_dict, its optimiser
    state (moments, step counts, rates) and its shuffling and dropout generators' states."""
    return {"model": model.member_state(member), "optimizer": optimizer.member_snapshot(member),
            "shuffle": generators[member].get_state(),
            "dropout": None if model.generators is None else model.generators[member].get_state()}


@torch.no_grad()
def _restore_stop_state(model: GroupNet, optimizer: GroupAdamW, generators: Sequence[torch.Generator],
                        member: int, saved: dict[str, Any]) -> None:
    """Give member `member` back what `_stop_state` saved; the other members keep theirs (the
    optimiser goes to its per-member mode: GroupAdamW.load_member)."""
    for name, value in model.state_dict().items():  # tensors sharing the parameters' and buffers' storage
        if name.rsplit(".", 1)[-1] == "q_started":  # one flag for all members (member_part: shared)
            continue
        member_part(name, value, member, model.members).copy_(saved["model"][name])
    optimizer.load_member(member, saved["optimizer"])
    generators[member].set_state(saved["shuffle"])
    if saved["dropout"] is not None and model.generators is not None:
        model.generators[member].set_state(saved["dropout"])


def warm_up_group(model: GroupNet, optimizer: GroupAdamW, train: SplitWindows, val: SplitWindows, epochs: int,
                  batch_size: int, patience: int, lr: float, generators: Sequence[torch.Generator],
                  progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The solo warm-up (harness.online.protocol.warm_up) of every member at once.

    Member i shuffles with generators[i] (its solo trial's generator), so its batches are the solo
    trial's. Early stopping and best-epoch restore are per member. The members run whole epochs in
    lockstep. A member whose solo trial stops (patience spent) while others train on leaves
    warm-up with what its solo trial has at its stop: at that point its part of every model state
    (parameters and buffers), its AdamW moments and step counts, its learning rate (the solo loop
    stops before halving it) and its generators' states are saved; it trains on with the others,
    unseen (its validation MSEs no longer count), and at the end the saved state is written back,
    then its best epoch's parameters and memory are restored as for every member (the solo
    warm_up's restore: gradient EMAs, query EMA and optimiser state stay those of its last epoch).
    Its optimiser state then differs from the others' in step count and rate: the GroupAdamW goes
    to its per-member mode for the online phase. With the default epochs (2) and patience (3) no
    member stops early, and the fused AdamW runs on.
    """
    learner = GroupOGD()
    members = model.members
    model.set_online(False)
    best = torch.full((members,), math.inf, dtype=torch.float64)
    best_epoch = [0] * members
    bad = [0] * members
    history: list[list[float]] = [[] for _ in range(members)]
    tracked = dict(model.named_parameters()) | model.memory_buffers()
    snapshot = {n: t.detach().clone() for n, t in tracked.items()}
    ever_improved = torch.zeros(members, dtype=torch.bool)  # a solo trial restores only an epoch it kept
    active = torch.ones(members, dtype=torch.bool)  # members whose solo warm-up goes on
    stops: dict[int, dict[str, Any]] = {}  # member -> its state at its stop, for members stopping before others
    for epoch in range(epochs):
        model.train()
        orders = torch.stack([torch.randperm(len(train), generator=g) for g in generators])  # [G, n]
        for i in range(len(train) // batch_size):
            idx = orders[:, i * batch_size:(i + 1) * batch_size]  # [G, B]: member m's batch in row m
            model.begin_step()
            train_step(model, optimizer, train.x[idx], train.y[idx], learner)
        val_mse = validate_group(model, val, batch_size).cpu()  # [G]
        improved = (val_mse <= best) & active
        ever_improved |= improved
        for m in range(members):
            if not active[m]:
                continue
            history[m].append(float(val_mse[m]))
            if improved[m]:
                best[m], best_epoch[m], bad[m] = val_mse[m], epoch + 1, 0
            else:
                bad[m] += 1
        if progress:
            shown = ", ".join(f"{v:.6f}" if active[m] else "stopped" for m, v in enumerate(val_mse.tolist()))
            progress(f"warm-up epoch {epoch + 1}/{epochs}: validation MSE per member {shown}")
        with torch.no_grad():
            for name, value in tracked.items():
                mask = member_mask(name, value, improved.to(value.device))
                snapshot[name] = torch.where(mask, value.detach(), snapshot[name])
        stopping = [m for m in range(members) if active[m] and bad[m] >= patience]
        active[stopping] = False
        if not bool(active.any()):
            break
        for m in stopping:  # the others train on: keep what member m's solo trial leaves warm-up with
            stops[m] = _stop_state(model, optimizer, generators, m)
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5**epoch
    for m, saved in stops.items():
        _restore_stop_state(model, optimizer, generators, m, saved)
    with torch.no_grad():
        for name, value in snapshot.items():
            mask = member_mask(name, value, ever_improved.to(value.device))
            tracked[name].copy_(torch.where(mask, value, tracked[name]))
    return [{"epochs_run": len(history[m]), "val_mse": history[m], "best_epoch": best_epoch[m]}
            for m in range(members)]


def run_group_stream(model: GroupNet, optimizer: GroupAdamW, learner: GroupOGD | GroupReplay,
                     stream: SplitWindows, start: int, stop: int, delay: int, records: StepRecords) -> None:
    """Steps [start, stop) of the online protocol for every member (harness.online.protocol.run_stream
    with a member axis): predict window t, score it into records (preds [G, n, P], errors [G, n]),
    learn from window t - delay (the same window for every member: they see the same stream)."""
    members = model.members
    for t in range(start, stop):
        model.begin_step()
        x = stream.x[t:t + 1].expand(members, 1, *stream.x.shape[1:])  # [G, 1, T, C]
        y = stream.y[t:t + 1].expand(members, 1, -1)  # [G, 1, P]
        if delay == 0:
            out = model(x)
            pred = out.detach()[:, 0]  # [G, P]
        else:
            with torch.no_grad():
                pred = model(x)[:, 0]
        err = pred.double() - stream.y[t].double()  # [G, P]
        records.preds[:, t] = pred
        records.sq_err[:, t] = err.square().mean(1)
        records.abs_err[:, t] = err.abs().mean(1)
        if delay == 0:
            train_step(model, optimizer, x, y, learner, out)
            learner.remember(x, y, out)
            continue
        learn = t - delay
        if learn >= 0:
            x_l = stream.x[learn:learn + 1].expand(members, 1, *stream.x.shape[1:])
            y_l = stream.y[learn:learn + 1].expand(members, 1, -1)
            out = train_step(model, optimizer, x_l, y_l, learner)
            learner.remember(x_l, y_l, out)


def group_records(members: int, n_steps: int, width: int, device: torch.device) -> StepRecords:
    """Zeroed records with a member axis: preds [G, n_steps, width], errors [G, n_steps] float64."""
    return StepRecords(torch.zeros(members, n_steps, width, device=device),
                       torch.zeros(members, n_steps, dtype=torch.float64, device=device),
                       torch.zeros(members, n_steps, dtype=torch.float64, device=device))


GROUP_CHECKPOINT_VERSION = 1


class GroupRunner:
    """A group of `config` (a resolved knob dict; its seed is ignored) for `seeds`, on `data`.

    The same interface as TrialRunner: run_warmup(), run_online(steps), finished, running_metrics(),
    and per-member metrics(), curves() and results(); a member whose stream diverges (a non-finite
    forecast) is reported as failed with the step it diverged at, while the others carry on.
    """

    def __init__(self, config: dict[str, Any], data: PreparedData, seeds: Sequence[int], device: str = "cpu",
                 max_steps: int | None = None) -> None:
        if not seeds:
            raise ValueError("a group needs at least one seed")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"the seeds of a group must differ, got {list(seeds)}")
        self.spec = get_preset(config["preset"])
        if self.spec.conv == "none" or self.spec.learner == "none":
            raise ValueError(f"preset {config['preset']!r} does not learn; run it as a solo trial")
        self.seeds = [int(s) for s in seeds]
        self.configs = [{**config, "seed": s} for s in self.seeds]
        self.config = self.configs[0]
        self.data = data
        self.device = torch.device(device)
        self.model = build_group(config, self.seeds, n_columns=data.n_in).to(self.device)
        self.optimizer = GroupAdamW(self.model, lr=config["lr"], weight_decay=config["weight_decay"], fused=True)
        self.learner = make_group_learner(self.spec.learner, config, self.seeds)
        self.generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        self.online_windows = online_split(data, config)
        self.train, self.val, self.stream = (on_device(s, self.device) for s in (data.train, data.val,
                                                                               self.online_windows))
        self.n_steps = len(self.stream) if max_steps is None else min(max_steps, len(self.stream))
        self.step = 0
        self.warmed_up = False
        self.warmup_reports: list[dict[str, Any]] = [{} for _ in self.seeds]
        self.records = group_records(len(self.seeds), self.n_steps, self.stream.y.shape[1], self.device)
        self.warmup_seconds = 0.0
        self.online_seconds = 0.0

    @property
    def members(self) -> int:
        """G, the number of members."""
        return len(self.seeds)

    def run_warmup(self, progress: Callable[[str], None] | None = None) -> None:
        """Every member's warm-up training (a no-op when already done)."""
        if self.warmed_up:
            return
        started = time.perf_counter()
        with fast_kernels():
            self.warmup_reports = warm_up_group(self.model, self.optimizer, self.train, self.val,
                                                self.config["epochs"], self.config["batch_size"],
                                                self.config["patience"], self.config["lr"], self.generators, progress)
        set_online_learning_rate(self.optimizer, self.config)
        self.warmup_seconds += time.perf_counter() - started
        self.warmed_up = True

    def run_online(self, steps: int | None = None) -> int:
        """Advance every member by `steps` online steps (default: to the end); returns the new step index."""
        if not self.warmed_up:
            raise RuntimeError("run_warmup() must come before run_online()")
        self.model.eval()
        self.model.set_online(True)
        stop = self.n_steps if steps is None else min(self.n_steps, self.step + steps)
        started = time.perf_counter()
        with fast_kernels():
            run_group_stream(self.model, self.optimizer, self.learner, self.stream, self.step, stop,
                             self.config["feedback_delay"], self.records)
        self.step = stop
        wait_for_device(self.device)  # a CUDA step only queues kernels: the clock must see them done
        self.online_seconds += time.perf_counter() - started
        return self.step

    @property
    def finished(self) -> bool:
        """True when warm-up and every online step are done."""
        return self.warmed_up and self.step >= self.n_steps

    def running_metrics(self) -> list[dict[str, float]]:
        """Each member's cumulative MSE and MAE over the steps run so far."""
        n = max(self.step, 1)
        return [{"step": self.step, "cum_mse": float(self.records.sq_err[m, :n].mean()),
                 "cum_mae": float(self.records.abs_err[m, :n].mean())} for m in range(self.members)]

    def persistence_mse(self) -> float:
        """MSE of the last-value forecast over the steps run (scaled data; the same for every member)."""
        _, _, index = io_sizes(self.config["features"], self.data.n_in)
        last = self.stream.x[:self.step, -1, index].repeat(1, self.config["pred_len"])
        return float((last.double() - self.stream.y[:self.step].double()).square().mean())

    def diverged_at(self, member: int) -> int | None:
        """The first step at which member `member`'s forecast was not finite, or None."""
        bad = ~torch.isfinite(self.records.sq_err[member, :self.step])
        return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None

    def metrics(self, member: int) -> dict[str, float]:
        """Member `member`'s whole-stream metrics over the steps run (harness.online.metrics.stream_metrics)."""
        n = self.step
        pred, true = self.records.preds[member, :n].cpu(), self.stream.y[:n].cpu()
        return stream_metrics(pred, true, self.data.to_original(pred), self.online_windows.y_raw[:n],
                              self.persistence_mse())

    def curve(self, member: int, every: int = 100) -> list[dict[str, float]]:
        """Member `member`'s cumulative MSE/MAE every `every` steps."""
        return cumulative_curve(self.records.sq_err[member, :self.step].cpu(),
                                self.records.abs_err[member, :self.step].cpu(), every)

    def results(self) -> list[dict[str, Any]]:
        """One TrialRunner.result()-shaped dict per member, plus group_size, member_index and error."""
        diagnostics = self.model.diagnostics()
        common = {"steps": self.step, "warmup_seconds": self.warmup_seconds, "online_seconds": self.online_seconds,
                  "steps_per_s": self.step / self.online_seconds if self.online_seconds > 0 else float("nan"),
                  "rss_mb_end": rss_mb(), "peak_rss_mb": peak_rss_mb(), "device": str(self.device),
                  "threads": torch.get_num_threads(), "group_size": self.members}
        out = []
        for m, config in enumerate(self.configs):
            diverged = self.diverged_at(m)
            out.append({
                "preset": config["preset"], "knobs": {k: v for k, v in config.items() if k != "preset"},
                "seed": config["seed"], "dataset": config["dataset"],
                "protocol": {"features": config["features"], "seq_len": config["seq_len"],
                             "pred_len": config["pred_len"], "feedback_delay": config["feedback_delay"],
                             "epochs": config.get("epochs", 0), "stream_steps": len(self.stream)},
                **self.metrics(m), **common, "warmup": self.warmup_reports[m], "member_index": m,
                "diagnostics": diagnostics[m],
                "error": None if diverged is None else f"diverged: non-finite forecast at online step {diverged}",
            })
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this group exactly: the GroupNet, GroupAdamW and learner
        states, every member's shuffling and dropout generator, torch's global RNG, and the records."""
        generators = self.model.generators or []
        return {
            "version": GROUP_CHECKPOINT_VERSION, "config": self.config, "seeds": self.seeds,
            "n_steps": self.n_steps, "step": self.step, "warmed_up": self.warmed_up,
            "warmup_reports": self.warmup_reports, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "learner": self.learner.state_dict(),
            "shuffle_generators": [g.get_state() for g in self.generators],
            "dropout_generators": [g.get_state() for g in generators], "torch_rng": torch.get_rng_state(),
            "preds": self.records.preds[:, :self.step].cpu(), "sq_err": self.records.sq_err[:, :self.step].cpu(),
            "abs_err": self.records.abs_err[:, :self.step].cpu(),
            "warmup_seconds": self.warmup_seconds, "online_seconds": self.online_seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict() of a group built with the same config and seeds (CheckpointError otherwise)."""
        if state.get("version") != GROUP_CHECKPOINT_VERSION:
            raise CheckpointError(f"group checkpoint format version {state.get('version')} is not this code's "
                                  f"version {GROUP_CHECKPOINT_VERSION}; rerun the group from the start")
        if state.get("config") != self.config or state.get("seeds") != self.seeds:
            raise CheckpointError("checkpoint was written for a different group (configuration or seeds)")
        self.n_steps, self.step, self.warmed_up = state["n_steps"], state["step"], state["warmed_up"]
        self.warmup_reports = state["warmup_reports"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.learner.load_state_dict(state["learner"])
        for generator, saved in zip(self.generators, state["shuffle_generators"], strict=True):
            generator.set_state(saved)
        for generator, saved in zip(self.model.generators or [], state["dropout_generators"], strict=True):
            generator.set_state(saved)
        torch.set_rng_state(state["torch_rng"])
        self.records = group_records(self.members, self.n_steps, self.stream.y.shape[1], self.device)
        self.records.preds[:, :self.step] = state["preds"].to(self.device)
        self.records.sq_err[:, :self.step] = state["sq_err"].to(self.device)
        self.records.abs_err[:, :self.step] = state["abs_err"].to(self.device)
        self.warmup_seconds, self.online_seconds = state["warmup_seconds"], state["online_seconds"]

    def save(self, path: str | os.PathLike) -> None:
        """Write state_dict() to `path` atomically (runner.write_state)."""
        write_state(self.state_dict(), path)

    def load(self, path: str | os.PathLike) -> None:
        """Restore from a file written by save(); CheckpointError when it cannot be resumed."""
        self.load_state_dict(read_state(path, self.device, "group"))
