"""data.train_splits: the training set is one split (the paper's train) or several concatenated."""

from __future__ import annotations

import pytest

from conftest import TINY_TRAIN
from ifbf.config import BASE_CONFIG, ConfigError, load_config
from ifbf.data.cityscapes import CityscapesDataset, find_samples
from ifbf.data.loader import train_loader


def test_default_is_the_papers_train_split():
    assert load_config(BASE_CONFIG).data.train_splits == ("train",)


def test_train_and_val_concatenate(synth_root):
    both = CityscapesDataset(synth_root, ["train", "val"])
    train, val = find_samples(synth_root, "train"), find_samples(synth_root, "val")
    assert len(train) == 8 and len(val) == 4
    assert both.samples == train + val
    assert both[len(train)][2] == val[0].name  # items past the train split come from val


def test_train_loader_reads_every_listed_split(tmp_path, monkeypatch):
    monkeypatch.setenv("IFBF_CACHE", str(tmp_path))
    cfg = load_config(None, TINY_TRAIN + ["data.train_splits=[train, val]"])
    assert len(train_loader(cfg).dataset) == cfg.data.synth.train + cfg.data.synth.val
    assert len(train_loader(load_config(None, TINY_TRAIN)).dataset) == cfg.data.synth.train


def test_a_repeated_split_is_refused():
    with pytest.raises(ConfigError, match="train_splits: must not repeat a split"):
        load_config(None, ["data.train_splits=[train, train]"])
