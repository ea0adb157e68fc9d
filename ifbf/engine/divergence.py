"""Divergence is a failure, whatever the loss looks like (docs/reliability.md, "A diverged training is a failure").

A learning rate that is too high makes the weights overflow within a few iterations. A NaN loss says so, but
OHEM can hide it: a NaN probability is never "hard", so it keeps no pixel and its mean over none would read
0.0 (``losses.NothingKept`` now raises instead), while the weights stay NaN and the run would be evaluated and
recorded. So the training loop watches three things, none of which adds a device sync per iteration:

- the loss of every iteration, on the device (the first non-finite one and its value are kept there);
- every floating tensor of the model's state (weights and BatchNorm statistics) at each log step, before
  every checkpoint and after resuming, where the loop synchronises anyway;
- OHEM keeping no pixel, known on the host for free (its selection has already synchronised).

Any of them fails the run with ``TrainingDiverged``: one line naming the iteration, what was not finite and
the likely cause. Nothing non-finite is ever written as a checkpoint, so the last one stays the last good one.
"""

from __future__ import annotations

from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn

from ifbf.config import Config
from ifbf.errors import TrainingDiverged
from ifbf.store.rundir import RunDir

NONE = 2**62  # "no iteration yet" on the device (the minimum over ranks is the first bad one)


def nonfinite_tensors(model: nn.Module) -> tuple[int, int]:
    """(how many floating tensors of ``model``'s state hold a NaN or an infinity, how many there are): one sync."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    if not tensors:
        return 0, 0
    bad = torch.stack([~torch.isfinite(t).all() for t in tensors]).sum()
    return int(_reduce(bad, dist.ReduceOp.MAX).item()), len(tensors)


def _reduce(value: torch.Tensor, op: dist.ReduceOp) -> torch.Tensor:
    """All ranks agree (they all raise, or none does: a lone raise would hang the others in a collective)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(value, op=op)
    return value


def likely_cause(cfg: Config) -> str:
    """What usually makes a training diverge, and the fix, for one line of the error."""
    cause = f"train.lr={cfg.train.lr:g} is too high for this model (lower it)"
    if cfg.train.amp == "fp16":
        cause += ", or fp16 overflow (train.amp=bf16 or none)"
    return cause


class DivergenceWatch:
    """The watch of one training (see the module's docstring); ``checked``: the last iteration found finite."""

    def __init__(self, cfg: Config, run_dir: RunDir, device: torch.device, start: int) -> None:
        self.cfg, self.run_dir, self.checked = cfg, run_dir, start
        self.first = torch.full((), NONE, dtype=torch.int64, device=device)
        self.value = torch.zeros((), device=device)

    def loss(self, iteration: int, total: torch.Tensor) -> None:
        """Remember ``iteration`` if its loss is the first that is not finite: on the device, no sync."""
        new = ~torch.isfinite(total.detach()) & (self.first == NONE)
        self.first = torch.where(new, iteration, self.first)
        self.value = torch.where(new, total.detach().float(), self.value)

    def check(self, done: int, model: nn.Module) -> None:
        """After iteration ``done`` (a log step or a checkpoint): the losses so far, then the model's state."""
        if done == self.checked:
            return
        self._loss_failure()
        bad, total = nonfinite_tensors(model)
        if bad:
            since = f" (they were finite at iteration {self.checked})" if self.checked else ""
            self.fail(done, f"{bad} of {total} weight and BatchNorm tensors are not finite", False, since)
        self.checked = done

    def check_resumed(self, start: int, model: nn.Module) -> None:
        """A checkpoint training resumes from, written before this watch existed, may hold a diverged model."""
        bad, total = nonfinite_tensors(model)
        if bad:
            raise TrainingDiverged(
                f"{self.run_dir.checkpoint} (iteration {start}) holds a diverged training: {bad} of {total} weight "
                f"and BatchNorm tensors are not finite. Likely cause: {likely_cause(self.cfg)}; delete the run "
                f"directory {self.run_dir.path} to start it over")

    def fail(self, iteration: int, what: str, check_loss: bool = True, note: str = "") -> NoReturn:
        """Raise ``TrainingDiverged`` for ``what`` seen at ``iteration`` (an earlier non-finite loss wins)."""
        if check_loss:
            self._loss_failure()
        kept = (f"the last good checkpoint is kept at {self.run_dir.checkpoint}, and the run resumes from it"
                if self.run_dir.checkpoint.is_file() else "no checkpoint was written before it")
        raise TrainingDiverged(f"training diverged: {what} at iteration {iteration}{note}; stopped. "
                               f"Likely cause: {likely_cause(self.cfg)}; {kept}")

    def _loss_failure(self) -> None:
        first = int(_reduce(self.first.clone(), dist.ReduceOp.MIN).item())  # one sync while all is well
        if first != NONE:
            value = self.value.item() if int(self.first.item()) == first else "not finite"  # another rank's loss
            self.fail(first, f"the loss is {value}", check_loss=False)
