"""Non-LM baselines the recommendation LM is judged against; all implement `ItemScorer`."""

from promptrec.models.baselines.markov import MarkovConfig, MarkovScorer
from promptrec.models.baselines.popularity import PopularityScorer
from promptrec.models.baselines.sasrec import SASRecConfig, SASRecScorer
from promptrec.models.baselines.scorer import ItemScorer

__all__ = [
    "ItemScorer",
    "MarkovConfig",
    "MarkovScorer",
    "PopularityScorer",
    "SASRecConfig",
    "SASRecScorer",
]
