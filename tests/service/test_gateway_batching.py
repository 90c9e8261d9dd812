"""The micro-batcher on its own: batches form, the queue is bounded, deadlines hold."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from promptrec.service.batching import DeadlineExceeded, MicroBatcher, Overloaded


def _run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_share_one_model_call():
    calls: list[int] = []

    def compute(requests):
        calls.append(len(requests))
        return [r * 2 for r in requests]

    async def scenario():
        batcher = MicroBatcher(compute, max_batch_size=8, max_wait_ms=50)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(n, 5.0) for n in range(20)))
        finally:
            await batcher.stop()

    assert _run(scenario()) == [n * 2 for n in range(20)]
    assert calls == [8, 8, 4]


def test_a_full_queue_refuses_at_once():
    release = threading.Event()

    def compute(requests):
        release.wait(5)
        return requests

    async def scenario():
        batcher = MicroBatcher(compute, max_batch_size=1, max_wait_ms=0, queue_limit=2)
        await batcher.start()
        try:
            first = asyncio.create_task(batcher.submit(0, 5.0))
            await asyncio.sleep(0.05)  # the first is being computed, the queue is empty
            queued = [asyncio.create_task(batcher.submit(n, 5.0)) for n in (1, 2)]
            await asyncio.sleep(0.01)
            with pytest.raises(Overloaded):
                await batcher.submit(3, 5.0)
            release.set()
            return await asyncio.gather(first, *queued)
        finally:
            release.set()
            await batcher.stop()

    assert _run(scenario()) == [0, 1, 2]


def test_a_request_past_its_deadline_fails_and_is_not_computed():
    computed: list[int] = []

    def compute(requests):
        computed.extend(requests)
        time.sleep(0.2)
        return requests

    async def scenario():
        batcher = MicroBatcher(compute, max_batch_size=1, max_wait_ms=0)
        await batcher.start()
        try:
            slow = asyncio.create_task(batcher.submit(1, 5.0))
            await asyncio.sleep(0.02)
            with pytest.raises(DeadlineExceeded):
                await batcher.submit(2, 0.05)
            return await slow
        finally:
            await batcher.stop()

    assert _run(scenario()) == 1
    assert computed == [1]


def test_a_failing_batch_fails_its_requests_and_the_loop_goes_on():
    def compute(requests):
        if 0 in requests:
            raise RuntimeError("boom")
        return requests

    async def scenario():
        batcher = MicroBatcher(compute, max_batch_size=1, max_wait_ms=0)
        await batcher.start()
        try:
            with pytest.raises(RuntimeError):
                await batcher.submit(0, 1.0)
            return await batcher.submit(7, 1.0)
        finally:
            await batcher.stop()

    assert _run(scenario()) == 7
