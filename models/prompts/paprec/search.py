"""PAP-REC prompt search on a frozen RLM (DESIGN §4), made fast and exact.

Layout `[template words] T1..Tm P1..Pd [history]`. A round picks one trigger position, takes the
gradient of the targets' log-likelihood w.r.t. that position's input embedding (averaged over
all examples for a task token, over each user's own examples for a personal token), proposes
the top-k words of `grad . E^T` (HotFlip/AutoPrompt) and accepts a candidate only if it strictly
improves the surrogate metric computed by exact ranking of all items from the last position.
Task rounds screen their candidates on a seeded share of the examples first
(`PaprecConfig.screen_fraction`); acceptance itself is always measured on every example.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from promptrec.models.metrics import metric
from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.state import PaprecState, UserOutcome
from promptrec.models.prompts.selection import SearchExamples
from promptrec.models.ranking import (
    bos_row,
    item_logits,
    item_scorer,
    pad_rows,
    row_col_indices,
    rows_per_call,
)
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import TEMPLATES, render_parts
from promptrec.models.text import is_word


@dataclass
class _Batch:
    """Selection examples prepared once: prompt ids around the triggers (the template's words
    before them, the history items after them), targets, items to exclude."""

    base: list[list[int]]
    history: list[list[int]]
    targets: np.ndarray
    exclude: list[list[int]]
    owner: np.ndarray
    screen: _Screen | None = field(default=None, repr=False)
    """The seeded share of these examples that task candidates race on (built on first use)."""

    def rows(self, index: Sequence[int]) -> _Batch:
        return _Batch(
            base=[self.base[j] for j in index],
            history=[self.history[j] for j in index],
            targets=self.targets[list(index)],
            exclude=[self.exclude[j] for j in index],
            owner=self.owner[list(index)],
        )


@dataclass
class _Screen:
    """A batch split into racing stages: the screening rows, then (optionally) the recheck rows,
    then the rest. A finalist's surrogate adds up its per-stage scores, each stage scored once."""

    index: list[np.ndarray]  # rows of the batch in each stage
    stages: list[_Batch]
    size: int  # examples in the whole batch
    incumbent_key: bytes | None = None
    incumbent: list[np.ndarray | None] = field(default_factory=list)
    """The current prompt's per-example scores in each stage, filled in as stages need them and
    kept while it stays current (keyed by `incumbent_key`), so it is not re-scored every round."""

    def track(self, key: bytes) -> None:
        """Make `key` the current prompt; its scores are forgotten unless it already was."""
        if key != self.incumbent_key:
            self.incumbent_key, self.incumbent = key, [None] * len(self.stages)

    def adopt(self, key: bytes, scores: list[np.ndarray]) -> None:
        """Make `key` the current prompt, with its scores in every stage already known."""
        self.incumbent_key, self.incumbent = key, scores


def _prompt_key(task: Sequence[int], personal: np.ndarray) -> bytes:
    return np.asarray(task, dtype=np.int64).tobytes() + b"|" + personal.tobytes()


def _triggers(batch: _Batch, task: list[int], personal: np.ndarray) -> Callable[[int], list[int]]:
    """Trigger ids of example j: the task tokens, then its owner's personal tokens."""
    return lambda j: task + personal[batch.owner[j]].tolist()


class PaprecSearch:
    name = "paprec"

    def __init__(self, lm: RecLM, config: PaprecConfig | None = None, progress: bool = True):
        config = config or PaprecConfig()
        self.lm, self.config, self.progress = lm, config, progress
        self.rows_per_call = config.batch_size or rows_per_call(lm.device)
        self.template = TEMPLATES[config.template]
        self.vocab = lm.vocab
        self.inverse = {i: t for t, i in self.vocab.items()}
        words = sorted(i for t, i in self.vocab.items() if is_word(t))
        self.word_ids = torch.tensor(words, dtype=torch.long, device=lm.device)
        if config.init_token not in self.vocab:
            raise ValueError(f"init token {config.init_token!r} is not in the model's vocabulary")
        for p in lm.model.parameters():
            p.requires_grad_(False)
        lm.model.eval()

    # ---- encoding -------------------------------------------------------------------------
    def prepare(self, examples: SearchExamples, rows: Sequence[int]) -> _Batch:
        unk = self.lm.tokenizer.unk_token_id
        parts = [render_parts(self.template, examples.fields[j], self.lm.max_history) for j in rows]
        return _Batch(
            base=[[self.vocab.get(t, unk) for t in words] for words, _ in parts],
            history=[[self.vocab[t] for t in items] for _, items in parts],
            targets=np.array([examples.targets[j] for j in rows], dtype=np.int64),
            # Seen items are not ranked, except a target seen before (as the metrics do).
            exclude=[
                [i for i in examples.fields[j].history if i != examples.targets[j]] for j in rows
            ],
            owner=np.array([examples.owner[j] for j in rows], dtype=np.int64),
        )

    def ids(self, tokens: Sequence[str]) -> list[int]:
        return [self.vocab[t] for t in tokens]

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.inverse[int(i)] for i in ids]

    def _encode(self, batch: _Batch, rows: range, triggers: Callable[[int], list[int]]):
        encoded = [bos_row(self.lm, batch.base[j] + triggers(j) + batch.history[j]) for j in rows]
        return pad_rows(encoded, self.lm.tokenizer.pad_token_id, self.lm.device)

    def _logits(self, batch: _Batch, rows: range, ids, mask, embeds=None) -> torch.Tensor:
        if embeds is None:  # a measurement: the traced inference graph, same scores, faster
            logits = item_scorer(self.lm)(ids, mask).float()
        else:  # a gradient: the eager model
            logits = item_logits(self.lm.model, ids, mask, self.lm.item_token_ids(), embeds)
            logits = logits.float()
        # rank only items the user has not seen
        logits[row_col_indices([batch.exclude[j] for j in rows], logits.device)] = float("-inf")
        return logits

    # ---- the two measurements ---------------------------------------------------------------
    @torch.no_grad()
    def example_scores(
        self, batch: _Batch, triggers, metrics: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per example: surrogate (sum of `metrics`, the task surrogate's by default) and
        target log-probability."""
        metrics = metrics or self.config.metrics
        surrogate, logp = [], []
        for lo in range(0, len(batch.base), self.rows_per_call):
            rows = range(lo, min(lo + self.rows_per_call, len(batch.base)))
            logits = self._logits(batch, rows, *self._encode(batch, rows, triggers))
            targets = torch.as_tensor(batch.targets[lo : rows.stop], device=logits.device)
            target_logit = logits.gather(1, targets[:, None])
            ranks = (logits >= target_logit).sum(1) - 1
            ranks = ranks.cpu().numpy()
            surrogate.append(sum(metric(m, ranks) for m in metrics))
            logp.append((target_logit[:, 0] - torch.logsumexp(logits, dim=1)).cpu().numpy())
        return np.concatenate(surrogate), np.concatenate(logp)

    def _surrogates(
        self,
        batch: _Batch,
        task: list[int],
        personal: np.ndarray,
        metrics: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Per-example surrogate of the task tokens followed by each owner's personal tokens."""
        return self.example_scores(batch, _triggers(batch, task, personal), metrics)[0]

    def task_surrogate(self, batch: _Batch, triggers) -> float:
        """The acceptance metric of a task-level candidate: mean surrogate over the examples."""
        return float(self.example_scores(batch, triggers)[0].mean())

    def trigger_gradients(self, batch: _Batch, triggers, position: int) -> torch.Tensor:
        """d log p(target) / d (input embedding at trigger `position`), one row per example."""
        embedding = self.lm.model.get_input_embeddings()
        grads = []
        for lo in range(0, len(batch.base), self.rows_per_call):
            rows = range(lo, min(lo + self.rows_per_call, len(batch.base)))
            ids, mask = self._encode(batch, rows, triggers)
            embeds = embedding(ids).detach().requires_grad_(True)
            logits = self._logits(batch, rows, ids, mask, embeds)
            targets = torch.as_tensor(batch.targets[lo : rows.stop], device=logits.device)
            logp = torch.log_softmax(logits, dim=1).gather(1, targets[:, None])
            logp.sum().backward()
            # counted from the end: a prompt too long for the model loses its first words
            at = torch.tensor(
                [
                    int(mask[r].sum()) - len(batch.history[j]) - len(triggers(j)) + position
                    for r, j in enumerate(rows)
                ],
                device=logits.device,
            )
            grads.append(embeds.grad[torch.arange(len(rows)), at])
        return torch.cat(grads)

    def candidate_scores(self, grad: torch.Tensor) -> torch.Tensor:
        """First-order gain in log-likelihood of each word: grad . E^T over the word vocabulary."""
        words = self.lm.model.get_input_embeddings().weight[self.word_ids]
        return grad @ words.T

    def top_candidates(
        self, grad: torch.Tensor, current: Sequence[int], k: int | None = None
    ) -> torch.Tensor:
        """[rows, k] word ids (k: the task rounds' by default), best first, never the token
        already in place."""
        scores = self.candidate_scores(grad)
        current_t = torch.as_tensor(list(current), device=scores.device)
        scores[self.word_ids[None, :] == current_t[:, None]] = float("-inf")
        top = torch.topk(scores, k or self.config.candidates, dim=1).indices
        return self.word_ids[top]

    # ---- rounds -----------------------------------------------------------------------------
    def task_round(
        self, batch: _Batch, task: list[int], personal: np.ndarray, position: int, best: float
    ) -> tuple[float, bool]:
        """Try the top-k words at task position `position`; keep the best if strictly better."""

        grad = self.trigger_gradients(batch, _triggers(batch, task, personal), position).mean(
            0, keepdim=True
        )
        trials = [
            [*task[:position], word, *task[position + 1 :]]
            for word in self.top_candidates(grad, [task[position]])[0].tolist()
        ]
        best, chosen = self.accept_best(batch, task, trials, personal, best)
        if chosen is not None:
            task[:] = trials[chosen]
        return best, chosen is not None

    def accept_best(
        self,
        batch: _Batch,
        current: list[int],
        trials: Sequence[list[int]],
        personal: np.ndarray,
        best: float,
    ) -> tuple[float, int | None]:
        """The trial task tokens with the highest surrogate on all of `batch`, if strictly above
        `best` (the surrogate of `current`); returns the new best and the trial's index or None.

        With screening on, trials race: all are scored on the screening share, and only the
        best `screen_promote` that beat `current` there go on, first to the recheck share (where
        they must still beat `current` on every example scored so far), then to the rest. Most
        gradient candidates lose, and losing shows on a fraction of the examples, so most long
        passes are saved; acceptance stays exact (a trial's full surrogate, strictly above
        `best`).
        """
        screen = self._screen(batch)
        if screen is None:
            chosen = None
            for c, trial in enumerate(trials):
                score = self.task_surrogate(batch, _triggers(batch, trial, personal))
                if score > best:
                    best, chosen = score, c
            return best, chosen
        screen.track(_prompt_key(current, personal))
        first = self._screen_scores(screen, current, trials, personal)
        sums, to_beat = first.sum(axis=1), screen.incumbent[0].sum()
        finalists = [c for c in np.argsort(-sums, kind="stable") if sums[c] > to_beat]
        chosen, chosen_scores = None, None
        for c in finalists[: self.config.screen_promote]:
            scores = self._race(screen, current, trials[c], personal, first[c])
            if scores is None:
                continue
            score = float(sum(part.sum() for part in scores) / screen.size)
            if score > best:
                best, chosen, chosen_scores = score, int(c), scores
        if chosen is not None:
            screen.adopt(_prompt_key(trials[chosen], personal), chosen_scores)
        return best, chosen

    def _race(
        self,
        screen: _Screen,
        current: list[int],
        trial: list[int],
        personal: np.ndarray,
        screened: np.ndarray,
    ) -> list[np.ndarray] | None:
        """A screened finalist's per-example scores in every stage, or None if it no longer
        beats `current` on the examples scored by the recheck (the rest is judged by the
        caller, against the exact full surrogate)."""
        scores = [screened]
        for k in range(1, len(screen.stages) - 1):  # the recheck stage, when there is one
            scores.append(self._surrogates(screen.stages[k], trial, personal))
            to_beat = [self._incumbent_scores(screen, j, current, personal) for j in range(k + 1)]
            if sum(part.sum() for part in scores) <= sum(part.sum() for part in to_beat):
                return None
        scores.append(self._surrogates(screen.stages[-1], trial, personal))
        return scores

    def _incumbent_scores(
        self, screen: _Screen, k: int, current: list[int], personal: np.ndarray
    ) -> np.ndarray:
        if screen.incumbent[k] is None:
            screen.incumbent[k] = self._surrogates(screen.stages[k], current, personal)
        return screen.incumbent[k]

    def _remember_scores(
        self, batch: _Batch, task: list[int], personal: np.ndarray, scores: np.ndarray
    ) -> None:
        """Per-example scores of the current prompt over all of `batch`, from a full pass the
        caller made anyway: the race then never re-scores it."""
        screen = self._screen(batch)
        if screen is not None:
            screen.adopt(_prompt_key(task, personal), [scores[index] for index in screen.index])

    def _screen(self, batch: _Batch) -> _Screen | None:
        cfg = self.config
        if cfg.screen_fraction is None:
            return None
        n = len(batch.base)
        size = max(cfg.screen_min_examples, round(cfg.screen_fraction * n))
        if size >= n:
            return None
        if batch.screen is None:
            rng = np.random.default_rng(cfg.seed)
            rest = np.ones(n, dtype=bool)
            index = [np.sort(rng.choice(n, size, replace=False))]
            rest[index[0]] = False
            recheck = round((cfg.recheck_fraction or 0) * n) - size
            if 0 < recheck < rest.sum():
                index.append(np.sort(rng.choice(np.flatnonzero(rest), recheck, replace=False)))
                rest[index[1]] = False
            index.append(np.flatnonzero(rest))
            batch.screen = _Screen(index, [batch.rows(i) for i in index], n)
        return batch.screen

    def _screen_scores(
        self,
        screen: _Screen,
        current: list[int],
        trials: Sequence[list[int]],
        personal: np.ndarray,
    ) -> np.ndarray:
        """Per-example surrogates on the screening rows, [trial, example], with the current
        prompt's filled into `screen.incumbent` when they are not kept yet. The rows are
        repeated once per prompt and scored in one call, instead of one small call per prompt.
        `screen` must be tracking `current`."""
        cached = screen.incumbent[0] is not None
        tasks = list(trials) if cached else [current, *trials]
        rows = screen.stages[0]
        n = len(rows.base)
        stacked = rows.rows(np.tile(np.arange(n), len(tasks)))
        scores = self.example_scores(
            stacked, lambda j: tasks[j // n] + personal[stacked.owner[j]].tolist()
        )[0].reshape(len(tasks), n)
        if not cached:
            screen.incumbent[0] = scores[0]
            scores = scores[1:]
        return scores

    def personal_round(
        self, batch: _Batch, task: list[int], personal: np.ndarray, slot: int, best: np.ndarray
    ) -> np.ndarray:
        """Every user tries their own c-th candidate at once; each keeps it only if it helps them.

        `personal` [users, d] and `best` [users] (per-user mean surrogate) are updated in place;
        returns which users accepted a new token. Users with no example in `batch` sit out.
        """

        n_users = len(best)
        grad = self.trigger_gradients(batch, _triggers(batch, task, personal), len(task) + slot)
        per_user = torch.zeros((n_users, grad.shape[1]), device=grad.device)
        per_user.index_add_(0, torch.as_tensor(batch.owner, device=grad.device), grad)
        current = personal[:, slot].tolist()
        candidates = self.top_candidates(per_user, current, self.config.personal_k)
        candidates = candidates.cpu().numpy()
        counts = np.bincount(batch.owner, minlength=n_users)
        present, divisor = counts > 0, counts.clip(min=1)
        accepted = np.zeros(n_users, dtype=bool)
        for c in range(candidates.shape[1]):
            trial = personal.copy()
            trial[:, slot] = candidates[:, c]
            scores = self._surrogates(batch, task, trial, self.config.personal_surrogate)
            user_scores = np.bincount(batch.owner, weights=scores, minlength=n_users) / divisor
            better = present & (user_scores > best)
            personal[better, slot] = candidates[better, c]
            best[better] = user_scores[better]
            accepted |= better
        return accepted

    def _untried_personal_round(
        self,
        batch: _Batch,
        task: list[int],
        personal: np.ndarray,
        slot: int,
        best: np.ndarray,
        tried: np.ndarray,
    ) -> np.ndarray:
        """`personal_round` for the users who have not tried `slot` at their current prompt.

        Trying it again would propose the same candidates and score them the same (nothing of
        theirs changed), so those users sit out: the same outcome for fewer passes.
        `tried` [users, d] is kept up to date: set for the users tried here, cleared for every
        slot of a user who moved (their prompt changed). Returns who moved.
        """
        rows = np.flatnonzero(~tried[batch.owner, slot])
        if not len(rows):
            return np.zeros(len(best), dtype=bool)
        moved = self.personal_round(
            batch if len(rows) == len(batch.base) else batch.rows(rows), task, personal, slot, best
        )
        tried[batch.owner[rows], slot] = True
        tried[moved] = False
        return moved

    # ---- searches ---------------------------------------------------------------------------
    def search_task(
        self,
        examples: SearchExamples,
        state: PaprecState | None = None,
        on_round: Callable[[PaprecState], None] | None = None,
    ) -> PaprecState:
        """Task-level search alternating with personal rounds for the users in `examples`.

        Returns the state with task tokens; personal outcomes for these users are then decided
        by `search_personal` with the task tokens frozen.
        """
        cfg = self.config
        state = state or PaprecState(task_tokens=[cfg.init_token] * cfg.task_tokens)
        batch = self.prepare(examples, examples.subset(held_out=False))
        task = self.ids(state.task_tokens)
        personal = np.full((len(examples.users), cfg.personal_tokens), self.vocab[cfg.init_token])
        best = self._measure(batch, task, personal)
        user_best = self._user_means(batch, task, personal, len(examples.users))
        started, rounds_done = time.monotonic(), len(state.task_history)
        total = cfg.max_cycles * cfg.task_tokens
        bar = tqdm(
            total=total,
            initial=min(rounds_done, total),
            disable=not self.progress,
            desc="task search",
            unit="round",
        )
        tried = np.zeros((len(examples.users), cfg.personal_tokens), dtype=bool)
        quiet = 0
        for r in range(rounds_done, total):
            position = r % cfg.task_tokens
            best, accepted = self.task_round(batch, task, personal, position, best)
            if accepted:  # new task tokens: every user's prompt changed
                tried[:] = False
            moved = 0
            if cfg.personal_tokens:
                slot = position % cfg.personal_tokens
                moved = int(
                    self._untried_personal_round(
                        batch, task, personal, slot, user_best, tried
                    ).sum()
                )
            if moved:  # personal tokens changed: the task surrogate is measured anew
                best = self._measure(batch, task, personal)
            state.task_tokens = self.tokens(task)
            state.task_history.append(
                {
                    "round": r,
                    "position": position,
                    "accepted": accepted,
                    "tokens": " ".join(state.task_tokens),
                    "surrogate": round(best, 5),
                    "users_moved": moved,
                }
            )
            bar.update(1)
            bar.set_postfix(surrogate=f"{best:.4f}")
            if on_round:
                on_round(state)
            quiet = 0 if (accepted or moved) else quiet + 1
            if quiet >= cfg.task_tokens:  # a full cycle brought nothing
                break
            if cfg.max_seconds and time.monotonic() - started > cfg.max_seconds:
                break
        bar.close()
        self._drop_useless_task_tokens(batch, state, len(examples.users))
        return state

    def _measure(self, batch: _Batch, task: list[int], personal: np.ndarray) -> float:
        """The current prompt's surrogate, its per-example scores kept for the race."""
        scores = self._surrogates(batch, task, personal)
        self._remember_scores(batch, task, personal, scores)
        return float(scores.mean())

    def _drop_useless_task_tokens(self, batch: _Batch, state: PaprecState, n_users: int) -> None:
        """Task tokens must earn their place: when the plain template scores at least as well
        on the same selection examples (filler words that no round replaced can hurt), the task
        keeps no tokens and personal tokens follow the template directly."""
        none = np.zeros((n_users, 0), dtype=np.int64)
        with_tokens = self.task_surrogate(
            batch, _triggers(batch, self.ids(state.task_tokens), none)
        )
        plain = self.task_surrogate(batch, _triggers(batch, [], none))
        kept = with_tokens > plain
        state.task_history.append(
            {
                "round": "final",
                "tokens": " ".join(state.task_tokens),
                "surrogate_with_tokens": round(with_tokens, 5),
                "surrogate_plain_template": round(plain, 5),
                "kept": kept,
            }
        )
        if not kept:
            state.task_tokens = []

    def _user_means(self, batch: _Batch, task: list[int], personal: np.ndarray, n_users: int):
        """Per user: the mean personal surrogate over their examples in `batch`."""
        scores = self._surrogates(batch, task, personal, self.config.personal_surrogate)
        counts = np.bincount(batch.owner, minlength=n_users).clip(min=1)
        return np.bincount(batch.owner, weights=scores, minlength=n_users) / counts

    def search_personal(
        self, examples: SearchExamples, task_tokens: Sequence[str], max_cycles: int | None = None
    ) -> dict[str, UserOutcome]:
        """Incremental mode: task tokens frozen, personal tokens searched for these users only.

        A user keeps personal tokens only if they beat the task-level prompt twice: a strictly
        higher surrogate on the search examples and a higher target log-likelihood on the
        held-out examples (the search examples when a user has none held out). Nothing outside
        `examples` is read or changed.
        """
        cfg = self.config
        n_users = len(examples.users)
        task = self.ids(task_tokens)
        search = self.prepare(examples, examples.subset(held_out=False))
        held = self.prepare(examples, examples.subset(held_out=True))
        personal = np.full((n_users, cfg.personal_tokens), self.vocab[cfg.init_token])
        none = np.zeros((n_users, 0), dtype=np.int64)
        before = self._user_means(search, task, none, n_users)
        best = self._user_means(search, task, personal, n_users)
        tried = np.zeros((n_users, cfg.personal_tokens), dtype=bool)
        for _ in range(max_cycles or cfg.max_cycles):
            moved = [
                self._untried_personal_round(search, task, personal, slot, best, tried).any()
                for slot in range(cfg.personal_tokens)
            ]
            if not any(moved):
                break
        check = held if len(held.base) else search
        logp_before = self._user_logp(check, task, none, n_users)
        logp_after = self._user_logp(check, task, personal, n_users)
        has_check = np.bincount(check.owner, minlength=n_users) > 0
        outcomes = {}
        for u, user in enumerate(examples.users):
            # Kept only if the search itself found better words (strictly, on the user's search
            # examples) and they also help on the held-out interaction: the initial filler
            # words alone never count as a personal prompt.
            kept = bool(has_check[u] and best[u] > before[u] and logp_after[u] > logp_before[u])
            outcomes[user] = UserOutcome(
                tokens=self.tokens(personal[u]),
                surrogate_before=round(float(before[u]), 5),
                surrogate_after=round(float(best[u]), 5),
                held_out_logp_before=round(float(logp_before[u]), 5),
                held_out_logp_after=round(float(logp_after[u]), 5),
                kept=kept,
            )
        return outcomes

    def compare_personal(
        self,
        examples: SearchExamples,
        task_tokens: Sequence[str],
        personal_tokens: Sequence[Sequence[str]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Drift check: per user of `examples`, the mean surrogate over all their examples with
        the task-level prompt alone and with their personal tokens (`personal_tokens[u]`, all
        of one length)."""
        n_users = len(examples.users)
        batch = self.prepare(examples, range(len(examples)))
        task = self.ids(task_tokens)
        personal = np.array([self.ids(p) for p in personal_tokens], dtype=np.int64)
        none = np.zeros((n_users, 0), dtype=np.int64)
        return (
            self._user_means(batch, task, none, n_users),
            self._user_means(batch, task, personal.reshape(n_users, -1), n_users),
        )

    def _user_logp(self, batch: _Batch, task: list[int], personal: np.ndarray, n_users: int):
        logp = self.example_scores(batch, _triggers(batch, task, personal))[1]
        counts = np.bincount(batch.owner, minlength=n_users).clip(min=1)
        return np.bincount(batch.owner, weights=logp, minlength=n_users) / counts
