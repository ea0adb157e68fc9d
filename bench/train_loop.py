"""Benchmark: what the training loop costs around its steps, and where it waits for the device.

    nice -n 5 .venv/bin/python bench/train_loop.py                      # CPU: smoke preset, 40 iterations x 3 rounds
    .venv/bin/python bench/train_loop.py --device cuda --iters 200      # a GPU: + synchronisations per iteration

Runs the real loop (``engine.train.train``: batches, forward, loss, divergence watch, step, log) on the smoke
preset's Table 2 row "R101 IFBFNet" for ``--iters`` iterations, two variants per round, alternating:

- "sync each step": the loop as it was before commit 0a7e952, which read the loss on the host every iteration
  (``math.isfinite(loss.item())``), emulated by wrapping ``DivergenceWatch.loss``;
- "as shipped": the host reads the device only at log steps (``runtime.log_every``): losses, the watch.

Prints per variant (median over rounds) the wall seconds of the loop (log.jsonl's ``step_s`` after the first
log step: set-up and warm-up excluded) and, on a CPU, the CPU seconds of the whole training (every thread;
unlike wall time it does not grow when other processes share the cores); checks that both variants train
bitwise the same (final weights and every logged loss); on CUDA, counts the synchronisations per iteration
(``torch.cuda.set_sync_debug_mode``: each is a wait of the host for the GPU), and those inside the loss.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from ifbf.engine import divergence
from ifbf.engine.dist import DistInfo
from ifbf.engine.train import train
from ifbf.experiments import load_preset, load_table, row_config
from ifbf.store.rundir import RunDir, StepRecord

ROW = "R101 IFBFNet"


class SyncEachStep:
    """The loop before 0a7e952: the loss read on the host every iteration (a device sync on a GPU)."""

    def __init__(self) -> None:
        self.original = divergence.DivergenceWatch.loss

    def __enter__(self) -> SyncEachStep:
        original = self.original

        def loss(watch, iteration, total):
            math.isfinite(total.item())
            original(watch, iteration, total)

        divergence.DivergenceWatch.loss = loss
        return self

    def __exit__(self, *exc: object) -> None:
        divergence.DivergenceWatch.loss = self.original


def one_training(cfg, device: torch.device, folder: Path, sync_each_step: bool, count_syncs: bool) -> dict:
    """Train in ``folder``; the loop's seconds, the final weights, the logged losses, syncs per iteration."""
    run_dir = RunDir(folder)
    run_dir.claim(cfg)
    cpu_started = time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if count_syncs:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            if sync_each_step:
                with SyncEachStep():
                    model = train(cfg, run_dir, DistInfo(), device, progress=False)
            else:
                model = train(cfg, run_dir, DistInfo(), device, progress=False)
        finally:
            if count_syncs:
                torch.cuda.set_sync_debug_mode("default")
    cpu_s = time.process_time() - cpu_started
    steps = [r for r in run_dir.read_log() if isinstance(r, StepRecord)]
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    return {"seconds": sum(r.step_s for r in steps[1:]), "cpu_s": cpu_s,  # the first record: warm-up, left out
            "iters": steps[-1].iter - steps[0].iter, "weights": {k: v.cpu() for k, v in model.state_dict().items()},
            "losses": [r.losses for r in steps], "syncs": len(syncs) / cfg.train.iters,
            "loss_syncs": sum("losses.py" in (w.filename or "") for w in syncs) / cfg.train.iters}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-every", type=int, default=5, help="runtime.log_every (the smoke preset's: 5)")
    args = parser.parse_args()
    row = next(r for r in load_table(2).runnable() if r.name == ROW)
    device = torch.device(args.device)
    cfg = row_config(row, load_preset("smoke"), (f"train.iters={args.iters}", f"runtime.log_every={args.log_every}",
                                                 f"runtime.ckpt_every={args.iters}", f"runtime.device={args.device}"))
    print(f"{ROW} (smoke preset), {args.iters} iterations, batch {cfg.data.batch_size}, {device}, "
          f"{torch.get_num_threads()} threads, log every {args.log_every}")
    variants = {"sync each step": True, "as shipped": False}
    results: dict[str, list[dict]] = {name: [] for name in variants}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                out = one_training(cfg, device, Path(tmp) / f"{r}-{name.replace(' ', '-')}", variants[name],
                                   count_syncs=device.type == "cuda")
                results[name].append(out)
                print(f"  round {r + 1} {name:15s} loop {out['seconds']:.2f} s wall for {out['iters']} iterations, "
                      f"training {out['cpu_s']:.1f} CPU-s", flush=True)
    first = results["as shipped"][0]
    same = all(all(torch.equal(first["weights"][k], out["weights"][k]) for k in first["weights"])
               and out["losses"] == first["losses"] for outs in results.values() for out in outs)
    print(f"bitwise the same (final weights and every logged loss, all rounds): {same}")
    for name, outs in results.items():
        median = statistics.median(o["seconds"] for o in outs)
        line = (f"{name:15s} median {median:.2f} s wall, {1000 * median / outs[0]['iters']:.1f} ms/iteration; "
                f"training {statistics.median(o['cpu_s'] for o in outs):.1f} CPU-s")
        if device.type == "cuda":
            line += f"; syncs per iteration {outs[0]['syncs']:.2f} (in the loss: {outs[0]['loss_syncs']:.2f})"
        print(line)
    for key, what in (("seconds", "loop wall"), ("cpu_s", "training CPU")):
        ratio = statistics.median(o[key] for o in results["sync each step"]) / statistics.median(
            o[key] for o in results["as shipped"])
        print(f"sync each step / as shipped, {what}: {ratio:.3f}")
    print(f"({(time.perf_counter() - started) / 60:.1f} min in all)")


if __name__ == "__main__":
    main()
