"""Two processes on CPU (gloo) train exactly what one process trains with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import TINY_TRAIN
from ifbf.store.rundir import RunDir

pytest.importorskip("inplace_abn")  # synchronised BN on CPU: InPlaceABNSync over gloo

# batch statistics must be global (InPlaceABNSync: per process at least 2 images, for ASPP's pooling
# branch) and OHEM's per-process choice of pixels is switched off
# Double precision: in float32 the two runs drift apart chaotically (tiny batches make batch-norm backward
# cancel catastrophically: 1e-7 differences in summation order become 1e-3 after a few steps); in float64
# they agree to ~1e-12, which checks the maths of the distributed path exactly.
DDP_RECIPE = [*TINY_TRAIN, "model.norm=inplace_abn_sync", "train.ohem=none", "train.iters=6", "train.float64=true"]


def _train(out, batch_size: int, launcher: list[str]) -> None:
    cmd = [*launcher, "-m", "ifbf", "train", "--out", str(out), "--no-progress", *DDP_RECIPE,
           f"data.batch_size={batch_size}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def assert_same_training(a, b, atol: float = 1e-9) -> None:
    sa = torch.load(a / "checkpoint.pth", weights_only=False)["model"]
    sb = torch.load(b / "checkpoint.pth", weights_only=False)["model"]
    assert sa.keys() == sb.keys()
    for key in sa:
        if sa[key].is_floating_point():
            assert torch.allclose(sa[key], sb[key], atol=atol, rtol=1e-7), key
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    assert ma["miou"] == pytest.approx(mb["miou"], abs=1e-12)
    # per-image counts: each rank fills its own images, the all-reduce puts them together
    pa, pb = (np.load(p / ma["evaluations"][next(iter(ma["evaluations"]))]["per_image"]) for p in (a, b))
    assert list(pa["names"]) == list(pb["names"]) and (pa["inter"] == pb["inter"]).all()
    assert (pa["union"] == pb["union"]).all() and pa["union"].sum() > 0
    la, lb = ([r.losses["total"] for r in RunDir(p).read_log()] for p in (a, b))  # the log's header left out
    assert len(la) == len(lb)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path):
    torchrun = shutil.which("torchrun", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert torchrun, "torchrun ships with torch"
    _train(tmp_path / "one", 4, [sys.executable])
    _train(tmp_path / "two", 2, [torchrun, "--standalone", "--nproc_per_node=2"])
    env = json.loads((tmp_path / "two" / "env.json").read_text())
    assert env["world_size"] == 2
    assert_same_training(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_two_tasks_started_as_srun_starts_them_train_as_one_process(tmp_path):
    """slurm/train.sbatch without a cluster: two `ifbf train` processes with srun's variables (SLURM_PROCID,
    SLURM_NTASKS, SLURM_LOCALID) and a rendezvous join one group: the SLURM executor exports torchrun's names."""
    _train(tmp_path / "one", 4, [sys.executable])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outside = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in
               ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    cmd = [sys.executable, "-m", "ifbf", "train", "--out", str(tmp_path / "two"), "--no-progress", *DDP_RECIPE,
           "data.batch_size=2"]
    tasks = [subprocess.Popen(cmd, env={**outside, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                        "SLURM_JOB_ID": "80", "SLURM_NTASKS": "2", "SLURM_PROCID": str(rank),
                                        "SLURM_LOCALID": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for task in tasks:
        _, err = task.communicate(timeout=600)
        assert task.returncode == 0, err[-3000:]
    assert json.loads((tmp_path / "two" / "env.json").read_text())["world_size"] == 2
    assert_same_training(tmp_path / "one", tmp_path / "two")
