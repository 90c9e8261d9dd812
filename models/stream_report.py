"""The cold-stream part of the quality report (DESIGN §2): every method on every prediction of
the cold users, the RLM against each baseline with user-level paired CIs, and whether the RLM
reads its words where they should matter most, at the shortest histories."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from promptrec.models.baselines.scorer import ItemScorer
from promptrec.models.cold_stream import (
    BUCKETS,
    METRICS,
    ColdStream,
    StreamResult,
    cold_stream,
    compare,
    evaluate_stream,
    item_scorer_fn,
)
from promptrec.models.data.splits import Splits
from promptrec.models.evaluation import rlm_stream_scorer
from promptrec.models.rlm.model import RecLM
from promptrec.models.user_context import ItemCatalog

SHORT_HISTORY = 5  # the "1-5" bucket: prompts with this many items at most


def stream_results(
    lm: RecLM,
    splits: Splits,
    catalog: ItemCatalog,
    profiles: list[list[str]],
    template: str,
    baselines: Sequence[ItemScorer],
    method: str,
    progress: bool = True,
) -> list[StreamResult]:
    """The RLM (first) and each baseline scored on the same cold stream."""
    stream = cold_stream(splits)
    rlm = rlm_stream_scorer(lm, splits, catalog, profiles, template)
    results = [evaluate_stream(stream, rlm, method=method, progress=progress)]
    for scorer in baselines:
        fn = item_scorer_fn(scorer)
        results.append(evaluate_stream(stream, fn, method=scorer.name, progress=progress))
    return results


def stream_section(results: Sequence[StreamResult]) -> dict:
    """JSON rows of every method, and the first (the RLM) minus each other one."""
    first, others = results[0], results[1:]
    return {
        "rows": [r.summary() for r in results],
        "vs": [{"method": first.method, **compare(first, o).as_dict()} for o in others],
    }


def stream_table(rows: Sequence[dict], name: str = "NDCG@10") -> str:
    """Overall metrics and `name` per history length, one line per method's summary row."""
    head = f"{'method':<16}{'users':>6}{'preds':>7}" + "".join(f"{m:>9}" for m in METRICS)
    head += "".join(f"{b:>9}" for b, _, _ in BUCKETS)
    lines = [f"cold stream (per history length: {name})", head, "-" * len(head)]
    for r in rows:
        buckets = r["by_history_len"]
        lines.append(
            f"{r['method']:<16}{r['n_users']:>6}{r['n_predictions']:>7}"
            + "".join(f"{r['metrics'][m]:>9.4f}" for m in METRICS)
            + "".join(f"{buckets[b]['metrics'][name] or 0:>9.4f}" for b, _, _ in BUCKETS)
        )
    return "\n".join(lines)


def short_prefixes(stream: ColdStream, longest: int = SHORT_HISTORY) -> ColdStream:
    """The predictions made from at most `longest` items."""
    keep = stream.prefix_len <= longest
    return replace(
        stream,
        owner=stream.owner[keep],
        pos=stream.pos[keep],
        prefix_len=stream.prefix_len[keep],
        target=stream.target[keep],
    )
