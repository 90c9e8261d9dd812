"""The quality report: RLM templates and baselines side by side, sensitivity, ranking speed."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.baselines import MarkovScorer, PopularityScorer, SASRecScorer
from models.baselines.scorer import ItemScorer
from models.data.splits import Splits
from models.evaluation import (
    full_ranking_metrics,
    rlm_scores,
    sampled_negatives,
    sampled_ranking_metrics,
    user_fields,
)
from models.metrics import bootstrap_ci, paired_bootstrap_ci, summarize
from models.prompts.paprec.state import PromptSet
from models.prompts.rendering import UserPrompt
from models.ranking import encode_token_lists, rank_items, rows_per_call
from models.rlm.model import RecLM
from models.templates import TEMPLATES, render_tokens, templates_for
from models.user_context import ItemCatalog, user_profiles

GROUPS = ("warm", "cold", "all")
SPLITS = ("valid", "test")
METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")


@dataclass
class MethodScores:
    """Per-user metrics of one method: {(split, protocol): {metric: array over all users}}."""

    method: str
    per_user: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)


def fit_baselines(splits: Splits, progress: bool = True) -> list[ItemScorer]:
    """Baselines see exactly what the RLM saw: the warm users' training sequences."""
    warm = splits.user_indices("warm")
    train = [splits.train[u] for u in warm]
    valid = ([splits.train[u] for u in warm], [splits.valid[u] for u in warm])
    return [
        PopularityScorer().fit(train, splits.n_items),
        MarkovScorer().fit(train, splits.n_items),
        SASRecScorer(progress=progress).fit(train, splits.n_items, valid=valid),
    ]


def score_method(method: str, scores_for_split, splits: Splits) -> MethodScores:
    users = np.arange(len(splits.users))
    out = MethodScores(method)
    for split in SPLITS:
        scores = scores_for_split(split)
        out.per_user[(split, "full")] = full_ranking_metrics(scores, splits, users, split)
        negatives = sampled_negatives(splits, users, split)
        out.per_user[(split, "sampled")] = sampled_ranking_metrics(scores, negatives)
    return out


def score_baseline(scorer: ItemScorer, splits: Splits) -> MethodScores:
    users = np.arange(len(splits.users))
    return score_method(
        scorer.name, lambda split: scorer.score([splits.history(u, split) for u in users]), splits
    )


def score_rlm_template(
    lm: RecLM, splits: Splits, catalog: ItemCatalog, profiles: list[list[str]], template: str
) -> MethodScores:
    users = np.arange(len(splits.users))

    def scores(split: str) -> np.ndarray:
        return rlm_scores(lm, user_fields(splits, catalog, profiles, users, split), template)

    return score_method(f"rlm:{template}", scores, splits)


def best_by_validation(methods: Sequence[MethodScores], prefix: str = "") -> MethodScores:
    """Chosen on validation NDCG@10 over all users; test is never used to choose."""
    pool = [m for m in methods if m.method.startswith(prefix)]
    return max(pool, key=lambda m: m.per_user[("valid", "full")]["NDCG@10"].mean())


def report_rows(
    methods: Sequence[MethodScores], splits: Splits, compare: dict[str, str] | None = None
) -> list[dict]:
    """One row per method x split x protocol x user group; `compare[method] = reference` adds
    the paired-bootstrap CI of the NDCG@10 difference method - reference on the same users."""
    compare = compare or {}
    by_name = {m.method: m for m in methods}
    rows = []
    for m in methods:
        for (split, protocol), per_user in m.per_user.items():
            for group in GROUPS:
                idx = splits.user_indices(group)
                sub = {k: v[idx] for k, v in per_user.items()}
                row = {
                    "method": m.method,
                    "users": group,
                    "split": split,
                    "protocol": protocol,
                    "n": len(idx),
                    **{k: round(v, 5) for k, v in summarize(sub).items()},
                }
                row["ci95_NDCG@10"] = [round(x, 5) for x in bootstrap_ci(sub["NDCG@10"])]
                if m.method in compare:
                    reference = compare[m.method]
                    base = by_name[reference].per_user[(split, protocol)]["NDCG@10"][idx]
                    diff_ci = paired_bootstrap_ci(sub["NDCG@10"], base)
                    diff = float((sub["NDCG@10"] - base).mean())
                    row["vs"] = {
                        "reference": reference,
                        "diff_NDCG@10": round(diff, 5),
                        "relative": round(diff / base.mean(), 4) if base.mean() else None,
                        "ci95_diff_NDCG@10": [round(x, 5) for x in diff_ci],
                    }
                rows.append(row)
    return rows


def sensitivity(
    lm: RecLM,
    splits: Splits,
    catalog: ItemCatalog,
    profiles: list[list[str]],
    template: str,
    split: str = "test",
    seed: int = 0,
    shuffles: int = 5,
) -> dict:
    """NDCG@10 with each user's own profile/taste words vs the words of other (random) users.

    A user's shuffled figure is their mean over `shuffles` seeded permutations: one permutation
    adds the luck of who got whose words to the comparison; the CI is then over users.
    """
    users = np.arange(len(splits.users))
    rng = np.random.default_rng(seed)

    def ndcg(fields) -> np.ndarray:
        return full_ranking_metrics(rlm_scores(lm, fields, template), splits, users, split)[
            "NDCG@10"
        ]

    true = ndcg(user_fields(splits, catalog, profiles, users, split))
    each = [
        ndcg(
            user_fields(splits, catalog, profiles, users, split, words_from=rng.permutation(users))
        )
        for _ in range(shuffles)
    ]
    shuffled = np.mean(each, axis=0)
    none = ndcg(user_fields(splits, catalog, profiles, users, split, with_words=False))
    lo, hi = paired_bootstrap_ci(true, shuffled)
    return {
        "template": template,
        "split": split,
        "users": "all",
        "n": len(users),
        "shuffles": shuffles,
        "true_words_NDCG@10": round(float(true.mean()), 5),
        "shuffled_words_NDCG@10": round(float(shuffled.mean()), 5),
        "shuffled_words_NDCG@10_each": [round(float(x.mean()), 5) for x in each],
        "no_words_NDCG@10": round(float(none.mean()), 5),
        "diff": round(float((true - shuffled).mean()), 5),
        "ci95_diff": [round(lo, 5), round(hi, 5)],
    }


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
    users = np.arange(len(splits.users))
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


def format_table(rows: list[dict], protocol: str = "full") -> str:
    head = f"{'method':<16}{'users':<6}{'split':<6}" + "".join(f"{m:>9}" for m in METRICS)
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["protocol"] != protocol:
            continue
        lines.append(
            f"{r['method']:<16}{r['users']:<6}{r['split']:<6}"
            + "".join(f"{r[m]:>9.4f}" for m in METRICS)
        )
    return "\n".join(lines)


def sequential_templates() -> list[str]:
    return [t.name for t in templates_for("sequential")]


def load_context(model_dir, data, splits) -> tuple[RecLM, ItemCatalog, list[list[str]]]:
    lm = RecLM.load(model_dir)
    if lm.item_ids != splits.item_ids:
        raise ValueError(
            f"{model_dir} was trained on another item numbering than this dataset and seed; "
            "evaluate it on the data it was trained on"
        )
    return lm, ItemCatalog.build(data.items, splits), user_profiles(data.users, splits)


@dataclass(frozen=True)
class QualityOptions:
    baselines: bool = True
    sensitivity: bool = True
    speed: bool = True
    progress: bool = True
    prompts: Path | None = None
    """A PAP-REC prompt set file to score as "auto" and "auto+personal"."""


@dataclass
class QualityReport:
    rows: list[dict]
    extra: dict

    def table(self) -> str:
        parts = [
            "Full ranking (seen items excluded):",
            format_table(self.rows, "full"),
            "",
            "1 positive + 99 sampled negatives:",
            format_table(self.rows, "sampled"),
        ]
        for row in self.rows:
            if "vs" in row and row["split"] == "test" and row["protocol"] == "full":
                v = row["vs"]
                parts.append(
                    f"{row['method']} - {v['reference']} test NDCG@10 ({row['users']}): "
                    f"{v['diff_NDCG@10']:+.4f}, 95% CI {v['ci95_diff_NDCG@10']}"
                )
        if "sensitivity" in self.extra:
            s = self.extra["sensitivity"]
            parts.append(
                f"words: true {s['true_words_NDCG@10']:.4f} vs shuffled "
                f"{s['shuffled_words_NDCG@10']:.4f} vs none {s['no_words_NDCG@10']:.4f}"
                f" NDCG@10; true - shuffled 95% CI {s['ci95_diff']}"
            )
        if "ranking" in self.extra:
            r = self.extra["ranking"]
            parts.append(
                f"ranking: {r['users_per_s_batched']} users/s batched, "
                f"{r['single_user_ms']} ms one user ({r['device']})"
            )
        return "\n".join(parts)

    def write(self, path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rows": self.rows, **self.extra}, indent=1) + "\n")


def quality_report(model_dir, data, splits: Splits, options: QualityOptions = QualityOptions()):
    lm, catalog, profiles = load_context(model_dir, data, splits)
    methods = [score_rlm_template(lm, splits, catalog, profiles, t) for t in sequential_templates()]
    best_rlm = best_by_validation(methods, "rlm:")
    compare, best_baseline = {}, None
    if options.baselines:
        baselines = [score_baseline(b, splits) for b in fit_baselines(splits, options.progress)]
        methods += baselines
        best_baseline = best_by_validation(baselines).method
        compare[best_rlm.method] = best_baseline
    if options.prompts:
        prompt_set = PromptSet.load(options.prompts)
        if prompt_set.model_fingerprint != lm.fingerprint():
            raise ValueError(
                f"{options.prompts} was searched on another model "
                f"({prompt_set.model_fingerprint}, this is {lm.fingerprint()})"
            )
        for personal in (False, True):
            methods.append(score_prompt_set(lm, splits, catalog, profiles, prompt_set, personal))
            compare[methods[-1].method] = best_rlm.method
    rows = report_rows(methods, splits, compare)
    template = best_rlm.method.split(":", 1)[1]
    extra: dict = {
        "best_template": template,
        "best_baseline": best_baseline,
        "model": str(model_dir),
        "train": _train_summary(lm),
    }
    if options.sensitivity:
        extra["sensitivity"] = sensitivity(lm, splits, catalog, profiles, template)
    if options.speed:
        extra["ranking"] = ranking_speed(lm, splits, catalog, profiles, template)
    return QualityReport(rows, extra)


def _train_summary(lm: RecLM) -> dict:
    result = lm.meta.get("train_result", {})
    return {
        "preset": lm.meta.get("model", {}).get("preset"),
        "seconds": result.get("total_seconds"),
        "best_epoch_seconds": result.get("seconds"),
        "device": result.get("device"),
        "best_epoch": result.get("epoch"),
        "valid_NDCG@10": result.get("valid_ndcg10"),
    }


def score_prompt_set(
    lm: RecLM,
    splits: Splits,
    catalog: ItemCatalog,
    profiles: list[list[str]],
    prompt_set: PromptSet,
    personal: bool,
) -> MethodScores:
    """Scores of a searched prompt set: task tokens only ("auto") or with personal tokens."""
    users = np.arange(len(splits.users))
    state = prompt_set.state
    prompts = [
        state.prompt_for(splits.users[u]) if personal else UserPrompt(tuple(state.task_tokens))
        for u in users
    ]

    def scores(split: str) -> np.ndarray:
        fields = user_fields(splits, catalog, profiles, users, split)
        return rlm_scores(lm, fields, prompt_set.config.template, prompts)

    return score_method("auto+personal" if personal else "auto", scores, splits)
