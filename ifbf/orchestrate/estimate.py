"""``reproduce.py --plan``'s cost column: each training predicted from ``preflight.json`` (s/it x iterations +
eval s/img x images x evaluations + the curves' validations + checkpoints + set-up), finished runs with what
they really took (``RunDir.cost``: training, curves and evaluations, the figure REPORT.md sums), and totals in
device-hours and wall-clock for the executor's concurrency. A training not measured yet is priced from this
model's own FLOPs where the preset states a device's peak and an assumed utilisation (``flops_price``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ifbf.config import Config
from ifbf.experiments import ReportPrior
from ifbf.identity import eval_key
from ifbf.models.cost import training_flops
from ifbf.orchestrate.cluster import ClusterProfile
from ifbf.orchestrate.executors import Executor
from ifbf.orchestrate.plan import Plan, Training
from ifbf.orchestrate.preflight import measurements, shape_hash, shape_of, unstable_note, val_setting
from ifbf.store.measurement import Preflight, PreflightFailure
from ifbf.store.rundir import RunCost, RunDir, RunState

CITYSCAPES_IMAGES = {"train": 2975, "val": 500, "test": 1525}
NOT_MEASURED = "not measured (run --preflight)"


def split_images(cfg: Config, split: str) -> int:
    """How many images an evaluation on ``split`` reads (synthetic: the configured sizes)."""
    if cfg.data.dataset == "synthetic":
        return int(getattr(cfg.data.synth, split, cfg.data.synth.val))
    return CITYSCAPES_IMAGES.get(split, CITYSCAPES_IMAGES["val"])


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # predicted seconds of one training, its evaluations included (None: no figure)
    basis: str  # "measured <date> on <device>" or why there is no figure
    devices: int  # GPUs (or processes on CPUs) it holds
    on_gpu: bool
    failed: bool = False  # its shape's preflight failed: the basis says why, and no other price stands in


def predict(training: Training, profile: ClusterProfile, preflight: dict[str, Preflight], cpus: int = 1) -> Estimate:
    """Seconds of one training from its shape's preflight record; ``cpus``: the CPUs each process holds (the
    devices of a CPU run, as ``RunCost`` counts them)."""
    cfg = training.cfg
    shape = shape_of(cfg, profile)
    devices, on_gpu = max(1, shape["gpus"] or shape["processes"] * cpus), bool(shape["gpus"])
    record = preflight.get(shape_hash(shape))
    if record is None:
        return Estimate(None, NOT_MEASURED, devices, on_gpu)
    if isinstance(record, PreflightFailure):
        return Estimate(None, f"preflight failed: {record.cause} (fix: {record.fix})", devices, on_gpu, failed=True)
    seconds = record.setup_s + record.s_per_it.median * cfg.train.iters
    seconds += record.ckpt_s * (cfg.train.iters // cfg.runtime.ckpt_every)
    missing = 0
    for setting in training.evals:
        measured = record.eval.get(eval_key(setting))
        if measured is None:
            missing += 1
            continue
        seconds += measured.s_per_img * split_images(cfg, setting.split or cfg.data.val_split)
    if cfg.runtime.val_every:
        measured = record.eval.get(eval_key(val_setting(cfg)))
        images = min(cfg.runtime.val_images, split_images(cfg, cfg.data.val_split))
        if measured is None:
            missing += 1
        else:
            seconds += cfg.train.iters // cfg.runtime.val_every * images * measured.s_per_img
    machine = record.machine
    basis = f"measured {machine.date[:10]} on {machine.device}" + (f" x{devices}" if devices > 1 else "")
    if missing:
        basis += f"; {missing} inference setting(s) not measured (run --preflight)"
    if record.unstable:
        basis += f"; {unstable_note(record)}"
    return Estimate(seconds, basis, devices, on_gpu)


def flops_price(cfg: Config, prior: ReportPrior, processes: int,
                cache: dict[object, float] | None = None) -> tuple[float, float] | None:
    """Device-hours of one training from this model's own FLOPs, (at the high utilisation, at the low one):
    iterations x crops per iteration (batch x processes) x ``training_flops`` at the crop, over the preset's
    ``report.peak_tflops`` x ``report.utilisation`` (an assumption the preset names). None when it states no
    peak. ``cache``: FLOPs per (model, crop), for callers pricing many rows."""
    if prior.peak_tflops is None or prior.utilisation is None:
        return None
    cache = {} if cache is None else cache
    key = (cfg.model, tuple(cfg.data.crop_size))
    if key not in cache:
        cache[key] = training_flops(cfg.model, tuple(cfg.data.crop_size))
    total = cache[key] * cfg.train.iters * cfg.data.batch_size * processes
    low, high = prior.utilisation
    return total / (prior.peak_tflops * 1e12 * high) / 3600, total / (prior.peak_tflops * 1e12 * low) / 3600


def flops_basis(prior: ReportPrior) -> str:
    """How a FLOPs price was made, for the line that shows it."""
    low, high = prior.utilisation or (0.0, 0.0)
    return (f"training steps from FLOPs at an ASSUMED {low:.0%}-{high:.0%} of {prior.peak_tflops:g} TFLOP/s; "
            "measure with --preflight")


def took(cost: RunCost | None) -> str:
    """A finished run's cost as --plan shows it (the figure REPORT.md's compute line sums)."""
    if cost is None:
        return "took ? (no timing in its log)"
    return (f"took {duration(cost.seconds)} (training {duration(cost.train_s)}, curves {duration(cost.val_s)}, "
            f"evaluation {duration(cost.eval_s)}; {RunCost.hours_text(cost.device_hours, cost.unit)})")


def duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class Price:
    """A training not measured, priced another way: device-hours (low, high) and how."""

    low: float
    high: float
    basis: str
    source: str = ""  # the preset's reason for an assumed price ("": measured on a finished seed)

    def column(self) -> str:
        span = f"{self.low:.3g}" if self.low == self.high else f"{self.low:.2f}-{self.high:.2f}"
        return f"~{span} device-hours ({self.basis})"


def fallback_price(training: Training, plan: Plan, statuses: dict[str, RunState], processes: int,
                   flops: dict[object, float]) -> Price | None:
    """A training without a preflight figure: what a finished seed of the same row took, else this model's
    FLOPs at the preset's assumed utilisation, else the preset's assumed ``report.training_hours``; None when
    the preset assumes nothing."""
    rows = {(c.table, c.row.name) for c in training.cells}
    for other_hash, other in plan.trainings.items():
        if statuses[other_hash] is RunState.DONE and rows & {(c.table, c.row.name) for c in other.cells}:
            cost = RunDir(other.run_dir).cost()
            if cost is not None:
                seed = other.cells[0].seed
                return Price(cost.device_hours, cost.device_hours, f"as its seed {seed} took; measure with --preflight")
    prior = plan.preset.report
    hours = flops_price(training.cfg, prior, processes, flops)
    if hours is not None:
        return Price(*hours, flops_basis(prior), prior.utilisation_source)
    if prior.training_hours is not None:
        return Price(prior.training_hours, prior.training_hours,
                     f"ASSUMED by preset {plan.preset.name}'s report.training_hours; measure with --preflight",
                     prior.training_hours_source)
    return None


def plan_costs(plan: Plan, executor: Executor, results: Path,
               statuses: dict[str, RunState]) -> tuple[dict[str, str], list[str]]:
    """(run hash -> the cost column of its plan line, the summary lines)."""
    preflight = measurements(results, plan.preset.name)
    column: dict[str, str] = {}
    todo_seconds: list[float] = []  # wall seconds of each training still to run
    device_seconds, unknown = 0.0, 0
    priced: list[Price] = []  # trainings to run without a preflight figure, priced another way
    unit, flops = "GPU", {}
    processes = executor.profile.submitit_params()["tasks_per_node"]
    for run_hash, training in plan.trainings.items():
        est = predict(training, executor.profile, preflight, executor.cpus_per_job())
        unit = "GPU" if est.on_gpu else "CPU"
        predicted = f"predicted {duration(est.seconds)}" if est.seconds is not None else ""
        if statuses[run_hash] is RunState.DONE:
            column[run_hash] = took(RunDir(training.run_dir).cost()) + \
                (f" vs {predicted} ({est.basis})" if predicted else f"; {est.basis}")
            continue
        column[run_hash] = f"~{duration(est.seconds)} ({est.basis})" if est.seconds is not None else est.basis
        unpriced = est.seconds is None and not est.failed
        price = fallback_price(training, plan, statuses, processes, flops) if unpriced else None
        if price is not None:
            column[run_hash] = price.column()
        if statuses[run_hash].to_run or statuses[run_hash] is RunState.FAILED:
            if est.seconds is not None:
                todo_seconds.append(est.seconds)
                device_seconds += est.seconds * est.devices
            elif price is not None:
                priced.append(price)
            else:
                unknown += 1
    return column, _totals(executor, todo_seconds, device_seconds, unit, priced, unknown, plan.preset.name)


def _totals(executor: Executor, todo_seconds: list[float], device_seconds: float, unit: str, priced: list[Price],
            unknown: int, preset: str) -> list[str]:
    lines = []
    if todo_seconds:
        wall, how = executor.wall_clock(todo_seconds)
        lines.append(f"to run: {len(todo_seconds)} training(s), {device_seconds / 3600:.2f} {unit}-hours; "
                     f"wall-clock ≈ {duration(wall)} with {how}")
    if priced:
        low, high = sum(p.low for p in priced), sum(p.high for p in priced)
        span = f"{low:.3g}" if low == high else f"{low:.1f}-{high:.1f}"
        sources = "; ".join(dict.fromkeys(p.source for p in priced if p.source))
        lines.append(f"to run, not measured: {len(priced)} training(s), {span} device-hours, priced as each line "
                     "says (measure with --preflight, same --executor/--profile/--set flags)"
                     + (f"; the preset's assumption ({preset}): {sources}" if sources else ""))
    if unknown:
        lines.append(f"no estimate for {unknown} training(s): not measured; run --preflight with the same "
                     "--executor/--profile/--set flags")
    return lines
