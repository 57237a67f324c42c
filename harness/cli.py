"""What every command line of the harness shares: one-line errors, their exit statuses, and --set parsing.

Light on purpose (argparse and sys at import): `python -m harness.analyze` imports it without torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

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


def run_entry(main: Callable[[], int]) -> NoReturn:
    """sys.exit(main()), but quiet when stdout's reader has gone (`... --json | head`): no traceback, status 1.

    Python's own advice for a closed pipe: point stdout at devnull so the flush at exit cannot fail again.
    """
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    sys.exit(status)


def parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """`["knob=value", ...]` -> {knob: typed value}; raises KnobError on a malformed pair or value.

    Imports the knob registry (and so torch) only when called, to keep this module light.
    """
    from fsnet_models.knobs import KnobError, parse_knob_value

    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise KnobError(f"--set expects knob=value, got {pair!r}")
        values[name.strip()] = parse_knob_value(name.strip(), text)
    return values
