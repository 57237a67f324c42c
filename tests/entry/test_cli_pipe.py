"""harness.cli.run_entry: a command whose reader goes away (`... --json | head`) ends quietly, without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _closed_early(code: str) -> tuple[int, str]:
    """Run `code`, read one byte of its stdout, close the pipe; its exit status and stderr."""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(1)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    return proc.wait(timeout=60), err


def test_a_closed_pipe_is_quiet_and_exits_1() -> None:
    status, err = _closed_early("from harness.cli import run_entry\n"
                                "def main():\n    for _ in range(100):\n        print('x' * 100_000)\n    return 0\n"
                                "run_entry(main)")
    assert status == 1 and err == ""


def test_without_run_entry_the_same_command_would_print_a_traceback() -> None:
    status, err = _closed_early("import sys\n"
                                "def main():\n    for _ in range(100):\n        print('x' * 100_000)\n    return 0\n"
                                "sys.exit(main())")
    assert status != 0 and "BrokenPipeError" in err


def test_the_status_of_main_is_kept() -> None:
    done = subprocess.run([sys.executable, "-c", "from harness.cli import run_entry\nrun_entry(lambda: 3)"], cwd=ROOT)
    assert done.returncode == 3
