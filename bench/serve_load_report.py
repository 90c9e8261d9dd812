"""The report of `python -m bench.serve_load`: the table a person reads and the goals met."""

from __future__ import annotations

from bench.serve_load_generator import GAIN_CONCURRENCY


def table(rows: list[dict], batch1: dict, gain: float | None, overload: dict) -> str:
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


def goals(rows: list[dict], gain: float | None, overload: dict) -> dict:
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
