"""The soft-prompt composer the workers fit users with (`PROMPTREC_SOFT_COMPOSER_PATH`), loaded
once beside the model by the gateway and by every worker process.

A composer is only usable on the model it was tuned on (its `model_fingerprint`); one tuned on
another model, or none at all, is reported as a sentence a person can act on, never as a stack
trace. Serving needs no composer (a soft version carries its own vectors), so only the workers'
searches, and the admin jobs that ask for them, depend on it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from promptrec.core.settings import Settings
from promptrec.models.prompts.names import StrategyName
from promptrec.models.prompts.soft.composer import WEIGHTS_FILE, SoftComposer
from promptrec.models.prompts.soft.config import SoftConfig
from promptrec.models.rlm.model import RecLM

log = logging.getLogger("promptrec.soft")


class ComposerUnavailable(ValueError):
    """No composer can be used; the message says why and what to do."""


@dataclass(frozen=True)
class LoadedComposer:
    composer: SoftComposer
    config: SoftConfig
    """The settings it was tuned with, which every fit with it uses."""
    fingerprint: str
    """Of its weights file: stored with every version it composed."""


def weights_fingerprint(directory: Path) -> str:
    """Identifies a composer's weights (what a version records it was composed with)."""
    return hashlib.sha256((Path(directory) / WEIGHTS_FILE).read_bytes()).hexdigest()[:16]


def load_composer(path: Path, lm: RecLM, model_fingerprint: str) -> LoadedComposer:
    try:
        composer, meta = SoftComposer.load(path, lm.device)
        config = SoftConfig(**meta["config"])
        fingerprint = weights_fingerprint(path)
    except FileNotFoundError as error:
        raise ComposerUnavailable(
            f"{error} (or point PROMPTREC_SOFT_COMPOSER_PATH at a composer folder)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise ComposerUnavailable(
            f"the soft-prompt composer in {path} cannot be read ({type(error).__name__}: "
            f"{error}); make it again with `promptrec search --strategy soft`"
        ) from None
    tuned_on = meta.get("model_fingerprint")
    if tuned_on != model_fingerprint:
        raise ComposerUnavailable(
            f"the soft-prompt composer in {path} was tuned on model {tuned_on}, but the served "
            f"model is {model_fingerprint}: tune one for this model with `promptrec search "
            "--strategy soft`, or point PROMPTREC_SOFT_COMPOSER_PATH at the composer of this model"
        )
    return LoadedComposer(composer, config, fingerprint)


def configured_composer(
    settings: Settings, lm: RecLM, model_fingerprint: str
) -> tuple[LoadedComposer | None, str | None]:
    """(the composer, None), or (None, why there is none). A missing composer is only worth a
    word when the soft strategy is the active one: elsewhere it is optional."""
    try:
        return load_composer(settings.soft_composer_path, lm, model_fingerprint), None
    except ComposerUnavailable as error:
        if settings.strategy == StrategyName.SOFT:
            log.error("no soft-prompt composer", extra={"problem": str(error)})
        elif Path(settings.soft_composer_path).exists():
            log.warning("soft-prompt composer not used", extra={"problem": str(error)})
        return None, str(error)
