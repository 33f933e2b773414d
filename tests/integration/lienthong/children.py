"""A pipeline step in a child process that a test SIGKILLs at a moment of its choosing (the kill tests of
staging and reconciliation): the child prints 'ready' once its imports are done, then works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


@dataclass
class Child:
    killed: bool  # SIGKILLed while running (False: it had finished)
    seconds: float  # from 'ready' to the kill or the end


def run_child(code: str, args: list[str], log_path: Path, *, delay: float | None = None,
              until: Callable[[], bool] | None = None, timeout: float = 240.0) -> Child:
    """Run `code` (with `args`) in a child process with the test's environment; SIGKILL it `delay` seconds
    after it is ready, or as soon as `until()` holds; with neither, let it finish. A child that ends on its
    own must succeed."""
    with open(log_path, "ab") as err:
        child = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=dict(os.environ),
                                 stdout=subprocess.PIPE, stderr=err)
    try:
        assert child.stdout is not None
        ready = child.stdout.readline().strip()
        assert ready == b"ready", f"child did not start: {ready!r}; see {log_path}"
        t0 = time.monotonic()
        deadline = t0 + timeout
        if delay is not None:
            while child.poll() is None and time.monotonic() < t0 + delay:
                time.sleep(0.002)
        elif until is not None:
            while child.poll() is None and not until():
                assert time.monotonic() < deadline, "the kill trigger never fired"
                time.sleep(0.0005)
        killed = False
        if (delay is not None or until is not None) and child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            killed = True
        code_ = child.wait(timeout=max(1.0, deadline - time.monotonic()))
        seconds = time.monotonic() - t0
        assert killed or code_ == 0, f"child failed ({code_}); see {log_path}"
        return Child(killed, seconds)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
