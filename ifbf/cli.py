"""The ``ifbf`` command line. Each subcommand lives in its own module and is imported only when used,
so light commands (``ifbf score``) start without importing torch."""

from __future__ import annotations

import argparse
import importlib
import sys

from ifbf import __version__
from ifbf.errors import IfbfError

# subcommand -> (module, one-line help)
COMMANDS = {
    "synth": ("ifbf.data.synth", "write the synthetic Cityscapes-layout dataset"),
    "train": ("ifbf.engine.main", "train one run (resumes from RUN_DIR/checkpoint.pth if present)"),
    "evaluate": ("ifbf.engine.evaluate_cmd", "evaluate a run's checkpoint on the validation split"),
    "score": ("ifbf.score", "score labelId prediction PNGs against Cityscapes gtFine"),
    "export": ("ifbf.export", "write test-server labelId PNGs for a run"),
    "profile": ("ifbf.profile", "parameters, FLOPs and latency of a model config, or a table's cost table"),
    "visualize": ("ifbf.visualize", "figures 5 and 6: features around the fusion, predictions side by side"),
    "config": ("ifbf.config_cmd", "print the resolved config and its hash"),
    "weights": ("ifbf.commands.weights", "ImageNet weights per backbone: fetch (download) or check a file"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ifbf", description="IFBFNet reproduction harness")
    parser.add_argument("--version", action="version", version=f"ifbf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen subcommand's module is imported; the others get a stub parser for --help.
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
            p.set_defaults(module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return importlib.import_module(args.module).run(args) or 0
    except IfbfError as err:
        print(f"ifbf {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except KeyboardInterrupt:
        print(f"ifbf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
