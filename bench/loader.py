"""Benchmark: the training input path today vs the fast path (data.fast_path), per core, at full size.

    nice -n 5 .venv/bin/python bench/loader.py [--frames 8] [--samples 40] [--workers 2]

Data: 2048x1024 frames in the Cityscapes layout, written to a temporary folder. With the real frame of
--sample (default ../shared/data/cityscapes-sample) they are that frame, upscaled, with sensor-like noise;
without it, gradients with noise. Either way each PNG is 2-3 MB like a Cityscapes frame (smooth synthetic
scenes compress far better and would flatter decoding). Augmentation is the paper preset's (random scale
0.5-2.0, crop 876x876, flip).

Prints, for today's path and the fast one: milliseconds per stage (read, decode, label, scale, crop, flip,
to tensor), samples/s/core in one process (1 thread) and with loader workers (per worker), checks that
the fast path's batches equal today's bit for bit for the same (seed, iteration), and ends with
``loader speedup: N.Nx`` (fast vs today, samples per CPU-second, one process). Single-process figures are
CPU time, so other load on a shared machine does not distort them; the loader figures are wall clock.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ifbf._torchvision import torchvision  # noqa: F401 - must precede any torchvision submodule import
from ifbf.config import BASE_CONFIG, Config, load_config
from ifbf.data.cache import write_cache
from ifbf.data.cityscapes import CityscapesDataset
from ifbf.data.fast import to_device
from ifbf.data.labels import ID_TO_TRAIN
from ifbf.data.loader import IterationSampler, train_dataset, train_loader
from ifbf.experiments import load_preset
from torchvision import tv_tensors  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 1024, 2048
PNG_MB = (2.0, 3.2)  # a Cityscapes leftImg8bit frame
CLOCK = time.process_time  # CPU seconds of this process: what a core spends, whatever else runs on the machine
STAGE = {"RandomScale": "scale", "RandomCrop": "crop", "RandomHorizontalFlip": "flip"}


def _noisy(base: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return np.clip(base + rng.normal(0, sigma, base.shape), 0, 255).astype(np.uint8)


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _frame_sources(sample: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(float RGB base image, labelId map) at full size, and where they come from."""
    images = sorted(sample.glob("leftImg8bit/*/*/*_leftImg8bit.png")) if sample.is_dir() else []
    if images:
        name = images[0].name.replace("_leftImg8bit.png", "")
        label = next(sample.glob(f"gtFine/*/*/{name}_gtFine_labelIds.png"))
        rgb = Image.open(images[0]).convert("RGB").resize((WIDTH, HEIGHT), Image.BILINEAR)
        ids = Image.open(label).resize((WIDTH, HEIGHT), Image.NEAREST)
        return np.asarray(rgb, np.float32), np.asarray(ids), f"the real frame {name}, upscaled, plus noise"
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = np.stack([x * 255 / WIDTH, y * 255 / HEIGHT, (x + y) * 127 / (WIDTH + HEIGHT) + 60], -1)
    ids = np.where(y < HEIGHT // 2, 23, 7).astype(np.uint8)  # sky over road
    ids[(x // 256 % 3 == 0) & (y > HEIGHT // 3)] = 26  # cars
    return base, ids, "generated gradients plus noise"


def write_frames(out: Path, n: int, sample: Path, seed: int = 0) -> str:
    """``n`` full-size frames in the Cityscapes layout under ``out`` (split train); returns a description."""
    base, ids, source = _frame_sources(sample)
    rng = np.random.default_rng(seed)
    images, labels = out / "leftImg8bit" / "train" / "bench", out / "gtFine" / "train" / "bench"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    sigma, sizes = 2.0, []
    for i in range(n):
        data = _png_bytes(_noisy(base, rng, sigma))
        while not PNG_MB[0] <= len(data) / 1e6 <= PNG_MB[1]:  # tune the noise until the PNG weighs like Cityscapes'
            sigma *= 1.25 if len(data) / 1e6 < PNG_MB[0] else 0.8
            data = _png_bytes(_noisy(base, rng, sigma))
        (images / f"bench_000000_{i:06d}_leftImg8bit.png").write_bytes(data)
        Image.fromarray(np.roll(ids, 16 * i, axis=1)).save(labels / f"bench_000000_{i:06d}_gtFine_labelIds.png")
        sizes.append(len(data) / 1e6)
    return f"{n} frames {WIDTH}x{HEIGHT} from {source}; PNG {min(sizes):.1f}-{max(sizes):.1f} MB"


def _timed(times: dict[str, float], stage: str, fn: Callable, *args):
    start = CLOCK()
    out = fn(*args)
    times[stage] = times.get(stage, 0.0) + CLOCK() - start
    return out


def stages_today(ds: CityscapesDataset, items: list[tuple[int, int]]) -> dict[str, float]:
    """Seconds per stage of today's path over ``items``; the transforms of train_transform run one by one."""
    *steps, to_float, normalize = ds.transform.transforms
    names = [STAGE[type(step).__name__] for step in steps]

    def to_tensor(image, mask):
        return normalize(*to_float(image, mask))[0], mask.long()
    times: dict[str, float] = {}
    for index, seed in items:
        sample = ds.samples[index]
        data = _timed(times, "read", lambda: (sample.image.read_bytes(), sample.label.read_bytes()))
        rgb = _timed(times, "decode", lambda: np.asarray(Image.open(io.BytesIO(data[0])).convert("RGB")))
        train = _timed(times, "label", lambda: ID_TO_TRAIN[np.asarray(Image.open(io.BytesIO(data[1])))])
        image = tv_tensors.Image(torch.from_numpy(rgb.copy()).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(train.copy()))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for name, step in zip(names, steps):
                image, mask = _timed(times, name, step, image, mask)
            _timed(times, "to tensor", to_tensor, image, mask)
    return times


def stages_fast(ds: CityscapesDataset, items: list[tuple[int, int]]) -> dict[str, float]:
    """Seconds per stage of the fast path (cache view, scale + crop in one step, flip, uint8 out)."""
    scale_crop, *flip = ds.transform.transforms
    times: dict[str, float] = {}
    for index, seed in items:
        image, mask = _timed(times, "read", ds.load, index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            image, mask = _timed(times, "scale+crop", scale_crop, image, mask)
            for step in flip:
                image, mask = _timed(times, "flip", step, image, mask)
        _timed(times, "to tensor", lambda: (image.as_subclass(torch.Tensor).contiguous(), mask.to(torch.uint8)))
    return times


def per_core_rates(datasets: list[CityscapesDataset], items: list[tuple[int, int]], rounds: int = 4) -> list[float]:
    """Samples per CPU-second of ``ds[(index, seed)]`` in this process (1 thread), for each dataset.

    CPU time, not wall time, so that other processes on a shared machine do not count; the datasets take
    turns in ``rounds`` chunks so that a change of machine load hits all of them alike."""
    for ds in datasets:
        ds[items[0]]  # warm-up: page cache, kernels
    spent = [0.0] * len(datasets)
    chunks = [items[i::rounds] for i in range(rounds)]
    for chunk in chunks:
        for k, ds in enumerate(datasets):
            start = CLOCK()
            for item in chunk:
                ds[item]
            spent[k] += CLOCK() - start
    return [len(items) / s for s in spent]


def loader_rate(cfg: Config, batches: int) -> float:
    """Samples per second of the real train_loader with runtime.workers workers (after one warm-up batch)."""
    it = iter(train_loader(cfg))
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * cfg.data.batch_size / (time.perf_counter() - start)


def check_identical(today: Config, fast: Config, iterations: int) -> int:
    """Compare the first batches of both loaders after the device step; returns how many samples matched."""
    a, b = iter(train_loader(today)), iter(train_loader(fast))
    for i in range(iterations):
        (xa, ya, na), (xb, yb, nb) = next(a), next(b)
        xb, yb = to_device(xb, yb, torch.device("cpu"), torch.float32, fast.data)
        assert na == nb and torch.equal(xa, xb) and torch.equal(ya, yb), f"batch {i}: fast path differs from today's"
    return iterations * today.data.batch_size


def _with_workers(cfg: Config, workers: int) -> Config:
    return dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, workers=workers))


def _row(name: str, times: dict[str, float], n: int, order: list[str]) -> str:
    cells = [f"{1e3 * times[k] / n:7.1f}" if k in times else "      -" for k in order]
    return f"{name:<8}" + "".join(f"{c:>12}" for c in cells) + f"{1e3 * sum(times.values()) / n:>10.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", default=str(REPO.parent / "shared" / "data" / "cityscapes-sample"),
                        help="real Cityscapes frame(s) to build the data from (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=8, help="full-size frames to write (default %(default)s)")
    parser.add_argument("--samples", type=int, default=40, help="samples per measurement (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers for the loader figures")
    parser.add_argument("--check", type=int, default=3, help="batches compared bit for bit (default %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="ifbf-bench-loader-") as tmp:
        root = Path(tmp)
        print(write_frames(root, args.frames, Path(args.sample)))
        start = time.perf_counter()
        write_cache(root, ["train"], root / "ifbf_cache", progress=False)
        cache_s = (time.perf_counter() - start) / args.frames
        preset = load_preset("paper")
        common = [*preset.overrides, f"data.root={root}", "runtime.workers=0"]
        today = load_config(BASE_CONFIG, [*common, "data.fast_path=false"])
        fast = load_config(BASE_CONFIG, common)
        assert fast.data.fast_path, "the paper preset should use the fast path"
        d = today.data
        print(f"paper preset: scales {list(d.scales)}, crop {d.crop_size[0]}x{d.crop_size[1]}, hflip {d.hflip}, "
              f"batch {d.batch_size}; cache written at {1e3 * cache_s:.0f} ms/frame, "
              f"{(root / 'ifbf_cache' / 'train' / 'images.npy').stat().st_size / args.frames / 2**20:.1f} MiB + "
              f"{(root / 'ifbf_cache' / 'train' / 'labels.npy').stat().st_size / args.frames / 2**20:.1f} MiB per frame")

        samples = iter(IterationSampler(args.frames, 1, seed=today.train.seed))
        items = [next(samples) for _ in range(args.samples)]
        ds_today, ds_fast = train_dataset(today), train_dataset(fast)
        assert ds_fast.cache is not None
        order = ["read", "decode", "label", "scale", "crop", "scale+crop", "flip", "to tensor"]
        t_today, t_fast = stages_today(ds_today, items), stages_fast(ds_fast, items)
        print(f"\nCPU ms per sample, one process, 1 thread ({args.samples} samples)")
        print(f"{'path':<8}" + "".join(f"{k:>12}" for k in order) + f"{'total':>10}")
        print(_row("today", t_today, args.samples, order))
        print(_row("fast", t_fast, args.samples, order))
        print("(fast: 'read' is the cache view; normalisation runs on the device, batched, see to_device)")

        rate_today, rate_fast = per_core_rates([ds_today, ds_fast], items)
        print(f"\nsamples/s/core (per CPU-second), one process: today {rate_today:.1f}, fast {rate_fast:.1f}")
        if args.workers:
            batches = max(2, args.samples // d.batch_size)
            lt = loader_rate(_with_workers(today, args.workers), batches)
            lf = loader_rate(_with_workers(fast, args.workers), batches)
            print(f"samples/s/worker (wall clock), train_loader with {args.workers} workers: today {lt / args.workers:.1f}, "
                  f"fast {lf / args.workers:.1f} (total {lt:.1f} vs {lf:.1f} samples/s; ratio {lf / lt:.1f}x)")
        matched = check_identical(today, fast, args.check)
        print(f"bitwise check: {matched} samples of the first {args.check} batches identical (fast vs today)")
        print(f"loader speedup: {rate_fast / rate_today:.1f}x")


if __name__ == "__main__":
    main()
