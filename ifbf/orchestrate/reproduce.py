"""``python reproduce.py --table N``: plan, submit, collect and report the paper's tables.

Re-running is idempotent: finished runs (metrics.json of the same config hash with every evaluation a
table needs) are skipped, running ones are not submitted twice, failed ones are reported with their log
and retried only with --rerun-failed. Results: results/<preset>/table<N>.{md,tex,csv} and figures.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from ifbf.errors import IfbfError
from ifbf.experiments import TABLES, Preset, load_preset, load_table, table_cells
from ifbf.orchestrate.checks import check_dataset, check_environment, check_weights, require, weight_overrides
from ifbf.orchestrate.cluster import SlurmProfile, load_profile
from ifbf.orchestrate.jobs import EXECUTORS, TrainJob, make_executor
from ifbf.orchestrate.plan import Plan, Training, build_plan, with_main_eval
from ifbf.report import records
from ifbf.report.readme import README
from ifbf.report.tables import table_frame, write_table
from ifbf.rundir import RESULTS, read_status, write_status

DEFAULT_PROFILE = {"slurm": "example", "local": "local", "debug": "local"}


@dataclass(frozen=True)
class Request:
    """What ``reproduce.py`` was asked to do (its flags, typed; see ``ifbf.commands.reproduce``)."""

    table: str
    preset: str = "paper"
    executor: str = "slurm"
    seeds: int = 1
    plan: bool = False
    rerun_failed: bool = False
    report_only: bool = False
    paper_only: bool = False
    no_wait: bool = False
    profile: str | None = None
    slurm: list[str] = field(default_factory=list)
    parallel: int = 1
    results: Path = RESULTS
    extra: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)  # KEY=PATH: ImageNet weights per backbone
    from_scratch: bool = False  # rows without weights train from scratch (and say so in the tables)
    allow_partial_dataset: bool = False  # a deliberate subset of Cityscapes passes the dataset check


def _tables(arg: str) -> list[int]:
    if arg == "all":
        return list(TABLES)
    try:
        number = int(arg)
    except ValueError:
        raise IfbfError(f"unknown table {arg!r}: give a number {TABLES[0]}-{TABLES[-1]} or 'all'") from None
    if number not in TABLES:
        raise IfbfError(f"unknown table {number}: the paper has tables {TABLES[0]}-{TABLES[-1]}")
    return [number]


def _check_environment(plan: Plan, executor: str, profile: SlurmProfile) -> None:
    """Fail before submitting anything: every environment problem at once (see ``checks``)."""
    configs = [t.cfg for t in plan.trainings.values()]
    require(check_environment(configs, executor, profile, plan_out(plan)))


def plan_out(plan: Plan) -> Path:
    """The preset's folder of the plan's results (tables, runs)."""
    return next(iter(plan.trainings.values())).run_dir.parent.parent if plan.trainings else RESULTS


def check_before_planning(args: Request, tables: list, preset: Preset, extra: tuple[str, ...]) -> None:
    """Weights of every row and the dataset, before any plan: all problems at once, nothing written."""
    cells = [cell for table in tables for cell in table_cells(table, preset, args.seeds, extra)]
    require(check_weights(cells, preset.requires_weights) + check_dataset(cells, args.allow_partial_dataset))


def estimate(plan: Plan, todo: list[Training]) -> str:
    est = plan.preset.estimate
    if not est:
        return ""
    seconds = sum(t.cfg.train.iters * est["seconds_per_iter"] + est.get("eval_seconds", 0) for t in todo)
    gpus = est.get("gpus", 0)
    if gpus:
        return f"estimate: {seconds * gpus / 3600:.0f} GPU-hours for {len(todo)} training(s) ({est.get('basis', '')})"
    return f"estimate: {seconds / 60:.1f} CPU-minutes for {len(todo)} training(s) ({est.get('basis', '')})"


def print_plan(plan: Plan) -> None:
    rows = []
    for training in plan.trainings.values():
        status = training.status()
        names = sorted({f"T{c.table} {c.row.name}" + (f" s{c.seed}" if c.seed else "") for c in training.cells})
        extra = f"  log: {training.log_path()}" if status == "failed" else ""
        rows.append(f"  {training.run_hash}  {status:8s} {len(training.evals)} eval  {'; '.join(names)}{extra}")
    tables = ", ".join(str(t.number) for t in plan.tables)
    print(f"Table(s) {tables}, preset {plan.preset.name}: {len(plan.cells)} cells need "
          f"{len(plan.trainings)} training(s) (identical configs are trained once)")
    print("\n".join(rows))
    todo = [t for t in plan.trainings.values() if t.status() in ("todo", "failed")]
    print(estimate(plan, todo) if todo else "nothing to run")


def run_trainings(plan: Plan, trainings: list[Training], executor: str, profile: SlurmProfile, parallel: int,
                  results: Path, wait: bool = True) -> dict[str, str]:
    """Submit trainings (at most ``parallel`` at once for the local executor); returns run hash -> outcome."""
    folder = results / plan.preset.name / ".submitit"
    ex = make_executor(executor, folder, profile.submitit_params(executor), profile.max_requeues)
    threads = max(1, (os.cpu_count() or 1) // max(1, parallel)) if executor != "slurm" else None

    def submit(batch: list[Training]) -> list:
        submitted = []
        if executor == "slurm" and len(batch) > 1:
            with ex.batch():
                pending = [ex.submit(TrainJob.of(with_main_eval(t), t.run_dir, t.evals[1:], threads)) for t in batch]
            submitted = list(zip(batch, pending))
        else:
            submitted = [(t, ex.submit(TrainJob.of(with_main_eval(t), t.run_dir, t.evals[1:], threads))) for t in batch]
        for training, job in submitted:
            write_status(training.run_dir, "submitted", executor=executor, job_id=str(job.job_id),
                         log=str(job.paths.stderr) if executor != "debug" else None,
                         pid=int(job.job_id) if executor == "local" else None if executor == "slurm" else os.getpid())
        return submitted

    outcomes: dict[str, str] = {}
    step = len(trainings) if executor == "slurm" else max(1, parallel)
    for start in range(0, len(trainings), step):
        try:
            batch = submit(trainings[start : start + step])
        except submitit.core.utils.FailedJobError as err:
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
            raise IfbfError(
                f"SLURM rejected the job: {reason}. Check the profile's partition, gpus_per_node (GPUs must "
                "exist on that partition), cpus_per_task and mem_gb against `sinfo -o '%P %G %c %m'`"
            ) from None
        if executor == "slurm" and not wait:
            continue
        for training, job in batch:
            outcomes[training.run_hash] = _wait(training, job)
    return outcomes


def _wait(training: Training, job) -> str:
    try:
        job.result()
        return "done"
    except Exception as err:  # noqa: BLE001 - any job failure is reported, never raised past the table
        status = read_status(training.run_dir) or {}
        if status.get("state") != "failed":
            write_status(training.run_dir, "failed", error=f"{type(err).__name__}: {str(err)[-2000:]}",
                         log=status.get("log"), job_id=str(job.job_id))
        return "failed"


def report(plan: Plan, results: Path, seeds: int, extra: tuple[str, ...], out: Path,
           paper_only: bool = False) -> list[Path]:
    """Tables and figures of the plan's tables from what is stored under ``results`` (nothing is run), and
    (unless ``paper_only``) REPORT.md: intervals, the paper's claims with verdicts, compute, links."""
    # matplotlib only when figures are drawn: --plan and --help stay fast
    from ifbf.report.figures import write_figures
    from ifbf.report.report_file import table_section, write_report

    frame = records.collect(plan.tables, plan.preset, seeds, results, extra, read_results=not paper_only)
    written, sections = [], []
    for table in plan.tables:
        df = table_frame(frame, table)
        note = "" if paper_only else f"Preset `{plan.preset.name}`: {plan.preset.description}"
        if not paper_only and plan.preset.name in table.notes:
            note += " " + table.notes[plan.preset.name]
        paths = write_table(df, table, out, note) + write_figures(frame, table, df, out, plan.preset.name, paper_only)
        written += paths
        if not paper_only:
            sections.append(table_section(frame, table, paths, out, plan.preset))
    if not paper_only:
        written.append(write_report(out, plan.preset, sections, frame))
    write_results_readme(out.parent)
    return written


def write_results_readme(results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / "README.md").write_text(README)


def main(args: Request) -> int:
    started = time.perf_counter()
    if args.executor not in EXECUTORS:
        raise IfbfError(f"unknown executor {args.executor!r} (choose from {', '.join(EXECUTORS)})")
    if args.seeds < 1:
        raise IfbfError("--seeds must be >= 1")
    tables = [load_table(n) for n in _tables(args.table)]
    preset = load_preset(args.preset)
    extra = (*args.extra, *weight_overrides(args.weights, args.from_scratch))
    if not (args.paper_only or args.report_only):
        check_before_planning(args, tables, preset, extra)
    plan = build_plan(tables, preset, args.seeds, args.results, extra)
    out = args.results / ("paper-only" if args.paper_only else preset.name)
    report_args = (args.results, args.seeds, extra, out)
    if args.paper_only:
        for path in report(plan, *report_args, paper_only=True):
            print(f"wrote {path}")
        return 0
    if args.plan:
        print_plan(plan)
        return 0
    if not args.report_only:
        profile = load_profile(args.profile or DEFAULT_PROFILE[args.executor], args.slurm)
        statuses = {h: t.status() for h, t in plan.trainings.items()}
        wanted = {"todo", "failed"} if args.rerun_failed else {"todo"}
        todo = [t for h, t in plan.trainings.items() if statuses[h] in wanted]
        for h, t in plan.trainings.items():
            if statuses[h] == "failed" and not args.rerun_failed:
                print(f"failed: {h} ({'; '.join(sorted({c.row.name for c in t.cells}))}); log: {t.log_path()} "
                      "— fix it and use --rerun-failed")
            elif statuses[h] == "running":
                print(f"running: {h} (not submitted again)")
        done = sum(s == "done" for s in statuses.values())
        print(f"{len(plan.trainings)} training(s): {done} done, {len(todo)} to run")
        if todo:
            _check_environment(plan, args.executor, profile)
            outcomes = run_trainings(plan, todo, args.executor, profile, args.parallel, args.results,
                                     wait=not args.no_wait)
            failed = [h for h, o in outcomes.items() if o == "failed"]
            for h in failed:
                print(f"failed: {h}; log: {plan.trainings[h].log_path()}")
            if args.no_wait and args.executor == "slurm":
                print("submitted; run again with --report-only (or the same command) once the jobs are done")
    for path in report(plan, *report_args):
        print(f"wrote {path}")
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return 0
