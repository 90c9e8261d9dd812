"""Prompt files (PAP-REC prompt sets, RPP choices) are written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: Path, body: dict[str, Any]) -> None:
    """Write `body` to `path` through a temporary file and a rename: a search interrupted
    mid-write leaves the previous file intact, so it resumes from it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    tmp.replace(path)
