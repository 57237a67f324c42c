"""One trial run to its end in this process: the library behind `python -m harness.trial` and the W&B agent.

`run_solo` prepares the data, builds the runner (resuming from a checkpoint when asked), runs
warm-up and the online stream in chunks (checkpointing after each when asked, with a progress bar
on a terminal) and returns the result dict that the CLI prints as JSON.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fsnet_models.knobs import KnobError
from harness.online.runner import TrialRunner
from harness.online.runtime import pick_device, set_threads
from harness.online.trial_data import load_data

PROGRESS_CHUNK = 200  # online steps between progress updates when no checkpoint cadence is set


@dataclass(frozen=True)
class TrialOptions:
    """How to run a trial (not what it computes): stream length, data, device, threads, checkpoints."""

    max_steps: int | None = None
    data: str | None = None
    device: str = "auto"
    threads: int | None = None
    curve_every: int = 100
    checkpoint: str | None = None
    checkpoint_every: int = 1000
    resume: str | None = None
    quiet: bool = False

    @classmethod
    def from_namespace(cls, args: Any) -> TrialOptions:
        """The options of parsed `harness.trial` flags (`--json` makes the run quiet)."""
        return cls(max_steps=args.max_steps, data=args.data, device=args.device, threads=args.threads,
                   curve_every=args.curve_every, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                   resume=args.resume, quiet=bool(args.json))


def run_solo(config: dict[str, Any], options: TrialOptions,
             on_chunk: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Run the trial of resolved knob `config` and return its result dict (TrialRunner.result + curve).

    `on_chunk` gets the running metrics (step, cum_mse, cum_mae) after every chunk of online steps.
    Raises KnobError, DataError, DeviceError or CheckpointError on bad input, before any step runs.
    """
    if options.max_steps is not None and options.max_steps < 1:
        raise KnobError(f"--max-steps must be >= 1, got {options.max_steps}")
    set_threads(options.threads)
    device = pick_device(options.device)
    data = load_data(config, options.data)
    runner = TrialRunner(config, data, device=device, max_steps=options.max_steps)
    if options.resume:
        runner.load(options.resume)
    say = None if options.quiet else (lambda msg: print(msg, file=sys.stderr))
    runner.run_warmup(progress=say)
    bar = None
    if not options.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=runner.n_steps, initial=runner.step, desc=f"{config['preset']} online", unit="step")
    chunk = options.checkpoint_every if options.checkpoint else PROGRESS_CHUNK
    while not runner.finished:
        before = runner.step
        runner.run_online(chunk)
        if bar is not None:
            bar.update(runner.step - before)
            bar.set_postfix(cum_mse=f"{runner.running_metrics()['cum_mse']:.4f}")
        if options.checkpoint:
            runner.save(options.checkpoint)
        if on_chunk is not None:
            on_chunk(runner.running_metrics())
    if bar is not None:
        bar.close()
    result = runner.result()
    result["curve"] = runner.curve(options.curve_every)
    result["data_sha256"] = data.sha256
    return result


def summary(result: dict[str, Any]) -> str:
    """A short human-readable summary of a result."""
    lines = [
        f"preset {result['preset']}  seed {result['seed']}  {result['dataset']} {result['protocol']}",
        f"steps {result['steps']}  mse {result['mse']:.4f}  mae {result['mae']:.4f}  rmse {result['rmse']:.4f}"
        f"  mape {result['mape']:.4f}  smape {result['smape']:.4f}  rel_mse_persistence "
        f"{result['rel_mse_persistence']:.3f}",
        f"warm-up {result['warmup_seconds']:.1f} s  online {result['online_seconds']:.1f} s"
        f"  ({result['steps_per_s']:.1f} steps/s)  peak RSS {result['peak_rss_mb']:.0f} MiB",
    ]
    diag = result.get("diagnostics") or {}
    if diag:
        lines.append(f"memory triggers {diag['memory_triggers']}  attention entropy "
                     f"{diag['attention_entropy_mean']:.3f}  slot mean sq cos {diag['slot_mean_sq_cos']:.4f}")
    return "\n".join(lines)


def parse_seeds(text: str) -> list[int]:
    """`--seeds` text ("0,1,2,3" or "0-7") -> distinct seeds >= 0 in order; raises KnobError when malformed."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, sep, high = part.strip().partition("-")
            seeds += list(range(int(low), int(high) + 1)) if sep else [int(low)]
    except ValueError:
        raise KnobError(f"--seeds expects comma-separated seeds or a range like 0-7, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise KnobError(f"--seeds must name distinct seeds >= 0, got {text!r}")
    return seeds


def run_group(config: dict[str, Any], seeds: list[int], options: TrialOptions) -> list[dict[str, Any]]:
    """Run the group of `config` x `seeds` (harness.online.group_runner) to its end; one result dict per member.

    Each result has the shape of run_solo's, plus group_size, member_index and error (None, or why the
    member diverged). `--checkpoint FILE` saves the whole group after warm-up and every
    checkpoint_every steps; `--resume FILE` continues such a group (the same config and seeds) to the
    same bits as a run straight through (CheckpointError otherwise).
    """
    from harness.online.group_runner import GroupRunner

    if options.max_steps is not None and options.max_steps < 1:
        raise KnobError(f"--max-steps must be >= 1, got {options.max_steps}")
    set_threads(options.threads)
    device = pick_device(options.device)
    data = load_data(config, options.data)
    try:
        runner = GroupRunner(config, data, seeds, device=device, max_steps=options.max_steps)
    except ValueError as exc:
        raise KnobError(str(exc)) from None
    if options.resume:
        runner.load(options.resume)
    say = None if options.quiet else (lambda msg: print(msg, file=sys.stderr))
    runner.run_warmup(progress=say)
    if options.checkpoint:
        runner.save(options.checkpoint)
    while not runner.finished:
        runner.run_online(options.checkpoint_every if options.checkpoint else PROGRESS_CHUNK)
        if options.checkpoint:
            runner.save(options.checkpoint)
        if say is not None and sys.stderr.isatty():
            cum = ", ".join(f"{m['cum_mse']:.4f}" for m in runner.running_metrics())
            print(f"\rstep {runner.step}/{runner.n_steps}  cum_mse {cum}", end="", file=sys.stderr, flush=True)
    if say is not None and sys.stderr.isatty():
        print(file=sys.stderr)
    results = runner.results()
    for member, result in enumerate(results):
        result["curve"] = runner.curve(member, options.curve_every)
        result["data_sha256"] = data.sha256
    return results
