"""The range of every numeric setting, stated once. The config's validation (``ifbf.config``) and the flags
that set the same things (``ifbf evaluate --scales/--window``, ``reproduce.py --seeds``) check against it, so
every refusal states the bound that was broken (docs/reliability.md, "Settings that would crash").
NaN and infinity hold no range."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """Finite numbers from ``low`` to ``high`` (``open_low``/``open_high``: the bound itself excluded)."""

    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    why: str = ""  # said after the bound: what goes wrong outside it

    def holds(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    @property
    def bound(self) -> str:
        """"> 0", ">= 0", "in [0.1, 4]", "in (0, 1)" ..."""
        if self.high == math.inf:
            return f"{'>' if self.open_low else '>='} {_number(self.low)}"
        return (f"in {'(' if self.open_low else '['}{_number(self.low)}, {_number(self.high)}"
                f"{')' if self.open_high else ']'}")

    def __str__(self) -> str:
        return self.bound + (f" ({self.why})" if self.why else "")


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


POSITIVE = Range(0, open_low=True)
NON_NEGATIVE = Range(0)
SEED = Range(0, 2**32 - 1, why="the seeds numpy accepts")
SCALE = Range(0.1, 4, why="a scaled image must stay large enough to segment and small enough to hold; "
                         "the paper uses 0.5-2")

# dotted config key -> its range; a list-valued setting's range holds for each of its values
RANGES: dict[str, Range] = {
    "model.spatial_channels": POSITIVE,
    "model.num_classes": POSITIVE,
    "model.multi_grid": Range(1, 64, why="the dilation of a 3x3 conv of stage 4; DANet's are 4, 8, 16"),
    "model.pam_reduction": Range(1, 64, why="PAM's query and key get C / this channels; the authors' code uses 8"),
    "data.crop_size": Range(16, 4096, why="pixels per side: Cityscapes frames are 1024 x 2048"),
    "data.scales": SCALE,
    "data.batch_size": POSITIVE,
    "data.std": Range(0.001, 10, why="images in [0, 1] are divided by it"),
    "data.synth.train": POSITIVE,
    "data.synth.val": POSITIVE,
    "data.synth.height": POSITIVE,
    "data.synth.width": POSITIVE,
    "data.synth.seed": SEED,
    "train.iters": POSITIVE,
    "train.warmup_iters": NON_NEGATIVE,
    "train.lr": POSITIVE,
    "train.lr_mult": POSITIVE,
    "train.momentum": Range(0, 1, open_high=True),
    "train.weight_decay": NON_NEGATIVE,
    "train.poly_power": Range(0, why="the exponent of the poly decay (1 - it/iters)^power: a negative one divides "
                                     "by zero at the last iteration; the paper's is 0.9"),
    "train.ohem_thresh": Range(0, 1, open_low=True, open_high=True),
    "train.ohem_min_kept": POSITIVE,
    "train.ohem_keep_ratio": Range(0, 1, open_low=True),
    "train.aux_weight": NON_NEGATIVE,
    "train.seed": SEED,
    "eval.scales": SCALE,
    "eval.window": Range(32, 4096, why="pixels per side; a smaller window needs thousands of forward passes "
                                       "per image"),
    "runtime.workers": NON_NEGATIVE,
    "runtime.log_every": POSITIVE,
    "runtime.ckpt_every": POSITIVE,
    "runtime.lock_stale_s": POSITIVE,
    "runtime.val_every": NON_NEGATIVE,
    "runtime.val_images": POSITIVE,
}

# reproduce.py --seeds K: trainings per row (seeds 0..K-1)
SEEDS = Range(1, 100, why="trainings per row; planning 100 seeds of a table already takes minutes, and "
                          "--design says how many a claim needs")


def problem(key: str, value: object) -> str | None:
    """What is wrong with ``value`` for the setting ``key`` ("must be in [0, 4294967295] (...)"), or None.
    A list-valued setting is checked value by value; keys without a range (and None) always pass."""
    rule = RANGES.get(key)
    if rule is None or value is None:
        return None
    values = value if isinstance(value, (tuple, list)) else (value,)
    if all(isinstance(v, (int, float)) and rule.holds(v) for v in values):
        return None
    return f"{'each value ' if isinstance(value, (tuple, list)) else ''}must be {rule}"
