"""The original PAP-REC acceptance step, for the speed comparison only (bench, not product).

PAP-REC scores each candidate prompt by generating with a 20-beam search and computing
NDCG@5 + HR@5 from the beams, over the whole validation set. Beams may name tokens that are not
items (they count as misses), which is one reason the product ranks items exactly instead.
With one new token (an item is one token), a 20-beam search is the 20 best tokens of the whole
vocabulary after the full forward pass of the prompt, which is what this computes.
"""

from __future__ import annotations

import numpy as np
import torch

from promptrec.models.prompts.paprec.search import PaprecSearch

BEAMS = 20


class BeamSearchAcceptance(PaprecSearch):
    """PaprecSearch whose task-level acceptance is the beam-search surrogate."""

    batch_size_beams = 64

    @torch.no_grad()
    def task_surrogate(self, batch, triggers) -> float:
        item_of = {int(t): k for k, t in enumerate(self.lm.item_token_ids().tolist())}
        total = 0.0
        n = len(batch.base)
        for lo in range(0, n, self.batch_size_beams):
            rows = range(lo, min(lo + self.batch_size_beams, n))
            ids, mask = self.scorer.encode(batch, rows, triggers)
            hidden = self.lm.model(input_ids=ids, attention_mask=mask)
            last = hidden[torch.arange(len(rows)), mask.sum(dim=1) - 1]
            vocab = self.lm.model.transformer.wte.weight
            logits = last @ vocab.T + self.lm.model.item_bias
            first = torch.topk(logits, BEAMS, dim=1).indices.cpu().numpy()
            for r, j in enumerate(rows):
                ranked = [item_of.get(int(t), -1) for t in first[r]]
                hits = [k for k, item in enumerate(ranked[:5]) if item == batch.targets[j]]
                if hits:
                    total += 1.0 + 1.0 / np.log2(hits[0] + 2)  # HR@5 + NDCG@5
        return total / n
