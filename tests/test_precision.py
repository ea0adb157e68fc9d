"""The GPU fast path's dtype plumbing, on CPU: bf16 autocast with every norm layer, channels_last, compile."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_TRAIN
from ifbf.config import BASE_CONFIG, load_config
from ifbf.identity import config_hash
from ifbf.engine import precision
from ifbf.engine.run import run
from ifbf.models import build_model
from ifbf.models.norm import backbone_norm, norm_act

NORMS = ["bn", "inplace_abn", "inplace_abn_sync"]  # syncbn is CUDA-only (torch), see models/norm.py


def _model(norm: str, channels_last: bool = False) -> torch.nn.Module:
    cfg = load_config(BASE_CONFIG, ["model.backbone=resnet18", f"model.norm={norm}", "model.spatial_channels=16"])
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _norm_inputs(model: torch.nn.Module) -> list[torch.dtype]:
    """Record the input dtype every norm layer sees (hooks registered after the model's own)."""
    seen: list[torch.dtype] = []
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d) or type(m).__name__.startswith("InPlaceABN"):
            m.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize("norm", NORMS)
def test_bf16_autocast_forward_backward_with_each_norm(norm):
    x = torch.randn(2, 3, 32, 32)
    model = _model(norm, channels_last=True)
    seen = _norm_inputs(model)
    with precision.autocast("bf16", torch.device("cpu")):
        out = model(x.contiguous(memory_format=torch.channels_last))
    assert out["out"].dtype == torch.bfloat16  # the classifier convolution ran in bf16
    if norm.startswith("inplace_abn"):
        assert seen and set(seen) == {torch.float32}  # ABN ran in float32 (the pre-hook), as its kernels need
    sum(o.float().logsumexp(1).mean() for o in out.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("norm", NORMS)
def test_bf16_output_is_close_to_fp32(norm):
    """Eval mode (train-mode BN on 1x1 pooled maps of batch 2 amplifies any rounding to O(1))."""
    x = torch.randn(1, 3, 48, 48)
    model = _model(norm).eval()
    ref = model(x)["out"]
    with precision.autocast("bf16", torch.device("cpu")):
        out = model(x)["out"].float()
    rel = (out - ref).norm() / ref.norm()
    assert rel < 0.02, rel  # measured 0.003; a wrong cast or a norm skipped gives O(1)


@pytest.mark.parametrize("norm", NORMS)
def test_compiled_block_equals_eager_under_autocast(norm):
    """torch.compile (dynamo capture, eager backend: inductor's code generation is the GPU's business) with the
    norm layers of the model, InPlace-ABN's extension calls included, under bf16 autocast and channels_last."""
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), norm_act(norm)(8), torch.nn.Conv2d(8, 4, 1),
                                backbone_norm(norm)(4)).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    compiled = precision.compile_net(block, True, backend="eager")
    with precision.autocast("bf16", torch.device("cpu")):
        a = block(x)
        b = compiled(x)
    assert torch.equal(a, b) and a.dtype == (torch.bfloat16 if norm == "bn" else torch.float32)
    b.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in block.parameters())


def test_amp_values():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert precision.amp_dtype("bf16", cpu) is torch.bfloat16 and precision.amp_dtype("bf16", cuda) is torch.bfloat16
    assert precision.amp_dtype("fp16", cuda) is torch.float16 and precision.amp_dtype("fp16", cpu) is None
    assert precision.amp_dtype("none", cuda) is None and precision.amp_dtype("off", cuda) is None
    base = load_config(BASE_CONFIG)
    assert config_hash(load_config(BASE_CONFIG, ["train.compile=true"])) == config_hash(base)
    assert config_hash(load_config(BASE_CONFIG, ["train.amp=bf16"])) != config_hash(base)


@pytest.mark.slow
def test_training_runs_with_the_whole_fast_path(tmp_path, monkeypatch):
    """bf16 + channels_last + compile + InPlace-ABN + the input fast path: a short CPU training finishes."""
    real = precision.compile_net
    monkeypatch.setattr("ifbf.engine.train.compile_net", lambda net, on: real(net, on, backend="eager"))
    cfg = load_config(BASE_CONFIG, [*TINY_TRAIN, "train.iters=4", "runtime.ckpt_every=4", "model.norm=inplace_abn",
                                    "train.amp=bf16", "train.channels_last=true", "train.compile=true",
                                    "data.fast_path=true"])
    metrics = run(cfg, tmp_path / "run", progress=False)
    assert 0 <= metrics["miou"] <= 1
