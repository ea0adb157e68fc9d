"""The Cityscapes test split (a benchmark table's test column): its labels are private, so no mIoU is computed here.

``export_test_submission`` writes a run's test predictions as labelId PNGs with the paper's inference
(multi-scale + flip, section 4.4) and zips them for https://www.cityscapes-dataset.com/submit/;
``import_server_result`` records the server's per-class IoUs in the run directory under
``server_eval_key(SERVER_EVAL)``, so the report renders them like any other evaluation.

Accepted result files (IoUs in percent, as the server shows them, or as fractions in [0, 1]):
- CSV, one ``class,IoU`` row per class plus an ``mIoU`` row (a header row is allowed), or two rows:
  the names, then the values;
- JSON: ``{"road": 98.7, ..., "mIoU": 79.6}``, ``{"iou": {...}, "miou": ...}`` (ifbf's own), or
  cityscapesscripts' ``{"classScores": {...}, "averageScoreClasses": ...}``.
The server's other averages (iIoU class, IoU/iIoU category) may be present and are kept as ``extra``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path

from ifbf.config import PAPER_MS_SCALES, EvalConfig
from ifbf.data.labels import CLASS_NAMES, NUM_CLASSES
from ifbf.store.rundir import EvalResult, RunDir, server_eval_key
from ifbf.store.runtypes import ServerScore
from ifbf.errors import IfbfError

SERVER_EVAL = EvalConfig(scales=PAPER_MS_SCALES, flip=True, split="test")  # "multi-scales prediction and flipping"
SOURCE = "cityscapes-test-server"
MIOU_NAMES = {"miou", "mean iou", "meaniou", "iou class", "averagescoreclasses", "mean"}
EXTRA_NAMES = {"iiou class", "iou category", "iiou category"}
TEST_IMAGES = 1525
MAX_BYTES = 1 << 20  # a result file is a few hundred bytes: anything past 1 MiB is not one (never read whole)


class ServerResultError(IfbfError):
    """A server result file that is not the Cityscapes class IoUs and the mIoU."""


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def _number(text: object, name: str, path: Path) -> tuple[float, int]:
    """(value, decimals as written) of one cell."""
    raw = str(text).strip().rstrip("%").strip()
    try:
        value = float(raw)
    except ValueError:
        raise ServerResultError(f"{path}: value {text!r} of {name!r} is not a number") from None
    if not math.isfinite(value):
        raise ServerResultError(f"{path}: value {text!r} of {name!r} is not a finite number")
    decimals = len(raw.partition(".")[2].split("e")[0]) if "e" not in raw.lower() else 6
    return value, decimals


def _pairs_from_json(text: str, path: Path) -> list[tuple[str, object]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ServerResultError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    except RecursionError:
        raise ServerResultError(f"{path}: JSON nested too deeply to be a result file") from None
    if not isinstance(data, dict):
        raise ServerResultError(f"{path}: expected a JSON object of class IoUs and mIoU")
    if "classScores" in data:  # cityscapesscripts' evaluation output
        if not isinstance(data["classScores"], dict):
            raise ServerResultError(f"{path}: \"classScores\" must be an object of class IoUs")
        pairs = list(data["classScores"].items()) + [("mIoU", data.get("averageScoreClasses"))]
    elif isinstance(data.get("iou"), dict):  # ifbf's own result format
        pairs = list(data["iou"].items()) + [("mIoU", data.get("miou"))]
    else:
        pairs = list(data.items())
    nested = [str(name) for name, value in pairs if isinstance(value, (dict, list, bool))]
    if nested:
        raise ServerResultError(f"{path}: values of {', '.join(nested)} are not numbers")
    return pairs


def _pairs_from_csv(text: str, path: Path) -> list[tuple[str, object]]:
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r) and not r[0].startswith("#")]
    if len(rows) == 2 and len(rows[0]) > 2 and len(rows[0]) == len(rows[1]):  # wide: names, then values
        return list(zip(rows[0], rows[1]))
    if any(len(r) != 2 for r in rows):
        raise ServerResultError(f"{path}: expected CSV rows 'class,IoU' (or a row of names and a row of values)")
    try:
        float(rows[0][1].strip().rstrip("%"))
    except ValueError:
        rows = rows[1:]  # a header such as "class,IoU"
    return [(r[0], r[1]) for r in rows]


def parse_server_result(path: Path) -> dict:
    """``{"miou", "iou": {class: IoU}, "extra"}`` (fractions in [0, 1]) from a server result file."""
    if not path.is_file():
        raise ServerResultError(f"server result file not found: {path}")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ServerResultError(f"{path}: {size} bytes; a server result ({NUM_CLASSES} class IoUs and the mIoU) is "
                                f"under {MAX_BYTES // 1024} KiB: wrong file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (UnicodeDecodeError, OSError) as err:
        raise ServerResultError(f"{path}: not a text file ({err}); expected a .csv or .json of class IoUs") from None
    if "\x00" in text:
        raise ServerResultError(f"{path}: not a text file (NUL bytes); expected a .csv or .json of class IoUs")
    if path.suffix.lower() not in (".csv", ".json", ".txt"):
        raise ServerResultError(f"{path}: expected a .csv or .json file of the {NUM_CLASSES} class IoUs and the mIoU")
    is_json = path.suffix.lower() == ".json" or text.lstrip().startswith("{")
    pairs = _pairs_from_json(text, path) if is_json else _pairs_from_csv(text, path)
    values: dict[str, tuple[float, int]] = {}
    unknown = []
    canonical = {_norm(n): n for n in CLASS_NAMES}
    for name, value in pairs:
        key = _norm(str(name))
        target = "mIoU" if key in MIOU_NAMES else canonical.get(key) or (key if key in EXTRA_NAMES else None)
        if target is None:
            unknown.append(str(name))
            continue
        if value is None:
            raise ServerResultError(f"{path}: no value for {name!r}")
        if target in values:
            raise ServerResultError(f"{path}: {name!r} appears twice")
        values[target] = _number(value, str(name), path)
    if unknown:
        raise ServerResultError(f"{path}: unknown class names {unknown}; expected the {NUM_CLASSES} Cityscapes classes "
                                f"({', '.join(CLASS_NAMES)}) and mIoU")
    missing = [n for n in (*CLASS_NAMES, "mIoU") if n not in values]
    if missing:
        raise ServerResultError(f"{path}: missing {', '.join(missing)} "
                                f"(need all {NUM_CLASSES} class IoUs and the mIoU)")
    percent = any(v > 1 for v, _ in values.values())
    scale = 100.0 if percent else 1.0
    out_of_range = [f"{n}={v}" for n, (v, _) in values.items() if not 0 <= v <= scale]
    if out_of_range:
        raise ServerResultError(f"{path}: values out of range [0, {scale:g}]: {', '.join(out_of_range)}")
    iou = {n: values[n][0] / scale for n in CLASS_NAMES}
    miou = values["mIoU"][0] / scale
    _check_mean(path, iou, miou, min(d for _, d in values.values()) - (0 if percent else 2))
    extra = {n: v / scale for n, (v, _) in values.items() if n in EXTRA_NAMES}
    return {"miou": miou, "iou": iou, "extra": extra}


def _check_mean(path: Path, iou: dict[str, float], miou: float, decimals: int) -> None:
    """The mIoU must be the mean of the class IoUs within 0.01 points plus what rounding to ``decimals``
    (in percent) can explain: a paper's table at one decimal can show 79.63 as the mean of a 79.6 row."""
    mean = 100 * sum(iou.values()) / len(iou)
    tolerance = 0.01 + (10.0 ** -max(decimals, 0) if decimals < 6 else 0.0)
    if abs(mean - 100 * miou) > tolerance:
        raise ServerResultError(f"{path}: mIoU {100 * miou:.2f} is not the mean of the class IoUs ({mean:.2f}; "
                                f"tolerance {tolerance:.2f}): wrong file or a mistyped value")


def import_server_result(run: Path, path: Path, eval_cfg: EvalConfig = SERVER_EVAL) -> tuple[str, dict]:
    """Record the server's result for ``run`` (a finished run directory); returns (eval key, entry)."""
    run_dir = RunDir(run)
    cfg = run_dir.config()
    if not run_dir.finished(cfg):
        raise ServerResultError(f"{run} has not finished training (no final metrics.json): the server result "
                                f"belongs to a finished run's export")
    parsed = parse_server_result(path)
    server = ServerScore(SOURCE, str(path.resolve()), hashlib.sha256(path.read_bytes()).hexdigest(),
                         datetime.now(timezone.utc).isoformat(timespec="seconds"), parsed["extra"])
    result = EvalResult(parsed["miou"], parsed["iou"], split=eval_cfg.split, server=server)
    key = server_eval_key(eval_cfg)
    metrics = run_dir.record_evaluation(cfg, eval_cfg, result, key=key)
    return key, metrics["evaluations"][key]
