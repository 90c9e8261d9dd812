"""Load benchmark of the gateway: a real `promptrec serve` (uvicorn) process under HTTP load.

    python bench/serve_load.py [--duration 10] [--out bench/results/serve.json]

What it does, all on 127.0.0.1 and in one run:

1. a fresh embedded SQLite database in a temp dir (`PROMPTREC_DATABASE_URL`), then
   `promptrec db upgrade` and `promptrec db load-dataset --data data/ml-100k`; the in-process
   prompt cache (no Redis); the model `artifacts/rlm-small` on the CPU;
2. `promptrec serve` with the default settings; a closed-loop async load generator
   (aiohttp, one ClientSession with a one-connection keep-alive pool per virtual user) sends
   `POST /v1/users/{id}/recommendations {"task": "sequential", "count": 10}` for random known
   ML-100k users at concurrency 1, 8, 32 and 128, each for `--duration` seconds after a
   `--warmup`; per level: rps, p50/p95/p99 latency, errors (non-2xx or exceptions) by status;
3. the batching gain, side by side: the server restarted with `PROMPTREC_MAX_BATCH_SIZE=1`,
   concurrency 32 again; `batching_gain` = rps(default, c=32) / rps(batch size 1, c=32);
4. overload: the server restarted with `PROMPTREC_QUEUE_LIMIT=8`, concurrency 256 for
   `--overload-duration` seconds; counts of 200 / 429 / 5xx and whether 429s carry `Retry-After`.

Per level it also reads the server's `/metrics` before and after (mean batch size, queue time,
model-call time, server-side request time) and the CPU seconds the server and the load
generator used, so the report can say where the time goes. The server process is always
terminated (its whole process group; SIGKILL if SIGTERM is not enough). The server and this
load generator share the machine's CPU cores: every number is for both on the same cores.
Prints a table and writes JSON (default `bench/results/serve.json`).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # the only host this script ever sends to
ROUTE = "/v1/users/{user_id}/recommendations"
BODY = {"task": "sequential", "count": 10}
LEVELS = (1, 8, 32, 128)
GAIN_CONCURRENCY = 32
OVERLOAD_CONCURRENCY = 256
OVERLOAD_QUEUE_LIMIT = 8
CLIENT_TIMEOUT_S = 10.0  # per request; also bounds how long a level waits for stragglers
READY_TIMEOUT_S = 180.0

_live_servers: list[Server] = []


# --------------------------------------------------------------------------------------------
# the server process


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _promptrec() -> list[str]:
    """The `promptrec` console script of this interpreter's environment (or the module)."""
    script = Path(sys.executable).parent / "promptrec"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "promptrec.cli"]


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Server:
    """`promptrec serve` on a free port of 127.0.0.1; stop() always ends its process group."""

    def __init__(self, env: dict[str, str], model: Path, log_path: Path, label: str) -> None:
        self.env = env
        self.model = model
        self.log_path = log_path
        self.label = label
        self.port = _free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def start(self) -> None:
        command = [
            *_promptrec(),
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--model",
            str(self.model),
        ]
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() can end all of it
        )
        _live_servers.append(self)
        started = time.monotonic()
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"server ({self.label}) exited with {self.proc.returncode}:\n"
                        + self._log_tail()
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/health/ready").status_code == 200:
                        break
                if time.monotonic() - started > READY_TIMEOUT_S:
                    raise RuntimeError(
                        f"server ({self.label}) not ready after {READY_TIMEOUT_S:.0f} s:\n"
                        + self._log_tail()
                    )
                time.sleep(0.25)
        print(
            f"[{self.label}] server pid {self.proc.pid} ready on {self.base_url} "
            f"in {time.monotonic() - started:.1f} s",
            flush=True,
        )

    def cpu_seconds(self) -> float | None:
        return _cpu_seconds(self.proc.pid) if self.proc is not None else None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc is not None:
            # Anything else left in its group (there should be nothing) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self in _live_servers:
            _live_servers.remove(self)

    def _log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _stop_all_servers() -> None:
    for server in list(_live_servers):
        server.stop()


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally` / `with`


# --------------------------------------------------------------------------------------------
# server metrics (Prometheus text) for "where does the time go"


def _metric_sums(text: str) -> dict[str, float]:
    wanted = {
        "promptrec_inference_batch_size",
        "promptrec_inference_queue_seconds",
        "promptrec_inference_compute_seconds",
    }
    out: dict[str, float] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            base = name.removesuffix("_sum").removesuffix("_count")
            if name != base and (
                base in wanted
                or (
                    base == "promptrec_http_request_duration_seconds"
                    and labels.get("route") == ROUTE
                )
            ):
                out[name] += sample.value
            elif name == "promptrec_inference_rejected_total":
                out[f"rejected:{labels.get('reason')}"] += sample.value
            elif name == "promptrec_cache_lookups_total":
                out[f"cache:{labels.get('result')}"] += sample.value
    return dict(out)


async def _scrape(session: aiohttp.ClientSession, base_url: str) -> dict[str, float] | None:
    try:
        async with session.get(f"{base_url}/metrics") as response:
            response.raise_for_status()
            return _metric_sums(await response.text())
    except (aiohttp.ClientError, ValueError):
        return None


def _server_breakdown(before: dict | None, after: dict | None) -> dict | None:
    """Means over the level from the deltas of the server's histograms."""
    if not before or not after:
        return None

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    def mean(base: str, scale: float = 1.0) -> float | None:
        n = delta(f"{base}_count")
        return round(delta(f"{base}_sum") / n * scale, 3) if n else None

    lookups = sum(delta(f"cache:{r}") for r in ("hit", "miss", "error"))

    return {
        "model_calls": int(delta("promptrec_inference_compute_seconds_count")),
        "mean_batch_size": mean("promptrec_inference_batch_size"),
        "mean_request_ms": mean("promptrec_http_request_duration_seconds", 1000),
        "mean_queue_ms": mean("promptrec_inference_queue_seconds", 1000),
        "mean_model_call_ms": mean("promptrec_inference_compute_seconds", 1000),
        "rejected_queue_full": int(delta("rejected:queue_full")),
        "rejected_deadline": int(delta("rejected:deadline")),
        # hot per-user cache (prompt parts, user context); a miss reads the database
        "cache_hit_ratio": round(delta("cache:hit") / lookups, 3) if lookups else None,
    }


# --------------------------------------------------------------------------------------------
# the load generator


@dataclass
class LevelResult:
    concurrency: int
    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)  # 2xx answers in the window
    statuses: Counter = field(default_factory=Counter)  # every outcome in the window
    retry_after: Counter = field(default_factory=Counter)  # 429s: Retry-After value or None
    issued: int = 0
    capped: bool = False
    client_cpu_s: float = 0.0
    server_cpu_s: float | None = None
    server: dict | None = None

    @property
    def completed(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if str(s).startswith("2"))

    def errors(self) -> dict:
        by_status = {str(s): n for s, n in sorted(self.statuses.items(), key=str) if s != "200"}
        by_status = {s: n for s, n in by_status.items() if not s.startswith("2")}
        return {"count": sum(by_status.values()), "by_status": by_status}

    def row(self) -> dict:
        lat = np.asarray(self.latencies_ms, dtype=float)

        def pct(q: float) -> float | None:
            return round(float(np.percentile(lat, q)), 2) if len(lat) else None

        return {
            "concurrency": self.concurrency,
            "rps": round(self.ok / self.duration_s, 1),
            "p50_ms": pct(50),
            "p95_ms": pct(95),
            "p99_ms": pct(99),
            "errors": self.errors(),
            "requests": self.completed,
            "duration_s": self.duration_s,
            "mean_ms": round(float(lat.mean()), 2) if len(lat) else None,
            "max_ms": round(float(lat.max()), 2) if len(lat) else None,
            "client_cpu_s": round(self.client_cpu_s, 2),
            "server_cpu_s": None if self.server_cpu_s is None else round(self.server_cpu_s, 2),
            "server": self.server,
            "capped_by_max_requests": self.capped,
        }


async def run_level(
    server: Server,
    user_ids: list[str],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    max_requests: int,
    seed: int,
) -> LevelResult:
    """Closed loop: `concurrency` virtual users, each sends its next request when the last one
    is answered. Outcomes that complete inside [warm-up end, warm-up end + duration] count."""
    assert server.base_url.startswith(f"http://{HOST}:")
    result = LevelResult(concurrency, duration_s)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    window = (0.0, 0.0)  # set once the clients exist

    async def virtual_user(index: int, client: aiohttp.ClientSession) -> None:
        rng = random.Random(seed * 1_000_003 + index)
        while not stop.is_set() and loop.time() < window[1]:
            if result.issued >= max_requests:
                result.capped = True
                break
            result.issued += 1
            user_id = rng.choice(user_ids)
            sent = loop.time()
            retry_after = None
            try:
                url = f"{server.base_url}/v1/users/{user_id}/recommendations"
                async with client.post(url, json=BODY) as response:
                    await response.read()
                    outcome: str = str(response.status)
                    retry_after = response.headers.get("retry-after")
            except (aiohttp.ClientError, TimeoutError) as error:
                outcome = f"exception:{type(error).__name__}"
            done = loop.time()
            if window[0] <= done <= window[1]:
                result.statuses[outcome] += 1
                if outcome.startswith("2"):
                    result.latencies_ms.append((done - sent) * 1000)
                elif outcome == "429":
                    result.retry_after[retry_after] += 1

    async with contextlib.AsyncExitStack() as stack:
        # One session (a keep-alive pool of one connection) per virtual user, as a fleet of
        # clients would connect. aiohttp, not httpx: on these shared cores the load generator's
        # CPU is taken from the server, and httpx's async client used ~2x more per request.
        clients = [
            await stack.enter_async_context(
                aiohttp.ClientSession(
                    timeout=timeout, connector=aiohttp.TCPConnector(limit=1, force_close=False)
                )
            )
            for _ in range(concurrency)
        ]
        side = await stack.enter_async_context(aiohttp.ClientSession(timeout=timeout))
        t_start = loop.time()
        window = (t_start + warmup_s, t_start + warmup_s + duration_s)
        users = [asyncio.create_task(virtual_user(i, c)) for i, c in enumerate(clients)]
        await asyncio.sleep(max(0.0, window[0] - loop.time()))
        cpu_client, cpu_server = time.process_time(), server.cpu_seconds()
        # answered behind the load: a bit late
        scrape = asyncio.create_task(_scrape(side, server.base_url))
        await asyncio.sleep(max(0.0, window[1] - loop.time()))
        cpu_client = time.process_time() - cpu_client
        if cpu_server is not None:
            cpu_server = (server.cpu_seconds() or 0.0) - cpu_server
        metrics_before = await scrape
        metrics_after = await _scrape(side, server.base_url)
        stop.set()
        # Stragglers finish within the client timeout; never wait longer than that.
        _done, pending = await asyncio.wait(users, timeout=CLIENT_TIMEOUT_S + 5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    result.client_cpu_s = cpu_client
    result.server_cpu_s = cpu_server
    result.server = _server_breakdown(metrics_before, metrics_after)
    return result


def measure(server: Server, user_ids: list[str], concurrency: int, args, label: str) -> dict:
    result = asyncio.run(
        run_level(
            server,
            user_ids,
            concurrency,
            args.duration,
            args.warmup,
            args.max_requests,
            args.seed + concurrency,
        )
    )
    row = result.row()
    print(
        f"[{label}] c={concurrency:<4d} {row['rps']:8.1f} rps  p50 {row['p50_ms']} ms  "
        f"p99 {row['p99_ms']} ms  errors {row['errors']['count']}",
        flush=True,
    )
    return row


def measure_overload(server: Server, user_ids: list[str], args) -> dict:
    # A fresh server: warm the model at a modest load first (not recorded), then overload it.
    asyncio.run(run_level(server, user_ids, 8, args.warmup or 1.0, 0.0, args.max_requests, 1))
    result = asyncio.run(
        run_level(
            server,
            user_ids,
            OVERLOAD_CONCURRENCY,
            args.overload_duration,
            0.0,
            args.max_requests,
            args.seed + OVERLOAD_CONCURRENCY,
        )
    )
    row = result.row()
    statuses = result.statuses
    n_429 = statuses.get("429", 0)
    with_header = sum(n for value, n in result.retry_after.items() if value is not None)
    overload = {
        "concurrency": OVERLOAD_CONCURRENCY,
        "duration_s": args.overload_duration,
        "queue_limit": OVERLOAD_QUEUE_LIMIT,
        "requests": result.completed,
        "status_200": statuses.get("200", 0),
        "status_429": n_429,
        "status_5xx": sum(n for s, n in statuses.items() if s[:1] == "5"),
        "exceptions": sum(n for s, n in statuses.items() if s.startswith("exception:")),
        "other": {
            s: n
            for s, n in statuses.items()
            if s not in ("200", "429") and s[:1] != "5" and not s.startswith("exception:")
        },
        "by_status": dict(sorted(statuses.items())),
        "retry_after_on_all_429": n_429 > 0 and with_header == n_429,
        "status_429_with_retry_after": with_header,
        "retry_after_values": sorted({v for v in result.retry_after if v is not None}),
        "ok_rps": row["rps"],
        "ok_p50_ms": row["p50_ms"],
        "ok_p99_ms": row["p99_ms"],
        "client_cpu_s": row["client_cpu_s"],
        "server_cpu_s": row["server_cpu_s"],
        "server": row["server"],
    }
    print(
        f"[overload] c={OVERLOAD_CONCURRENCY}: 200={overload['status_200']} "
        f"429={n_429} 5xx={overload['status_5xx']} exceptions={overload['exceptions']} "
        f"Retry-After on all 429s: {overload['retry_after_on_all_429']}",
        flush=True,
    )
    return overload


# --------------------------------------------------------------------------------------------
# setup, report


def _run_cli(args: list[str], env: dict[str, str]) -> str:
    completed = subprocess.run(
        [*_promptrec(), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"promptrec {' '.join(args)} failed ({completed.returncode}):\n"
            f"{completed.stdout}\n{completed.stderr}"
        )
    return completed.stdout.strip()


def _shown(path: Path) -> str:
    """A path relative to the repository where it lies inside it."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(ROOT))
    return str(path)


def _known_users(db_path: Path) -> list[str]:
    """Users the dataset loaded, with at least one interaction (all of ML-100k's)."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        rows = db.execute("SELECT DISTINCT user_id FROM interactions ORDER BY user_id").fetchall()
    return [r[0] for r in rows]


def _sanity_check(server: Server, user_id: str) -> dict:
    with httpx.Client(base_url=server.base_url, timeout=CLIENT_TIMEOUT_S) as client:
        response = client.post(f"/v1/users/{user_id}/recommendations", json=BODY)
    if response.status_code != 200:
        raise RuntimeError(f"sanity request failed: {response.status_code} {response.text}")
    body = response.json()
    if len(body["items"]) != BODY["count"]:
        raise RuntimeError(f"expected {BODY['count']} items, got {len(body['items'])}")
    return {"user_id": user_id, "items": len(body["items"]), "model": body["model"]}


def _table(rows: list[dict], batch1: dict, gain: float | None, overload: dict) -> str:
    head = (
        f"{'server':<18}{'conc':>5}{'rps':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}{'batch':>7}{'queue ms':>10}{'model ms':>10}{'srv ms':>8}{'cache':>7}"
    )
    lines = [head, "-" * len(head)]

    def fmt(value, width: int, digits: int = 1) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    for label, row in [*(("default", r) for r in rows), ("max_batch_size=1", batch1)]:
        s = row.get("server") or {}
        lines.append(
            f"{label:<18}{row['concurrency']:>5}{fmt(row['rps'], 9)}{fmt(row['p50_ms'], 9)}"
            f"{fmt(row['p95_ms'], 9)}{fmt(row['p99_ms'], 9)}{row['errors']['count']:>8}"
            f"{fmt(s.get('mean_batch_size'), 7)}{fmt(s.get('mean_queue_ms'), 10)}"
            f"{fmt(s.get('mean_model_call_ms'), 10)}{fmt(s.get('mean_request_ms'), 8)}"
            f"{fmt(s.get('cache_hit_ratio'), 7, 2)}"
        )
    lines.append(
        f"batching gain (c={GAIN_CONCURRENCY}): " + ("-" if gain is None else f"{gain:.2f}x")
    )
    lines.append(
        f"overload (queue_limit={overload['queue_limit']}, c={overload['concurrency']}, "
        f"{overload['duration_s']:g} s): 200={overload['status_200']} "
        f"429={overload['status_429']} 5xx={overload['status_5xx']} "
        f"exceptions={overload['exceptions']} other={overload['other']} "
        f"Retry-After on every 429: {overload['retry_after_on_all_429']} "
        f"{overload['retry_after_values']}"
    )
    return "\n".join(lines)


def _goals(rows: list[dict], gain: float | None, overload: dict) -> dict:
    meeting = [
        r["concurrency"]
        for r in rows
        if r["rps"] >= 500 and r["p99_ms"] is not None and r["p99_ms"] <= 100
    ]
    single = next((r for r in rows if r["concurrency"] == 1), None)
    return {
        "500_rps_with_p99_le_100ms": {"met": bool(meeting), "at_concurrency": meeting},
        "single_request_p50_le_10ms": {
            "met": bool(single and single["p50_ms"] is not None and single["p50_ms"] <= 10),
            "p50_ms": single and single["p50_ms"],
        },
        "batching_gain_ge_3x": {"met": gain is not None and gain >= 3, "gain": gain},
        "overload_429_and_no_5xx": {
            "met": overload["status_429"] > 0 and overload["status_5xx"] == 0,
            "status_429": overload["status_429"],
            "status_5xx": overload["status_5xx"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each level")
    parser.add_argument("--overload-duration", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/serve.json")
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts/rlm-small")
    parser.add_argument("--data", type=Path, default=ROOT / "data/ml-100k")
    parser.add_argument(
        "--max-requests", type=int, default=500_000, help="cap on requests per level"
    )
    parser.add_argument("--log-level", default="INFO", help="PROMPTREC_LOG_LEVEL of the server")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (db, logs)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.overload_duration <= 0:
        parser.error("durations must be positive")

    from promptrec.core.settings import Settings  # the defaults the server runs with

    defaults = {
        name: Settings.model_fields[name].default
        for name in ("max_batch_size", "max_wait_ms", "queue_limit", "request_timeout_ms")
    }
    defaults["retry_after_s"] = Settings.model_fields["retry_after_s"].default
    model = args.model.resolve()
    data = args.data.resolve()

    atexit.register(_stop_all_servers)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)

    tmp = Path(tempfile.mkdtemp(prefix="promptrec-serve-bench-"))
    db_path = tmp / "bench.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTREC_")}
    env.update(
        PROMPTREC_DATABASE_URL=f"sqlite:///{db_path}",  # absolute: sqlite:////tmp/...
        PROMPTREC_MODEL_PATH=str(model),
        PROMPTREC_DATA_DIR=str(data),
        PROMPTREC_DEVICE="cpu",
        PROMPTREC_LOG_LEVEL=args.log_level,
        PROMPTREC_MIGRATE_ON_START="true",
        # Serving alone: no prompt set is loaded, so an embedded worker would search every
        # user in the background (bench/worker.py measures the workers).
        PROMPTREC_EMBEDDED_WORKER="false",
    )
    started = time.monotonic()
    loadavg_at_start = os.getloadavg()  # other work on the same cores skews every number
    try:
        print(f"temp dir {tmp}; {env['PROMPTREC_DATABASE_URL']}", flush=True)
        print(_run_cli(["db", "upgrade"], env), flush=True)
        print(_run_cli(["db", "load-dataset", "--data", str(data)], env), flush=True)
        user_ids = _known_users(db_path)
        print(f"{len(user_ids)} known users", flush=True)

        rows: list[dict] = []
        with Server(env, model, tmp / "server-default.log", "default") as server:
            sanity = _sanity_check(server, user_ids[0])
            for concurrency in LEVELS:
                rows.append(measure(server, user_ids, concurrency, args, "default"))

        env_b1 = {**env, "PROMPTREC_MAX_BATCH_SIZE": "1"}
        with Server(env_b1, model, tmp / "server-batch1.log", "batch-1") as server:
            batch1 = measure(server, user_ids, GAIN_CONCURRENCY, args, "batch-1")

        env_ol = {**env, "PROMPTREC_QUEUE_LIMIT": str(OVERLOAD_QUEUE_LIMIT)}
        with Server(env_ol, model, tmp / "server-overload.log", "overload") as server:
            overload = measure_overload(server, user_ids, args)
    finally:
        _stop_all_servers()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    default_32 = next(r for r in rows if r["concurrency"] == GAIN_CONCURRENCY)
    gain = round(default_32["rps"] / batch1["rps"], 2) if batch1["rps"] else None
    import torch  # only to report the intra-op threads a process gets here by default

    command = "python bench/serve_load.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    report = {
        "rows": [
            {k: r[k] for k in ("concurrency", "rps", "p50_ms", "p95_ms", "p99_ms", "errors")}
            for r in rows
        ],
        "batching_gain": gain,
        "batch_size_1": batch1,
        "overload": overload,
        "device": "cpu",
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_1_5_15_min": {
            "at_start": [round(x, 2) for x in loadavg_at_start],
            "at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "shared_cores_note": (
            f"the server (uvicorn, one process; torch with {torch.get_num_threads()} intra-op "
            f"threads) and the load generator (aiohttp, one process) ran on the same "
            f"{os.cpu_count()} CPU cores; client CPU seconds per level are in rows_detail"
        ),
        "settings": {
            "database": "embedded SQLite (fresh file in a temp dir), ML-100k loaded",
            "cache": "in-process",
            "model_path": _shown(model),
            "device": "cpu",
            "log_level": args.log_level,
            "defaults": defaults,
            "batch_size_1_run": {"max_batch_size": 1},
            "overload_run": {"queue_limit": OVERLOAD_QUEUE_LIMIT},
            "request": {"route": ROUTE, "body": BODY, "users": "random known ML-100k user"},
            "load": {
                "generator": f"aiohttp {aiohttp.__version__}, closed loop, one ClientSession "
                "(keep-alive pool of one connection) per virtual user",
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "overload_duration_s": args.overload_duration,
                "client_timeout_s": CLIENT_TIMEOUT_S,
                "max_requests_per_level": args.max_requests,
                "seed": args.seed,
                "window": "outcomes completed inside the measured window count; rps counts "
                "2xx answers only; latency percentiles are over 2xx answers",
            },
            "server_command": "promptrec serve --host 127.0.0.1 --port <free> --model "
            + _shown(model),
            "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "rows_detail": rows,
        "sanity_check": sanity,
        "goals": _goals(rows, gain, overload),
        "wall_s": round(time.monotonic() - started, 1),
        "command": command.strip(),
    }
    print()
    print(_table(rows, batch1, gain, overload))
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
