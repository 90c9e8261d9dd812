"""PAP-REC state and the prompt set file (tokens, per-user outcomes, model fingerprint)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from promptrec.models.prompts.files import write_json
from promptrec.models.prompts.names import StrategyName
from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.rendering import UserPrompt

FORMAT = "promptrec.prompt-set/1"


def config_from_json(config: dict) -> PaprecConfig:
    """The config as `PromptSet.save` wrote it (JSON lists back to tuples)."""
    config = dict(config)
    for key in ("personal_candidates", "personal_metrics"):
        # A file from before these settings was searched with the task's for both.
        config.setdefault(key, None)
    for key in ("metrics", "personal_metrics"):
        if config[key] is not None:
            config[key] = tuple(config[key])
    return PaprecConfig(**config)


@dataclass
class UserOutcome:
    tokens: list[str]
    surrogate_before: float
    surrogate_after: float
    held_out_logp_before: float
    held_out_logp_after: float
    kept: bool


@dataclass
class PaprecState:
    task_tokens: list[str]
    personal: dict[str, list[str]] = field(default_factory=dict)
    """Only users whose personal tokens beat the task-level prompt on held-out interactions."""
    outcomes: dict[str, UserOutcome] = field(default_factory=dict)
    task_history: list[dict] = field(default_factory=list)
    """One entry per task round: position, whether it accepted, tokens, surrogate."""
    task_complete: bool = False

    def apply(self, outcomes: dict[str, UserOutcome]) -> None:
        """Record an incremental search: only the users in `outcomes` change."""
        for user, outcome in outcomes.items():
            self.outcomes[user] = outcome
            if outcome.kept:
                self.personal[user] = list(outcome.tokens)
            else:
                self.personal.pop(user, None)

    def prompt_for(self, user: str) -> UserPrompt:
        return UserPrompt(tuple(self.task_tokens), tuple(self.personal.get(user, ())))


@dataclass
class PromptSet:
    task: str
    config: PaprecConfig
    state: PaprecState
    model_fingerprint: str
    created_at: float = field(default_factory=time.time)

    def save(self, path: Path) -> None:
        body = {
            "format": FORMAT,
            "strategy": StrategyName.PAPREC.value,
            "task": self.task,
            "model_fingerprint": self.model_fingerprint,
            "created_at": self.created_at,
            "config": asdict(self.config),
            "task_tokens": self.state.task_tokens,
            "task_text": " ".join(self.state.task_tokens),
            "task_history": self.state.task_history,
            "task_complete": self.state.task_complete,
            "users": {
                user: {**asdict(o), "text": " ".join(o.tokens)}
                for user, o in sorted(self.state.outcomes.items())
            },
        }
        write_json(path, body)

    @classmethod
    def load(cls, path: Path) -> PromptSet:
        body = json.loads(Path(path).read_text())
        if body.get("format") != FORMAT:
            raise ValueError(f"{path} is not a prompt set file ({FORMAT})")
        outcomes = {
            user: UserOutcome(**{k: v for k, v in o.items() if k != "text"})
            for user, o in body["users"].items()
        }
        state = PaprecState(
            task_tokens=list(body["task_tokens"]),
            personal={u: o.tokens for u, o in outcomes.items() if o.kept},
            outcomes=outcomes,
            task_history=body.get("task_history", []),
            task_complete=body.get("task_complete", False),
        )
        return cls(
            body["task"],
            config_from_json(body["config"]),
            state,
            body["model_fingerprint"],
            body["created_at"],
        )
