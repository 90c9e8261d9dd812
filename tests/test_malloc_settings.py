"""Loading the model makes freed memory reused instead of mapped and page-faulted anew
(models/malloc_settings.py), measured on the shipped small model's scoring calls."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Page faults taken by five scoring calls of 256 prompts, after three warm-up calls.
SCORING_FAULTS = """
import resource, sys, torch
from pathlib import Path
import promptrec.models.rlm.model as rlm_model
if sys.argv[1] == "glibc-default":  # keep glibc's own settings
    rlm_model.retain_freed_memory = lambda: False
from promptrec.models.ranking import item_scorer
lm = rlm_model.RecLM.load(Path("artifacts/rlm-small"))
ids = torch.randint(3, len(lm.vocab), (256, 40), generator=torch.Generator().manual_seed(0))
mask = torch.ones_like(ids)
score = item_scorer(lm)
with torch.inference_mode():
    for _ in range(3):
        score(ids, mask)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        score(ids, mask)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def scoring_faults(mode: str) -> int:
    env = dict(os.environ)
    if mode == "glibc-default":
        # glibc's default threshold (128 KiB), held there: left alone, glibc raises it after the
        # first large free, and whether that happens before the measured calls varied from run
        # to run (0 to 51,000 faults). The loaded model's mallopt settings override it anyway.
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    done = subprocess.run(
        [sys.executable, "-c", SCORING_FAULTS, mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only"
)
def test_a_loaded_model_reuses_freed_memory_between_calls():
    default, loaded = scoring_faults("glibc-default"), scoring_faults("as-loaded")
    assert default > 10_000  # glibc hands the activations back and faults them in again
    # Seen over repeated runs on 2 shared cores: default ~123,600 faults, as loaded 0-5,120
    # (a few 2.5 MiB blocks still mapped anew when the cores are contended).
    assert loaded < default / 5
