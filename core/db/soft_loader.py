"""Load a soft-prompt set file (`promptrec search --strategy soft` output) into the database:
each user's served vectors become a prompt version of strategy `soft` (the vectors, and their
state as the workers write it: `core.soft_versions`), by the rule PAP-REC sets follow
(`prompt_loader`): a new version only when the vectors differ from the user's current version,
never over a version searched after the file, users the database does not know skipped and
counted. The composer stays in its folder; the workers read it (`PROMPTREC_SOFT_COMPOSER_PATH`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from promptrec.core.db.prompt_loader import (
    PromptLoadReport,
    latest_locked,
    newer,
    next_user_version,
)
from promptrec.core.db.tables import User, UserPrompt
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
    added = unchanged = unknown = kept_newer = 0
    with Session(engine) as session, session.begin():
        known = set(session.scalars(select(User.user_id)))
        for user, outcome in sorted(prompt_set.state.outcomes.items()):
            if user not in known:
                unknown += 1
                continue
            latest = latest_locked(session, user, task, fingerprint)
            vectors = vectors_to_bytes(outcome.vectors)
            if latest is not None and newer(latest.searched_at, searched_at):
                kept_newer += 1
                continue
            if latest is not None and latest.strategy == STRATEGY and latest.vectors == vectors:
                unchanged += 1
                continue
            session.add(
                UserPrompt(
                    user_id=user,
                    task=task,
                    model_fingerprint=fingerprint,
                    version=next_user_version(session, user, task),
                    strategy=STRATEGY,
                    tokens=[],
                    state=soft_state(outcome, config, composer),
                    vectors=vectors,
                    metric_before=outcome.before,
                    metric_after=outcome.after if outcome.kept else outcome.before,
                    metrics={},
                    searched_at=searched_at,
                )
            )
            added += 1
    return PromptLoadReport(0, False, added, unchanged, unknown, kept_newer, strategy=STRATEGY)
