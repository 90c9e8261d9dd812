"""What every whole-dataset search run shares (`paprec.pipeline`, `rpp.pipeline`,
`soft.pipeline`): it resumes from its own file, and it searches users chunk by chunk, saving
after each chunk, so that an interrupted run goes on where it stopped."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tqdm.auto import tqdm


class SearchFile(Protocol):
    model_fingerprint: str
    config: Any  # the strategy's config dataclass

    def save(self, path: Path) -> None: ...


File = TypeVar("File", bound=SearchFile)


def resumed(out: Path, resume: bool, fresh: File, load: Callable[[Path], File]) -> File:
    """`fresh`, or with `resume` the file already at `out`, which must have been searched on the
    same model with the same config (a run never continues another's)."""
    if not (resume and out.is_file()):
        return fresh
    previous = load(out)
    if previous.model_fingerprint != fresh.model_fingerprint or asdict(previous.config) != asdict(
        fresh.config
    ):
        raise ValueError(
            f"{out} was searched with another model or config; remove it or pass another --out"
        )
    return previous


def search_in_chunks(
    users: Sequence[int],
    size: int,
    search: Callable[[Sequence[int]], None],
    save: Callable[[], None],
    desc: str,
    progress: bool,
) -> None:
    """`search` on `size` users at a time, `save` after each, a progress bar over users."""
    bar = tqdm(total=len(users), disable=not progress, desc=desc, unit="user")
    for lo in range(0, len(users), size):
        chunk = users[lo : lo + size]
        search(chunk)
        save()
        bar.update(len(chunk))
    bar.close()
