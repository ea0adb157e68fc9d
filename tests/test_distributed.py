"""Two processes on CPU (gloo) train exactly what one process trains with the same global batch."""

from __future__ import annotations

import json
import shutil
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
