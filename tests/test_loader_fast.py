"""The input fast path (data.fast_path, ifbf/data/{fast,cache}.py) gives today's batches bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import SHARED_SAMPLE
from ifbf._torchvision import torchvision  # noqa: F401
from ifbf.config import BASE_CONFIG, load_config
from ifbf.identity import config_hash
from ifbf.data import cache as cache_mod
from ifbf.data.cache import open_cache, write_cache, write_split
from ifbf.data.cityscapes import CityscapesDataset, DataError
from ifbf.data.fast import fast_train_transform, nearest_source_index, to_device
from ifbf.data.loader import train_dataset, train_loader
from ifbf.experiments import load_preset, load_table, row_config
from ifbf.data.transforms import train_transform
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms.v2 import functional as F  # noqa: E402


def _pair(h: int, w: int, seed: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    g = torch.Generator().manual_seed(seed)
    hwc = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g)
    mask = torch.randint(0, 20, (h, w), dtype=torch.uint8, generator=g)
    return tv_tensors.Image(hwc.permute(2, 0, 1)), tv_tensors.Mask(mask)  # HWC memory, as the dataset gives


def _run(transform, image, mask, seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image, mask)


@pytest.mark.parametrize("size,crop", [((37, 53), (24, 30)), ((40, 64), (48, 48)), ((64, 32), (50, 40))])
def test_fast_transform_equals_todays_bitwise(size, crop):
    """Every paper scale, crops that need padding and not, flips: uint8 + device normalisation == today."""
    cfg = load_config(BASE_CONFIG, [f"data.crop_size={list(crop)}"]).data
    today, fast = train_transform(cfg), fast_train_transform(cfg)
    image, mask = _pair(*size, seed=size[0])
    scales_seen = set()
    for seed in range(40):
        ref_x, ref_y = _run(today, image, mask, seed)
        x, y = _run(fast, image, mask, seed)
        assert x.dtype == torch.uint8 and y.dtype == torch.uint8
        nx, ny = to_device(x[None], y[None], torch.device("cpu"), torch.float32, cfg)
        assert torch.equal(nx[0], ref_x) and torch.equal(ny[0], ref_y.long()), seed
        scales_seen.add(int(torch.randint(7, (), generator=torch.Generator().manual_seed(seed))))
    assert len(scales_seen) == 7  # (the scale draw is the first randint of the seed): all scales covered


def test_fast_transform_without_scaling_or_flip():
    cfg = load_config(BASE_CONFIG, ["data.scales=[1.0]", "data.hflip=false", "data.crop_size=[20, 20]"]).data
    image, mask = _pair(30, 41, seed=1)
    for seed in range(5):
        ref_x, ref_y = _run(train_transform(cfg), image, mask, seed)
        x, y = _run(fast_train_transform(cfg), image, mask, seed)
        nx, _ = to_device(x[None], y[None], torch.device("cpu"), torch.float32, cfg)
        assert torch.equal(nx[0], ref_x) and torch.equal(y, ref_y)


@pytest.mark.parametrize("n_in,n_out", [(1024, 512), (1024, 1792), (2048, 4096), (37, 46), (53, 27)])
def test_nearest_source_index_matches_torch_resize_of_a_uint8_mask(n_in, n_out):
    mask = (torch.arange(n_in) % 251).to(torch.uint8)[None, :, None].expand(1, n_in, 3).contiguous()
    resized = F.resize_image(mask, [n_out, 3], F.InterpolationMode.NEAREST_EXACT)
    assert torch.equal(mask[0, nearest_source_index(n_in, n_out), :], resized[0])


def test_cache_items_equal_png_items(synth_root, tmp_path):
    cfg = load_config(BASE_CONFIG, ["data.crop_size=[48, 48]"]).data
    out = tmp_path / "cache"
    folders = write_cache(synth_root, ["train", "test"], out, progress=False)
    assert [f.name for f in folders] == ["train", "test"]
    ds_png = CityscapesDataset(synth_root, "train", fast_train_transform(cfg), target_dtype=torch.uint8)
    ds_mem = CityscapesDataset(synth_root, "train", fast_train_transform(cfg), target_dtype=torch.uint8)
    ds_mem.cache = open_cache(synth_root, "train", ds_mem.samples, str(out))
    for i in range(len(ds_png)):
        a, b = ds_png[(i, 100 + i)], ds_mem[(i, 100 + i)]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    images = np.load(folders[0] / "images.npy", mmap_mode="r")
    assert images.shape == (len(ds_png), 64, 128, 3) and images.dtype == np.uint8


def test_cache_resumes_after_interruption(synth_root, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    full = write_split(synth_root, "train", tmp_path / "reference", progress=False)
    real_read = cache_mod.read_png
    calls = {"n": 0}

    def failing_read(path, mode=None):
        calls["n"] += 1
        if calls["n"] == 6:  # the first image of the header + 4 frames written, then a crash
            raise KeyboardInterrupt
        return real_read(path, mode)

    monkeypatch.setattr(cache_mod, "FLUSH_EVERY", 2)
    monkeypatch.setattr(cache_mod, "read_png", failing_read)
    with pytest.raises(KeyboardInterrupt):
        write_split(synth_root, "train", out, progress=False)
    assert json.loads((out / "train" / "index.json").read_text())["written"] == 4
    samples = CityscapesDataset(synth_root, "train").samples
    with pytest.raises(DataError, match="incomplete .4/8 frames"):
        open_cache(synth_root, "train", samples, str(out))
    calls["n"] = -100
    write_split(synth_root, "train", out, progress=False)
    assert calls["n"] == -100 + 1 + 4  # the header image and the 4 frames that were missing
    for name in ("images.npy", "labels.npy"):
        assert np.array_equal(np.load(out / "train" / name), np.load(full / name))


def test_stale_cache_is_refused(synth_root, tmp_path):
    out = tmp_path / "cache"
    write_split(synth_root, "val", out, progress=False)
    samples = CityscapesDataset(synth_root, "val").samples
    index = json.loads((out / "val" / "index.json").read_text())
    index["sources"][0][1] += 1  # as if the first image had changed on disk
    (out / "val" / "index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match="does not match .* ifbf data cache"):
        open_cache(synth_root, "val", samples, str(out))
    assert open_cache(synth_root, "val", samples, str(tmp_path / "none")) is None


def test_fast_path_loader_batches_equal_todays(tmp_path):
    base = ["data.dataset=synthetic", "data.synth.train=6", "data.synth.val=1", "data.synth.test=0",
            "data.synth.height=32", "data.synth.width=64", "data.crop_size=[40, 40]", "data.batch_size=2",
            "runtime.workers=0"]
    today_cfg = load_config(BASE_CONFIG, base)
    fast_cfg = load_config(BASE_CONFIG, [*base, "data.fast_path=true", f"data.cache_dir={tmp_path}"])
    assert config_hash(fast_cfg) == config_hash(today_cfg)  # same batches, so the same run
    from ifbf.data.cityscapes import resolve_root

    assert train_dataset(fast_cfg).cache is None  # no cache yet: the fast path decodes the PNGs
    write_split(resolve_root(fast_cfg.data), "train", tmp_path, progress=False)
    assert train_dataset(fast_cfg).cache is not None
    today, fast = iter(train_loader(today_cfg, start_iter=2)), iter(train_loader(fast_cfg, start_iter=2))
    assert next(iter(train_loader(fast_cfg)))[0].dtype == torch.uint8  # normalised on the device
    for _ in range(4):
        (xa, ya, na), (xb, yb, nb) = next(today), next(fast)
        xb, yb = to_device(xb, yb, torch.device("cpu"), torch.float32, fast_cfg.data)
        assert na == nb and torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.skipif(not SHARED_SAMPLE.is_dir(), reason="the real Cityscapes frame in ../shared is absent")
def test_real_frame_fast_equals_today(tmp_path):
    cfg = load_config(BASE_CONFIG, ["data.crop_size=[100, 180]"]).data
    write_split(SHARED_SAMPLE, "val", tmp_path, progress=False)
    today = CityscapesDataset(SHARED_SAMPLE, "val", train_transform(cfg))
    fast = CityscapesDataset(SHARED_SAMPLE, "val", fast_train_transform(cfg), target_dtype=torch.uint8)
    fast.cache = open_cache(SHARED_SAMPLE, "val", fast.samples, str(tmp_path))
    for seed in range(8):
        (xa, ya, _), (xb, yb, _) = today[(0, seed)], fast[(0, seed)]
        xb, yb = to_device(xb[None], yb[None], torch.device("cpu"), torch.float32, cfg)
        assert torch.equal(xa, xb[0]) and torch.equal(ya, yb[0])


def test_cache_command(synth_root, tmp_path, capsys):
    import argparse

    from ifbf.commands import data_cache
    from ifbf.errors import IfbfError

    parser = argparse.ArgumentParser()
    data_cache.add_arguments(parser)
    out = tmp_path / "c"
    assert data_cache.run(parser.parse_args([str(synth_root), "--splits", "val", "--out", str(out), "--quiet"])) == 0
    assert f"data.cache_dir={out}" in capsys.readouterr().out
    assert np.load(out / "val" / "labels.npy").shape == (4, 64, 128)
    assert data_cache.needed_bytes(synth_root, ["val"], out) <= 0  # all written: a rerun needs no more space
    with pytest.raises(IfbfError, match="not a Cityscapes root"):
        data_cache.run(parser.parse_args([str(tmp_path)]))


def test_paper_preset_uses_the_fast_path_and_smoke_does_not():
    row = load_table(2).rows[-1]
    assert row_config(row, load_preset("paper")).data.fast_path
    assert not row_config(row, load_preset("smoke")).data.fast_path
    others = [o for o in load_preset("paper").overrides if not o.startswith("data.fast_path")]
    assert config_hash(row_config(row, load_preset("paper"))) == config_hash(
        load_config(BASE_CONFIG, [*others, *row.overrides]))  # the fast path leaves a run's identity alone
