"""The training engine end to end on the tiny synthetic preset (CPU, seconds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY_TRAIN
from ifbf.config import BASE_CONFIG, load_config
from ifbf.engine import train as train_mod
from ifbf.store.rundir import RunDir
from ifbf.engine.run import run
from ifbf.engine.train import TrainingDiverged, lr_factor, param_groups
from ifbf.errors import ExitCode, IfbfError
from ifbf.models import build_model


def tiny(*extra: str):
    return load_config(BASE_CONFIG, [*TINY_TRAIN, *extra])


def test_param_groups_give_10x_to_aux_and_fusion():
    cfg = tiny()
    model = build_model(cfg.model)
    slow, fast = param_groups(model, cfg.train)
    assert fast["lr"] == pytest.approx(10 * slow["lr"])
    fast_ids = {id(p) for p in fast["params"]}
    assert {id(p) for p in model.aux_head.parameters()} <= fast_ids
    for fusion in model.fusion_modules():
        assert {id(p) for p in fusion.parameters()} <= fast_ids
    assert not {id(p) for p in model.backbone.parameters()} & fast_ids
    assert len(slow["params"]) + len(fast["params"]) == len(list(model.parameters()))


def test_lr_schedule_warmup_then_poly():
    cfg = load_config(BASE_CONFIG).train  # 81k iterations, 1k warm-up
    assert lr_factor(0, cfg) == pytest.approx(1 / 1000)
    assert lr_factor(499, cfg) == pytest.approx(0.5 * (1 - 499 / 81000) ** 0.9)
    assert lr_factor(40500, cfg) == pytest.approx(0.5**0.9)
    assert lr_factor(80999, cfg) == pytest.approx((1 / 81000) ** 0.9)


@pytest.mark.slow
def test_short_training_beats_chance(tmp_path):
    """60 iterations on the synthetic data: far above chance (about 1/19 per class)."""
    cfg = tiny("train.iters=60", "train.warmup_iters=5", "data.synth.train=16", "data.synth.height=96",
               "data.synth.width=192", "data.crop_size=[96, 96]", "data.batch_size=4", "runtime.ckpt_every=60")
    metrics = run(cfg, tmp_path / "run", progress=False)
    assert metrics["miou"] > 0.25, metrics["miou"]
    log = RunDir(tmp_path / "run").read_log()
    assert log[0].iter == 2 and log[-1].iter == 60
    assert log[-1].losses["total"] < 0.7 * log[0].losses["total"]
    assert {"out", "aux"} <= set(log[-1].losses) and log[-1].lr is not None and log[-1].imgs_per_s > 0


def test_run_dir_contents(tmp_path):
    cfg = tiny()
    run(cfg, tmp_path, progress=False)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.yaml", "log.jsonl", "checkpoint.pth", "metrics.json", "env.json"}
    state = torch.load(tmp_path / "checkpoint.pth", weights_only=False)
    assert state["iter"] == 12 and {"model", "optimizer", "scheduler", "scaler", "rng", "config", "config_hash"} <= set(state)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= metrics["miou"] <= 1 and len(metrics["iou"]) == 19
    assert json.loads((tmp_path / "env.json").read_text())["torch"] == torch.__version__
    assert RunDir(tmp_path).config() == cfg


def _train_cmd(out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ifbf", "train", "--out", str(out), "--no-progress", *TINY_TRAIN, *extra]


def _final_state(path):
    return torch.load(path / "checkpoint.pth", weights_only=False)


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights_and_metrics(tmp_path):
    extra = ("train.iters=16", "runtime.ckpt_every=4", "runtime.log_every=1")
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(straight, *extra), check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for a checkpoint and a few more iterations, then SIGKILL
        log = RunDir(killed).read_log() if (killed / "log.jsonl").is_file() else []
        if (killed / "checkpoint.pth").is_file() and log and log[-1].iter >= 6:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    interrupted_at = torch.load(killed / "checkpoint.pth", weights_only=False)["iter"]
    assert 4 <= interrupted_at < 16, "the run must be killed mid-way"
    assert not (killed / "metrics.json").exists()

    resumed = subprocess.run(_train_cmd(killed, *extra), check=True, capture_output=True, text=True)
    assert f"from iteration {interrupted_at}" in resumed.stdout
    a, b = _final_state(straight), _final_state(killed)
    assert a["iter"] == b["iter"] == 16
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (straight, killed))
    assert ma["miou"] == mb["miou"] and ma["iou"] == mb["iou"]
    log = RunDir(killed).read_log()
    assert [r.iter for r in log] == list(range(1, 17))  # no duplicated lines from the killed attempt
    assert [r.losses for r in log] == [r.losses for r in RunDir(straight).read_log()]


@pytest.mark.slow
def test_sigterm_saves_checkpoint_and_exits_for_resume(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(out, "train.iters=400", "runtime.ckpt_every=1000"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "log.jsonl").is_file() and RunDir(out).read_log()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.RESUMABLE, err  # 75: the same command resumes
    assert "run the same command again to resume" in err
    state = torch.load(out / "checkpoint.pth", weights_only=False)
    assert 0 < state["iter"] < 400  # saved at the iteration the signal arrived, not at ckpt_every


def test_refuses_checkpoint_of_another_config(tmp_path):
    run(tiny(), tmp_path, progress=False)
    # the same dir with a different training config
    with pytest.raises(IfbfError, match="holds another run"):
        run(tiny("train.aux_weight=0.1"), tmp_path, progress=False)
    # a checkpoint copied into a fresh dir for another config
    other = tmp_path / "other"
    other.mkdir()
    (other / "checkpoint.pth").write_bytes((tmp_path / "checkpoint.pth").read_bytes())
    with pytest.raises(IfbfError, match="refusing to resume .* config hash"):
        run(tiny("train.aux_weight=0.1"), other, progress=False)


def test_finished_run_is_not_retrained(tmp_path, capsys):
    cfg = tiny()
    run(cfg, tmp_path, progress=False)
    before = (tmp_path / "checkpoint.pth").stat().st_mtime_ns
    run(cfg, tmp_path, progress=False)
    assert "already finished" in capsys.readouterr().out
    assert (tmp_path / "checkpoint.pth").stat().st_mtime_ns == before


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = train_mod.total_loss
    calls = {"n": 0}

    def poisoned(outputs, target, cfg):
        calls["n"] += 1
        parts = real(outputs, target, cfg)
        if calls["n"] == 7:  # iteration 7; checkpoints every 4
            parts["total"] = parts["total"] * float("nan")
        return parts

    monkeypatch.setattr(train_mod, "total_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="loss is nan at iteration 7.*last good checkpoint"):
        run(tiny(), tmp_path, progress=False)
    state = torch.load(tmp_path / "checkpoint.pth", weights_only=False)
    assert state["iter"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "metrics.json").exists()


def test_cli_bad_override_is_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ifbf", "train", "--out", str(tmp_path), "model.spatial_chanels=3"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    import dataclasses

    from ifbf.config import ModelConfig

    known = ", ".join(sorted(f.name for f in dataclasses.fields(ModelConfig)))  # every model key, DANet's too
    assert result.stderr.strip().splitlines() == [
        "ifbf train: error: override 'model.spatial_chanels=3': unknown key 'model.spatial_chanels' (known keys here: "
        f"{known})"
    ]


def test_cli_missing_cityscapes_is_clear(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CITYSCAPES_DATASET"}
    result = subprocess.run([sys.executable, "-m", "ifbf", "train", "--out", str(tmp_path), "model.norm=bn",
                             "model.backbone=resnet18"], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "set CITYSCAPES_DATASET" in result.stderr
