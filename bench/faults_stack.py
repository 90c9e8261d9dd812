"""The topology of `python -m bench.faults` and the clients that load it: the processes (where
the clients find the API now), client threads sending events and recommendations on keep-alive
connections, and an operator's admin job."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.gateway_process import GatewayProcess
from tests.support.private_servers import PostgresServer, RedisServer
from tests.support.worker_process import WorkerProcess

ADMIN_KEY = "bench-admin-key"
ITEMS = ["50", "100", "181", "258", "286", "1", "7", "98"]


@dataclass
class Stack:
    """The processes, and where the clients find the API now."""

    env: dict[str, str]
    directory: Path
    postgres: PostgresServer
    redis_server: RedisServer
    gateway: GatewayProcess | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    started: int = 0
    api_killed: bool = False  # between the SIGKILL of the API and its replacement

    def start_gateway(self) -> None:
        self.gateway = GatewayProcess(self.env, self.directory / f"api-{time.time():.0f}.log")

    def start_worker(self) -> WorkerProcess:
        self.started += 1
        name = f"worker-{self.started}"
        process = WorkerProcess(self.env, self.directory / f"{name}.log", name)
        self.workers.append(process)
        return process

    def api_alive(self) -> bool:
        return self.gateway is not None and not self.api_killed and self.gateway.alive


@dataclass
class Tally:
    """What the clients saw during one fault."""

    statuses: Counter = field(default_factory=Counter)
    dropped_while_alive: int = 0  # no response on a connection, the API process alive
    refused_while_down: int = 0  # the API process was dead: nobody to answer
    accepted_events: list[str] = field(default_factory=list)
    served: list[tuple[float, str, int]] = field(default_factory=list)  # (time, user, version)


class Load:
    """Client threads: events and recommendations, each on its own keep-alive connection."""

    def __init__(self, stack: Stack, users: list[str], threads: int = 2) -> None:
        self.stack, self.users, self.threads = stack, users, threads
        self.tally = Tally()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.counter = 0
        self.pool: list[threading.Thread] = []

    def swap(self) -> Tally:
        with self.lock:
            tally, self.tally = self.tally, Tally()
        return tally

    def _record(self, **what) -> None:
        with self.lock:
            if "status" in what:
                self.tally.statuses[what["status"]] += 1
            if "event" in what:
                self.tally.accepted_events.append(what["event"])
            if "served" in what:
                self.tally.served.append(what["served"])
            if what.get("dropped"):
                if self.stack.api_alive():
                    self.tally.dropped_while_alive += 1
                else:
                    self.tally.refused_while_down += 1

    def _client(self, n: int) -> None:
        connection, port = None, None
        while not self.stop.is_set():
            gateway = self.stack.gateway
            if gateway is None or not self.stack.api_alive():
                time.sleep(0.2)
                continue
            if connection is None or port != gateway.port:
                port = gateway.port
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            with self.lock:
                self.counter += 1
                k = self.counter
            user = self.users[k % len(self.users)]
            try:
                if k % 2:
                    event = f"bench-{n}-{k}"
                    body = {
                        "events": [
                            {
                                "event_id": event,
                                "user_id": f"load-{k % 50}",
                                "item_id": ITEMS[k % len(ITEMS)],
                                "timestamp": 1_000_000_000 + k,
                            }
                        ]
                    }
                    status, answer = _post(connection, "/v1/events", body)
                    self._record(status=status)
                    if status == 200 and answer["results"][0]["status"] == "accepted":
                        self._record(event=event)
                else:
                    status, answer = _post(
                        connection, f"/v1/users/{user}/recommendations", {"count": 5}
                    )
                    self._record(status=status)
                    if status == 200:
                        self._record(served=(time.time(), user, answer["prompt"]["version"]))
            except (OSError, http.client.HTTPException):
                self._record(dropped=True)
                connection.close()
                connection = None
                time.sleep(0.1)
            time.sleep(0.05)

    def start(self) -> None:
        for n in range(self.threads):
            thread = threading.Thread(target=self._client, args=(n,), daemon=True)
            thread.start()
            self.pool.append(thread)

    def close(self) -> None:
        self.stop.set()
        for thread in self.pool:
            thread.join(30)


def _post(connection: http.client.HTTPConnection, path: str, body: dict) -> tuple[int, dict]:
    connection.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    response = connection.getresponse()
    raw = response.read()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, {}


def queue_admin_job(stack: Stack, users: list[str]) -> str:
    """Through the API as an operator would, retried while the API answers nothing or 503."""
    deadline = time.monotonic() + 120
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", stack.gateway.port, timeout=15)
            connection.request(
                "POST",
                "/v1/admin/prompt-search-jobs",
                json.dumps({"task": "sequential", "user_ids": users}),
                {"content-type": "application/json", "X-API-Key": ADMIN_KEY},
            )
            response = connection.getresponse()
            body = json.loads(response.read())
            if response.status == 202:
                return body["job_id"]
        except (OSError, http.client.HTTPException, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("could not queue an admin job")
        time.sleep(1)
