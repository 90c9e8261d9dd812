"""Real processes for the worker tests: private Redis and Postgres servers that a test may kill
and restart, `promptrec worker` processes, and the calls that queue a job as the gateway does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from promptrec.core.db.engine import make_async_engine, make_session_factory, make_sync_engine
from promptrec.core.db.tables import SearchJob, SearchJobUser, UserPrompt
from promptrec.core.queue import SearchTask, StreamQueue
from promptrec.core.repositories import jobs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class RedisServer:
    """A private redis-server (no persistence): restarting it loses every stream and group."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        self.directory, self.port, self.process = directory, free_port(), None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port)
        wait_for(lambda: _pings(client), 10, "redis-server to start")
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class PostgresServer:
    """A private Postgres cluster (initdb in a temp dir) that a test may restart."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            pytest.skip("Postgres server binaries are not installed")
        self.bin = bins[-1].parent
        self.directory = Path(tempfile.mkdtemp(prefix="promptrec-pg-"))
        self.directory.chmod(0o777)
        self.port = free_port()
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        # Postgres refuses to run as root: as root, run it as the postgres user.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, str(self.bin / program), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.directory / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class WorkerProcess:
    """`promptrec worker` as its own OS process, its log in a file."""

    def __init__(self, env: dict[str, str], log: Path, name: str) -> None:
        self.log = log
        self.handle = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "promptrec.cli", "worker", "--consumer", name],
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


def worker_env(database_url: str, redis_url: str, model_dir: Path, **settings) -> dict[str, str]:
    """Environment of a worker process: short timeouts so the tests finish in seconds."""
    values = {
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_key_prefix": "worker-test:",
        "model_path": str(model_dir),
        "worker_batch_size": 8,
        "worker_block_ms": 200,
        "worker_heartbeat_s": 0.5,
        "worker_claim_idle_s": 3,
        "worker_max_deliveries": 3,
        "worker_scheduler_interval_s": 1,
        "worker_reconcile_interval_s": 1,
        "worker_reconcile_grace_s": 2,
        "worker_max_backoff_s": 2,
        "log_level": "INFO",
        **settings,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTREC_")}
    env.update({f"PROMPTREC_{k.upper()}": str(v) for k, v in values.items()})
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env["PYTHONFAULTHANDLER"] = "1"  # a process that dies in C code still leaves a traceback
    return env


def queue_job(env: dict[str, str], user_ids: list[str], fingerprint: str, scope="users") -> str:
    """What `POST /v1/admin/prompt-search-jobs` does: commit the job, then enqueue its users."""

    async def run() -> str:
        engine = make_async_engine(env["PROMPTREC_DATABASE_URL"])
        try:
            async with make_session_factory(engine)() as session:
                job = await jobs.create_job(session, "sequential", scope, fingerprint, user_ids)
                await session.commit()
            queue = StreamQueue(env["PROMPTREC_REDIS_URL"], env["PROMPTREC_REDIS_KEY_PREFIX"], "t")
            await queue.enqueue([SearchTask(job.job_id, u, "sequential") for u in user_ids])
            await queue.close()
            return job.job_id
        finally:
            await engine.dispose()

    return asyncio.run(run())


class JobView:
    """Reads a job's state straight from the database."""

    def __init__(self, database_url: str, job_id: str) -> None:
        self.engine = make_sync_engine(database_url)
        self.job_id = job_id

    def statuses(self) -> dict[str, int]:
        with Session(self.engine) as session:
            rows = session.execute(
                select(SearchJobUser.status, func.count())
                .where(SearchJobUser.job_id == self.job_id)
                .group_by(SearchJobUser.status)
            ).all()
        return dict(rows)

    def job_status(self) -> str:
        with Session(self.engine) as session:
            return session.scalar(select(SearchJob.status).where(SearchJob.job_id == self.job_id))

    def finished(self) -> bool:
        try:
            return self.job_status() == "done"
        except Exception:
            return False

    def users(self) -> list[SearchJobUser]:
        with Session(self.engine) as session:
            return list(
                session.scalars(select(SearchJobUser).where(SearchJobUser.job_id == self.job_id))
            )

    def versions_written(self) -> dict[str, int]:
        """Prompt versions this job wrote, per user."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(UserPrompt.user_id, func.count())
                .where(UserPrompt.job_id == self.job_id)
                .group_by(UserPrompt.user_id)
            ).all()
        return dict(rows)

    def close(self) -> None:
        self.engine.dispose()


class GatewayProcess:
    """`promptrec serve` (uvicorn) on a free port, ready when `/health/ready` says so."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.handle = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "promptrec.cli", "serve", "--port", str(self.port)],
            env=env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            assert self.process.poll() is None, log.read_text()[-3000:]
            try:
                return httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 60, "the gateway to be ready", every=0.25)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.handle.close()
