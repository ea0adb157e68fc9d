"""The ``ifbf`` command line. Each subcommand lives in its own module of ``ifbf.commands`` and is imported
only when used, so light commands (``ifbf score``) start without importing torch. ``guarded`` is the one
place that turns a user mistake (``IfbfError``) into a one-line message and an exit code."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from ifbf import __version__
from ifbf.errors import ExitCode, IfbfError, exit_codes_help

DESCRIPTION = ("Ablation studies of segmentation papers, reproduced: IFBFNet by default, DANet with --paper danet.\n"
               "reproduce.py runs a paper's tables; these commands train, evaluate, measure and draw one run or model.")
# subcommand -> (module, one-line help)
COMMANDS = {
    "synth": ("ifbf.commands.synth", "write the synthetic Cityscapes-layout dataset"),
    "train": ("ifbf.commands.train", "train one run (resumes from RUN_DIR/checkpoint.pth if present)"),
    "evaluate": ("ifbf.commands.evaluate", "evaluate a run's checkpoint on the validation split"),
    "score": ("ifbf.commands.score", "score labelId prediction PNGs against Cityscapes gtFine"),
    "export": ("ifbf.commands.export", "write test-server labelId PNGs for a run"),
    "cost": ("ifbf.commands.cost", "parameters, FLOPs and latency of a model config, or a table's cost table"),
    "profile": ("ifbf.commands.cost", "the same as `ifbf cost` (the name of earlier versions)"),
    "visualize": ("ifbf.commands.visualize", "figures 5 and 6: features around the fusion, predictions side by side"),
    "config": ("ifbf.commands.config", "print the resolved config and its hash"),
    "data": ("ifbf.commands.data", "prepare a Cityscapes root from the official zips, verify one, or cache it"),
    "import-server-result": ("ifbf.commands.import_server_result", "record the test server's result for a run"),
    "weights": ("ifbf.commands.weights", "ImageNet weights per backbone: fetch (download) or check a file"),
    "status": ("ifbf.commands.status", "what the runs of a results folder are doing: state, iteration, ETA, hours"),
}

# subcommands that may run as one process of several (torchrun, or a scheduler's launcher such as srun)
DISTRIBUTED = {"train", "evaluate", "export", "visualize"}


def guarded(prog: str, action: Callable[[], int | None]) -> int:
    """Run ``action`` and return its exit code; a user mistake becomes ``prog: error: message`` and its
    ``exit_code`` (``ExitCode.USAGE``; ``ExitCode.FAILED`` for a diverged training)."""
    try:
        return action() or ExitCode.OK
    except IfbfError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # output piped into `head` and the like
        return ExitCode.OK
    except KeyboardInterrupt as stop:  # Ctrl-C; reproduce.py also SIGTERM, SIGHUP (orchestrate.signals names it)
        print(f"{prog}: interrupted" + (f" by {stop.args[0]}" if stop.args else ""), file=sys.stderr)
        return ExitCode.INTERRUPTED


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ifbf", description=DESCRIPTION, epilog=exit_codes_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    if args.command in DISTRIBUTED:  # a launcher's task ranks as torchrun's, the names engine.dist reads
        from ifbf.orchestrate.executors import export_launched_ranks

        export_launched_ranks()
    return guarded(f"ifbf {args.command}", lambda: importlib.import_module(args.module).run(args))


if __name__ == "__main__":
    sys.exit(main())
