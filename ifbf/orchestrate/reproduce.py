"""``python reproduce.py --table N``: plan, submit, collect and report the paper's tables.

Re-running is idempotent: finished runs (metrics.json of the same config hash with every evaluation a
table needs) are skipped, running ones are not submitted twice, failed ones are reported with their log
and retried only with --rerun-failed. Results: results/<preset>/table<N>.{md,tex,csv} and figures.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from ifbf.identity import eval_key
from ifbf.errors import IfbfError, UnreadableRunFile
from ifbf.experiments import TABLES, Preset, RowSeeds, load_preset, load_table, table_cells
from ifbf.orchestrate.adaptive import run_auto
from ifbf.orchestrate.checks import (check_dataset, check_environment, check_weights, require,
                                    unused_weights, weight_overrides)
from ifbf.orchestrate.cluster import SlurmProfile, load_profile
from ifbf.orchestrate.design_report import run_design
from ifbf.orchestrate.estimate import duration, plan_costs, predict
from ifbf.orchestrate.jobs import BUSY, EXECUTORS, TrainJob, make_executor
from ifbf.orchestrate.plan import Plan, Training, build_plan, with_main_eval
from ifbf.orchestrate.preflight import group_shapes, preflight_path, run_preflight, summary_lines
from ifbf.orchestrate.resources import share_per_job
from ifbf.orchestrate.status import Target, collect, render
from ifbf.report import records
from ifbf.report.readme import README
from ifbf.report.tables import table_frame, write_table
from ifbf.rundir import RESULTS, RunDir, read_status, result_key, write_status
from ifbf.runlock import LockHeld

AUTO = "auto"
DEFAULT_PROFILE = {"slurm": "example", "local": "local", "debug": "local"}


@dataclass(frozen=True)
class Request:
    """What ``reproduce.py`` was asked to do (its flags, typed; see ``ifbf.commands.reproduce``)."""

    table: str
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
    dataset, hint = check_dataset(cells, args.allow_partial_dataset)
    problems, unused = check_weights(cells, preset.requires_weights) + dataset, unused_weights(cells, args.weights)
    # an unused key explains a missing one (the right file under another key); alone it is only a note
    require(problems + unused if problems else [], hint)
    for line in unused:
        print(f"note: {line}")


def status_target(training: Training) -> Target:
    names = sorted({f"T{c.table} {c.row.name}" + (f" s{c.seed}" if c.seed else "") for c in training.cells})
    return Target(training.run_dir, "; ".join(names), training.cfg.train.iters,
                  frozenset(eval_key(e) for e in training.evals))


def print_plan(plan: Plan, executor: str, profile: SlurmProfile, parallel: int, results: Path) -> None:
    statuses = {h: t.status() for h, t in plan.trainings.items()}
    costs, totals = plan_costs(plan, executor, profile, parallel, results, statuses)
    rows = []
    for run_hash, training in plan.trainings.items():
        status = statuses[run_hash]
        names = sorted({f"T{c.table} {c.row.name}" + (f" s{c.seed}" if c.seed else "") for c in training.cells})
        extra = f"  log: {training.log_path()}" if status == "failed" else ""
        extra += f"  {training.unreadable}" if training.unreadable else ""
        rows.append(f"  {run_hash}  {status:8s} {len(training.evals)} eval  {'; '.join(names)}  {costs[run_hash]}{extra}")
    tables = ", ".join(str(t.number) for t in plan.tables)
    print(f"Table(s) {tables}, preset {plan.preset.name}: {len(plan.cells)} cells need "
          f"{len(plan.trainings)} training(s) (identical configs are trained once)")
    print("\n".join(rows))
    todo = [h for h, s in statuses.items() if s in ("todo", "failed")]
    print("\n".join(totals) if todo else "nothing to run")


def preflight(plan: Plan, executor: str, profile: SlurmProfile, parallel: int, results: Path,
              iters: int | None) -> int:
    """Measure every compute shape of the plan; 0 when all succeeded, 1 when one failed."""
    threads = max(1, (os.cpu_count() or 1) // max(1, parallel)) if executor != "slurm" else None
    shapes = group_shapes(plan, profile)
    print(f"preflight: {len(plan.trainings)} training(s) in {len(shapes)} compute shape(s), one short job each "
          f"({executor}, profile gpus_per_node={profile.gpus_per_node})")
    started = time.perf_counter()
    try:
        records = run_preflight(plan, executor, profile, results, iters, threads)
    except submitit.core.utils.FailedJobError as err:
        raise rejected(err) from None
    print("\n".join(summary_lines(records)))
    print(f"wrote {preflight_path(results, plan.preset.name)}")
    _compare_with_the_job(plan, profile, records, time.perf_counter() - started)
    failed = [k for k, r in records.items() if "error" in r]
    if failed:
        print(f"preflight: {len(failed)} of {len(records)} shape(s) failed (see above)")
    return 1 if failed else 0


def rejected(err: Exception) -> IfbfError:
    """sbatch refused a submission (training or preflight): one line naming the profile keys to check."""
    reason = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
    return IfbfError(f"SLURM rejected the job: {reason}. Check the profile's partition, gpus_per_node (GPUs must "
                     "exist on that partition), cpus_per_task and mem_gb against `sinfo -o '%P %G %c %m'`")


def _compare_with_the_job(plan: Plan, profile: SlurmProfile, records: dict[str, dict], took_s: float) -> None:
    """Say when measuring cost more than what it measured (a small preset: one job per shape, set-up and all)."""
    predicted = [predict(t, profile, records).seconds for t in plan.trainings.values()]
    known = [s for s in predicted if s is not None]
    if len(known) == len(predicted) and took_s > sum(known):
        print(f"note: this preflight took {duration(took_s)}, more than the {duration(sum(known))} its trainings "
              "are predicted to take: for trainings this short, run the job itself")


def run_trainings(plan: Plan, trainings: list[Training], executor: str, profile: SlurmProfile, parallel: int,
                  results: Path, wait: bool = True) -> dict[str, str]:
    """Submit trainings (at most ``parallel`` at once for the local executor); returns run hash -> outcome:
    done | failed | submitted (not waited for) | busy (another process has it: see ``_claim``)."""
    folder = results / plan.preset.name / ".submitit"
    ex = make_executor(executor, folder, profile.submitit_params(executor), profile.max_requeues)
    # local jobs split this process's CPUs (its affinity mask); SLURM jobs size themselves to their allocation
    threads = share_per_job(parallel) if executor != "slurm" else None
    outcomes: dict[str, str] = {}

    def submit(batch: list[Training]) -> list:
        with ExitStack() as held:
            mine = [t for t in batch if _claim(t, held, outcomes)]
            jobs = [TrainJob.of(with_main_eval(t), t.run_dir, t.evals[1:], threads) for t in mine]
            if executor == "slurm" and len(mine) > 1:
                with ex.batch():
                    pending = [ex.submit(job) for job in jobs]
            else:
                pending = [ex.submit(job) for job in jobs]
            submitted = list(zip(mine, pending))
            for training, job in submitted:
                write_status(training.run_dir, "submitted", executor=executor, job_id=str(job.job_id),
                             log=str(job.paths.stderr) if executor != "debug" else None,
                             pid=int(job.job_id) if executor == "local" else None if executor == "slurm" else os.getpid())
                print(f"submitted {training.run_hash}: {executor} job {job.job_id}", flush=True)
        return submitted  # the submit locks are released here, once "submitted" is recorded

    step = len(trainings) if executor == "slurm" else max(1, parallel)
    for start in range(0, len(trainings), step):
        try:
            batch = submit(trainings[start : start + step])
        except submitit.core.utils.FailedJobError as err:
            raise rejected(err) from None
        for training, job in batch:
            outcomes[training.run_hash] = "submitted" if executor == "slurm" and not wait else _wait(training, job)
    return outcomes


def _claim(training: Training, held: ExitStack, outcomes: dict[str, str]) -> bool:
    """Take the run's submit lock and check, under it, that no other process has submitted or finished it
    meanwhile; on success the lock stays in ``held`` until the submission is recorded."""
    lock = RunDir(training.run_dir).submit_lock(training.cfg.runtime.lock_stale_s)
    try:
        lock.acquire()
    except LockHeld:
        outcomes[training.run_hash] = "busy"
        return False
    state = training.status(mine=lock.token)
    if state in ("running", "done"):
        lock.release()
        outcomes[training.run_hash] = "busy" if state == "running" else "done"
        return False
    held.callback(lock.release)
    return True


def _wait(training: Training, job) -> str:
    try:
        result = job.result()
    except Exception as err:  # noqa: BLE001 - any job failure is reported, never raised past the table
        try:
            status = read_status(training.run_dir) or {}
        except UnreadableRunFile:  # rewritten below
            status = {}
        if status.get("state") != "failed":
            write_status(training.run_dir, "failed", error=f"{type(err).__name__}: {str(err)[-2000:]}",
                         log=status.get("log"), job_id=str(job.job_id))
        return "failed"
    return "busy" if isinstance(result, dict) and BUSY in result else "done"


def wait_for_others(plan: Plan, hashes: list[str], poll_s: float = 2.0) -> None:
    """Wait while other processes (another reproduce.py, a trainer) have these trainings running."""
    names = ", ".join(hashes)
    print(f"waiting for {len(hashes)} training(s) that another process runs: {names}", flush=True)
    while any(plan.trainings[h].status() == "running" for h in hashes):
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
        df = table_frame(frame, table)
        note = "" if paper_only else f"Preset `{plan.preset.name}`: {plan.preset.description}"
        if not paper_only and plan.preset.name in table.notes:
            note += " " + table.notes[plan.preset.name]
        if unreadable:
            note += "\n\nUnreadable run files (their cells are marked): " + "; ".join(unreadable)
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
    _check_seeds(args)
    tables = [load_table(n) for n in _tables(args.table)]
    preset = load_preset(args.preset)
    extra = (*args.extra, *weight_overrides(args.weights, args.from_scratch))
    if args.design:
        profile = load_profile(args.profile or DEFAULT_PROFILE[args.executor], args.slurm)
        return run_design(tables, preset, profile, args.results, extra, args.budget)
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
        return 0
    profile = load_profile(args.profile or DEFAULT_PROFILE[args.executor], args.slurm)
    if args.plan:
        print_plan(plan, args.executor, profile, args.parallel, args.results)
        return 0
    if args.status:
        print(render(collect([status_target(t) for t in plan.trainings.values()])))
        return 0
    if args.preflight:
        if args.preflight_iters is not None and args.preflight_iters < 2:
            raise IfbfError("--preflight-iters must be >= 2 (a median needs a few iterations)")
        _check_environment(plan, args.executor, profile)
        return preflight(plan, args.executor, profile, args.parallel, args.results, args.preflight_iters)
    if not args.report_only:
        _train_what_is_missing(plan, args, profile)
    for path in report(plan, *report_args):
        print(f"wrote {path}")
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return exit_code(plan)


def _check_seeds(args: Request) -> None:
    if args.seeds != AUTO and (not isinstance(args.seeds, int) or args.seeds < 1):
        raise IfbfError("--seeds must be >= 1 or 'auto' (with --budget)")
    if args.budget is not None and args.budget <= 0:
        raise IfbfError("--budget must be > 0 (device-hours)")
    if args.budget is not None and not args.design and args.seeds != AUTO:
        raise IfbfError("--budget goes with --design or --seeds auto")
    if args.seeds == AUTO and (args.budget is None or args.design or args.report_only or args.paper_only
                               or args.no_wait):
        raise IfbfError("--seeds auto needs --budget H (device-hours) and waits for its trainings: not with "
                        "--design, --report-only, --paper-only or --no-wait")


def _auto(args: Request, tables: list, preset: Preset, extra: tuple[str, ...], started: float) -> int:
    """--seeds auto: one seed everywhere, more where claims are open (``adaptive``), then the usual report."""
    check_before_planning(dataclasses.replace(args, seeds=1), tables, preset, extra)
    profile = load_profile(args.profile or DEFAULT_PROFILE[args.executor], args.slurm)
    seeds = run_auto(tables, preset, profile, args.results, extra, args.budget or 0.0,
                     lambda plan: _train_what_is_missing(plan, args, profile))
    plan = build_plan(tables, preset, seeds, args.results, extra)
    for path in report(plan, args.results, seeds, extra, args.results / preset.name):
        print(f"wrote {path}")
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return exit_code(plan)


def _train_what_is_missing(plan: Plan, args: Request, profile: SlurmProfile) -> None:
    """Submit what is not done (nor running elsewhere), then wait for the trainings other processes run;
    a training whose other process died on the way comes back as todo and is submitted in the next round."""
    statuses = {h: t.status() for h, t in plan.trainings.items()}
    wanted = {"todo", "failed"} if args.rerun_failed else {"todo"}
    for h, t in plan.trainings.items():
        if statuses[h] == "failed" and not args.rerun_failed:
            print(f"failed: {h} ({'; '.join(sorted({c.row.name for c in t.cells}))}); log: {t.log_path()} "
                  "— fix it and use --rerun-failed")
        elif statuses[h] == "running":
            print(f"running: {h} (not submitted again)")
        elif t.unreadable:
            print(f"not submitted: {t.unreadable} (repair or move that file; nothing in the run was changed)")
    done = sum(s == "done" for s in statuses.values())
    print(f"{len(plan.trainings)} training(s): {done} done, {sum(s in wanted for s in statuses.values())} to run")
    outcomes: dict[str, str] = {}
    checked = False
    while True:
        todo = [t for h, t in plan.trainings.items() if outcomes.get(h, "busy") == "busy" and statuses[h] in wanted]
        if todo:
            if not checked:
                _check_environment(plan, args.executor, profile)
                checked = True
            outcomes.update(run_trainings(plan, todo, args.executor, profile, args.parallel, args.results,
                                          wait=not args.no_wait))
        if args.no_wait and args.executor == "slurm":
            break
        others = [h for h, t in plan.trainings.items() if t.status() == "running"]
        if not others:
            break
        wait_for_others(plan, others)
        statuses = {h: t.status() for h, t in plan.trainings.items()}
        outcomes.update({h: "busy" for h in others if statuses[h] == "todo"})  # its process died: ours now
    for h in [h for h, o in outcomes.items() if o == "failed"]:
        print(f"failed: {h}; log: {plan.trainings[h].log_path()}")
    if args.no_wait and args.executor == "slurm":
        print("submitted; run again with --report-only (or the same command) once the jobs are done")


EXIT_OK, EXIT_FAILED, EXIT_INCOMPLETE = 0, 1, 3
EXIT_CODES = f"""exit status:
  {EXIT_OK}  every cell asked for has a value
  {EXIT_FAILED}  a training or evaluation failed (its cells read "failed" in the tables; see the log it names)
  2  a usage or setup error (one line says what to fix)
  {EXIT_INCOMPLETE}  nothing failed, but cells are still missing (jobs submitted with --no-wait or still running)
  130  interrupted (Ctrl-C)"""


def exit_code(plan: Plan) -> int:
    """0 when every cell of the plan has its result, 1 when a training behind a missing cell failed, else 3
    (a test-split cell awaiting its server result counts as missing)."""
    missing = [plan.training_of(c) for c in plan.cells if result_key(c.cfg) not in plan.training_of(c).evaluated()]
    if any(t.status() == "failed" or t.unreadable for t in missing):
        return EXIT_FAILED
    return EXIT_INCOMPLETE if missing else EXIT_OK
