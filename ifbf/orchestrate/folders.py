"""Whose runs lie where in a results folder: the default paper's under ``<results>/<preset>/runs``, another
paper's under ``<results>/<paper>/<preset>/runs`` (``experiments.results_of``). ``reproduce.py`` refuses a
folder given one level too deep (a paper's own folder, a preset's folder): planned there, every finished run
would read "not submitted" and a real run would train it again; ``ifbf status`` finds every paper's runs; a
report names the paper's other tables with results in the same folder (REPORT.md holds its command's only)."""

from __future__ import annotations

from pathlib import Path

from ifbf.errors import IfbfError
from ifbf.experiments import (DEFAULT_PAPER, Paper, load_paper, load_table, papers, presets, report_all_command,
                              results_above, results_of, table_caption)
from ifbf.orchestrate.plan import Plan, build_plan
from ifbf.store.rundir import result_key, runs_root


def paper_folder(folder: Path) -> str | None:
    """The paper whose own folder (``<results>/<paper>/``) ``folder`` is: named after a paper other than the
    default, without a folder of that name inside, with a preset of that paper holding runs; else None."""
    name = folder.resolve().name  # ".": the folder's own name
    if name == DEFAULT_PAPER or name not in papers() or (folder / name).exists():
        return None
    return name if any(runs_root(preset, folder).is_dir() for preset in presets(name)) else None


def _above_preset(folder: Path) -> Path:
    """The results folder above a preset's folder: its parent, or the one above when that is a paper's own."""
    return folder.parent.parent if paper_folder(folder.parent) else folder.parent


def check_results_folder(results: Path, paper: Paper, preset: str) -> None:
    """Refuse ``--results`` given one level too deep, before anything is planned: a paper's own folder (its
    runs would be looked for under ``<paper>/<paper>/``) or a preset's folder (it holds ``runs/`` itself)."""
    folder = results.resolve()  # "." and "..": their parents named by what they are
    if own := paper_folder(folder):
        raise IfbfError(f"--results {results} is {load_paper(own).label}'s own results folder (it holds "
                        f"<preset>/runs); give its parent: --results {folder.parent}")
    planned = runs_root(preset, results_of(folder, paper.name))
    if runs_root(folder.name, folder.parent).is_dir() and not planned.is_dir():
        raise IfbfError(f"--results {results} is a preset's folder (it holds runs/); give the results folder "
                        f"above it: --results {_above_preset(folder)}")


def run_folders(results: Path, preset: str | None = None) -> list[tuple[str, Path]]:
    """(label, runs folder) of every preset with runs under ``results`` (or only ``preset``'s), for each paper:
    ``results`` is a results folder, or one paper's own folder. The label is the preset, ``<paper>/<preset>``
    for a paper other than the default."""
    own = paper_folder(results)
    mine = [own] if own else sorted(papers(), key=lambda name: name != DEFAULT_PAPER)  # the default paper first
    roots = {name: results if own else results_of(results, name) for name in mine}
    found = []
    for name, root in roots.items():
        prefix = "" if name == DEFAULT_PAPER else f"{name}/"
        kept = [preset] if preset else sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        found += [(prefix + p, runs_root(p, root)) for p in kept if runs_root(p, root).is_dir()]
    return found


def rows_with_results(plan: Plan, reported: frozenset[str] = frozenset()) -> dict[int, tuple[int, int]]:
    """Table number -> (its cells with a result, all its cells), for each table of ``plan`` with a result of its
    own: a cell of a training in ``reported`` (run hashes the report already holds, a row another table shares)
    counts as none."""
    counts: dict[int, tuple[int, int]] = {}
    for cell in plan.cells:
        done, total = counts.get(cell.table, (0, 0))
        training = plan.training_of(cell)
        own = training.run_hash not in reported and result_key(cell.cfg) in training.evaluated()
        counts[cell.table] = (done + own, total + 1)
    return {number: c for number, c in counts.items() if c[0]}


def other_tables_note(plan: Plan, results: Path, extra: tuple[str, ...]) -> str | None:
    """A line for a report of some of its paper's tables when others have results (at seed 0) for the same
    preset in the same folder: REPORT.md judges the claims of its command's tables only."""
    paper = load_paper(plan.preset.paper)
    covered = [t.number for t in plan.tables]
    others = [load_table(n, paper.name) for n in paper.tables if n not in covered]
    reported = frozenset(plan.trainings)
    found = rows_with_results(build_plan(others, plan.preset, 1, results, extra), reported) if others else {}
    if not found:
        return None
    listed = ", ".join(f"{table_caption(n, paper.name)} ({done} of {total} rows)" for n, (done, total) in found.items())
    # (a row shared with the reported tables is not counted: its result is in this report already)
    again = " with this command's --set/--weights" if extra else ""
    return (f"note: REPORT.md covers {', '.join(t.caption for t in plan.tables)} only; {listed} also "
            f"{'has' if len(found) == 1 else 'have'} results here: `{report_all_command(paper.name, plan.preset.name)} "
            f"--results {results_above(results, paper.name)}`{again} reports every table in one")
