"""Test-server exports: labelId PNGs of a run's predictions in the Cityscapes test-server format
(``<city>_<seq>_<frame>_leftImg8bit.png``, one file per image, label ids not trainIds), optionally zipped."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from ifbf.data.labels import TRAIN_TO_ID
from ifbf.data.loader import eval_dataset
from ifbf.engine.checkpoint import TrainedModel, model_from_checkpoint
from ifbf.engine.dist import setup
from ifbf.engine.evaluate import predict
from ifbf.errors import IfbfError


def export_predictions(source: TrainedModel, split: str, out: Path, progress: bool = True) -> int:
    """Predict every image of ``split`` with ``source.cfg.eval`` and write one labelId PNG each into ``out``
    (which must be new or empty: exports are never overwritten); returns the number of images."""
    if out.exists() and any(out.iterdir()):
        raise IfbfError(f"{out} is not empty: choose a new --out (exports are never overwritten)")
    cfg = source.cfg
    _, device = setup(cfg)
    model, _ = model_from_checkpoint(cfg, source.checkpoint, device)
    out.mkdir(parents=True, exist_ok=True)
    dataset = eval_dataset(cfg, split, with_labels=False)
    dtype = next(model.parameters()).dtype
    for index in tqdm(range(len(dataset)), desc="export", unit="img", disable=None if progress else True):
        image, _, name = dataset[index]
        pred = predict(model, image.unsqueeze(0).to(device, dtype), cfg.eval, cfg.model.num_classes).argmax(1)[0]
        ids = TRAIN_TO_ID[pred.to(torch.uint8).cpu().numpy()]
        Image.fromarray(ids).save(out / f"{name}_leftImg8bit.png")
    return len(dataset)


def zip_export(out: Path) -> Path:
    """``OUT.zip`` holding the PNGs of ``out`` (the file to upload to the test server)."""
    return Path(shutil.make_archive(str(out), "zip", root_dir=out))
