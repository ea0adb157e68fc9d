from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest
import yaml

from ifbf.config import (ARCH_FIELDS, BASE_CONFIG, Arch, Config, ConfigError, ModelConfig, dump_yaml, load_config,
                         to_dict)

from ifbf.identity import config_hash


def test_base_yaml_spells_out_every_default():
    """base.yaml is the documented recipe; the dataclass defaults must not drift from it."""
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    assert to_dict(Config()) == raw


def test_paper_recipe_values():
    cfg = load_config(BASE_CONFIG)
    assert (cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay) == (0.01, 0.9, 5e-4)
    assert (cfg.train.iters, cfg.train.warmup_iters, cfg.train.poly_power) == (81_000, 1_000, 0.9)
    assert cfg.train.aux_weight == 0.4 and cfg.train.lr_mult == 10.0
    assert cfg.data.crop_size == (876, 876)
    assert cfg.data.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    assert cfg.eval.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    assert cfg.model.spatial_channels == 128 and cfg.model.norm == "inplace_abn_sync"


def test_overrides_are_typed():
    cfg = load_config(BASE_CONFIG, ["model.spatial_channels=64", "train.iters=200", "train.warmup_iters=10", "data.scales=[1.0]",
                                    "train.lr=1e-3", "model.weights.resnet50=/tmp/w.pth"])
    assert cfg.model.spatial_channels == 64 and cfg.train.iters == 200
    assert cfg.data.scales == (1.0,) and cfg.train.lr == pytest.approx(1e-3)
    assert cfg.model.weights.resnet50 == "/tmp/w.pth" and cfg.model.weights.resnet101 is None
    assert dataclasses.is_dataclass(cfg) and cfg.__dataclass_params__.frozen


def test_int_accepted_where_float_expected():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.spatial_chanels=64", "unknown key 'model.spatial_chanels'"),
        ("modle.aspp=false", "unknown key 'modle'"),
        ("train.iters=abc", "train.iters: expected an integer"),
        ("model.aspp=yes please", "model.aspp: expected true or false"),
        ("model.backbone=resnet152", "model.backbone: expected one of"),
        ("model.spatial_channels=0", "model.spatial_channels: must be > 0"),
        ("data.crop_size=[512]", "data.crop_size: expected a list of 2 values"),
        ("train.iters", "expected KEY=VALUE"),
        ("train.warmup_iters=100000", "train.warmup_iters (100000) must be < train.iters"),
    ],
)
def test_bad_override_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_config(BASE_CONFIG, [override])


def test_bad_override_names_the_override():
    with pytest.raises(ConfigError, match=r"override 'train.iters=abc'"):
        load_config(BASE_CONFIG, ["train.lr=0.1", "train.iters=abc"])


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  backbone: resnet50\n  fusoin: true\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "model.fusoin" in str(err.value)


def test_wrong_type_in_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=rf"{path}: train.lr: expected a number"):
        load_config(path)


def test_section_must_be_mapping(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: resnet50\n")
    with pytest.raises(ConfigError, match="model: expected a mapping"):
        load_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found: /nonexistent/x.yaml"):
        load_config("/nonexistent/x.yaml")


def test_dump_roundtrip_and_hash(tmp_path):
    cfg = load_config(BASE_CONFIG, ["model.spatial_channels=64"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(cfg))
    again = load_config(path)
    assert again == cfg and config_hash(again) == config_hash(cfg)
    assert len(config_hash(cfg)) == 12


def test_hash_is_the_training_identity():
    base = load_config(BASE_CONFIG)
    # eval and runtime settings and the dataset location do not change what a training produces
    same = load_config(BASE_CONFIG, ["eval.scales=[1.0]", "eval.flip=true", "runtime.workers=0", "data.root=/x"])
    assert config_hash(same) == config_hash(base)
    for change in ["model.spatial_channels=64", "train.aux_weight=0.5", "data.scales=[1.0]", "train.seed=1"]:
        assert config_hash(load_config(BASE_CONFIG, [change])) != config_hash(base), change


def test_hash_is_stable_across_processes():
    """The hash must not depend on dict order or the Python process (it keys finished runs on disk)."""
    import subprocess
    import sys

    code = "from ifbf.config import *; from ifbf.identity import config_hash; print(config_hash(load_config(BASE_CONFIG, ['train.iters=7', 'train.warmup_iters=1'])))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == config_hash(load_config(BASE_CONFIG, ["train.iters=7", "train.warmup_iters=1"]))


def test_run_dirs_of_earlier_versions_load_with_their_hash(tmp_path):
    """A config.yaml written by ifbf before `data.train_splits` and `model.weights` existed (file copied from a
    run directory of that version, named by the hash that version gave it) loads, and hashes the same:
    finished runs are found, not retrained."""
    from ifbf.store.rundir import RunDir

    legacy = Path(__file__).parent / "data" / "legacy_run_3d80f2c280d0.yaml"
    run = tmp_path / "3d80f2c280d0"
    run.mkdir()
    (run / "config.yaml").write_text(legacy.read_text())
    cfg = RunDir(run).config()
    assert cfg.data.train_splits == ("train",) and cfg.model.stem == "torchvision"
    assert config_hash(cfg) == "3d80f2c280d0"


# --- a switch an architecture ignores is refused for it (config.ARCH_FIELDS) ------------------------------

def _other_value(name: str) -> object:
    """A valid value of ModelConfig field ``name`` other than its default."""
    default = getattr(ModelConfig(), name)
    hint = typing.get_type_hints(ModelConfig)[name]
    if isinstance(default, bool):
        return not default
    if typing.get_origin(hint) is typing.Literal:
        return next(v for v in typing.get_args(hint) if v != default)
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default / 2 if default else 0.5
    if isinstance(default, tuple):
        return default[:1]
    raise TypeError(f"this test knows no other value of model.{name}: add one")


def test_every_architecture_and_every_model_field_is_mapped():
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(ARCH_FIELDS) == set(typing.get_args(Arch))
    assert set().union(*ARCH_FIELDS.values()) == fields  # a new switch is read by some architecture
    assert all(read <= fields for read in ARCH_FIELDS.values())


BASE_ARCH = load_config(BASE_CONFIG).model.arch
IGNORED = [(arch, name) for arch, read in sorted(ARCH_FIELDS.items())
           for name in sorted({f.name for f in dataclasses.fields(ModelConfig)} - read)]


@pytest.mark.parametrize("arch, name", IGNORED)
def test_a_switch_the_architecture_ignores_is_refused(arch, name):
    value = _other_value(name)
    override = f"model.{name}={json.dumps(value)}"  # JSON is YAML
    for order in ([f"model.arch={arch}", override], [override, f"model.arch={arch}"]):
        # the arch in effect when the override is checked: ``arch``, or the base's if the field is unread by both
        in_effect = arch if name in ARCH_FIELDS[BASE_ARCH] or order[0] != override else f"({arch}|{BASE_ARCH})"
        with pytest.raises(ConfigError, match=rf"model\.{name}=.*: model\.arch={in_effect} does not read it; drop "
                                              r"the override or use model\.arch="):
            load_config(BASE_CONFIG, order)
    assert load_config(BASE_CONFIG, [f"model.arch={arch}"]).model.arch == arch  # at its default: fine


@pytest.mark.parametrize("arch, name", IGNORED)
def test_what_an_architecture_does_not_read_changes_nothing_in_its_model(arch, name):
    """The map is the builders' truth: a field declared unread, changed behind validation's back, builds the
    same modules (every layer with its sizes, dilations, rates) as its default."""
    from ifbf.models import build_model

    base = load_config(BASE_CONFIG, [f"model.arch={arch}", "model.norm=bn", "model.backbone=resnet18"]).model
    changed = dataclasses.replace(base, **{name: _other_value(name)})

    assert repr(build_model(changed)) == repr(build_model(base))
