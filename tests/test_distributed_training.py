"""`promptrec train` under torchrun: two CPU processes (gloo) train as well as one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from promptrec.models.evaluation import evaluate_rlm
from promptrec.models.rlm.model import RecLM
from promptrec.models.user_context import ItemCatalog, user_profiles

TRAIN = ["--preset", "tiny", "--epochs", "30", "--batch-size", "16", "--lr", "0.01"]


def _train(args: list[str], tmp_path, name: str) -> RecLM:
    out = tmp_path / name
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            *args,
            "-m",
            "promptrec.cli",
            "train",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(out),
            *TRAIN,
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=600,
    )
    return RecLM.load(out)


@pytest.mark.slow
def test_two_gloo_processes_train_as_well_as_one(tmp_path, data, splits):
    data.save(tmp_path / "data")
    single = _train([sys.executable], tmp_path, "one")
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    double = _train(torchrun, tmp_path, "two")
    assert single.meta["train"]["processes"] == 1
    assert double.meta["train"]["processes"] == 2
    catalog = ItemCatalog.build(data.items, splits)
    profiles = user_profiles(data.users, splits)
    users = splits.user_indices("all")
    scores = [
        float(evaluate_rlm(m, splits, catalog, profiles, users, "test", "seq-1")["NDCG@10"].mean())
        for m in (single, double)
    ]
    assert scores[0] > 0.3 and scores[1] > 0.3, scores
    assert abs(scores[0] - scores[1]) < 0.1, scores
    log = [json.loads(x) for x in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert any("valid_ndcg10" in record for record in log)  # one log, written by process 0
