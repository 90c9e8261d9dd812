"""JSON logs that carry the request id, and the Prometheus metrics of the service."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id, and any `extra=`."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            out["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO") -> None:
    logger = logging.getLogger("promptrec")
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_REQUESTS = Counter(
    "promptrec_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_ERRORS = Counter(
    "promptrec_http_errors_total", "HTTP answers with a 4xx or 5xx status", ["status_class"]
)
HTTP_LATENCY = Histogram(
    "promptrec_http_request_duration_seconds",
    "Time from request to response",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "promptrec_inference_batch_size",
    "Ranking requests per model call",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
QUEUE_SECONDS = Histogram(
    "promptrec_inference_queue_seconds",
    "Time a ranking request waited for its batch",
    buckets=_LATENCY_BUCKETS,
)
COMPUTE_SECONDS = Histogram(
    "promptrec_inference_compute_seconds",
    "Time of one batched model call",
    buckets=_LATENCY_BUCKETS,
)
QUEUE_REJECTED = Counter(
    "promptrec_inference_rejected_total", "Ranking requests refused", ["reason"]
)
QUEUE_DEPTH = Gauge("promptrec_inference_queue_depth", "Ranking requests waiting")
CACHE_LOOKUPS = Counter(
    "promptrec_cache_lookups_total",
    "Hot per-user cache lookups (prompts, user contexts)",
    ["result"],
)  # hit | miss | error

WORKER_USERS = Counter(
    "promptrec_worker_users_total",
    "Users the prompt-search worker finished, by outcome",
    ["outcome"],
)
WORKER_BATCH_SECONDS = Histogram(
    "promptrec_worker_batch_seconds",
    "Wall time of one worker batch (database, search, writes)",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
WORKER_DEAD_LETTERS = Counter(
    "promptrec_worker_dead_letters_total", "Search messages moved to the dead-letter stream"
)
