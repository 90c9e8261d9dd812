"""RPP state and its files: the policy (shared by every user of the task) and each searched
user's outcome, whose refined choice is kept only when it beat the policy's.

A user's served choice: their kept refined choice, else the policy's choice from their current
history (computed when the prompt is built), else the plain served prompt (no policy yet).

Files: a choices file like PAP-REC's prompt set (model fingerprint, config, per-user slot
choices as "template/window/fields" labels, e.g. "seq-2/all/taste", and metrics) and, next to
it, the policy directory (`policy.safetensors` and `policy.json`). A user's `choice` there is
the refined one if kept, else the policy's choice from the history before their selection items;
the served choice of a user without a kept refinement is the policy's from their current
history.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from promptrec.models.prompts.files import write_json
from promptrec.models.prompts.names import StrategyName
from promptrec.models.prompts.rpp.config import RppConfig
from promptrec.models.prompts.rpp.policy import RppPolicy
from promptrec.models.prompts.rpp.refinement import Refinement
from promptrec.models.prompts.rpp.slots import (
    Choice,
    choice_from_label,
    choice_label,
    choice_text,
)

FORMAT = "promptrec.rpp-set/1"


@dataclass
class RppState:
    policy: RppPolicy | None = None
    training: dict = field(default_factory=dict)
    """The policy's training log (`TrainingLog.as_dict`) and cost."""
    outcomes: dict[str, Refinement] = field(default_factory=dict)

    def apply(self, outcomes: dict[str, Refinement]) -> None:
        """Record an incremental search: only the users in `outcomes` change."""
        self.outcomes.update(outcomes)

    def refined_choice(self, user: str) -> Choice | None:
        """The user's own choice, where their refinement was kept."""
        outcome = self.outcomes.get(user)
        return outcome.candidate if outcome is not None and outcome.kept else None

    def copy(self) -> RppState:
        """A copy whose outcomes may change independently (the policy is shared, never
        changed once trained)."""
        return RppState(self.policy, copy.deepcopy(self.training), dict(self.outcomes))


def _outcome_json(o: Refinement) -> dict:
    body = asdict(o)
    body["policy_choice"] = choice_label(o.policy_choice)
    body["candidate"] = choice_label(o.candidate)
    body["choice"] = choice_label(o.choice)
    body["text"] = choice_text(o.choice)
    return body


def _outcome_from_json(body: dict) -> Refinement:
    fields = {k: v for k, v in body.items() if k not in ("choice", "text")}
    fields["policy_choice"] = choice_from_label(body["policy_choice"])
    fields["candidate"] = choice_from_label(body["candidate"])
    return Refinement(**fields)


@dataclass
class RppPromptSet:
    task: str
    config: RppConfig
    state: RppState
    model_fingerprint: str
    policy_dir: Path | None = None
    """Where the policy is saved; relative paths are read from the choices file's folder."""
    created_at: float = field(default_factory=time.time)

    def save(self, path: Path) -> None:
        policy_dir = self.policy_dir or default_policy_dir(path)
        if self.state.policy is not None:
            target = policy_dir if policy_dir.is_absolute() else path.parent / policy_dir
            meta = {"model_fingerprint": self.model_fingerprint, "config": asdict(self.config)}
            self.state.policy.save(target, meta)
        body = {
            "format": FORMAT,
            "strategy": StrategyName.RPP.value,
            "task": self.task,
            "model_fingerprint": self.model_fingerprint,
            "created_at": self.created_at,
            "config": asdict(self.config),
            "policy": str(policy_dir) if self.state.policy is not None else None,
            "training": self.state.training,
            "users_refined": sum(o.kept for o in self.state.outcomes.values()),
            "users": {u: _outcome_json(o) for u, o in sorted(self.state.outcomes.items())},
        }
        write_json(path, body)

    @classmethod
    def load(cls, path: Path) -> RppPromptSet:
        path = Path(path)
        body = json.loads(path.read_text())
        if body.get("format") != FORMAT:
            raise ValueError(f"{path} is not an RPP choices file ({FORMAT})")
        policy, policy_dir = None, None
        if body.get("policy"):
            policy_dir = Path(body["policy"])
            policy, meta = RppPolicy.load(
                policy_dir if policy_dir.is_absolute() else path.parent / policy_dir
            )
            if meta.get("model_fingerprint") != body["model_fingerprint"]:
                raise ValueError(f"{path}: its policy was trained on another model")
        state = RppState(
            policy,
            body.get("training", {}),
            {u: _outcome_from_json(o) for u, o in body["users"].items()},
        )
        return cls(
            body["task"],
            RppConfig(**body["config"]),
            state,
            body["model_fingerprint"],
            policy_dir,
            body["created_at"],
        )


def default_policy_dir(choices: Path) -> Path:
    """The policy's folder next to a choices file: `rpp.json` -> `rpp-policy/` (relative)."""
    return Path(f"{choices.stem}-policy")
