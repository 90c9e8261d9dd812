"""`promptrec worker` as its own OS process, its log in a file."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.paths import REPO
from tests.support.processes import promptrec_command, wait_for


class WorkerProcess:
    """`promptrec worker --consumer NAME`, started by the constructor."""

    def __init__(self, env: dict[str, str], log: Path, name: str) -> None:
        self.log = log
        self.handle = log.open("w")
        self.process = subprocess.Popen(
            [*promptrec_command(), "worker", "--consumer", name],
            cwd=REPO,
            env=env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def output(self) -> str:
        return self.log.read_text()

    def close(self) -> None:
        if self.alive:
            self.kill()
        self.handle.close()


@contextlib.contextmanager
def workers(env: dict[str, str], directory: Path) -> Iterator[Callable[[str], WorkerProcess]]:
    """Starts workers by name; at the end kills those alive and prints each one's log tail."""
    started: list[WorkerProcess] = []

    def start(name: str) -> WorkerProcess:
        process = WorkerProcess(env, directory / f"{name}.log", name)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            # Shown by pytest when the test fails; a worker that died on its own says so.
            ended = process.process.poll()
            process.close()
            status = "" if ended is None else f" (exited by itself, code {ended})"
            print(f"---- worker {process.log.stem}{status} ----\n{process.output()[-6000:]}")


def kill_mid_batch_then_finish(env: dict[str, str], directory: Path, view, n_users: int) -> None:
    """A first worker is SIGKILLed while a batch of the job is running, then a second one
    finishes the job (claiming what the first held after the idle timeout)."""
    with workers(env, directory) as start:
        first = start("first")
        wait_for(lambda: view.statuses().get("running", 0) > 0, 120, "the first batch to start")
        first.kill()
        at_kill = view.statuses()
        # Killed in the middle: a batch was marked running and not every user was done.
        assert at_kill.get("running", 0) > 0 and at_kill.get("done", 0) < n_users, at_kill
        second = start("second")
        wait_for(view.finished, 180, "the second worker to finish the job")
        assert second.alive
