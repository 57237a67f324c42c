"""Weights & Biases support: trial runs, the analysis run, the report, sweeps, offline run reading.

Modes: `off` (nothing is written), `offline` (runs are written under <results>/<experiment>/wandb,
upload them later with `wandb sync`) and `online`. The default is `online` when W&B credentials are
configured (WANDB_API_KEY, or a ~/.netrc entry for the W&B host), else `offline` (WANDB_MODE=offline
or disabled in the environment is honoured). Credentials are never read into a config or written to
a file by this package: wandb itself finds them.

This module is light (no wandb, no Ray import); the parts live in submodules:
`callback` (the Ray Tune logger callback, one W&B run per trial), `analysis` (the analysis run and the
end-of-experiment hook), `report` (the W&B Report, online only) and `offline` (reads offline runs back).
"""

from __future__ import annotations

import math
import netrc
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MODES = ("off", "offline", "online")
DEFAULT_PROJECT = "fsnet-harness"
WANDB_SUBDIR = "wandb"
DEFAULT_HOST = "https://api.wandb.ai"
HISTORY_KEYS = ("step", "cum_mse", "cum_mae")
SUMMARY_KEYS = ("mse", "mae", "rmse", "mape", "smape", "mape_scaled", "rel_mse_persistence", "steps",
                "trial_seconds", "warmup_seconds", "online_seconds", "steps_per_s", "peak_rss_mb")
TRIAL_JOB = "trial"
ANALYSIS_JOB = "analysis"


def _netrc_path(environ: Mapping[str, str]) -> Path:
    """The .netrc file wandb reads: $NETRC, else ~/.netrc."""
    return Path(environ.get("NETRC") or Path.home() / ".netrc").expanduser()


def has_credentials(environ: Mapping[str, str] | None = None) -> bool:
    """True when WANDB_API_KEY is set or the .netrc file has a password for the W&B host.

    The host is that of $WANDB_BASE_URL (default api.wandb.ai). Nothing is verified over the network.
    """
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY"):
        return True
    host = urlsplit(env.get("WANDB_BASE_URL") or DEFAULT_HOST).netloc
    try:
        creds = netrc.netrc(str(_netrc_path(env))).authenticators(host) if host else None
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(creds and creds[2])


def default_mode(environ: Mapping[str, str] | None = None) -> str:
    """The `--wandb` default: `online` with credentials configured, else `offline`.

    WANDB_MODE=offline (or dryrun) keeps it offline and WANDB_MODE=disabled turns it off, as wandb would.
    """
    env = os.environ if environ is None else environ
    wanted = env.get("WANDB_MODE", "").strip().lower()
    if wanted in ("offline", "dryrun"):
        return "offline"
    if wanted == "disabled":
        return "off"
    return "online" if has_credentials(env) else "offline"


def resolve_mode(flag: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The mode a `--wandb` flag asks for (None: the default); raises ValueError for an unknown one."""
    mode = default_mode(environ) if flag is None else flag
    if mode not in MODES:
        raise ValueError(f"--wandb must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def resolve_project(flag: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The W&B project: the flag, else $WANDB_PROJECT, else "fsnet-harness"."""
    env = os.environ if environ is None else environ
    return flag or env.get("WANDB_PROJECT") or DEFAULT_PROJECT


def runs_dir(exp_dir: str | os.PathLike[str]) -> Path:
    """Where an experiment's W&B runs land: <results>/<experiment>/wandb/offline-run-* (or run-*).

    wandb always writes into a `wandb/` folder below the directory it is given (its `dir`, or
    $WANDB_DIR), so the runs are given the experiment folder itself: see init_dir.
    """
    return Path(exp_dir).absolute() / WANDB_SUBDIR


def init_dir(exp_dir: str | os.PathLike[str]) -> Path:
    """The `dir` passed to wandb.init for an experiment's runs (the experiment folder, absolute)."""
    return Path(exp_dir).absolute()


def _finite_number(value: Any) -> bool:
    """True for an int or a finite float (bools excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def history_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The running stream metrics of a report (step, cum_mse, cum_mae), non-finite values left out."""
    return {k: result[k] for k in HISTORY_KEYS if _finite_number(result.get(k))}


def summary_metrics(result: Mapping[str, Any], diagnostics: Iterable[str] = ()) -> dict[str, float]:
    """The final metrics of a trial result: errors, timings, memory and diagnostics (finite numbers only).

    Works on a flattened Tune result (diagnostics at top level, named by `diagnostics`) and on a
    TrialRunner.result() (every numeric entry of its `diagnostics` dict).
    """
    flat = dict(result)
    nested = result.get("diagnostics")
    if isinstance(nested, Mapping):
        flat.update(nested)
        diagnostics = [*diagnostics, *nested]
    keys = [*SUMMARY_KEYS, *diagnostics]
    return {k: flat[k] for k in dict.fromkeys(keys) if _finite_number(flat.get(k))}


def trial_config(preset: str, variant: str, seed: int, knobs: Mapping[str, Any],
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A trial run's flat W&B config: preset, variant, seed, every knob value, then `extra` (experiment keys)."""
    config: dict[str, Any] = {"preset": preset, "variant": variant, "seed": seed}
    config.update({k: v for k, v in knobs.items() if k != "preset"})
    config.update(extra or {})
    return config
