"""Prompt strategies by name: the one table a setting, the CLI or the worker looks one up in.

strategy = get_strategy("paprec")(lm, config)   # or "rpp", "soft"
"""

from __future__ import annotations

from promptrec.models.prompts.paprec.strategy import PaprecStrategy
from promptrec.models.prompts.protocol import StrategyFactory
from promptrec.models.prompts.rpp.strategy import RppStrategy
from promptrec.models.prompts.soft.strategy import SoftStrategy

_STRATEGIES: dict[str, StrategyFactory] = {}


def register(name: str, factory: StrategyFactory) -> None:
    """Make `factory` (usually the strategy's class) the strategy called `name`."""
    if _STRATEGIES.get(name, factory) is not factory:
        raise ValueError(f"a prompt strategy is already registered as {name!r}")
    _STRATEGIES[name] = factory


def get_strategy(name: str) -> StrategyFactory:
    """The factory of the strategy called `name`; call it with the RLM (and its config)."""
    try:
        return _STRATEGIES[name]
    except KeyError:
        known = ", ".join(strategy_names()) or "none"
        raise ValueError(f"unknown prompt strategy {name!r}; known: {known}") from None


def strategy_names() -> list[str]:
    return sorted(_STRATEGIES)


register(PaprecStrategy.name, PaprecStrategy)
register(RppStrategy.name, RppStrategy)
register(SoftStrategy.name, SoftStrategy)
