"""Checks before anything is planned or submitted. Each returns every problem it finds, one line each
(naming the fix), so a user learns all of them at once; ``require`` turns them into one error.

Weights and dataset are checked before planning (a paper run without ImageNet weights or on a partial
dataset must not cost a GPU-hour); the environment (GPUs, scheduler, output folder, disk space) before
submitting.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from ifbf.config import Config, WeightsConfig
from ifbf.data.verify import VerifyResult, verify_config
from ifbf.errors import IfbfError
from ifbf.experiments import Cell, Preset, row_label
from ifbf.identity import weights_key, weights_flag_overrides, weights_status
from ifbf.orchestrate.cluster import ClusterProfile
from ifbf.orchestrate.executors import Executor

# the alternative to fixing a Cityscapes root, on a line of its own under the problems
SMOKE_HINT = "(to try the pipeline without Cityscapes: the embedded synthetic preset, --preset smoke)"
PARTIAL_HINT = "(a deliberate subset of Cityscapes, fewer images on purpose: --allow-partial-dataset)"


class CheckFailed(IfbfError):
    """Problems found before planning or submitting; the message lists every one."""

    def __init__(self, problems: list[str], hint: str = "") -> None:
        n = len(problems)
        lines = "\n".join(f"  - {p}" for p in problems) + (f"\n{hint}" if hint else "")
        super().__init__(f"{n} problem{'s' * (n != 1)} found before anything was submitted:\n{lines}")
        self.problems = problems


def require(problems: list[str], hint: str = "") -> None:
    """Raise ``CheckFailed`` with every problem (and ``hint``, an alternative, on a line of its own)."""
    if problems:
        raise CheckFailed(problems, hint)


def plan_weights_overrides(given: list[str], from_scratch: bool) -> list[str]:
    """Overrides for ``--weights KEY=PATH ...`` and ``--from-scratch`` (every entry not given: ``none``)."""
    overrides = weights_flag_overrides(given)
    if from_scratch:
        named = {item.partition("=")[0] for item in given}
        overrides += [f"model.weights.{f.name}=none" for f in dataclasses.fields(WeightsConfig) if f.name not in named]
    return overrides


def _rows_by(cells: Iterable[Cell], key) -> dict:
    grouped: dict = {}
    for cell in cells:
        grouped.setdefault(key(cell.cfg), []).append(cell)
    return grouped


def _names(cells: list[Cell]) -> str:
    names = sorted({row_label(c.table, c.row.name, c.paper) for c in cells})
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_global_batch(cells: list[Cell], preset: Preset, cluster: ClusterProfile) -> list[str]:
    """One line per per-process batch that, run by the profile's processes, would not give the preset's
    ``global_batch``: a cluster profile must not change the recipe silently (each line names both fixes: the
    processes that keep the batch, or the per-process batch that keeps it on these processes)."""
    if preset.global_batch is None:
        return []
    processes, profile = cluster.submitit_params()["tasks_per_node"], f"profile {Path(cluster.source).stem}"
    problems = []
    for batch, group in sorted(_rows_by(cells, lambda cfg: cfg.data.batch_size).items()):
        if processes * batch == preset.global_batch:
            continue
        fixes = []
        if preset.global_batch % batch == 0:
            fixes.append(f"--profile-set gpus_per_node={preset.global_batch // batch}")
        if preset.global_batch % processes == 0:
            fixes.append(f"--set data.batch_size={preset.global_batch // processes}")
        problems.append(f"preset {preset.name} trains a global batch of {preset.global_batch} "
                        f"({preset.global_batch_source or 'processes x data.batch_size'}); {profile} runs "
                        f"{processes} process(es) x data.batch_size {batch} = {processes * batch} for {_names(group)}"
                        f": {' or '.join(fixes) or 'choose processes and data.batch_size whose product is it'}")
    return problems


def check_weights(cells: list[Cell], required: bool) -> list[str]:
    """Every row's ImageNet weights: given (when ``required``), present, and fitting its backbone."""
    # models only here: importing torch costs seconds and --plan of a smoke table never needs it
    from ifbf.models.weights import check_file

    problems = []
    for key, group in _rows_by(cells, lambda cfg: weights_key(cfg.model)).items():
        model = group[0].cfg.model
        status = weights_status(model)
        if status == "missing" and required:
            depth = model.backbone + ("" if model.stem == "torchvision" else f" --variant {model.stem}")
            problems.append(
                f"no ImageNet weights for {key} ({_names(group)}): give --weights {key}=PATH (download: "
                f"`ifbf weights fetch {depth}`), or train from scratch on purpose with --from-scratch"
            )
        elif status == "file":
            problem = check_file(model)
            if problem:
                problems.append(problem)
    return problems


def unused_weights(cells: list[Cell], given: list[str]) -> list[str]:
    """A line per ``--weights`` key that no row uses, with the keys the rows need (a key of another stem is
    most likely the right file under the wrong name)."""
    needed = sorted({weights_key(c.cfg.model) for c in cells})
    lines = []
    for key in dict.fromkeys(item.partition("=")[0] for item in given):
        if key in needed:
            continue
        near = [k for k in needed if k.split("_")[0] == key.split("_")[0]]
        guess = f"; if the file is for {near[0]}, give it as --weights {near[0]}=PATH" if near else ""
        lines.append(f"--weights {key}: no row uses it; the rows need {', '.join(needed)}{guess}")
    return lines


def check_dataset(cells: list[Cell], allow_partial: bool) -> tuple[list[str], str]:
    """The fast verify of every dataset the rows train on (the synthetic one is generated if needed), and
    no split the rows train or evaluate on is empty: ``allow_partial`` waives counts, never emptiness (a
    job on an empty split could only fail, and only once it has started). Returns (problems, the
    alternatives to fixing them, one per line: a deliberate subset, the synthetic preset)."""
    problems, hints = [], []
    for _, group in _rows_by(cells, lambda cfg: (cfg.data.dataset, cfg.data.root, cfg.data.synth)).items():
        result = verify_config(group[0].cfg.data, allow_partial)
        lines = [f"dataset: {line}" for line in result.problems + _empty_splits(group, result)]
        if lines and result.partial and not allow_partial:
            hints.append(PARTIAL_HINT)
        if lines and group[0].cfg.data.dataset == "cityscapes":
            hints.append(SMOKE_HINT)
        problems += lines
    return problems, "\n".join(dict.fromkeys(hints))


def _empty_splits(cells: list[Cell], result: VerifyResult) -> list[str]:
    """A line per split the rows use that holds no image, unless verify named it already (a missing root,
    or a count it checked without ``allow_partial``)."""
    if not result.splits:
        return []
    counts = result.counts()
    uses: dict[str, dict[str, list[Cell]]] = {}  # split -> "train on" | "evaluate on" -> cells
    for cell in cells:
        for split in cell.cfg.data.train_splits:
            uses.setdefault(split, {}).setdefault("train on", []).append(cell)
        uses.setdefault(cell.cfg.eval.split or cell.cfg.data.val_split, {}).setdefault("evaluate on", []).append(cell)
    lines = []
    for split, how in sorted(uses.items()):
        named_by_verify = not result.allow_partial and result.expected.counts.get(split, 0) > 0
        if counts.get(split, 0) or named_by_verify:
            continue
        verbs = " and ".join(f"{verb} it ({_names(c)})" for verb, c in how.items())
        lines.append(f"{split}: 0 images under {result.root / 'leftImg8bit' / split}, but the rows {verbs}; "
                     f"--allow-partial-dataset accepts fewer images, not none: add that split's images")
    return lines


def check_environment(configs: list[Config], executor: Executor, out: Path) -> list[str]:
    """What the executor needs (GPUs present, a scheduler that answers), norm layer vs GPUs, the output
    folder and its free space."""
    problems = executor.problems()
    if not executor.profile.gpus_per_node and any(c.model.norm == "syncbn" for c in configs):
        problems.append("model.norm=syncbn needs GPUs but the profile has gpus_per_node: 0; use a GPU profile, "
                        "or model.norm=inplace_abn_sync / bn on CPUs")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not os.access(existing, os.W_OK):
        problems.append(f"results folder {out} is not writable ({existing} is read-only); choose --results DIR")
    else:
        need = sum(checkpoint_bytes(c) for c in configs)
        free = shutil.disk_usage(existing).free
        if need > free:
            problems.append(f"{out}: the checkpoints need about {need / 2**30:.1f} GiB but {existing} has "
                            f"{free / 2**30:.1f} GiB free; free space or choose --results DIR")
    return problems


def checkpoint_bytes(cfg: Config) -> int:
    """About what one checkpoint of ``cfg`` takes: fp32 weights plus SGD momentum (twice the parameters)."""
    # torch only here (see check_weights); meta tensors: counting parameters allocates nothing
    import torch

    from ifbf.models import build_model

    with torch.device("meta"):
        model = build_model(dataclasses.replace(cfg.model, weights=WeightsConfig()))
    return 2 * 4 * sum(p.numel() for p in model.parameters())
