"""Soft-prompt state and its files: the composer (shared by every user of the task) and each
fitted user's outcome, whose vectors are what that user is served.

A user's served vectors: their stored ones (composed at their last search, plus the fitted
residual where it was kept), else the composition from their current history (no search yet),
else none, the plain prompt (no composer yet).

Files: a soft set file like PAP-REC's prompt set (model fingerprint, config, per-user vectors as
base64 of little-endian float32 [k, d], top pool components and fit metrics) and, next to it,
the composer's folder (`composer.safetensors` and `composer.json`). The same bytes are what the
service stores per user (`vectors_to_bytes`).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from promptrec.models.prompts.files import write_json
from promptrec.models.prompts.names import StrategyName
from promptrec.models.prompts.soft.composer import SoftComposer
from promptrec.models.prompts.soft.config import SoftConfig
from promptrec.models.prompts.soft.fitting import FitOutcome

FORMAT = "promptrec.soft-set/1"
VECTOR_DTYPE = np.dtype("<f4")


def vectors_to_bytes(vectors: np.ndarray) -> bytes:
    return np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE).tobytes()


def vectors_from_bytes(data: bytes, n_vectors: int) -> np.ndarray:
    """[k, d] float32 from `vectors_to_bytes`; raises on a size that is not k rows."""
    flat = np.frombuffer(data, dtype=VECTOR_DTYPE)
    if n_vectors < 1 or flat.size == 0 or flat.size % n_vectors:
        raise ValueError(f"{len(data)} bytes are not {n_vectors} float32 vectors")
    return flat.reshape(n_vectors, -1).astype(np.float32)


@dataclass
class SoftState:
    composer: SoftComposer | None = None
    training: dict = field(default_factory=dict)
    """The composer's tuning log (`TuningLog.as_dict`)."""
    outcomes: dict[str, FitOutcome] = field(default_factory=dict)

    def apply(self, outcomes: dict[str, FitOutcome]) -> None:
        """Record an incremental search: only the users in `outcomes` change."""
        self.outcomes.update(outcomes)

    def copy(self) -> SoftState:
        """A copy whose outcomes may change independently (the composer is shared, never
        changed once tuned)."""
        return SoftState(self.composer, dict(self.training), dict(self.outcomes))


def _outcome_json(o: FitOutcome) -> dict:
    body = asdict(o)
    body["vectors"] = base64.b64encode(vectors_to_bytes(o.vectors)).decode()
    return body


def _outcome_from_json(body: dict, n_vectors: int) -> FitOutcome:
    vectors = vectors_from_bytes(base64.b64decode(body["vectors"]), n_vectors)
    components = [(int(i), float(w)) for i, w in body["components"]]
    return FitOutcome(**{**body, "vectors": vectors, "components": components})


@dataclass
class SoftPromptSet:
    task: str
    config: SoftConfig
    state: SoftState
    model_fingerprint: str
    composer_dir: Path | None = None
    """Where the composer is saved; relative paths are read from the set file's folder."""
    created_at: float = field(default_factory=time.time)

    def save(self, path: Path) -> None:
        composer_dir = self.composer_dir or default_composer_dir(path)
        if self.state.composer is not None:
            target = composer_dir if composer_dir.is_absolute() else path.parent / composer_dir
            self.state.composer.save(
                target, self.model_fingerprint, self.config, self.state.training
            )
        body = {
            "format": FORMAT,
            "strategy": StrategyName.SOFT.value,
            "task": self.task,
            "model_fingerprint": self.model_fingerprint,
            "created_at": self.created_at,
            "config": asdict(self.config),
            "composer": str(composer_dir) if self.state.composer is not None else None,
            "training": self.state.training,
            "users_fitted": sum(o.kept for o in self.state.outcomes.values()),
            "users": {u: _outcome_json(o) for u, o in sorted(self.state.outcomes.items())},
        }
        write_json(path, body)

    @classmethod
    def load(cls, path: Path) -> SoftPromptSet:
        path = Path(path)
        body = json.loads(path.read_text())
        if body.get("format") != FORMAT:
            raise ValueError(f"{path} is not a soft-prompt set file ({FORMAT})")
        config = SoftConfig(**body["config"])
        composer, composer_dir = None, None
        if body.get("composer"):
            composer_dir = Path(body["composer"])
            composer, meta = SoftComposer.load(
                composer_dir if composer_dir.is_absolute() else path.parent / composer_dir
            )
            if meta.get("model_fingerprint") != body["model_fingerprint"]:
                raise ValueError(f"{path}: its composer was tuned on another model")
        outcomes = {u: _outcome_from_json(o, config.n_vectors) for u, o in body["users"].items()}
        state = SoftState(composer, body.get("training", {}), outcomes)
        return cls(
            body["task"], config, state, body["model_fingerprint"], composer_dir, body["created_at"]
        )


def default_composer_dir(path: Path) -> Path:
    """The composer's folder next to a set file: `soft.json` -> `soft-composer/` (relative)."""
    return Path(f"{path.stem}-composer")
