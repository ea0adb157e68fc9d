"""Checks before planning and submitting (issue: the paper preset, right the first time): every problem at
once, one line each, exit 2, nothing written, nothing submitted."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import torch

from conftest import REPO
from ifbf.config import ConfigError
from ifbf.commands.reproduce import build_parser, cli
from ifbf.data.synth import SynthSpec, write_dataset
from ifbf.experiments import load_preset, load_table, table_cells
from ifbf.report import records
from ifbf.report.tables import table_frame
from test_weights import ccnet_state


@pytest.fixture()
def no_submission(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("nothing may be submitted when a check fails")

    monkeypatch.setattr("ifbf.orchestrate.reproduce.run_trainings", refuse)


@pytest.fixture()
def three_image_cityscapes(tmp_path, monkeypatch):
    """A Cityscapes-layout root with 3 train images (and 1 val, 1 test): a partial dataset."""
    root = write_dataset(tmp_path / "cityscapes", SynthSpec(train=3, val=1, test=1, height=64, width=128))
    (root / "SYNTHETIC.json").unlink()  # posing as a real (partial) Cityscapes root
    monkeypatch.setenv("CITYSCAPES_DATASET", str(root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return root


def test_paper_without_weights_on_a_partial_dataset(tmp_path, capsys, three_image_cityscapes, no_submission):
    results = tmp_path / "results"
    started = time.perf_counter()
    assert cli(["--table", "2", "--preset", "paper", "--executor", "local", "--results", str(results)]) == 2
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert "no ImageNet weights for resnet50_deep" in err and "no ImageNet weights for resnet101_deep" in err
    assert "train: 3 of 2975 images" in err and "Traceback" not in err
    # the alternatives each on a line of its own: a deliberate subset, the synthetic preset
    assert "(a deliberate subset of Cityscapes, fewer images on purpose: --allow-partial-dataset)" in err.splitlines()
    assert not results.exists()  # no checkpoint, no status, no table
    assert seconds < 60  # seconds, not the first GPU-hour (generous: CI machines are shared)


def test_plan_is_refused_too(tmp_path, capsys, three_image_cityscapes):
    assert cli(["--table", "3", "--preset", "paper", "--plan", "--results", str(tmp_path / "r")]) == 2
    assert "--weights resnet101_deep=PATH" in capsys.readouterr().err


def test_weights_and_from_scratch_answer_the_weights_check(tmp_path, capsys, three_image_cityscapes, no_submission):
    r50 = tmp_path / "r50_deep.pth"
    torch.save(ccnet_state(), r50)  # the real key layout of CCNet's deep-stem ResNet-50, random values
    args = ["--table", "2", "--preset", "paper", "--executor", "local", "--results", str(tmp_path / "r")]
    assert cli([*args, "--weights", f"resnet50_deep={r50}"]) == 2
    err = capsys.readouterr().err
    assert "resnet50_deep" not in err and "no ImageNet weights for resnet101_deep" in err
    assert cli([*args, "--weights", f"resnet50_deep={r50}", "--from-scratch"]) == 2
    err = capsys.readouterr().err
    assert "ImageNet" not in err and "2975" in err  # only the dataset is left
    assert cli([*args, "--weights", f"resnet101_deep={r50}", "--from-scratch"]) == 2
    assert "does not fit a resnet101" in capsys.readouterr().err  # a file of the wrong depth


def test_partial_dataset_opt_in(tmp_path, capsys, three_image_cityscapes, no_submission):
    args = ["--table", "2", "--preset", "paper", "--executor", "local", "--results", str(tmp_path / "r"),
            "--from-scratch", "--allow-partial-dataset", "--plan"]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "of 2975 images" not in err and "ImageNet" not in err
    # what is left are real problems of these 128x64 stand-in images, not their number
    assert "train: 3 images are not 2048x1024" in err


def test_weights_keys_no_row_uses_are_named_with_the_keys_the_rows_need(tmp_path, capsys, three_image_cityscapes,
                                                                       no_submission):
    deep = tmp_path / "r101_deep.pth"
    torch.save(ccnet_state(), deep)  # the deep-stem file, given under torchvision's key
    args = ["--table", "2", "--preset", "paper", "--executor", "local", "--results", str(tmp_path / "r"), "--plan"]
    assert cli([*args, "--weights", f"resnet101={deep}", f"resnet50_deep={deep}", "resnet18=none"]) == 2
    err = capsys.readouterr().err
    need = "the rows need resnet101_deep, resnet50_deep"
    assert f"--weights resnet101: no row uses it; {need}; if the file is for resnet101_deep, give it as " \
           "--weights resnet101_deep=PATH" in err
    assert f"--weights resnet18: no row uses it; {need}\n" in err and "--weights resnet50_deep:" not in err
    # the paper preset's real keys where a user reads how to give them
    assert "resnet101_deep=/data/r101.pth resnet50_deep=/data/r50.pth" in " ".join(build_parser().format_help().split())
    assert "--weights resnet101_deep=PATH resnet50_deep=PATH" in (REPO / "experiments/ifbfnet/presets/paper.yaml").read_text()


@pytest.fixture(scope="module")
def one_val_frame(tmp_path_factory):
    """A Cityscapes root that holds one full-size val frame and no training image."""
    root = write_dataset(tmp_path_factory.mktemp("val-only") / "cityscapes",
                         SynthSpec(train=0, val=1, test=0, height=1024, width=2048))
    (root / "SYNTHETIC.json").unlink()
    return root


@pytest.mark.parametrize("partial", [["--allow-partial-dataset"], []], ids=["partial", "strict"])
@pytest.mark.parametrize("mode", [["--plan"], ["--preflight"], []], ids=["plan", "preflight", "run"])
def test_no_training_image_is_refused_before_planning(tmp_path, capsys, monkeypatch, one_val_frame, no_submission,
                                                      mode, partial):
    """--allow-partial-dataset waives counts, not emptiness: every job could only fail once it started."""
    monkeypatch.setenv("CITYSCAPES_DATASET", str(one_val_frame))
    results = tmp_path / "results"
    assert cli(["--table", "2", "--preset", "paper", "--executor", "local", "--results", str(results),
                "--from-scratch", *mode, *partial]) == 2
    err = capsys.readouterr().err
    empty = f"train: 0 images under {one_val_frame / 'leftImg8bit' / 'train'}, but the rows train on it"
    assert (empty in err) == bool(partial)  # without the flag verify's own count line names it
    assert ("train: 0 of 2975 images" in err) != bool(partial)
    assert "val:" not in err.replace("val: 1 of 500", "")  # the split that has its frame is fine
    assert not results.exists()


def test_from_scratch_is_marked_in_the_table(tmp_path):
    preset = load_preset("smoke")
    table = load_table(4)
    frame = records.collect([table], preset, 1, tmp_path, ("model.weights.resnet34=none",))
    df = table_frame(frame, table)
    assert all(name.endswith("(from scratch)") for name in df.index)
    plain = table_frame(records.collect([table], preset, 1, tmp_path), table)
    assert not any("scratch" in name for name in plain.index)  # smoke trains from scratch without a word
    assert isinstance(df, pd.DataFrame) and len(table_cells(table, preset, 1)) == 4


def test_a_profile_that_changes_the_global_batch_is_refused(tmp_path, capsys, three_image_cityscapes, no_submission):
    """The paper preset trains 8 images a step (4 per GPU on the paper's 2 GPUs): one local process would train
    4, silently. Refused with both ways to keep 8; either way, the line goes."""
    args = ["--table", "2", "--preset", "paper", "--executor", "local", "--results", str(tmp_path / "r"),
            "--from-scratch", "--plan"]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert ("preset paper trains a global batch of 8 (our reading: 4 images per GPU on the paper's 2 GPUs" in err
            and "profile local runs 1 process(es) x data.batch_size 4 = 4 for T2 " in err
            and ": --profile-set gpus_per_node=2 or --set data.batch_size=8" in err)
    for fix in (["--profile-set", "gpus_per_node=2"], ["--set", "data.batch_size=8"]):
        assert cli([*args, *fix]) == 2  # the partial dataset is still refused
        assert "global batch" not in capsys.readouterr().err, fix
    # the smoke preset states none: any number of processes
    assert load_preset("smoke").global_batch is None and load_preset("paper").global_batch == 8


def test_global_batch_must_be_a_positive_integer(tmp_path, monkeypatch):
    from ifbf import experiments

    folder = tmp_path / "ifbfnet"
    (folder / "presets").mkdir(parents=True)
    (folder / "presets" / "odd.yaml").write_text("overrides: []\nglobal_batch: eight\n")
    paper = experiments.Paper("ifbfnet", "a paper", "IFBFNet", "cityscapes", folder)
    monkeypatch.setattr(experiments, "load_paper", lambda name="ifbfnet": paper)
    with pytest.raises(ConfigError, match=r"odd.yaml: global_batch is a positive integer .*not 'eight'"):
        experiments.load_preset("odd")
