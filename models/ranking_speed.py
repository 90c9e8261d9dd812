"""How fast the RLM ranks: users per second in batches, and one user's latency."""

from __future__ import annotations

import time

import numpy as np
import torch

from promptrec.models.data.splits import Splits
from promptrec.models.evaluation import user_fields
from promptrec.models.ranking import encode_token_lists, rank_items, rows_per_call
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import TEMPLATES, render_tokens
from promptrec.models.user_context import ItemCatalog


def ranking_speed(
    lm: RecLM,
    splits: Splits,
    catalog: ItemCatalog,
    profiles: list[list[str]],
    template: str,
    batch_size: int | None = None,
    single_repeats: int = 200,
) -> dict:
    """Users ranked per second (prompt encoding included) in batches, and one user's latency."""
    batch_size = batch_size or rows_per_call(lm.device)
    users = range(len(splits.users))
    fields = user_fields(splits, catalog, profiles, users, "test")
    tpl = TEMPLATES[template]
    exclude = [f.history for f in fields]

    def run(lo: int, hi: int) -> None:
        ids, mask = encode_token_lists(
            lm, [render_tokens(tpl, f, lm.max_history) for f in fields[lo:hi]]
        )
        rank_items(lm, ids, mask, exclude=exclude[lo:hi]).topk(10, dim=1)

    run(0, batch_size)  # warm-up
    passes = []  # one pass takes under a second: the median of a few damps a noisy machine
    for _ in range(5):
        _sync(lm)
        start = time.perf_counter()
        for lo in range(0, len(users), batch_size):
            run(lo, lo + batch_size)
        _sync(lm)
        passes.append(len(users) / (time.perf_counter() - start))
    batched = float(np.median(passes))
    latencies = []
    for r in range(single_repeats):
        u = r % len(users)
        t0 = time.perf_counter()
        run(u, u + 1)
        _sync(lm)
        latencies.append(time.perf_counter() - t0)
    return {
        "users_per_s_batched": round(batched, 1),
        "batched_passes_median_of": len(passes),
        "batch_size": batch_size,
        "single_user_ms": round(1000 * float(np.median(latencies)), 2),
        "single_user_p95_ms": round(1000 * float(np.quantile(latencies, 0.95)), 2),
        "device": str(lm.device),
        "threads": torch.get_num_threads(),
    }


def _sync(lm: RecLM) -> None:
    if lm.device.type == "cuda":
        torch.cuda.synchronize()
