"""What every process manager here needs: a free port, waiting for a condition, the `promptrec`
command, the CPU seconds of a process, and what to do when a server is not installed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from tests.support.paths import REPO

HOST = "127.0.0.1"  # every process here listens on, and is sent to, this host only


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def promptrec_command() -> list[str]:
    """`promptrec` of this interpreter, run from the repository's checkout (cwd=REPO)."""
    return [sys.executable, "-m", "promptrec.cli"]


def run_promptrec(args: list[str], env: dict[str, str], timeout: float = 900) -> str:
    """One `promptrec` command to completion; its stdout, or RuntimeError with its output."""
    completed = subprocess.run(
        [*promptrec_command(), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"promptrec {' '.join(args)} failed ({completed.returncode}):\n"
            f"{completed.stdout}\n{completed.stderr}"
        )
    return completed.stdout.strip()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def unavailable(reason: str) -> NoReturn:
    """A server this needs is missing: a test is skipped, a benchmark stops with the reason."""
    if "PYTEST_CURRENT_TEST" in os.environ:
        import pytest

        pytest.skip(reason)
    raise RuntimeError(reason)
