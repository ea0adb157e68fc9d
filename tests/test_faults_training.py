"""Fault injection in training and its settings (docs/reliability.md, "A diverged training" and "Settings that
would crash"): a real diverging training fails, is recorded failed and never reaches a table; settings and flags
that used to crash are refused in one line that states the bound; SIGTERM and SIGHUP stop reproduce.py's local
jobs as Ctrl-C does; presets are names, not paths; the torch floor."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import REPO, TINY_TRAIN
from ifbf.commands.cli import main as ifbf
from ifbf.commands.reproduce import cli as reproduce
from ifbf.config import BASE_CONFIG, Config, ConfigError, load_config
from ifbf.engine import train as train_mod
from ifbf.engine.checkpoint import save_checkpoint
from ifbf.engine.losses import NothingKept, ohem_thresh_ce
from ifbf.engine.run import run
from ifbf.engine.train import build_training
from ifbf.errors import ExitCode, TrainingDiverged
from ifbf.experiments import DEFAULT_PAPER, EXPERIMENTS
from ifbf.store.rundir import RunDir, read_status
from test_interrupt import ITERS, _gone, _start, _training

TINY = [*(o for o in TINY_TRAIN if not o.startswith("eval.")), "train.iters=6", "runtime.ckpt_every=3"]
DIVERGED = re.compile(r"training diverged: .+ at iteration \d+.*; stopped\. Likely cause: train\.lr=1e\+30 is too high")


def tiny(*extra: str) -> Config:
    return load_config(BASE_CONFIG, [*TINY_TRAIN, *extra])


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


# --- a diverged training is a failure ------------------------------------------------------------------------


def test_a_diverging_training_fails_is_recorded_failed_and_never_reaches_a_table(tmp_path, capsys):
    """lr=1e30 on the smoke preset: the OHEM rows' loss read 0.0 and recorded mIoU 1.12 before; now every
    training fails at its second iteration, status.json says why, the tables read "failed", --rerun-failed
    retries them."""
    args = ["--table", "4", "--preset", "smoke", "--executor", "debug", "--results", str(tmp_path),
            "--set", *TINY, "train.lr=1e30"]
    assert reproduce(args) == ExitCode.FAILED
    runs = sorted((tmp_path / "smoke" / "runs").iterdir())
    assert len(runs) == 3  # none, OHEM, OHEM + DA (+ MS): plain CE and both OHEM paths
    for run_dir in runs:
        status = read_status(run_dir)
        assert status.state == "failed" and status.error.startswith("TrainingDiverged: "), status.error
        assert DIVERGED.search(status.error), status.error
        assert not (run_dir / "metrics.json").exists() and not (run_dir / "checkpoint.pth").exists()
        assert all(not any(isinstance(v, float) and not math.isfinite(v) for v in record.to_json().values())
                   for record in RunDir(run_dir).read_log())  # no NaN in log.jsonl
    assert any("OHEM kept no pixel" in read_status(r).error for r in runs)
    assert any("the loss is nan" in read_status(r).error for r in runs)
    df = pd.read_csv(tmp_path / "smoke" / "table4.csv", index_col=0)
    assert df["ours"].isna().all() and (df["failed"] == 1).all()
    assert (tmp_path / "smoke" / "table4.md").read_text().count("| failed ") == 4
    capsys.readouterr()
    assert reproduce([*args, "--plan"]) == 0
    assert capsys.readouterr().out.count(" failed ") == 3
    before = {r: read_status(r).time for r in runs}
    assert reproduce([*args, "--rerun-failed"]) == ExitCode.FAILED  # retried, and it diverges again
    assert all(read_status(r).state == "failed" and read_status(r).time > before[r] for r in runs)


@pytest.mark.parametrize("ohem", ["thresh", "none", "topk"])
def test_ifbf_train_that_diverges_says_so_in_one_line_and_exits_1(tmp_path, capsys, ohem):
    out = tmp_path / "run"
    code = ifbf(["train", "--out", str(out), "--no-progress", *TINY_TRAIN, "train.lr=1e30", f"train.ohem={ohem}"])
    line = _one_line(capsys.readouterr().err)
    assert code == ExitCode.FAILED and line.startswith("ifbf train: error: training diverged: ")
    assert DIVERGED.search(line) and "at iteration 2;" in line, line
    assert ("OHEM kept no pixel" in line) == (ohem == "thresh")
    assert not (out / "metrics.json").exists()


def test_ohem_keeping_no_pixel_raises_instead_of_a_zero_loss():
    target = torch.randint(0, 19, (1, 8, 8))
    logits = torch.randn(1, 19, 8, 8)
    assert torch.isfinite(ohem_thresh_ce(logits, target, 0.7, 10))  # finite logits: a loss as before
    with pytest.raises(NothingKept, match="OHEM kept no pixel"):
        ohem_thresh_ce(torch.full_like(logits, math.nan), target, 0.7, 10)  # was tensor(0.)


def test_nonfinite_batchnorm_statistics_fail_the_run_though_the_loss_is_finite(tmp_path, monkeypatch):
    """Training-mode BatchNorm normalises with the batch's statistics, so an overflowed running variance leaves
    the loss finite; the check of the model's state at the next log step fails the run before any checkpoint."""
    real, calls = train_mod.forward_loss, {"n": 0}

    def poisoned(net, *args):
        calls["n"] += 1
        if calls["n"] == 5:  # iteration 5; log steps every 2, checkpoints every 4
            next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_var.fill_(math.inf)
        losses = real(net, *args)
        assert torch.isfinite(losses["total"])
        return losses

    monkeypatch.setattr(train_mod, "forward_loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"1 of \d+ weight and BatchNorm tensors are not finite at iteration "
                                               r"6 \(they were finite at iteration 4\).*last good checkpoint"):
        run(tiny(), tmp_path, progress=False)
    state = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert state["iter"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "metrics.json").exists()


def _diverged_checkpoint(run_dir: Path, cfg: Config, iteration: int) -> None:
    """What an ifbf without the divergence check could leave: a checkpoint of NaN weights."""
    RunDir(run_dir).claim(cfg)
    model, optimizer, scheduler, scaler = build_training(cfg, torch.device("cpu"))
    with torch.no_grad():
        next(model.parameters()).fill_(math.nan)
    save_checkpoint(RunDir(run_dir).checkpoint, cfg, iteration, model, optimizer, scheduler, scaler)


def test_a_diverged_checkpoint_is_not_resumed(tmp_path):
    cfg = tiny()
    _diverged_checkpoint(tmp_path, cfg, 4)
    with pytest.raises(TrainingDiverged, match=r"\(iteration 4\) holds a diverged training: 1 of \d+ .* not finite"):
        run(cfg, tmp_path, progress=False)
    assert not (tmp_path / "metrics.json").exists()


def test_a_diverged_model_is_not_evaluated(tmp_path, capsys):
    cfg = tiny()
    _diverged_checkpoint(tmp_path, cfg, cfg.train.iters)  # "finished": evaluate would record its result
    code = ifbf(["evaluate", "--run", str(tmp_path), "--no-progress"])
    line = _one_line(capsys.readouterr().err)
    assert code == ExitCode.FAILED and "the model's output is not finite on 4 of 4 images" in line
    assert not (tmp_path / "metrics.json").exists()


def test_the_loop_adds_no_device_sync_between_log_steps(tmp_path, monkeypatch):
    """The loss is checked on the device; ``.item()`` and ``.tolist()`` (host reads: a sync on GPUs) run only at
    log and checkpoint steps."""
    real_step = train_mod.optimizer_step
    seen = {"iteration": 0, "reads": []}

    def counting_step(*args):
        real_step(*args)
        seen["iteration"] += 1

    def counting(read):
        def counted(self):
            seen["reads"].append(seen["iteration"])
            return read(self)
        return counted

    monkeypatch.setattr(train_mod, "optimizer_step", counting_step)
    for name in ("item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
    run(tiny("runtime.log_every=4", "runtime.ckpt_every=6"), tmp_path, progress=False)
    during = {it for it in seen["reads"] if 0 < it < 12}  # after iteration `it`'s step, before the next one's
    assert during == {4, 6, 8}, sorted(during)  # the log steps 4 and 8 (losses, watch), the checkpoint at 6


# --- settings that used to crash ----------------------------------------------------------------------------


def _float_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every float (or list-of-floats) setting of the config, dotted."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys += _float_keys(tp, f"{prefix}{f.name}.")
        elif tp is float or float in typing.get_args(tp):
            keys.append(f"{prefix}{f.name}")
    return keys


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e400"])
def test_every_float_setting_rejects_nan_and_inf(value):
    keys = _float_keys()
    assert {"train.lr", "train.momentum", "data.std", "data.scales", "eval.scales", "runtime.lock_stale_s"} <= set(keys)
    for key in keys:
        default = load_config(BASE_CONFIG)
        for part in key.split("."):
            default = getattr(default, part)
        written = f"[{', '.join([value] * len(default))}]" if isinstance(default, tuple) else value
        with pytest.raises(ConfigError, match="expected a finite number"):
            load_config(BASE_CONFIG, [f"{key}={written}"])


@pytest.mark.parametrize("override, bound", [
    ("train.seed=-1", "train.seed: must be in [0, 4294967295]"),
    ("train.seed=4294967296", "train.seed: must be in [0, 4294967295]"),
    ("data.synth.seed=-1", "data.synth.seed: must be in [0, 4294967295]"),
    ("data.std=[0, 0, 0]", "data.std: each value must be in [0.001, 10]"),
    ("data.scales=[0.5, 1000]", "data.scales: each value must be in [0.1, 4]"),
    ("train.poly_power=-1", "train.poly_power: must be >= 0"),
    ("train.momentum=1.5", "train.momentum: must be in [0, 1)"),
    ("train.weight_decay=-1", "train.weight_decay: must be >= 0"),
    ("data.crop_size=[20000, 20000]", "data.crop_size: each value must be in [16, 4096]"),
    ("eval.window=[0, 0]", "eval.window: each value must be in [32, 4096]"),
    ("eval.scales=[1e-9]", "eval.scales: each value must be in [0.1, 4]"),
])
def test_settings_that_crashed_are_refused_with_their_bound(override, bound, capsys):
    assert ifbf(["config", override]) == ExitCode.USAGE
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"ifbf config: error: override '{override}': {bound}"), line


def test_the_bounds_keep_the_values_they_state():
    cfg = load_config(BASE_CONFIG, ["train.seed=4294967295", "data.synth.seed=0", "train.poly_power=0",
                                    "data.crop_size=[16, 4096]", "data.scales=[0.1, 4]", "eval.window=[32, 4096]",
                                    "train.momentum=0", "data.std=[0.001, 10, 1]"])
    assert cfg.train.seed == 2**32 - 1 and cfg.data.crop_size == (16, 4096) and cfg.eval.window == (32, 4096)


@pytest.mark.parametrize("flags, bound", [
    (["--window", "0", "0"], "--window 0 0: each value must be in [32, 4096]"),
    (["--window", "1", "1"], "--window 1 1: each value must be in [32, 4096]"),
    (["--scales", "1e-9"], "--scales 1e-09: each value must be in [0.1, 4]"),
    (["--scales", "1", "1000"], "--scales 1 1000: each value must be in [0.1, 4]"),
])
def test_evaluate_flags_out_of_range_are_one_line(tmp_path, capsys, flags, bound):
    for command in ("evaluate", "export"):  # the inference flags are one set
        extra = ["--split", "val", "--out", str(tmp_path / "x")] if command == "export" else []
        assert ifbf([command, "--run", str(tmp_path), *flags, *extra]) == ExitCode.USAGE
        assert _one_line(capsys.readouterr().err).startswith(f"ifbf {command}: error: {bound}")


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "1000000000", "--plan"], "--seeds must be >= 1 and <= 100 (trainings per row"),
    (["--seeds", "101", "--plan"], "--seeds must be >= 1 and <= 100"),
    (["--parallel", "0"], "--parallel must be >= 1 (local trainings at once), got 0"),
])
def test_reproduce_flags_out_of_range_are_one_line(tmp_path, capsys, flags, message):
    args = ["--table", "2", "--preset", "smoke", "--executor", "local", "--results", str(tmp_path / "r"), *flags]
    assert reproduce(args) == ExitCode.USAGE
    assert _one_line(capsys.readouterr().err).startswith(f"reproduce.py: error: {message}")
    assert not (tmp_path / "r").exists()


def test_a_preset_is_a_name_not_a_path(tmp_path, capsys):
    """A path that leads to a real preset file outside experiments/<paper>/presets/ would put results/<path>/
    anywhere."""
    presets = EXPERIMENTS / DEFAULT_PAPER / "presets"
    (tmp_path / "evil.yaml").write_text((presets / "smoke.yaml").read_text())
    sneaky = os.path.relpath(tmp_path / "evil", presets)
    assert (presets / f"{sneaky}.yaml").is_file()  # the file is there to be loaded
    for name in (sneaky, "../../../x", "smoke/../smoke"):
        args = ["--table", "4", "--preset", name, "--executor", "debug", "--results", str(tmp_path / "r"), "--plan"]
        assert reproduce(args) == ExitCode.USAGE
        line = _one_line(capsys.readouterr().err)
        assert f"unknown preset {name!r}" in line and "a preset is named, not a path" in line
    assert not (tmp_path / "r").exists()


def test_torch_floor_closes_cve_2025_32434():
    """torch.load(weights_only=True) before 2.6 can be made to run code: no install route may allow it."""
    def floor(text: str, package: str, op: str) -> tuple[int, ...]:
        (version,) = re.findall(rf'^\s*"?{package}{op}([0-9.]+)', text, re.M)
        return tuple(int(p) for p in version.split("."))

    pyproject, constraints = (REPO / "pyproject.toml").read_text(), (REPO / "constraints-cpu.txt").read_text()
    assert floor(pyproject, "torch", ">=") >= (2, 6) and floor(pyproject, "torchvision", ">=") >= (0, 21)
    assert floor(constraints, "torch", "==") >= (2, 6)
    assert "torch>=2.6" in (REPO / "docs" / "install.md").read_text()


# --- stopping reproduce.py ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_the_local_jobs_as_ctrl_c_does(tmp_path, capsys, sig):
    """The signal reaches reproduce.py alone (kill PID; a closed terminal's SIGHUP); its jobs stop with it and
    the stopped run resumes from its checkpoint."""
    proc = _start(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    status = [sys.executable, "-m", "ifbf", "status", str(tmp_path), "--preset", "smoke"]
    try:
        run_dir = _training(proc, tmp_path)
        deadline = time.time() + 300
        while not RunDir(run_dir).checkpoint.is_file() and time.time() < deadline:
            time.sleep(0.1)
        line = next(ln for ln in subprocess.run(status, env=env, capture_output=True, text=True, timeout=120)
                    .stdout.splitlines() if run_dir.name in ln)
        assert " running " in line and line.endswith("_log.out"), line  # while it runs: its progress log
        proc.send_signal(sig)  # the orchestrator alone, not its process group
        try:
            proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"reproduce.py did not exit after {sig.name}") from None
        assert _gone(proc.pid), f"a local job outlived {sig.name}"
        err = proc.stderr.read()
        assert proc.returncode == ExitCode.INTERRUPTED
        assert err.strip().splitlines() == [f"reproduce.py: interrupted by {sig.name}"], err[-3000:]
        assert len(RunDir(run_dir).read_log()) < ITERS  # stopped mid-training
        out = subprocess.run(status, env=env, capture_output=True, text=True, timeout=120).stdout
        assert " stopped " in next(ln for ln in out.splitlines() if run_dir.name in ln), out
    finally:  # nothing of this test may outlive it
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    saved = torch.load(RunDir(run_dir).checkpoint, weights_only=True)["iter"]
    capsys.readouterr()
    assert ifbf(["train", "--config", str(run_dir / "config.yaml"), "--out", str(run_dir), "--no-progress"]) == 0
    assert f"resuming {run_dir} from iteration {saved}" in capsys.readouterr().out
    assert RunDir(run_dir).metrics()["iters"] == ITERS
