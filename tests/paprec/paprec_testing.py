"""What the PAP-REC tests share: a small search config and ways to watch a search work."""

from __future__ import annotations

import numpy as np

from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.scoring import PromptScorer
from promptrec.models.prompts.paprec.search import PaprecSearch

CONFIG = PaprecConfig(task_tokens=3, personal_tokens=2, candidates=4, max_cycles=1, batch_size=64)


def counting_passes(scorer: PromptScorer) -> list[int]:
    """Rows of every scoring pass `scorer` makes from now on, in order."""
    passes: list[int] = []
    original = scorer.example_scores
    scorer.example_scores = lambda b, t, *m: passes.append(len(b.base)) or original(b, t, *m)
    return passes


def trying_everyone(search: PaprecSearch) -> PaprecSearch:
    """`search` with every user in every personal round, as the searches did before."""
    search.untried_personal_round = lambda batch, task, personal, slot, best, tried: (
        search.personal_round(batch, task, personal, slot, best)
    )
    return search


def recording_rounds(search: PaprecSearch) -> list[tuple[set[int], np.ndarray]]:
    """(users in the round, who moved) of every personal round `search` makes from now on."""
    rounds, original = [], search.personal_round

    def recorded(batch, *args):
        moved = original(batch, *args)
        rounds.append((set(batch.owner.tolist()), moved.copy()))
        return moved

    search.personal_round = recorded
    return rounds
