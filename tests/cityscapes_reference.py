"""Run cityscapesscripts' own evalPixelLevelSemanticLabeling on files (the reference for ``ifbf score``)."""

from __future__ import annotations

import glob
import os
from pathlib import Path


def reference_scores(gt_root: Path, split: str, pred_dir: Path, instances: bool = False) -> dict[str, float]:
    saved = {k: os.environ.get(k) for k in ("CITYSCAPES_DATASET", "CITYSCAPES_RESULTS")}
    os.environ["CITYSCAPES_DATASET"] = str(gt_root)  # read by the module at import time
    os.environ["CITYSCAPES_RESULTS"] = str(pred_dir)
    try:
        from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    args = cs.args
    args.predictionPath, args.predictionWalk = None, None  # module-level state: reset between runs
    args.cityscapesPath = str(gt_root)
    args.quiet, args.JSONOutput, args.evalInstLevelScore = True, False, instances
    args.predictionPath = str(pred_dir)
    gt = sorted(glob.glob(str(gt_root / "gtFine" / split / "*" / "*_gtFine_labelIds.png")))
    preds = [cs.getPrediction(args, g) for g in gt]
    result = cs.evaluateImgLists(preds, gt, args)
    return {**result["classScores"], "miou": result["averageScoreClasses"]}


def reference_per_image(gt_root: Path, split: str, pred_dir: Path) -> dict[str, dict[str, float]]:
    """cityscapesscripts' class IoUs of each image alone: {image name: {class name: IoU or NaN}}."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs

    reference_scores(gt_root, split, pred_dir)  # sets the module's arguments (and imports it)
    args = cs.args
    result = {}
    for gt in sorted(glob.glob(str(gt_root / "gtFine" / split / "*" / "*_gtFine_labelIds.png"))):
        scores = cs.evaluateImgLists([cs.getPrediction(args, gt)], [gt], args)["classScores"]
        result[Path(gt).name[: -len("_gtFine_labelIds.png")]] = scores
    return result
