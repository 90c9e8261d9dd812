"""Per request: a request id, the body size limit, access log and HTTP metrics (pure ASGI)."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from promptrec.core.observability import HTTP_ERRORS, HTTP_LATENCY, HTTP_REQUESTS, request_id_var

log = logging.getLogger("promptrec.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, app, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_code = 500

        async def send_with_id(message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        started_response = False

        async def send_tracked(message) -> None:
            nonlocal started_response
            started_response = started_response or message["type"] == "http.response.start"
            await send_with_id(message)

        try:
            body = await self._read_body(scope, receive, headers)
            if body is None:
                await self._too_large(send_with_id)
            else:
                await self.app(scope, self._replay(body, receive), send_tracked)
        except Exception as error:
            # Answered here rather than by Starlette's ServerErrorMiddleware, which re-raises
            # after answering: uvicorn then closes the client's keep-alive connection.
            if started_response:
                raise
            log.error("unhandled error", exc_info=error)
            await self._send_json(send_with_id, 500, {"detail": "internal error"})
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(scope["method"], path, str(status_code)).inc()
            HTTP_LATENCY.labels(scope["method"], path).observe(elapsed)
            if status_code >= 400:
                HTTP_ERRORS.labels(f"{status_code // 100}xx").inc()
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": path,
                    "status": status_code,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
            request_id_var.reset(token)

    async def _read_body(self, scope, receive, headers) -> bytes | None:
        """The whole body, or None when it exceeds the limit (declared or actual)."""
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE") and declared is None:
            return b""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    def _replay(body: bytes, receive):
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _too_large(self, send) -> None:
        await self._send_json(
            send, 413, {"detail": f"request body larger than {self.max_body_bytes} bytes"}
        )

    @staticmethod
    async def _send_json(send, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
