"""``ifbf export``: labelId PNGs of a run's predictions in the Cityscapes test-server format
(``<city>_<seq>_<frame>_leftImg8bit.png``, one file per image, label ids not trainIds), optionally zipped."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

from ifbf.engine.evaluate_cmd import add_inference_arguments, load_run
from ifbf.errors import IfbfError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_inference_arguments(parser)
    parser.add_argument("--split", default="test", help="split to predict (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the PNGs")
    parser.add_argument("--zip", action="store_true", help="also write OUT.zip for upload")


def export_label_ids(model, cfg, device, split: str, out: Path, progress: bool = True) -> int:
    """Predict ``split`` with ``cfg.eval`` and write one labelId PNG per image into the new folder ``out``."""
    # torch and the model stack load only when exporting (the CLI imports this module for --help too)
    import torch
    from PIL import Image
    from tqdm import tqdm

    from ifbf.data.labels import TRAIN_TO_ID
    from ifbf.data.loader import eval_dataset
    from ifbf.engine.evaluate import predict

    if out.exists() and any(out.iterdir()):
        raise IfbfError(f"{out} is not empty: choose a new --out (exports are never overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    dataset = eval_dataset(cfg, split, with_labels=False)
    for index in tqdm(range(len(dataset)), desc="export", unit="img", disable=None if progress else True):
        image, _, name = dataset[index]
        image = image.unsqueeze(0).to(device, next(model.parameters()).dtype)
        pred = predict(model, image, cfg.eval, cfg.model.num_classes).argmax(1)[0]
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


def run(args: argparse.Namespace) -> int:
    cfg, model, device, _, _, _ = load_run(args)
    n = export_label_ids(model, cfg, device, args.split, args.out, not args.no_progress)
    print(f"wrote {n} labelId PNGs to {args.out}")
    if args.zip:
        print(f"zipped to {zip_submission(args.out)}")
    return 0
