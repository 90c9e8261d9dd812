"""The quality report: RLM templates and baselines side by side, sensitivity, ranking speed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from promptrec.models.baselines import MarkovScorer, PopularityScorer, SASRecScorer
from promptrec.models.baselines.sasrec import sasrec_variants
from promptrec.models.baselines.scorer import ItemScorer
from promptrec.models.cold_stream import compare
from promptrec.models.data.splits import Splits
from promptrec.models.evaluation import (
    full_ranking_metrics,
    rlm_scores,
    sampled_negatives,
    sampled_ranking_metrics,
    user_fields,
)
from promptrec.models.metrics import bootstrap_ci, paired_bootstrap_ci, summarize
from promptrec.models.model_context import load_context
from promptrec.models.prompts.paprec.state import PromptSet
from promptrec.models.prompts.rendering import UserPrompt
from promptrec.models.ranking_speed import ranking_speed
from promptrec.models.rlm.model import RecLM
from promptrec.models.sensitivity import sensitivity, short_history_sensitivity
from promptrec.models.stream_report import stream_results, stream_section, stream_table
from promptrec.models.templates import templates_for
from promptrec.models.user_context import ItemCatalog

GROUPS = ("warm", "cold", "all")
SPLITS = ("valid", "test")
METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")


@dataclass
class MethodScores:
    """Per-user metrics of one method: {(split, protocol): {metric: array over all users}}."""

    method: str
    per_user: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)


def fit_baselines(splits: Splits, progress: bool = True) -> list[ItemScorer]:
    """Baselines see exactly what the RLM saw: the warm users' training sequences. SASRec in
    each of its variants (its paper's 50 items, the RLM's 200, the validation-tuned one)."""
    warm = splits.user_indices("warm")
    train = [splits.train[u] for u in warm]
    valid = ([splits.train[u] for u in warm], [splits.valid[u] for u in warm])
    return [
        PopularityScorer().fit(train, splits.n_items),
        MarkovScorer().fit(train, splits.n_items),
        *(
            SASRecScorer(config, progress=progress, name=name).fit(
                train, splits.n_items, valid=valid
            )
            for name, config in sasrec_variants().items()
        ),
    ]


def score_method(method: str, scores_for_split, splits: Splits) -> MethodScores:
    users = range(len(splits.users))
    out = MethodScores(method)
    for split in SPLITS:
        scores = scores_for_split(split)
        out.per_user[(split, "full")] = full_ranking_metrics(scores, splits, users, split)
        negatives = sampled_negatives(splits, users, split)
        out.per_user[(split, "sampled")] = sampled_ranking_metrics(scores, negatives)
    return out


def score_baseline(scorer: ItemScorer, splits: Splits) -> MethodScores:
    users = range(len(splits.users))
    return score_method(
        scorer.name, lambda split: scorer.score([splits.history(u, split) for u in users]), splits
    )


def score_rlm_template(
    lm: RecLM, splits: Splits, catalog: ItemCatalog, profiles: list[list[str]], template: str
) -> MethodScores:
    users = range(len(splits.users))

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


@dataclass(frozen=True)
class QualityOptions:
    baselines: bool = True
    sensitivity: bool = True
    speed: bool = True
    progress: bool = True
    prompts: Path | None = None
    """A PAP-REC prompt set file to score as "auto" and "auto+personal"."""
    cold_stream: bool = True
    """Every method on every prediction of the cold users (`models.cold_stream`)."""
    seed_models: tuple[Path, ...] = ()
    """The same recipe trained with other seeds: their spread is reported beside the model."""


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
        for v in self.extra.get("test_vs_baselines", []):
            parts.append(
                f"{v['method']} - {v['reference']} test NDCG@10 ({v['users']}): "
                f"{v['diff_NDCG@10']:+.4f} (x{v['ratio']}), 95% CI {v['ci95_diff_NDCG@10']}"
            )
        if "cold_stream" in self.extra:
            stream = self.extra["cold_stream"]
            parts += ["", stream_table(stream["rows"])]
            parts += [
                f"{v['method']} - {v['reference']} cold stream NDCG@10: "
                f"{v['diff_NDCG@10']:+.4f}, 95% CI {v['ci95_diff_NDCG@10']}"
                for v in stream["vs"]
            ]
        for key, where in (("sensitivity", "test"), ("cold_stream_sensitivity", "stream 1-5")):
            if key in self.extra:
                s = self.extra[key]
                parts.append(
                    f"words ({where}): true {s['true_words_NDCG@10']:.4f} vs shuffled "
                    f"{s['shuffled_words_NDCG@10']:.4f} vs none {s['no_words_NDCG@10']:.4f}"
                    f" NDCG@10; true - shuffled 95% CI {s['ci95_diff']}"
                )
        if "seeds" in self.extra:
            for key, spread in self.extra["seeds"]["summary"].items():
                parts.append(
                    f"seeds, {key} NDCG@10: mean {spread['mean']:.4f}, "
                    f"range [{spread['min']:.4f}, {spread['max']:.4f}]"
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
    template = best_rlm.method.split(":", 1)[1]
    compare, best_baseline, scorers = {}, None, []
    if options.baselines:
        scorers = fit_baselines(splits, options.progress)
        baselines = [score_baseline(b, splits) for b in scorers]
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
    extra: dict = {
        "best_template": template,
        "best_baseline": best_baseline,
        "model": str(model_dir),
        "train": _train_summary(lm),
        "test_vs_baselines": versus(best_rlm, methods, splits, [s.name for s in scorers]),
    }
    if options.cold_stream:
        results = stream_results(
            lm, splits, catalog, profiles, template, scorers, best_rlm.method, options.progress
        )
        extra["cold_stream"] = stream_section(results)
    if options.sensitivity:
        extra["sensitivity"] = sensitivity(lm, splits, catalog, profiles, template)
        extra["cold_stream_sensitivity"] = short_history_sensitivity(
            lm, splits, catalog, profiles, template
        )
    if options.seed_models:
        extra["seeds"] = seed_spread(
            [model_dir, *options.seed_models],
            data,
            splits,
            template,
            results if options.cold_stream else None,
        )
    if options.speed:
        extra["ranking"] = ranking_speed(lm, splits, catalog, profiles, template)
    return QualityReport(rows, extra)


def versus(
    rlm: MethodScores, methods: Sequence[MethodScores], splits: Splits, references: Sequence[str]
) -> list[dict]:
    """Test NDCG@10 (full ranking) of the RLM minus each baseline, per user group, paired CI."""
    by_name = {m.method: m for m in methods}
    out = []
    for reference in references:
        ours = rlm.per_user[("test", "full")]["NDCG@10"]
        theirs = by_name[reference].per_user[("test", "full")]["NDCG@10"]
        for group in GROUPS:
            idx = splits.user_indices(group)
            diff = ours[idx] - theirs[idx]
            out.append(
                {
                    "method": rlm.method,
                    "reference": reference,
                    "users": group,
                    "diff_NDCG@10": round(float(diff.mean()), 5),
                    "ratio": round(float(ours[idx].mean() / theirs[idx].mean()), 4)
                    if theirs[idx].mean()
                    else None,
                    "ci95_diff_NDCG@10": [
                        round(x, 5) for x in paired_bootstrap_ci(ours[idx], theirs[idx])
                    ],
                }
            )
    return out


def seed_spread(model_dirs, data, splits: Splits, template: str, baselines=None) -> dict:
    """The same recipe trained with other seeds: test NDCG@10 per user group (and on the cold
    stream, minus each baseline there), each seed's figure, their mean and range."""
    per_seed = []
    for directory in model_dirs:
        lm, catalog, profiles = load_context(directory, data, splits)
        scores = score_rlm_template(lm, splits, catalog, profiles, template)
        test = scores.per_user[("test", "full")]["NDCG@10"]
        row = {
            "model": str(directory),
            "seed": lm.meta.get("train", {}).get("seed"),
            **{g: round(float(test[splits.user_indices(g)].mean()), 5) for g in GROUPS},
        }
        if baselines:
            stream = stream_results(lm, splits, catalog, profiles, template, [], "rlm", False)[0]
            row["cold_stream"] = round(stream.metrics()["NDCG@10"], 5)
            row["cold_stream_vs"] = {
                b.method: [round(x, 5) for x in compare(stream, b).ci95] for b in baselines[1:]
            }
        per_seed.append(row)
    summary = {
        key: {
            "mean": round(float(np.mean([r[key] for r in per_seed])), 5),
            "min": min(r[key] for r in per_seed),
            "max": max(r[key] for r in per_seed),
        }
        for key in (*GROUPS, *(("cold_stream",) if baselines else ()))
    }
    return {"template": template, "per_seed": per_seed, "summary": summary}


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
    users = range(len(splits.users))
    state = prompt_set.state
    prompts = [
        state.prompt_for(splits.users[u]) if personal else UserPrompt(tuple(state.task_tokens))
        for u in users
    ]

    def scores(split: str) -> np.ndarray:
        fields = user_fields(splits, catalog, profiles, users, split)
        return rlm_scores(lm, fields, prompt_set.config.template, prompts)

    return score_method("auto+personal" if personal else "auto", scores, splits)
