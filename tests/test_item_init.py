import numpy as np

from promptrec.models.rlm.item_init import cooccurrence_embeddings


def test_items_that_occur_together_get_close_vectors():
    # Two worlds that never mix: items 0-4 and items 5-9.
    rng = np.random.default_rng(0)
    sequences = [list(rng.permutation(5)) for _ in range(30)]
    sequences += [list(5 + rng.permutation(5)) for _ in range(30)]
    vectors = cooccurrence_embeddings(sequences, 10, dim=4)
    assert vectors.shape == (10, 4)
    assert np.isclose(vectors.std(), 1.0)
    sim = vectors @ vectors.T
    same = sim[0, 1:5].mean()
    other = sim[0, 5:].mean()
    assert same > other


def test_more_dimensions_than_items_pads_with_zeros():
    vectors = cooccurrence_embeddings([[0, 1, 2], [2, 1, 0]], 3, dim=8)
    assert vectors.shape == (3, 8)
    assert np.allclose(vectors[:, 3:], 0.0)
