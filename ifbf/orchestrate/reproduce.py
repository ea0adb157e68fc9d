"""``python reproduce.py --table N``: plan, submit, collect and report the paper's tables.

Re-running is idempotent: finished runs (metrics.json of the same config hash with every evaluation a
table needs) are skipped, running ones are not submitted twice, failed ones are reported with their log
and retried only with --rerun-failed. Results: results/<preset>/table<N>.{md,tex,csv} and figures.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from ifbf.identity import eval_key
from ifbf.limits import SEEDS
from ifbf.errors import ExitCode, IfbfError, UnreadableRunFile
from ifbf.experiments import (DEFAULT_PAPER, Paper, Preset, RowSeeds, load_paper, load_preset, load_table,
                              papers, results_of, table_cells)
from ifbf.orchestrate.adaptive import run_auto
from ifbf.orchestrate.checks import (check_dataset, check_environment, check_global_batch, check_weights,
                                     plan_weights_overrides, require, unused_weights)
from ifbf.orchestrate.cluster import load_profile
from ifbf.orchestrate.design_report import run_design
from ifbf.orchestrate.estimate import Estimate, plan_costs, predict
from ifbf.orchestrate.executors import Executor, executor_class, make_executor
from ifbf.orchestrate.folders import check_results_folder, other_tables_note
from ifbf.orchestrate.jobs import Busy, Outcome, TrainJob
from ifbf.orchestrate.plan import Plan, Training, build_plan, with_main_eval
from ifbf.orchestrate.preflight import measurements
from ifbf.orchestrate.preflight_command import preflight
from ifbf.orchestrate.status import Target, collect, render
from ifbf.report import records
from ifbf.report.readme import results_readme
from ifbf.report.tables import table_frames, write_table
from ifbf.store.rundir import (RESULTS, RunDir, RunState, Unreadable, atomic_write_text, read_status, result_key,
                         write_status)
from ifbf.store.runlock import LockHeld
from ifbf.store.safefile import make_dirs

AUTO = "auto"


@dataclass(frozen=True)
class Request:
    """What ``reproduce.py`` was asked to do (its flags, typed; see ``ifbf.commands.reproduce``)."""

    table: str
    paper: str = DEFAULT_PAPER  # whose tables (a folder of experiments/)
    preset: str = "paper"
    executor: str = "slurm"
    seeds: int | str = 1  # or AUTO (with ``budget``)
    design: bool = False  # print what each claim needs (seeds, device-hours); train nothing
    budget: float | None = None  # device-hours: --design allocates them, --seeds auto spends them
    plan: bool = False
    status: bool = False
    preflight: bool = False
    preflight_iters: int | None = None
    rerun_failed: bool = False
    report_only: bool = False
    paper_only: bool = False
    no_wait: bool = False
    profile: str | None = None
    profile_set: list[str] = field(default_factory=list)  # --profile-set (its alias --slurm): KEY=VALUE
    parallel: int = 1
    results: Path = RESULTS
    extra: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)  # KEY=PATH: ImageNet weights per backbone
    from_scratch: bool = False  # rows without weights train from scratch (and say so in the tables)
    allow_partial_dataset: bool = False  # a deliberate subset of Cityscapes passes the dataset check


def _tables(arg: str, paper: Paper) -> list[int]:
    known = ", ".join(map(str, paper.tables))
    if arg == "all":
        return list(paper.tables)
    try:
        number = int(arg)
    except ValueError:
        raise IfbfError(f"unknown table {arg!r}: give one of {paper.label}'s tables ({known}) or 'all'") from None
    if number not in paper.tables:
        others = ", ".join(f"--paper {p} (tables {', '.join(map(str, load_paper(p).tables))})"
                           for p in papers() if p != paper.name)
        raise IfbfError(f"unknown table {number}: {paper.label}'s tables are {known}"
                        + (f"; other papers: {others}" if others else ""))
    return [number]


def _check_environment(plan: Plan, executor: Executor) -> None:
    """Fail before submitting anything: every environment problem at once (see ``checks``)."""
    configs = [t.cfg for t in plan.trainings.values()]
    require(check_environment(configs, executor, plan_out(plan)))


def plan_out(plan: Plan) -> Path:
    """The preset's folder of the plan's results (tables, runs)."""
    return next(iter(plan.trainings.values())).run_dir.parent.parent if plan.trainings else RESULTS


def check_before_planning(args: Request, tables: list, preset: Preset, extra: tuple[str, ...]) -> None:
    """Weights of every row, the global batch the profile gives, and the dataset, before any plan: all problems
    at once, nothing written."""
    cells = [cell for table in tables for cell in table_cells(table, preset, args.seeds, extra)]
    dataset, hint = check_dataset(cells, args.allow_partial_dataset)
    profile = _executor(args).profile
    problems = check_weights(cells, preset.requires_weights) + check_global_batch(cells, preset, profile) + dataset
    unused = unused_weights(cells, args.weights)
    # an unused key explains a missing one (the right file under another key); alone it is only a note
    require(problems + unused if problems else [], hint)
    for line in unused:
        print(f"note: {line}")


def status_target(training: Training, estimate: Estimate) -> Target:
    """What --status reports on for a training; a run without a logged speed is priced as --plan prices it."""
    predicted = estimate.seconds * estimate.devices / 3600 if estimate.seconds is not None else None
    return Target(training.run_dir, training.label(), training.cfg.train.iters,
                  frozenset(eval_key(e) for e in training.evals), training.cfg.runtime.lock_stale_s, training.run_hash,
                  predicted)


def print_plan(plan: Plan, executor: Executor, results: Path) -> None:
    statuses = {h: t.status() for h, t in plan.trainings.items()}
    costs, totals = plan_costs(plan, executor, results, statuses)
    rows = []
    for run_hash, training in plan.trainings.items():
        status = statuses[run_hash]
        extra = f"  log: {training.log_path()}" if status is RunState.FAILED else ""
        extra += f"  {training.unreadable}" if training.unreadable else ""
        rows.append(f"  {run_hash}  {status:8s} {len(training.evals)} eval  {training.label()}  "
                    f"{costs[run_hash]}{extra}")
    tables = ", ".join(str(t.number) for t in plan.tables)
    print(f"Table(s) {tables}, preset {plan.preset.name}: {len(plan.cells)} cells need "
          f"{len(plan.trainings)} training(s) (identical configs are trained once)")
    print("\n".join(rows))
    todo = [h for h, s in statuses.items() if s.to_run or s is RunState.FAILED]
    print("\n".join(totals) if todo else "nothing to run")


def run_trainings(plan: Plan, trainings: list[Training], executor: Executor, results: Path,
                  wait: bool = True) -> dict[str, Outcome]:
    """Submit trainings (in the executor's rounds: ``--parallel`` at a time locally, all at once on a scheduler);
    returns run hash -> outcome (busy: another process has it, see ``_claim``; submitted: not waited for)."""
    folder = results / plan.preset.name / ".submitit"
    # local jobs split this process's CPUs (its affinity mask); a scheduler's jobs size themselves to their allocation
    threads = executor.threads_per_job()
    outcomes: dict[str, Outcome] = {}

    def submit(batch: list[Training]) -> list:
        with ExitStack() as held:
            mine = [t for t in batch if _claim(t, held, outcomes)]
            jobs = [TrainJob.of(with_main_eval(t), t.run_dir, t.evals[1:], threads) for t in mine]
            submitted = list(zip(mine, executor.submit(folder, jobs)))
            for training, job in submitted:
                write_status(training.run_dir, RunState.SUBMITTED, executor.record(job))
                print(f"submitted {training.run_hash}: {executor.name} job {job.job_id}", flush=True)
        return submitted  # the submit locks are released here, once "submitted" is recorded

    step = executor.round_size(len(trainings))
    for start in range(0, len(trainings), step):
        try:
            batch = submit(trainings[start : start + step])
        except submitit.core.utils.FailedJobError as err:
            raise executor.rejected(err) from None
        for training, job in batch:
            outcomes[training.run_hash] = Outcome.SUBMITTED if executor.detached and not wait else _wait(training, job)
    return outcomes


def _claim(training: Training, held: ExitStack, outcomes: dict[str, Outcome]) -> bool:
    """Take the run's submit lock and check, under it, that no other process has submitted or finished it
    meanwhile; on success the lock stays in ``held`` until the submission is recorded."""
    lock = RunDir(training.run_dir).submit_lock(training.cfg.runtime.lock_stale_s)
    try:
        lock.acquire()
    except LockHeld:
        outcomes[training.run_hash] = Outcome.BUSY
        return False
    state = training.status(mine=lock.token)
    if state.active or state is RunState.DONE:
        lock.release()
        outcomes[training.run_hash] = Outcome.DONE if state is RunState.DONE else Outcome.BUSY
        return False
    held.callback(lock.release)
    return True


def _wait(training: Training, job) -> Outcome:
    try:
        result = job.result()
    except Exception as err:  # noqa: BLE001 - any job failure is reported, never raised past the table
        try:
            status = read_status(training.run_dir)
        except UnreadableRunFile:  # rewritten below
            status = None
        if status is None or status.state is not RunState.FAILED:
            write_status(training.run_dir, RunState.FAILED, error=f"{type(err).__name__}: {str(err)[-2000:]}",
                         log=status.log if status else None, job_id=str(job.job_id))
        return Outcome.FAILED
    return Outcome.BUSY if isinstance(result, Busy) else Outcome.DONE


def wait_for_others(plan: Plan, hashes: list[str], poll_s: float = 2.0) -> None:
    """Wait while other processes (another reproduce.py, a trainer) have these trainings running."""
    names = ", ".join(hashes)
    print(f"waiting for {len(hashes)} training(s) that another process runs: {names}", flush=True)
    while any(plan.trainings[h].status().active for h in hashes):
        time.sleep(poll_s)


def report(plan: Plan, results: Path, seeds: int | RowSeeds, extra: tuple[str, ...], out: Path,
           paper_only: bool = False) -> list[Path]:
    """Tables and figures of the plan's tables from what is stored under ``results`` (nothing is run), and
    (unless ``paper_only``) REPORT.md: intervals, the paper's claims with verdicts, compute, links."""
    # matplotlib only when figures are drawn: --plan and --help stay fast
    from ifbf.report.figures import write_figures
    from ifbf.report.report_file import table_section, write_report

    frame = records.collect(plan.tables, plan.preset, seeds, results, extra, read_results=not paper_only)
    unreadable = records.unreadable_lines(frame)
    for line in unreadable:  # the cells read "unreadable: <file>"; the rest of the tables is reported
        print(f"warning: {line}", file=sys.stderr)
    written, sections = [], []
    for table in plan.tables:
        frames = table_frames(frame, table)
        note = "" if paper_only else f"Preset `{plan.preset.name}`: {plan.preset.description}"
        if not paper_only and plan.preset.name in table.notes:
            note += " " + table.notes[plan.preset.name]
        if unreadable:
            note += "\n\nUnreadable run files (their cells are marked): " + "; ".join(unreadable)
        paths = write_table(frames, table, out, note) + write_figures(frame, table, frames, out, plan.preset.name,
                                                                      paper_only)
        written += paths
        if not paper_only:
            sections.append(table_section(frame, table, paths, out, plan.preset))
    if not paper_only:
        written.append(write_report(out, plan.preset, sections, frame))
    write_results_readme(out.parent, plan.preset.paper)
    return written


def report_and_say(plan: Plan, results: Path, seeds: int | RowSeeds, extra: tuple[str, ...], out: Path) -> None:
    """``report``, each file it wrote named, then a note naming the paper's other tables with results here
    (REPORT.md judges the claims of this command's tables only)."""
    for path in report(plan, results, seeds, extra, out):
        print(f"wrote {path}")
    if note := other_tables_note(plan, results, extra):
        print(note)


def write_results_readme(results: Path, paper: str) -> None:
    atomic_write_text(make_dirs(results) / "README.md", results_readme(paper))


def main(args: Request) -> ExitCode:
    started = time.perf_counter()
    executor_class(args.executor)  # an unknown name fails before anything is read
    _check_flags(args)
    paper = load_paper(args.paper)
    tables = [load_table(n, paper.name) for n in _tables(args.table, paper)]
    preset = load_preset(args.preset, paper.name)
    check_results_folder(args.results, paper, preset.name)  # one level too deep: every finished run retrained
    args = dataclasses.replace(args, results=results_of(args.results, paper.name))
    extra = (*args.extra, *plan_weights_overrides(args.weights, args.from_scratch))
    if args.design:  # prices at a global batch the plan would refuse would mislead: the same check first
        profile = _executor(args).profile
        cells = [cell for table in tables for cell in table_cells(table, preset, 1, extra)]
        require(check_global_batch(cells, preset, profile))
        return ExitCode(run_design(tables, preset, profile, args.results, extra, args.budget))
    if args.seeds == AUTO:
        return _auto(args, tables, preset, extra, started)
    if not (args.paper_only or args.report_only):
        check_before_planning(args, tables, preset, extra)
    plan = build_plan(tables, preset, args.seeds, args.results, extra)
    out = args.results / ("paper-only" if args.paper_only else preset.name)
    report_args = (args.results, args.seeds, extra, out)
    if args.paper_only:
        for path in report(plan, *report_args, paper_only=True):
            print(f"wrote {path}")
        return ExitCode.OK
    executor = _executor(args)
    if args.plan:
        print_plan(plan, executor, args.results)
        return ExitCode.OK
    if args.status:
        shapes = measurements(args.results, preset.name)
        cpus = executor.cpus_per_job()
        estimates = {h: predict(t, executor.profile, shapes, cpus) for h, t in plan.trainings.items()}
        print(render(collect([status_target(t, estimates[h]) for h, t in plan.trainings.items()])))
        return ExitCode.OK
    if args.preflight:
        if args.preflight_iters is not None and args.preflight_iters < 2:
            raise IfbfError("--preflight-iters must be >= 2 (a median needs a few iterations)")
        _check_environment(plan, executor)
        return preflight(plan, executor, args.results, args.preflight_iters)
    if not args.report_only:
        _train_what_is_missing(plan, args, executor)
    report_and_say(plan, *report_args)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return exit_code(plan)


def _executor(args: Request) -> Executor:
    """The executor of ``--executor``, with its profile (``--profile``, else the executor's default;
    ``--profile-set``)."""
    kind = executor_class(args.executor)
    profile = load_profile(args.profile or kind.default_profile, args.profile_set)
    return make_executor(args.executor, profile, args.parallel)


def _check_flags(args: Request) -> None:
    if args.seeds != AUTO and (not isinstance(args.seeds, int) or not SEEDS.holds(args.seeds)):
        raise IfbfError(f"--seeds must be >= 1 and <= {SEEDS.high:.0f} ({SEEDS.why}), or 'auto' (with --budget); "
                        f"got {args.seeds}")
    if args.parallel < 1:
        raise IfbfError(f"--parallel must be >= 1 (local trainings at once), got {args.parallel}")
    if args.budget is not None and not (0 < args.budget < math.inf):
        raise IfbfError("--budget must be a number of device-hours > 0 (not nan or inf)")
    if args.budget is not None and not args.design and args.seeds != AUTO:
        raise IfbfError("--budget goes with --design or --seeds auto")
    if args.seeds == AUTO and (args.budget is None or args.design or args.report_only or args.paper_only
                               or args.no_wait):
        raise IfbfError("--seeds auto needs --budget H (device-hours) and waits for its trainings: not with "
                        "--design, --report-only, --paper-only or --no-wait")


def _auto(args: Request, tables: list, preset: Preset, extra: tuple[str, ...], started: float) -> ExitCode:
    """--seeds auto: one seed everywhere, more where claims are open (``adaptive``), then the usual report."""
    check_before_planning(dataclasses.replace(args, seeds=1), tables, preset, extra)
    executor = _executor(args)
    seeds = run_auto(tables, preset, executor.profile, args.results, extra, args.budget or 0.0,
                     lambda plan: _train_what_is_missing(plan, args, executor))
    plan = build_plan(tables, preset, seeds, args.results, extra)
    report_and_say(plan, args.results, seeds, extra, args.results / preset.name)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return exit_code(plan)


def _train_what_is_missing(plan: Plan, args: Request, executor: Executor) -> None:
    """Submit what is not done (nor running elsewhere), then wait for the trainings other processes run;
    a training whose other process died on the way comes back as stopped and is submitted in the next round."""
    statuses = {h: t.status() for h, t in plan.trainings.items()}

    def wanted(state: RunState) -> bool:
        return state.to_run or (args.rerun_failed and state is RunState.FAILED)

    for h, t in plan.trainings.items():
        if statuses[h] is RunState.FAILED and not args.rerun_failed:
            print(f"failed: {h} ({'; '.join(sorted({c.row.name for c in t.cells}))}); log: {t.log_path()} "
                  "— fix it and use --rerun-failed")
        elif statuses[h].active:
            print(f"{statuses[h]}: {h} (not submitted again)")
        elif t.unreadable:
            print(f"not submitted: {t.unreadable} (repair or move that file; nothing in the run was changed)")
    done = sum(s is RunState.DONE for s in statuses.values())
    print(f"{len(plan.trainings)} training(s): {done} done, {sum(map(wanted, statuses.values()))} to run")
    outcomes: dict[str, Outcome] = {}
    checked = False
    detach = args.no_wait and executor.detached
    while True:
        todo = [t for h, t in plan.trainings.items()
                if outcomes.get(h, Outcome.BUSY) is Outcome.BUSY and wanted(statuses[h])]
        if todo:
            if not checked:
                _check_environment(plan, executor)
                checked = True
            outcomes.update(run_trainings(plan, todo, executor, args.results, wait=not args.no_wait))
        if detach:
            break
        others = [h for h, t in plan.trainings.items() if t.status().active]
        if not others:
            break
        wait_for_others(plan, others)
        statuses = {h: t.status() for h, t in plan.trainings.items()}
        outcomes.update({h: Outcome.BUSY for h in others if statuses[h].to_run})  # its process died: ours now
    for h in [h for h, o in outcomes.items() if o is Outcome.FAILED]:
        print(f"failed: {h}; log: {plan.trainings[h].log_path()}")
    if detach:
        print("submitted; run again with --report-only (or the same command) once the jobs are done")


def exit_code(plan: Plan) -> ExitCode:
    """OK when every cell of the plan has its result, FAILED when a training behind a missing cell failed or
    a file of any training cannot be read (its cells are marked "unreadable: FILE", docs/reliability.md), else
    INCOMPLETE (a test-split cell awaiting its server result counts as missing)."""
    if any(isinstance(t.status(), Unreadable) for t in plan.trainings.values()):
        return ExitCode.FAILED
    missing = [plan.training_of(c) for c in plan.cells if result_key(c.cfg) not in plan.training_of(c).evaluated()]
    if any(t.status() is RunState.FAILED for t in missing):
        return ExitCode.FAILED
    return ExitCode.INCOMPLETE if missing else ExitCode.OK
