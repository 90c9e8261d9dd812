"""A trained RLM together with what its prompts are made of on a dataset: the item catalogue
and the users' profile words."""

from __future__ import annotations

from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.splits import Splits
from promptrec.models.rlm.model import RecLM
from promptrec.models.user_context import ItemCatalog, user_profiles


def load_context(
    model_dir, data: InteractionData, splits: Splits
) -> tuple[RecLM, ItemCatalog, list[list[str]]]:
    lm = RecLM.load(model_dir)
    if lm.item_ids != splits.item_ids:
        raise ValueError(
            f"{model_dir} was trained on another item numbering than this dataset and seed; "
            "evaluate it on the data it was trained on"
        )
    return lm, ItemCatalog.build(data.items, splits), user_profiles(data.users, splits)
