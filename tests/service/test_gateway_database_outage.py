"""Postgres stopped under a real `promptrec serve` process: every request is answered (503 with
Retry-After and a reason, on the same keep-alive connection), and users whose prompt and
context are cached keep getting recommendations."""

from __future__ import annotations

import http.client
import json
import time

from tests.support.databases import prepared_database
from tests.support.gateway_process import GatewayProcess
from tests.support.private_servers import PostgresServer, RedisServer
from tests.support.processes import wait_for
from tests.support.settings import ADMIN_KEY, worker_env


def _post(connection: http.client.HTTPConnection, path: str, body: dict, **headers):
    connection.request(
        "POST", path, json.dumps(body), {"content-type": "application/json", **headers}
    )
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def test_a_database_outage_is_503_with_retry_after_and_cached_users_keep_working(
    tmp_path, dataset_dir, model_dir
):
    server, redis_server = PostgresServer(), RedisServer(tmp_path)
    server.start()
    redis_server.start()
    gateway = None
    try:
        url = prepared_database(server.url, dataset_dir)
        env = worker_env(
            url,
            redis_server.url,
            model_dir,
            admin_api_key=ADMIN_KEY,
            embedded_worker=False,
            prompt_refresh_s=0.5,
        )
        gateway = GatewayProcess(env, tmp_path / "gateway.log")
        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
        assert _post(connection, "/v1/users/u1/recommendations", {"count": 2})[0] == 200
        socket_before = connection.sock
        server.stop()
        time.sleep(1)  # past prompt_refresh_s: the cached prompt would be re-read now

        status, _, body = _post(connection, "/v1/users/u1/recommendations", {"count": 2})
        assert status == 200, body  # served from the cache (stale-if-error)
        requests = [
            ("/v1/users/u2/recommendations", {"count": 2}),
            (
                "/v1/events",
                {
                    "events": [
                        {
                            "event_id": "o1",
                            "user_id": "u2",
                            "item_id": "m1",
                            "timestamp": 1_700_000_000,
                        }
                    ]
                },
            ),
            ("/v1/admin/prompt-search-jobs", {"task": "sequential", "user_ids": ["u2"]}),
        ]
        for path, payload in requests:
            status, headers, body = _post(connection, path, payload, **{"X-API-Key": ADMIN_KEY})
            assert status == 503, (path, status, body)
            assert int(headers["retry-after"]) >= 1
            assert "database" in json.loads(body)["detail"]
        connection.request("GET", "/v1/users/u2/prompt?task=sequential")
        response = connection.getresponse()
        assert response.status == 503
        response.read()
        assert connection.sock is socket_before  # the keep-alive connection was kept

        server.start()

        def recovered() -> bool:
            return _post(connection, "/v1/users/u2/recommendations", {"count": 2})[0] == 200

        wait_for(recovered, 30, "the gateway to answer again after Postgres came back")
    finally:
        if gateway is not None:
            gateway.stop()
        redis_server.stop()
        server.remove()
