from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_SAMPLE
from ifbf._torchvision import torchvision  # noqa: F401
from ifbf.config import BASE_CONFIG, load_config
from ifbf.data.cityscapes import CityscapesDataset, DataError, find_samples, resolve_root
from ifbf.data.labels import IGNORE
from ifbf.data.loader import IterationSampler
from ifbf.data.transforms import train_transform
from torchvision import tv_tensors


def test_dataset_reads_synthetic(synth_root):
    ds = CityscapesDataset(synth_root, "val")
    image, mask = ds.load(0)
    assert image.shape == (3, 64, 128) and image.dtype == torch.uint8
    assert mask.shape == (64, 128) and set(mask.unique().tolist()) <= set(range(19)) | {IGNORE}


@pytest.mark.skipif(not SHARED_SAMPLE.is_dir(), reason="the real Cityscapes sample in ../shared is absent")
def test_real_cityscapes_sample_train_ids_equal_shipped_ones():
    ds = CityscapesDataset(SHARED_SAMPLE, "val")
    assert [s.name for s in ds.samples] == ["frankfurt_000000_000294"]
    image, mask = ds.load(0)
    assert image.shape == (3, 128, 256)
    shipped = np.asarray(Image.open(SHARED_SAMPLE / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png"))
    assert len(np.unique(shipped)) > 5  # a real street scene, not an empty label map
    ours = mask.numpy()
    # The fixture's labelTrainIds.png was downscaled separately from its labelIds.png, so the two files
    # disagree on 77 boundary pixels. Everywhere else our mapping must equal the shipped trainIds, and
    # every disagreement must sit on a label boundary of the shipped map.
    differ = ours != shipped
    assert differ.sum() <= 80
    padded = np.pad(shipped, 1, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
    on_boundary = (windows.min((-1, -2)) != windows.max((-1, -2)))
    assert on_boundary[differ].all()
    assert np.array_equal(ours[~on_boundary], shipped[~on_boundary])


def _coordinate_sample(h: int, w: int):
    """An image whose pixels encode their own label (blocks of 8x8), so alignment can be checked."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 19, (h // 8, w // 8))
    mask = np.kron(blocks, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
    image = np.stack([mask * 10, mask * 10, np.full_like(mask, 7)])
    return tv_tensors.Image(torch.from_numpy(image)), tv_tensors.Mask(torch.from_numpy(mask))


@pytest.mark.parametrize("seed", range(6))
def test_labels_stay_aligned_under_scale_crop_flip(seed):
    cfg = load_config(BASE_CONFIG, ["data.crop_size=[40, 56]", "data.scales=[0.5, 1.0, 1.5, 2.0]",
                                    "data.mean=[0, 0, 0]", "data.std=[1, 1, 1]"]).data
    image, mask = _coordinate_sample(48, 64)
    torch.manual_seed(seed)
    out_image, out_mask = train_transform(cfg)(image, mask)
    assert out_image.shape == (3, 40, 56) and out_mask.shape == (40, 56)
    assert out_image.dtype == torch.float32
    decoded = torch.round(out_image[0] * 255 / 10).long()
    m = out_mask.long()
    # interior pixels (3x3 neighbourhood of one label) must decode to their mask label exactly
    pad = torch.nn.functional.pad(m[None, None].float(), (1, 1, 1, 1), value=-1.0)  # crop edges excluded
    uniform = (torch.nn.functional.max_pool2d(pad, 3, 1) == -torch.nn.functional.max_pool2d(-pad, 3, 1))[0, 0]
    padded = out_image[2] * 255 < 1  # padding has image 0 (channel 2 is 7 elsewhere) ...
    assert (m[padded] == IGNORE).all()  # ... and label 255
    interior = uniform & ~padded
    assert interior.sum() > 100
    assert torch.equal(decoded[interior], m[interior])


def test_flip_happens_and_is_joint():
    cfg = load_config(BASE_CONFIG, ["data.crop_size=[48, 64]", "data.scales=[1.0]", "data.mean=[0, 0, 0]",
                                    "data.std=[1, 1, 1]"]).data
    image, mask = _coordinate_sample(48, 64)
    flipped = 0
    for seed in range(10):
        torch.manual_seed(seed)
        out_image, out_mask = train_transform(cfg)(image, mask)
        assert torch.equal(torch.round(out_image[0] * 255 / 10).long(), out_mask.long())
        flipped += torch.equal(out_mask, mask.flip(-1))
    assert 0 < flipped < 10


def test_seeded_items_are_reproducible(synth_root):
    cfg = load_config(BASE_CONFIG, ["data.crop_size=[32, 32]"]).data
    ds = CityscapesDataset(synth_root, "train", train_transform(cfg))
    a, b = ds[(3, 1234)], ds[(3, 1234)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(ds[(3, 99)][0], a[0])


def test_iteration_sampler_global_batches_do_not_depend_on_world_size():
    one = IterationSampler(10, batch_size=4, seed=0)
    ranks = [IterationSampler(10, batch_size=2, seed=0, rank=r, world=2) for r in range(2)]
    stream, per_rank = iter(one), [iter(s) for s in ranks]
    for _ in range(7):  # crosses epoch boundaries
        global_batch = [next(stream) for _ in range(4)]
        assert global_batch == [next(per_rank[0]) for _ in range(2)] + [next(per_rank[1]) for _ in range(2)]
    resumed = iter(IterationSampler(10, batch_size=4, seed=0, start_iter=7))
    assert [next(resumed) for _ in range(4)] == [next(stream) for _ in range(4)]
    epoch = [next(iter(IterationSampler(10, batch_size=10, seed=0)))[0]]
    assert len(epoch) == 1


def test_iteration_sampler_covers_each_epoch():
    s = iter(IterationSampler(10, batch_size=5, seed=1))
    assert sorted(next(s)[0] for _ in range(10)) == list(range(10))


# --- bad input: one clear error naming the file or folder ---------------------------------------


def _copy_sample(src, dst, split="val"):
    import shutil

    shutil.copytree(src / "leftImg8bit" / split, dst / "leftImg8bit" / split)
    shutil.copytree(src / "gtFine" / split, dst / "gtFine" / split)
    return sorted((dst / "gtFine" / split).glob("*/*_labelIds.png"))


def test_missing_root_and_env(monkeypatch, tmp_path):
    cfg = load_config(BASE_CONFIG).data
    with pytest.raises(DataError, match="set CITYSCAPES_DATASET"):
        resolve_root(cfg)
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path / "nope"))
    with pytest.raises(DataError, match=r"Cityscapes root .*nope does not exist"):
        resolve_root(cfg)


def test_missing_split(synth_root):
    with pytest.raises(DataError, match=r"split 'train_extra' not found"):
        find_samples(synth_root, "train_extra")


def test_image_without_label(synth_root, tmp_path):
    labels = _copy_sample(synth_root, tmp_path)
    labels[1].unlink()
    with pytest.raises(DataError, match=rf"has no label: expected .*{labels[1].name}"):
        CityscapesDataset(tmp_path, "val")


def test_size_mismatch(synth_root, tmp_path):
    labels = _copy_sample(synth_root, tmp_path)
    Image.open(labels[0]).resize((64, 32), Image.NEAREST).save(labels[0])
    with pytest.raises(DataError, match="size mismatch: image .* is 128x64 but its label .* is 64x32"):
        CityscapesDataset(tmp_path, "val").load(0)


def test_unknown_label_id(synth_root, tmp_path):
    labels = _copy_sample(synth_root, tmp_path)
    arr = np.asarray(Image.open(labels[0])).copy()
    arr[0, 0] = 77
    Image.fromarray(arr).save(labels[0])
    with pytest.raises(DataError, match=r"has label ids \[77\] that are not in the Cityscapes label table"):
        CityscapesDataset(tmp_path, "val").load(0)


def test_unreadable_png(synth_root, tmp_path):
    _copy_sample(synth_root, tmp_path)
    image = sorted((tmp_path / "leftImg8bit" / "val").glob("*/*.png"))[0]
    image.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=rf"cannot read PNG .*{image.name}"):
        CityscapesDataset(tmp_path, "val").load(0)


def test_synthetic_dataset_is_generated_on_first_use():
    cfg = load_config(BASE_CONFIG, ["data.dataset=synthetic", "data.synth.train=2", "data.synth.val=1",
                                    "data.synth.test=0", "data.synth.height=32", "data.synth.width=64"]).data
    root = resolve_root(cfg)
    assert len(find_samples(root, "train")) == 2
    assert resolve_root(dataclasses.replace(cfg)) == root  # cached


def test_loader_batches_do_not_depend_on_workers():
    from ifbf.data.loader import train_loader

    base = ["data.dataset=synthetic", "data.synth.train=6", "data.synth.val=1", "data.synth.test=0",
            "data.synth.height=32", "data.synth.width=64", "data.crop_size=[32, 32]", "data.batch_size=2"]
    batches = []
    for workers in (0, 2):
        it = iter(train_loader(load_config(BASE_CONFIG, [*base, f"runtime.workers={workers}"]), start_iter=3))
        batches.append([next(it) for _ in range(4)])
    for (xa, ya, na), (xb, yb, nb) in zip(*batches):
        assert na == nb and torch.equal(xa, xb) and torch.equal(ya, yb)
