"""Curves while training (runtime.val_every): validation points in log.jsonl that never change the training,
the optional TensorBoard note, and the table<N>_curves figure drawn from stored logs."""

from __future__ import annotations

import math
import tomllib

import torch

from conftest import REPO, TINY_TRAIN
from ifbf.config import BASE_CONFIG, load_config
from ifbf.identity import config_hash
from ifbf.engine.run import run
from ifbf.experiments import load_preset, load_table
from ifbf.report import figures, records
from ifbf.store.rundir import RunDir, StepRecord, ValRecord, runs_root


def tiny(*extra: str):
    return load_config(BASE_CONFIG, [*TINY_TRAIN, "train.iters=8", "runtime.ckpt_every=8", *extra])


def test_curves_are_recorded_and_change_nothing(tmp_path, capsys):
    plain, curved = tiny(), tiny("runtime.val_every=4", "runtime.val_images=3", "runtime.tensorboard=true")
    assert config_hash(plain) == config_hash(curved)  # runtime settings are not part of a run's identity
    a = run(plain, tmp_path / "plain", progress=False)
    b = run(curved, tmp_path / "curved", progress=False)
    points = [r for r in RunDir(tmp_path / "curved").read_log() if isinstance(r, ValRecord)]
    assert [p.iter for p in points] == [4, 8]
    assert all(p.val_images == 3 and 0 <= p.val_miou <= 1 and p.val_s > 0 for p in points)
    assert not any(isinstance(r, ValRecord) for r in RunDir(tmp_path / "plain").read_log())
    # the validations neither touch the weights nor choose a checkpoint: the final model is the same
    wa = torch.load(tmp_path / "plain" / "checkpoint.pth", weights_only=False)["model"]
    wb = torch.load(tmp_path / "curved" / "checkpoint.pth", weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["miou"] == b["miou"]
    # every training record carries its own seconds (the plan's "took" figure), validation excluded
    steps = [r for r in RunDir(tmp_path / "curved").read_log() if isinstance(r, StepRecord)]
    assert steps and all("total" in r.losses and r.step_s > 0 for r in steps)
    cost = RunDir(tmp_path / "curved").cost()
    assert math.isclose(cost.val_s, sum(p.val_s for p in points))
    assert cost.eval_s > 0 and cost.seconds == cost.train_s + cost.val_s + cost.eval_s
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert "tensorboard package is not installed" in capsys.readouterr().out
    else:
        assert any((tmp_path / "curved" / "tensorboard").iterdir())


def test_tensorboard_event_files_read_back_with_tensorboards_reader(tmp_path):
    """The event files hold what log.jsonl holds, at the same iterations: read with TensorBoard's own reader
    (an optional extra, `pip install ifbf[tb]`, that the test environment installs with `[dev]`)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(tiny("runtime.val_every=4", "runtime.val_images=2", "runtime.tensorboard=true"), tmp_path, progress=False)
    log = [r.to_json() for r in RunDir(tmp_path).read_log()]  # as the file holds them
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss_total", "train/lr", "val/miou"} <= set(events.Tags()["scalars"])
    for tag, key in (("train/loss_total", "loss_total"), ("train/lr", "lr"), ("val/miou", "val_miou")):
        logged = [(r["iter"], r[key]) for r in log if key in r]
        read = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [step for step, _ in read] == [step for step, _ in logged], tag
        # float32 in the event file; log.jsonl rounds val_miou to 6 decimals
        assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) for (_, a), (_, b) in zip(read, logged)), tag
    assert [e.step for e in events.Scalars("train/lr")] == [2, 4, 6, 8]  # runtime.log_every=2 of 8 iterations
    assert [e.step for e in events.Scalars("val/miou")] == [4, 8]


def test_tensorboard_is_an_extra_the_test_environment_installs():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("tensorboard") for r in extras["tb"])
    assert "ifbf[tb]" in extras["dev"] or any(r.startswith("tensorboard") for r in extras["dev"])


def test_curves_figure_from_stored_logs(tmp_path):
    table, preset = load_table(5), load_preset("smoke")
    frame = records.collect([table], preset, 1, tmp_path)
    first, second = frame.iloc[0], frame.iloc[1]
    for rec, values in ((first, [0.1, 0.3]), (second, [0.2, 0.25])):
        run_dir = RunDir(runs_root("smoke", tmp_path) / rec.run_hash)
        run_dir.path.mkdir(parents=True)
        run_dir.append_log(StepRecord(5, {"total": 2.0 + 3 * values[0], "out": 2.0, "aux": 7.5 * values[0]},
                                      lr=0.01, imgs_per_s=3.0, step_s=1.0))
        for it, v in zip((30, 60), values):
            run_dir.append_log(ValRecord(it, v, val_s=0.5, val_images=12))
    curves = records.val_curves(frame, 5)
    assert curves[curves["label"] == first.row]["val_miou"].tolist() == [0.1, 0.3]
    assert curves[curves["label"] == second.row]["iter"].tolist() == [30, 60]
    # the main output's loss (rows of another λ differ in their totals only); validation lines are not losses
    assert records.losses(frame, 5)["loss_out"].tolist() == [2.0, 2.0]
    paths = figures.plot_val_curves(frame, table, tmp_path, "smoke")
    assert [p.name for p in paths] == ["table5_curves.png", "table5_curves.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
