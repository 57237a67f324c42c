"""The layer rule of docs/architecture.md, checked by import-linter's contracts in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "fsnet_models", "data", "search_spaces")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter over the packages under `tree` with its pyproject.toml's contracts."""
    return subprocess.run([str(LINT_IMPORTS), "pyproject.toml", "--no-cache"], cwd=tree,
                          capture_output=True, text=True, timeout=120)


def test_every_layer_contract_is_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_an_import_of_ray_in_the_online_layer_breaks_the_rule(tmp_path: Path) -> None:
    """The check can fail: a copy of the tree with `import ray` in harness/online/metrics.py is refused."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    metrics = tmp_path / "harness" / "online" / "metrics.py"
    metrics.write_text(metrics.read_text().replace("import torch\n", "import ray  # noqa: F401\nimport torch\n", 1))
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "The online layer imports neither Ray nor W&B BROKEN" in " ".join(result.stdout.split())
    assert "harness.online.metrics -> ray" in result.stdout
