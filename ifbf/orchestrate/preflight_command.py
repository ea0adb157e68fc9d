"""``reproduce.py --preflight``: one short real job per compute shape of a plan, on the executor and with the
threads the runs will get (``preflight`` measures; this module runs it for the command and says what it found).
"""

from __future__ import annotations

import time
from pathlib import Path

import submitit

from ifbf.errors import ExitCode
from ifbf.orchestrate.cluster import ClusterProfile
from ifbf.orchestrate.estimate import duration, predict
from ifbf.orchestrate.executors import Executor
from ifbf.orchestrate.plan import Plan
from ifbf.orchestrate.preflight import group_shapes, merge, run_preflight, summary_lines
from ifbf.store.measurement import Preflight, PreflightFailure


def preflight(plan: Plan, executor: Executor, results: Path, iters: int | None) -> ExitCode:
    """Measure every compute shape of the plan with the threads the runs will get; FAILED when one failed."""
    shapes = group_shapes(plan, executor.profile)
    print(f"preflight: {len(plan.trainings)} training(s) in {len(shapes)} compute shape(s), one short job each "
          f"({executor.name}, profile gpus_per_node={executor.profile.gpus_per_node})")
    started = time.perf_counter()
    try:
        records = run_preflight(plan, executor, results, iters)
    except submitit.core.utils.FailedJobError as err:
        raise executor.rejected(err) from None
    print("\n".join(summary_lines(records)), flush=True)  # shown before writing: a failed write loses no figure
    print(f"wrote {merge(results, plan.preset.name, records)}")
    _compare_with_the_job(plan, executor.profile, records, time.perf_counter() - started)
    failed = [k for k, r in records.items() if isinstance(r, PreflightFailure)]
    if failed:
        print(f"preflight: {len(failed)} of {len(records)} shape(s) failed (see above)")
    return ExitCode.FAILED if failed else ExitCode.OK


def _compare_with_the_job(plan: Plan, profile: ClusterProfile, records: dict[str, Preflight], took_s: float) -> None:
    """Say when measuring cost more than what it measured (a small preset: one job per shape, set-up and all)."""
    predicted = [predict(t, profile, records).seconds for t in plan.trainings.values()]
    known = [s for s in predicted if s is not None]
    if len(known) == len(predicted) and took_s > sum(known):
        print(f"note: this preflight took {duration(took_s)}, more than the {duration(sum(known))} its trainings "
              "are predicted to take: for trainings this short, run the job itself")
