"""``ifbf data prepare|verify|cache``: build a Cityscapes root from the official zips, check one, and decode
its frames once into the cache the fast input path reads."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ifbf.commands import data_cache
from ifbf.config import SynthConfig
from ifbf.data.verify import CITYSCAPES, Expected, VerifyResult, synthetic_expected, verify, write_manifest
from ifbf.errors import IfbfError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    prep = sub.add_parser("prepare", help="extract the official zips, create labelTrainIds, verify",
                          description="extract leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip into OUT, "
                                      "create *_labelTrainIds.png, verify; re-running resumes")
    prep.add_argument("--zips", type=Path, help="folder holding the two official zips (omit: OUT is extracted already)")
    prep.add_argument("--out", type=Path, required=True, help="dataset root to create (leftImg8bit/, gtFine/)")
    ver = sub.add_parser("verify", help="check counts, labels, sizes and PNG headers of a dataset root",
                         description="check a Cityscapes root; every problem is printed, exit status 2 if any")
    ver.add_argument("root", type=Path, help="dataset root (the folder holding leftImg8bit/ and gtFine/)")
    ver.add_argument("--deep", action="store_true", help="decode every file (parallel; minutes on the full set)")
    ver.add_argument("--expect", nargs="+", metavar="SPLIT=N",
                     help="expected images per split (default: the official 2975/500/1525, or the synthetic "
                          "dataset's own when ROOT holds SYNTHETIC.json)")
    ver.add_argument("--size", metavar="WxH",
                     help="expected image size (default 2048x1024; 'any': labels must match their image)")
    cache = sub.add_parser("cache", help="decode the splits once into memory-mappable arrays (data.fast_path)",
                           description="decode a root's splits once into uint8 arrays that training reads instead "
                                       "of PNGs (data.fast_path); re-running resumes")
    data_cache.add_arguments(cache)
    for p in (prep, ver):
        p.add_argument("--allow-partial", action="store_true",
                       help="accept a deliberate subset (fewer images than expected); recorded in the manifest")
        p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")


def expected_from_args(root: Path, expect: list[str] | None, size: str | None) -> Expected:
    marker = root / "SYNTHETIC.json"
    expected = synthetic_expected(SynthConfig(**json.loads(marker.read_text()))) if marker.is_file() else CITYSCAPES
    counts = dict(expected.counts)
    for item in expect or []:
        split, _, n = item.partition("=")
        if not split or not n.isdigit():
            raise IfbfError(f"--expect {item!r}: expected SPLIT=N, e.g. train=2975")
        counts[split] = int(n)
    if expect:
        counts = {s: n for s, n in counts.items() if s in {i.partition("=")[0] for i in expect}}
    wh = expected.size
    if size:
        try:
            wh = None if size == "any" else tuple(int(v) for v in size.lower().split("x"))  # type: ignore[assignment]
        except ValueError:
            wh = ()
        if wh is not None and len(wh) != 2:
            raise IfbfError(f"--size {size!r}: expected WxH, e.g. 2048x1024, or 'any'")
    return Expected(counts, wh, expected.name)


def report(result: VerifyResult, prepared: bool = False) -> int:
    """Every problem, then one summary line whose fix fits the command (``prepared``: after ``prepare``,
    which has just done what verify would suggest, so a short count points at the zips or --allow-partial)."""
    counts = result.counts()
    if result.problems:
        for line in result.problems:
            print(line)
        n = len(result.problems)
        fix = "are the zips the complete official ones?" if prepared else "or `ifbf data prepare` the official zips"
        subset = "; a deliberate subset passes with --allow-partial" if result.partial and not result.allow_partial \
            else ""
        print(f"{result.root}: {n} problem{'s' * (n != 1)}; not verified (fix them, {fix}{subset})")
        return 2
    summary = ", ".join(f"{s} {counts.get(s, 0)}" for s in result.expected.counts)
    partial = " (partial, accepted by --allow-partial)" if result.partial else ""
    print(f"{result.root}: verified {result.expected.name} ({summary} images){partial}; digest {result.digest[:16]}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.action == "cache":
        return data_cache.run(args)
    progress = not args.no_progress
    if args.action == "prepare":
        from ifbf.data.prepare import prepare  # imports cityscapesscripts' converter only when preparing

        result = prepare(args.out, args.zips, allow_partial=args.allow_partial, workers=args.workers, progress=progress)
        return report(result, prepared=True)
    expected = expected_from_args(args.root, args.expect, args.size)
    result = verify(args.root, expected, args.deep, args.allow_partial, args.workers, progress)
    if result.ok:
        print(f"manifest: {write_manifest(result)}")
    return report(result)
