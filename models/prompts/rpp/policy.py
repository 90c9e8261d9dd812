"""RPP's policy: one actor-critic agent per slot (Mao et al., 2024), all reading the same user
state and rewarded with the same per-user reward.

Each agent is a small MLP actor (softmax over its slot's alternatives) and an MLP critic (the
expected reward). A training step samples a choice for each user of a batch, one alternative per
slot, scores it, and moves every actor along log pi(a | s) * (r - V(s)) (its own critic is its
baseline) and every critic towards r. Applied to users, the policy takes each actor's most
probable alternative: one forward pass over a batch of states.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from promptrec.models.prompts.rpp.config import RppConfig
from promptrec.models.prompts.rpp.slots import DEFAULT_CHOICE, SLOTS, Choice

POLICY_FILE = "policy.safetensors"
POLICY_CONFIG = "policy.json"
POLICY_FORMAT = "promptrec.rpp-policy/1"

RewardFn = Callable[[np.ndarray, list[Choice]], np.ndarray]
"""(user indices into the training states, one choice per user) -> reward per user."""


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, outputs))


class SlotAgent(nn.Module):
    """One slot's actor (logits over its alternatives) and critic (expected reward)."""

    def __init__(self, inputs: int, hidden: int, alternatives: int):
        super().__init__()
        self.actor = mlp(inputs, hidden, alternatives)
        self.critic = mlp(inputs, hidden, 1)

    @property
    def actor_out(self) -> nn.Linear:
        return cast(nn.Linear, self.actor[-1])


class RppPolicy(nn.Module):
    """Agents over standardised states (the mean and scale are the training users')."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, state_size: int, hidden: int, sizes: tuple[int, ...] | None = None):
        super().__init__()
        self.sizes = sizes or tuple(len(s.alternatives) for s in SLOTS)
        self.state_size, self.hidden = state_size, hidden
        self.agents = nn.ModuleList(SlotAgent(state_size, hidden, n) for n in self.sizes)
        self.register_buffer("mean", torch.zeros(state_size))
        self.register_buffer("scale", torch.ones(state_size))

    def start_at(self, choice: Choice, prior_logit: float) -> None:
        """Every actor starts state-blind, `prior_logit` above the rest on `choice`'s
        alternative: the policy moves away from the served prompt only where rewards push."""
        with torch.no_grad():
            for agent, c in zip(self.slot_agents, choice, strict=True):
                last = agent.actor_out
                last.weight.zero_()
                last.bias.zero_()
                last.bias[c] = prior_logit

    @property
    def slot_agents(self) -> Sequence[SlotAgent]:
        return cast("Sequence[SlotAgent]", self.agents)  # a ModuleList holds plain Modules

    def fit_scaling(self, states: torch.Tensor) -> None:
        self.mean.copy_(states.mean(0))
        if len(states) > 1:
            self.scale.copy_(states.std(0).clamp(min=1e-4))

    def forward(self, states: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per slot: actor logits [batch, alternatives] and critic values [batch]."""
        x = (states - self.mean) / self.scale
        logits = [agent.actor(x) for agent in self.slot_agents]
        values = [agent.critic(x)[:, 0] for agent in self.slot_agents]
        return logits, values

    @torch.inference_mode()
    def choose(self, states: torch.Tensor) -> list[Choice]:
        """Each agent's most probable alternative, for a batch of users."""
        logits, _ = self(states)
        picks = torch.stack([lg.argmax(1) for lg in logits], dim=1)
        return [tuple(int(c) for c in row) for row in picks.tolist()]

    @torch.inference_mode()
    def logits(self, states: torch.Tensor) -> list[torch.Tensor]:
        return self(states)[0]

    # ---- saving -------------------------------------------------------------------------------
    def save(self, directory: Path, meta: dict) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, directory / POLICY_FILE)
        body = {
            "format": POLICY_FORMAT,
            "state_size": self.state_size,
            "hidden": self.hidden,
            "slots": {s.name: list(s.alternatives) for s in SLOTS},
            **meta,
        }
        (directory / POLICY_CONFIG).write_text(json.dumps(body, indent=1) + "\n")

    @classmethod
    def load(cls, directory: Path) -> tuple[RppPolicy, dict]:
        body = json.loads((Path(directory) / POLICY_CONFIG).read_text())
        if body.get("format") != POLICY_FORMAT:
            raise ValueError(f"{directory} holds no RPP policy ({POLICY_FORMAT})")
        slots = {s.name: list(s.alternatives) for s in SLOTS}
        if body["slots"] != slots:
            raise ValueError(f"{directory}: the policy was trained on other slots {body['slots']}")
        policy = cls(body["state_size"], body["hidden"])
        policy.load_state_dict(load_file(Path(directory) / POLICY_FILE))
        return policy.eval(), body


@dataclass
class TrainingLog:
    iterations: int
    seconds: float
    train_users: int
    check_users: int
    mean_reward: list[float]
    """Mean reward of the sampled choices, per iteration."""
    check_reward: list[tuple[int, float]]
    """(iteration, mean reward of the policy's own choices on the check users); iteration 0 is
    the untrained policy (the served prompt)."""
    best_iteration: int
    """The kept policy: the first with the highest check reward."""

    def as_dict(self) -> dict:
        out = asdict(self)
        out["mean_reward"] = [round(x, 5) for x in self.mean_reward]
        out["check_reward"] = [[i, round(x, 5)] for i, x in self.check_reward]
        out["seconds"] = round(self.seconds, 2)
        return out


def train_policy(
    states: torch.Tensor,
    reward: RewardFn,
    config: RppConfig,
    progress: bool = True,
    sizes: tuple[int, ...] | None = None,
    start: Choice = DEFAULT_CHOICE,
) -> tuple[RppPolicy, TrainingLog]:
    """Actor-critic training on the users whose states are given, seeded (the same states and
    rewards give the same policy). A seeded share of the users (`check_share`) is kept out of
    the updates; the policy kept is the one whose own choices score best on them, so a policy
    that only learnt its training users' noise falls back to an earlier one, or to `start`."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(states))
    n_check = round(config.check_share * len(states)) if len(states) > 1 else 0
    check, fit = np.sort(order[:n_check]), np.sort(order[n_check:])
    policy = RppPolicy(states.shape[1], config.hidden, sizes)
    policy.fit_scaling(states[fit])
    policy.start_at(start, config.prior_logit)
    optimizer = torch.optim.AdamW(
        policy.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )

    def check_reward() -> float:
        users = check if len(check) else fit
        return float(reward(users, policy.choose(states[users])).mean())

    curve = [(0, check_reward())]
    best = (curve[0][1], 0, copy.deepcopy(policy.state_dict()))
    means: list[float] = []
    bar = tqdm(range(config.iterations), desc="RPP policy", unit="it", disable=not progress)
    for it in bar:
        users = np.sort(rng.choice(fit, size=min(config.batch_users, len(fit)), replace=False))
        policy.train()
        logits, values = policy(states[users])
        dists = [torch.distributions.Categorical(logits=lg) for lg in logits]
        actions = torch.stack(
            [torch.multinomial(d.probs, 1, generator=generator)[:, 0] for d in dists], dim=1
        )
        choices = [tuple(int(c) for c in row) for row in actions.tolist()]
        r = torch.as_tensor(reward(users, choices), dtype=torch.float32)
        loss = torch.zeros(())
        for k, (dist, value) in enumerate(zip(dists, values, strict=True)):
            advantage = (r - value).detach()
            loss = loss - (dist.log_prob(actions[:, k]) * advantage).mean()
            loss = loss - config.entropy * dist.entropy().mean()
            loss = loss + 0.5 * ((value - r) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        means.append(float(r.mean()))
        if (it + 1) % config.check_every == 0 or it + 1 == config.iterations:
            policy.eval()
            curve.append((it + 1, check_reward()))
            if curve[-1][1] > best[0]:
                best = (curve[-1][1], it + 1, copy.deepcopy(policy.state_dict()))
            bar.set_postfix(train=f"{np.mean(means[-20:]):+.4f}", check=f"{curve[-1][1]:+.4f}")
    bar.close()
    policy.load_state_dict(best[2])
    policy.eval()
    seconds = time.perf_counter() - started
    return policy, TrainingLog(
        config.iterations, seconds, len(fit), len(check), means, curve, best[1]
    )
