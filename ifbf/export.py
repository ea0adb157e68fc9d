"""``ifbf export``: labelId PNGs of a run's predictions in the Cityscapes test-server format
(``<city>_<seq>_<frame>_leftImg8bit.png``, one file per image, label ids not trainIds), optionally zipped."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ifbf.engine.evaluate_cmd import add_inference_arguments, load_run
from ifbf.errors import IfbfError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_inference_arguments(parser)
    parser.add_argument("--split", default="test", help="split to predict (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the PNGs")
    parser.add_argument("--zip", action="store_true", help="also write OUT.zip for upload")


def run(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image
    from tqdm import tqdm

    from ifbf.data.labels import TRAIN_TO_ID
    from ifbf.data.loader import eval_dataset
    from ifbf.engine.evaluate import predict

    cfg, model, device, _, _, _ = load_run(args)
    if args.out.exists() and any(args.out.iterdir()):
        raise IfbfError(f"{args.out} is not empty: choose a new --out (exports are never overwritten)")
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = eval_dataset(cfg, args.split, with_labels=False)
    for index in tqdm(range(len(dataset)), desc="export", unit="img", disable=None if not args.no_progress else True):
        image, _, name = dataset[index]
        image = image.unsqueeze(0).to(device, next(model.parameters()).dtype)
        pred = predict(model, image, cfg.eval, cfg.model.num_classes).argmax(1)[0]
        ids = TRAIN_TO_ID[pred.to(torch.uint8).cpu().numpy()]
        Image.fromarray(ids).save(args.out / f"{name}_leftImg8bit.png")
    print(f"wrote {len(dataset)} labelId PNGs to {args.out}")
    if args.zip:
        archive = shutil.make_archive(str(args.out), "zip", root_dir=args.out)
        print(f"zipped to {archive}")
    return 0
