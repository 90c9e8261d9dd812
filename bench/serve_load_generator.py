"""The load generator of `python -m bench.serve_load`: closed-loop virtual users against one
gateway process, outcomes counted inside a measured window, and the server's own Prometheus
metrics and CPU seconds read before and after each level (where the time goes)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway_process import GatewayProcess
from tests.support.processes import HOST

ROUTE = "/v1/users/{user_id}/recommendations"
BODY = {"task": "sequential", "count": 10}
GAIN_CONCURRENCY = 32
OVERLOAD_CONCURRENCY = 256
OVERLOAD_QUEUE_LIMIT = 8
CLIENT_TIMEOUT_S = 10.0  # per request; also bounds how long a level waits for stragglers


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
    server: GatewayProcess,
    user_ids: list[str],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    max_requests: int,
    seed: int,
) -> LevelResult:
    """Closed loop: `concurrency` virtual users, each sends its next request when the last one
    is answered. Outcomes that complete inside [warm-up end, warm-up end + duration] count."""
    assert server.url.startswith(f"http://{HOST}:")
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
                url = f"{server.url}/v1/users/{user_id}/recommendations"
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
        scrape = asyncio.create_task(_scrape(side, server.url))
        await asyncio.sleep(max(0.0, window[1] - loop.time()))
        cpu_client = time.process_time() - cpu_client
        if cpu_server is not None:
            cpu_server = (server.cpu_seconds() or 0.0) - cpu_server
        metrics_before = await scrape
        metrics_after = await _scrape(side, server.url)
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


def measure(
    server: GatewayProcess, user_ids: list[str], concurrency: int, args, label: str
) -> dict:
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


def measure_overload(server: GatewayProcess, user_ids: list[str], args) -> dict:
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
