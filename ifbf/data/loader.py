"""Data loading by iteration: which samples and augmentation seeds make up global batch ``i`` depends
only on (seed, i), never on the process count or on where a run was resumed."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ifbf.config import Config
from ifbf.data.cache import open_cache
from ifbf.data.cityscapes import CityscapesDataset, DataError, resolve_root
from ifbf.data.fast import fast_train_transform
from ifbf.data.transforms import eval_transform, train_transform


class IterationSampler(torch.utils.data.Sampler):
    """Infinite sampler of ``(index, augmentation seed)`` for one rank, from iteration ``start_iter`` on.

    Global batch i is positions [i * B * world, (i + 1) * B * world) of an endless stream of epochs, each a
    permutation seeded by (seed, epoch); rank r takes the r-th slice of B. A 2-process run therefore sees
    exactly the samples and augmentations of a 1-process run with twice the batch size.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start_iter: int = 0, rank: int = 0, world: int = 1):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_iter, self.rank, self.world = start_iter, rank, world

    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        global_batch = self.batch_size * self.world
        it = self.start_iter
        cached_epoch, perm = -1, np.empty(0, dtype=np.int64)
        while True:
            base = it * global_batch + self.rank * self.batch_size
            for pos in range(base, base + self.batch_size):
                epoch = pos // self.size
                if epoch != cached_epoch:
                    cached_epoch, perm = epoch, self._perm(epoch)
                yield int(perm[pos % self.size]), int(np.random.default_rng([self.seed, 1, pos]).integers(2**31))
            it += 1


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode and augment; leave the cores to the model


def train_dataset(cfg: Config) -> CityscapesDataset:
    """The training set; with ``data.fast_path`` it reads the decoded cache when there is one and yields uint8
    images and masks (``fast.to_device`` normalises them): the same batches, bit for bit."""
    root = resolve_root(cfg.data)
    splits = cfg.data.train_splits
    if not cfg.data.fast_path:
        return CityscapesDataset(root, splits, train_transform(cfg.data))
    dataset = CityscapesDataset(root, splits, fast_train_transform(cfg.data), target_dtype=torch.uint8)
    if len(splits) == 1:  # the decoded cache is per split; several splits decode their PNGs
        dataset.cache = open_cache(root, splits[0], dataset.samples, cfg.data.cache_dir)
    return dataset


def train_loader(cfg: Config, start_iter: int = 0, rank: int = 0, world: int = 1) -> torch.utils.data.DataLoader:
    dataset = train_dataset(cfg)
    sampler = IterationSampler(len(dataset), cfg.data.batch_size, cfg.train.seed, start_iter, rank, world)
    workers = cfg.runtime.workers
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.data.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
        persistent_workers=workers > 0,
        worker_init_fn=_worker_init if workers > 0 else None,
    )


def eval_dataset(cfg: Config, split: str | None = None, with_labels: bool = True) -> CityscapesDataset:
    split = split or cfg.eval.split or cfg.data.val_split
    if with_labels and split == "test" and cfg.data.dataset == "cityscapes":
        raise DataError(
            "the Cityscapes test labels are private (void), so no mIoU is computed on the test split: export "
            "the predictions (`ifbf export --split test --ms --flip --zip`), upload the zip to "
            "https://www.cityscapes-dataset.com/submit/ and record the result with `ifbf import-server-result`"
        )
    return CityscapesDataset(resolve_root(cfg.data), split, eval_transform(cfg.data), with_labels)
