"""experiment.json: an ablation's full configuration, written before Ray starts and read by --resume."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from fsnet_models.knobs import KnobError
from harness.experiment.results import write_json_atomic

EXPERIMENT_FILE = "experiment.json"
_PACKAGES = ("torch", "ray", "numpy", "pandas", "pyarrow", "optuna", "wandb")


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that shape a result."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(folder: str | os.PathLike[str] | None = None) -> str | None:
    """HEAD's commit of the project's git checkout, with `-dirty` when tracked files changed; None outside git."""
    where = Path(folder) if folder else Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=where, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.returncode == 1 else "")


def experiment_folder(results: str | os.PathLike[str], name: str) -> Path:
    """<results>/<name>, absolute."""
    return Path(results).expanduser().absolute() / name


def write_experiment(folder: Path, settings: dict[str, Any]) -> Path:
    """Write settings as <folder>/experiment.json (atomically); returns its path."""
    path = folder / EXPERIMENT_FILE
    write_json_atomic(settings, path)
    return path


def read_experiment(folder: Path) -> dict[str, Any]:
    """The settings of an existing experiment; a missing or unreadable file raises KnobError (one line)."""
    path = folder / EXPERIMENT_FILE
    if not path.is_file():
        raise KnobError(f"--resume: no experiment at {folder} ({EXPERIMENT_FILE} not found)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KnobError(f"--resume: {path} is unreadable ({type(exc).__name__})") from None
