"""What every command line of the harness shares: one-line errors and their exit statuses.

Light on purpose (argparse and sys only): `python -m harness.analyze` imports it without torch.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

BAD_INPUT = 2
INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line (no usage dump) with exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print `error: <message>` and exit 2."""
        self.exit(BAD_INPUT, f"error: {message} (see --help)\n")


def fail(message: object, status: int = BAD_INPUT) -> int:
    """Print `error: <message>` as one line on stderr; returns `status` for main() to return."""
    print(f"error: {message}", file=sys.stderr)
    return status


def interrupted() -> int:
    """The one line for Ctrl-C; returns the conventional status 130."""
    return fail("interrupted", INTERRUPTED)
