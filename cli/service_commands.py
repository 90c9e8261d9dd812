"""`promptrec serve|worker|demo`: the gateway, a prompt-search worker, a replay client."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from promptrec.cli.options import DEFAULT_DATA


def add_service_commands(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the REST gateway (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--model", type=Path, help="model directory (PROMPTREC_MODEL_PATH)")
    serve.add_argument("--log-level", default="warning", help="uvicorn's own log level")
    serve.set_defaults(run=_serve)

    worker = commands.add_parser(
        "worker", help="prompt-search worker: a Redis Streams consumer (PROMPTREC_REDIS_URL)"
    )
    worker.add_argument("--model", type=Path, help="model directory (PROMPTREC_MODEL_PATH)")
    worker.add_argument(
        "--device", help="cpu, cuda, cuda:1 (PROMPTREC_DEVICE; default: CUDA when present)"
    )
    worker.add_argument("--consumer", help="name in the consumer group (default: host-pid)")
    worker.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port (default: none)"
    )
    worker.set_defaults(run=_worker)

    demo = commands.add_parser(
        "demo", help="replay held-out cold users against a running service: before/after table"
    )
    demo.add_argument("--url", default="http://127.0.0.1:8000", help="the running service")
    demo.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the dataset it serves")
    demo.add_argument("--users", type=int, default=20, help="cold users to replay")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait per search")
    demo.add_argument("--concurrency", type=int, default=16)
    demo.add_argument("--seed", type=int, default=0, help="which cold users")
    demo.add_argument("--out", type=Path, help="also write per-user results as JSON")
    demo.add_argument(
        "--api-key", help="client key sent in X-API-Key, where the service requires one"
    )
    demo.set_defaults(run=_demo)


def _serve(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from promptrec.cli.gateway import gateway_app
    from promptrec.core.settings import Settings

    overrides = {"model_path": args.model} if args.model else {}
    settings = Settings(**overrides)
    if not (settings.model_path / "config.json").is_file():
        raise FileNotFoundError(
            f"no model in {settings.model_path}; train one with `promptrec train` or point "
            "--model (PROMPTREC_MODEL_PATH) at a model directory"
        )
    app = gateway_app(settings, freeze_gc=True)
    torch.set_num_threads(settings.inference_threads or max(1, (os.cpu_count() or 2) - 1))
    # The model runs in a worker thread next to the event loop. A thread waiting for the GIL
    # gets it only after the holder's switch interval (5 ms by default), and the model thread
    # waits at every call's entry and exit; a shorter interval keeps that wait small.
    sys.setswitchinterval(0.0005)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def _worker(args: argparse.Namespace) -> int:
    import asyncio

    from promptrec.core.observability import configure_logging
    from promptrec.core.settings import Settings
    from promptrec.models.rlm.model import RecLM
    from promptrec.worker.main import default_consumer, run_worker

    overrides = {"model_path": args.model} if args.model else {}
    if args.device:
        overrides["device"] = args.device
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    if settings.redis_url is None:
        raise ValueError(
            "promptrec worker reads the Redis stream: set PROMPTREC_REDIS_URL (without Redis "
            "the gateway runs the worker in-process)"
        )
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)
    # One process per device, and the model is loaded here, in the process that uses it:
    # nothing forks after CUDA is initialised.
    lm = RecLM.load(settings.model_path, settings.device)
    asyncio.run(run_worker(settings, lm, args.consumer or default_consumer()))
    return 0


def _demo(args: argparse.Namespace) -> int:
    import asyncio
    from dataclasses import asdict

    import httpx

    from promptrec.cli.demo import cold_users, replay, summary, table

    try:
        httpx.get(f"{args.url}/health/live", timeout=5).raise_for_status()
    except httpx.HTTPError as error:
        raise ValueError(
            f"no PromptRec service at {args.url} ({error}); start one with `make run`"
        ) from error
    users = cold_users(args.data, args.users, args.seed)
    print(f"replaying {len(users)} cold users of {args.data} against {args.url} ...")
    results = asyncio.run(
        replay(args.url, users, args.timeout, args.concurrency, api_key=args.api_key)
    )
    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        body = {"summary": summary(results), "users": [asdict(r) for r in results]}
        args.out.write_text(json.dumps(body, indent=1))
    return 0 if all(r.error is None for r in results) else 1
