"""``python reproduce.py``: the flags of the orchestrator (``ifbf.orchestrate.reproduce`` does the work)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ifbf.commands.cli import guarded
from ifbf.errors import exit_codes_help
from ifbf.experiments import DEFAULT_PAPER, load_paper, papers, presets
from ifbf.limits import SEEDS
from ifbf.orchestrate.cluster import profiles
from ifbf.orchestrate.executors import EXECUTORS
from ifbf.orchestrate.reproduce import AUTO, Request, main
from ifbf.orchestrate.signals import stopped_like_ctrl_c
from ifbf.store.rundir import RESULTS


def _seeds(text: str) -> int | str:
    if text == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seeds or 'auto'") from None


WEIGHTS_HELP = ("ImageNet weights per backbone and stem; IFBFNet's paper preset's: resnet101_deep=/data/r101.pth "
                "resnet50_deep=/data/r50.pth (`ifbf weights fetch resnet101 --variant deep` downloads them); DANet's "
                "(--paper danet): resnet101=PATH resnet50=PATH (`ifbf weights fetch resnet101`); other keys: "
                "*_deep_v1c")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reproduce.py",
        description="Train, evaluate and tabulate a paper's tables (default: IFBFNet; see README.md).",
        epilog=exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--paper", default=DEFAULT_PAPER, choices=papers(),
                   help=f"whose tables: a folder of experiments/ (default: {DEFAULT_PAPER})")
    p.add_argument("--table", required=True,
                   help=f"table number ({', '.join(map(str, load_paper().tables))} for {DEFAULT_PAPER}) or 'all'")
    p.add_argument("--preset", default="paper",
                   help=f"overrides for every run, by name: {', '.join(presets())} for {DEFAULT_PAPER}; each paper "
                        "has its own (experiments/<paper>/presets/; default: paper)")
    p.add_argument("--executor", default="slurm",
                   help=f"{' | '.join(EXECUTORS)} (debug: in this process; default: slurm)")
    p.add_argument("--seeds", type=_seeds, default=1,
                   help=f"trainings per row with seeds 0..K-1, K {SEEDS.bound} (default: 1); 'auto' (with --budget): "
                        "one seed everywhere, then more only on the rows of claims still open (docs/verdicts.md)")
    p.add_argument("--design", action="store_true",
                   help="per claim: the paper's Δ, the seed std and image noise assumed (or measured), seeds per "
                        "row for 80%% power at the corrected level and their device-hours; trains nothing")
    p.add_argument("--budget", type=float, default=None, metavar="H",
                   help="device-hours: with --design, which claims H can resolve and the seeds it would spend "
                        "where; with --seeds auto, the most the run may spend (finished trainings included)")
    p.add_argument("--plan", action="store_true",
                   help="print runs, their status and their cost from preflight.json; submit nothing")
    p.add_argument("--preflight", action="store_true",
                   help="run one short real job per compute shape (same executor and profile) and record speed, "
                        "memory and evaluation cost in results/<preset>/preflight.json (another paper's: "
                        "results/<paper>/<preset>/); trains nothing")
    p.add_argument("--preflight-iters", type=int, default=None, metavar="N",
                   help="timed iterations per preflight job (default: 20 on GPUs, 5 on CPUs, after a warm-up)")
    p.add_argument("--status", action="store_true",
                   help="one line per training: scheduler state, iteration, loss, ETA, log; submit nothing")
    p.add_argument("--rerun-failed", action="store_true", help="resubmit runs that failed (resuming their checkpoints)")
    p.add_argument("--report-only", action="store_true", help="only regenerate tables and plots from what exists")
    p.add_argument("--paper-only", action="store_true", help="render the paper's own values as the tables; no runs")
    p.add_argument("--no-wait", action="store_true",
                   help=f"a scheduler's executor ({', '.join(e.name for e in EXECUTORS.values() if e.detached)}): "
                        "submit and return; run --report-only later")
    p.add_argument("--profile", help=f"cluster profile: {', '.join(profiles())} or a YAML file (default: "
                                     f"{', '.join(f'{e.default_profile} for {e.name}' for e in EXECUTORS.values())})")
    p.add_argument("--profile-set", "--slurm", nargs="+", default=[], metavar="KEY=VALUE", dest="profile_set",
                   help="profile overrides, e.g. gpus_per_node=4 timeout_min=2880 partition=gpu (--slurm: the "
                        "same flag under its earlier name)")
    p.add_argument("--parallel", type=int, default=1, help="local executor: runs at once, >= 1 (default: 1)")
    p.add_argument("--results", type=Path, default=RESULTS,
                   help="results folder: the one holding <preset>/ (another paper's: <paper>/<preset>/); a paper's "
                        "own folder or a preset's given instead is refused (default: results/)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="extra",
                   help="extra config overrides for every run (they change run identities)")
    p.add_argument("--weights", nargs="+", default=[], metavar="KEY=PATH",
                   help=WEIGHTS_HELP)
    p.add_argument("--from-scratch", action="store_true",
                   help="train rows without weights from random init (marked 'from scratch' in the tables)")
    p.add_argument("--allow-partial-dataset", action="store_true",
                   help="accept a deliberate subset of Cityscapes (recorded in the dataset manifest and env.json)")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    with stopped_like_ctrl_c():  # SIGTERM, SIGHUP: this process and its local jobs stop as on Ctrl-C
        return guarded("reproduce.py", lambda: main(Request(**vars(args))))
