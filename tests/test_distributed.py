"""``fit`` under torchrun: two CPU processes (gloo) train one model data-parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from coordgate.training import load_checkpoint
from coordgate.training.distributed import DistributedContext, init_distributed, shard

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    import torch
    from coordgate.models import build_model
    from coordgate.training import TrainConfig, fit
    from tests.helpers import PairSet

    torch.set_num_threads(1)
    torch.manual_seed(0)
    spec = {"name": "unet3", "options": {"base_channels": 2}}
    model = build_model(spec["name"], **spec["options"])
    config = TrainConfig(epochs=4, batch_size=2, lr=3e-3, progress=False, device="cpu")
    result = fit(model, PairSet(8, seed=0), PairSet(5, seed=1), config, sys.argv[1],
                 model_spec=spec)
    rank = os.environ["RANK"]
    Path(sys.argv[2], f"rank{rank}.json").write_text(json.dumps({
        "history": [{k: row[k] for k in ("train_loss", "val_loss", "val_psnr")}
                    for row in result.history],
        "weights": [float(t.double().sum()) for t in model.state_dict().values()],
    }))
    """
)


def test_two_gloo_processes_train_one_model(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out, reports = tmp_path / "run", tmp_path / "reports"
    reports.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*command, str(script), str(out), str(reports)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    rank0, rank1 = (json.loads((reports / f"rank{r}.json").read_text()) for r in (0, 1))
    # gradients were averaged: both processes end with the same weights and metrics
    assert rank0 == rank1
    losses = [row["train_loss"] for row in rank0["history"]]
    assert len(losses) == 4 and losses[-1] < losses[0]

    # rank 0 alone wrote the run; its best checkpoint loads and is what fit returned
    metrics = json.loads((out / "metrics.json").read_text())["history"]
    assert [row["train_loss"] for row in metrics] == losses
    model, config = load_checkpoint(out, expect_model="unet3")
    assert config.epoch == min(metrics, key=lambda row: row["val_loss"])["epoch"]
    assert (out / "finished.json").is_file()
    assert not list(out.glob(".*.tmp*"))


def test_single_process_context_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = init_distributed("cpu")
    assert context == DistributedContext(device=torch.device("cpu"))
    assert context.is_main and not context.is_distributed
    assert context.any(True) and not context.any(False) and context.from_main(True)
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(context.all_reduce_sum(values), values)
    assert shard(list(range(5)), context) == list(range(5))


def test_evaluation_shards_cover_each_item_once():
    items = list(range(7))
    shards = [list(shard(items, DistributedContext(rank=r, world_size=3))) for r in range(3)]
    assert sorted(sum(shards, [])) == items
    assert [len(s) for s in shards] == [3, 2, 2]


def test_world_size_without_torchrun_variables_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        init_distributed("cpu")
