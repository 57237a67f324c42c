"""Environment hooks of the Ray trainable, for tests and debugging (all off unless the variable is set).

FSNET_TRIAL_EVENTS=<file> appends one JSON line per trial start/skip/checkpoint/end (pid, step, attempt;
start and end also name the Ray node id and the GPU ids Ray assigned);
FSNET_TEST_CRASH_ONCE=<marker file>:<step> kills the worker process (os._exit) right after the
first checkpoint at or past <step> of whichever trial first creates the marker file;
FSNET_TEST_REPORT_DELAY=<seconds> sleeps that long after each periodic report (slow trials that use no CPU).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from typing import Any


def utc_now() -> str:
    """The current UTC time as an ISO 8601 string."""
    return datetime.now(timezone.utc).isoformat()


def log_event(event: str, **fields: Any) -> None:
    """Append a JSON line to $FSNET_TRIAL_EVENTS when it is set."""
    target = os.environ.get("FSNET_TRIAL_EVENTS")
    if target:
        line = json.dumps({"event": event, "pid": os.getpid(), "time": utc_now(), **fields}) + "\n"
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(line)


def maybe_delay() -> None:
    """Test hook: sleep $FSNET_TEST_REPORT_DELAY seconds when it is set."""
    delay = os.environ.get("FSNET_TEST_REPORT_DELAY")
    if delay:
        time.sleep(float(delay))


def maybe_crash(step: int) -> None:
    """Test hook: os._exit once per marker file when FSNET_TEST_CRASH_ONCE=<marker>:<step> is reached."""
    hook = os.environ.get("FSNET_TEST_CRASH_ONCE")
    if not hook:
        return
    marker, _, at = hook.rpartition(":")
    if step < int(at):
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()} {step}\n".encode())
    os.close(fd)
    os._exit(17)
