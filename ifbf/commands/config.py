"""``ifbf config --config FILE [overrides]``: print the resolved config as YAML and its run hash."""

from __future__ import annotations

import argparse

from ifbf.config import BASE_CONFIG, dump_yaml, load_config

from ifbf.identity import config_hash


def add_config_arguments(parser: argparse.ArgumentParser, default: str | None = str(BASE_CONFIG),
                         default_help: str = "experiments/ifbfnet/base.yaml") -> None:
    """--config and trailing KEY=VALUE overrides, shared by every command that builds a config; ``default``
    None: the command resolves it (``ifbf cost``: the --paper's base.yaml), ``default_help`` says which."""
    parser.add_argument("--config", default=default, help=f"YAML config (default: {default_help})")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.iters=200")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    print(dump_yaml(cfg), end="")
    print(f"# hash: {config_hash(cfg)}")
    return 0
