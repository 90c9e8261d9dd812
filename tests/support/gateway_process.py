"""`promptrec serve` (uvicorn) as its own OS process: the tests' real gateway and the server the
benchmarks load."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.paths import REPO
from tests.support.processes import HOST, cpu_seconds, free_port, promptrec_command, wait_for

_running: list[GatewayProcess] = []


class GatewayProcess:
    """`promptrec serve` on a free port of 127.0.0.1, started by the constructor, which returns
    when `/health/ready` answers 200 (RuntimeError with the log's tail if it exits or is not
    ready in time). It runs in its own process group: `stop()` and `kill()` end all of it.
    A context manager: leaving it stops the process."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        *,
        model: Path | None = None,
        label: str = "gateway",
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.env, self.log, self.label = env, log, label
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        command = [*promptrec_command(), "serve", "--host", HOST, "--port", str(self.port)]
        if model is not None:
            command += ["--model", str(model)]
        self.handle = log.open("ab")
        self.process: subprocess.Popen | None = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() can end all of it
        )
        _running.append(self)
        started = time.monotonic()
        try:
            wait_for(self._ready, ready_timeout_s, f"the {label} to be ready", every=0.25)
        except AssertionError as error:
            self.stop()
            raise RuntimeError(f"{error}:\n{self.log_tail()}") from None
        except BaseException:
            self.stop()
            raise
        print(
            f"[{label}] server pid {self.process.pid} ready on {self.url} "
            f"in {time.monotonic() - started:.1f} s",
            flush=True,
        )

    def __enter__(self) -> GatewayProcess:
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.label} exited with {self.process.returncode}:\n{self.log_tail()}"
            )
        try:
            return httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.process.pid) if self.process is not None else None

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), SIGKILL if that is not enough."""
        self._end((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0))

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown code runs."""
        self._end((signal.SIGKILL, 10.0))

    def _end(self, *steps: tuple[signal.Signals, float]) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            for sig, wait_s in steps:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                try:
                    process.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if process is not None:
            # Anything else left in its group (there should be nothing) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        self.handle.close()
        if self in _running:
            _running.remove(self)

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def stop_all_gateways() -> None:
    """Stop every gateway process still running (for atexit)."""
    for gateway in list(_running):
        gateway.stop()
