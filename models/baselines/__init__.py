"""Non-LM baselines the recommendation LM is judged against; all implement `ItemScorer`."""

from models.baselines.markov import MarkovConfig, MarkovScorer
from models.baselines.popularity import PopularityScorer
from models.baselines.sasrec import SASRecConfig, SASRecScorer
from models.baselines.scorer import ItemScorer

__all__ = [
    "ItemScorer",
    "MarkovConfig",
    "MarkovScorer",
    "PopularityScorer",
    "SASRecConfig",
    "SASRecScorer",
]
