"""Benchmark: ``ifbf score`` vs cityscapesscripts' evalPixelLevelSemanticLabeling, whole process,
on the same N full-size (2048x1024) label maps, plus the floor set by only decoding the PNGs.

    .venv/bin/python bench/score_bench.py [--n 500] [--workdir /tmp/ifbf-score-bench]

Prints the three wall times and the ratios; see docs/performance.md for recorded figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DISTINCT = 25  # distinct scenes rendered at full size; copies fill up to N files (decoding cost is per file)


def make_data(work: Path, n: int) -> tuple[Path, Path]:
    from ifbf.data.synth import SynthSpec, render

    gt_root, pred = work / "gt", work / "pred"
    if (work / "done.json").is_file() and json.loads((work / "done.json").read_text()) == {"n": n}:
        return gt_root, pred
    shutil.rmtree(work, ignore_errors=True)
    spec = SynthSpec(height=1024, width=2048)
    rng = np.random.default_rng(0)
    scenes = []
    for i in range(DISTINCT):
        _, label, inst = render(spec, "val", i)
        noisy = label.copy()
        for _ in range(200):
            y, x = rng.integers(0, 1000), rng.integers(0, 2020)
            noisy[y : y + 24, x : x + 24] = rng.integers(0, 34)
        scenes.append((label, inst, noisy))
    for i in range(n):
        city = f"city{i % 3}"
        stem = f"{city}_{i:06d}_000019"
        label, inst, noisy = scenes[i % DISTINCT]
        (gt_root / "gtFine" / "val" / city).mkdir(parents=True, exist_ok=True)
        pred.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label).save(gt_root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(inst).save(gt_root / "gtFine" / "val" / city / f"{stem}_gtFine_instanceIds.png")
        Image.fromarray(noisy).save(pred / f"{stem}_leftImg8bit.png")
    (work / "done.json").write_text(json.dumps({"n": n}))
    return gt_root, pred


def _decode(path: str) -> int:
    with Image.open(path) as img:
        return np.asarray(img).size


def decode_floor(gt_root: Path, pred: Path) -> float:
    files = [str(p) for p in sorted(gt_root.rglob("*_labelIds.png"))] + [str(p) for p in sorted(pred.glob("*.png"))]
    start = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        sum(pool.map(_decode, files, chunksize=16))
    return time.perf_counter() - start


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ifbf-score-bench"))
    args = parser.parse_args()
    gt_root, pred = make_data(args.workdir, args.n)

    result_json = args.workdir / "ifbf.json"
    t_ifbf, _ = timed([sys.executable, "-m", "ifbf", "score", "--gt", str(gt_root), "--pred", str(pred), "--json", str(result_json)])
    env = {**os.environ, "CITYSCAPES_DATASET": str(gt_root), "CITYSCAPES_RESULTS": str(pred),
           "CITYSCAPES_EXPORT_DIR": str(args.workdir)}
    ref_code = (
        "import sys, json; sys.path.insert(0, %r); from cityscapes_reference import reference_scores; "
        "from pathlib import Path; print(json.dumps(reference_scores(Path(%r), 'val', Path(%r), instances=False)))"
        % (str(REPO / "tests"), str(gt_root), str(pred))
    )
    t_cs, out = timed([sys.executable, "-c", ref_code], env)
    reference = json.loads(out.strip().splitlines()[-1])
    t_cs_cli, _ = timed([sys.executable, "-m", "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling"], env)
    t_floor = decode_floor(gt_root, pred)

    ours = json.loads(result_json.read_text())
    same = all(
        (ours["iou"][name] is None and reference[name] != reference[name]) or abs(ours["iou"][name] - reference[name]) < 1e-12
        for name in ours["iou"]
    ) and abs(ours["miou"] - reference["miou"]) < 1e-12
    print(f"images: {args.n} label maps of 2048x1024 (+ {args.n} predictions), {os.cpu_count()} cores")
    print(f"identical per-class IoU and mIoU: {same} (mIoU {100 * ours['miou']:.4f})")
    print(f"cityscapesscripts, IoU only (evalInstLevelScore=False): {t_cs:7.2f} s")
    print(f"cityscapesscripts CLI as shipped (with instance scores): {t_cs_cli:7.2f} s")
    print(f"ifbf score (whole process):                             {t_ifbf:7.2f} s")
    print(f"decode-only floor (all PNGs, {os.cpu_count()} processes):               {t_floor:7.2f} s")
    print(f"speed-up vs cityscapesscripts IoU only: {t_cs / t_ifbf:.1f}x;  vs shipped CLI: {t_cs_cli / t_ifbf:.1f}x")
    print(f"ifbf score / decode floor: {t_ifbf / t_floor:.2f}x")


if __name__ == "__main__":
    main()
