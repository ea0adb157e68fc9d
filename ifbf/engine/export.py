"""Test-server exports: labelId PNGs of a run's predictions in the Cityscapes test-server format
(``<city>_<seq>_<frame>_leftImg8bit.png``, one file per image, label ids not trainIds), optionally zipped."""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from ifbf.data.labels import TRAIN_TO_ID
from ifbf.data.loader import eval_dataset
from ifbf.config import EvalConfig
from ifbf.engine.checkpoint import TrainedModel, locate, model_from_checkpoint
from ifbf.engine.dist import setup
from ifbf.engine.evaluate import predict
from ifbf.engine.server_result import SERVER_EVAL, TEST_IMAGES
from ifbf.errors import IfbfError


def export_predictions(source: TrainedModel, split: str, out: Path, progress: bool = True) -> int:
    """Predict every image of ``split`` with ``source.cfg.eval`` and write one labelId PNG each into ``out``
    (which must be new or empty: exports are never overwritten); returns the number of images."""
    if out.exists() and any(out.iterdir()):
        raise IfbfError(f"{out} is not empty: choose a new --out (exports are never overwritten)")
    cfg = source.cfg
    _, device = setup(cfg)
    model, _ = model_from_checkpoint(cfg, source.checkpoint, device, "export")
    out.mkdir(parents=True, exist_ok=True)
    dataset = eval_dataset(cfg, split, with_labels=False)
    dtype = next(model.parameters()).dtype
    for index in tqdm(range(len(dataset)), desc="export", unit="img", disable=None if progress else True):
        image, _, name = dataset[index]
        pred = predict(model, image.unsqueeze(0).to(device, dtype), cfg.eval, cfg.model.num_classes).argmax(1)[0]
        ids = TRAIN_TO_ID[pred.to(torch.uint8).cpu().numpy()]
        Image.fromarray(ids).save(out / f"{name}_leftImg8bit.png")
    return len(dataset)


def zip_submission(folder: Path) -> Path:
    """``folder.zip`` holding the folder's PNGs at its top level, in name order: the upload for the server."""
    pngs = sorted(folder.glob("*.png"))
    if not pngs:
        raise IfbfError(f"nothing to zip: {folder} holds no PNG")
    archive = folder.with_name(folder.name + ".zip")
    tmp = archive.with_name(f".{archive.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for png in pngs:
            z.write(png, png.name)
    tmp.replace(archive)
    return archive


def export_test_submission(run: Path, out: Path, eval_cfg: EvalConfig = SERVER_EVAL, progress: bool = True) -> Path:
    """labelId PNGs of the test split predicted by ``run`` with ``eval_cfg`` (the paper's: MS + flip) in
    ``out``, and ``out.zip`` (the file to upload); returns the zip's path."""
    source = locate(run)
    source = TrainedModel(dataclasses.replace(source.cfg, eval=eval_cfg), source.checkpoint, source.run_dir)
    n = export_predictions(source, eval_cfg.split or "test", out, progress)
    if source.cfg.data.dataset == "cityscapes" and n != TEST_IMAGES:
        raise IfbfError(f"exported {n} test images, the server expects {TEST_IMAGES}: "
                        f"`ifbf data verify` the dataset, then export again into a new folder")
    return zip_submission(out)
