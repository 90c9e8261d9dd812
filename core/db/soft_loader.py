"""Load a soft-prompt set file (`promptrec search --strategy soft` output) into the database:
each user's served vectors become a prompt version of strategy `soft` (the vectors, and their
state as the workers write it: `core.soft_versions`), by the rule PAP-REC sets follow
(`prompt_loader`): a new version only when the vectors differ from the user's current version,
never over a version searched after the file, users the database does not know skipped and
counted. The composer stays in its folder; the workers read it (`PROMPTREC_SOFT_COMPOSER_PATH`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from promptrec.core.db.prompt_loader import PromptLoadReport, add_user_versions
from promptrec.core.soft_composer import weights_fingerprint
from promptrec.core.soft_versions import soft_state
from promptrec.models.prompts.names import StrategyName
from promptrec.models.prompts.soft.state import SoftPromptSet, vectors_to_bytes

STRATEGY = StrategyName.SOFT


def load_soft_set(engine: Engine, path: Path) -> PromptLoadReport:
    prompt_set = SoftPromptSet.load(path)  # checks its composer was tuned on the file's model
    if prompt_set.composer_dir is None:
        raise ValueError(f"{path} has no composer: no user was fitted with it")
    # A relative composer folder is read from the set file's folder (`SoftPromptSet`).
    composer = weights_fingerprint(Path(path).parent / prompt_set.composer_dir)
    task, fingerprint, config = prompt_set.task, prompt_set.model_fingerprint, prompt_set.config
    searched_at = datetime.fromtimestamp(prompt_set.created_at, UTC)
    versions: Iterator[tuple[str, dict[str, Any]]] = (
        (
            user,
            {
                "strategy": STRATEGY,
                "tokens": [],
                "state": soft_state(outcome, config, composer),
                "vectors": vectors_to_bytes(outcome.vectors),
                "metric_before": outcome.before,
                "metric_after": outcome.after if outcome.kept else outcome.before,
                "metrics": {},
            },
        )
        for user, outcome in sorted(prompt_set.state.outcomes.items())
    )
    with Session(engine) as session, session.begin():
        counts = add_user_versions(session, task, fingerprint, searched_at, versions, "vectors")
    return PromptLoadReport.of(counts, strategy=STRATEGY)
