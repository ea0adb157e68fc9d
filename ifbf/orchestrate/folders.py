"""Whose runs lie where in a results folder: the default paper's under ``<results>/<preset>/runs``, another
paper's under ``<results>/<paper>/<preset>/runs`` (``experiments.results_of``). ``reproduce.py`` refuses a
folder given one level too deep (a paper's own folder, a preset's folder): planned there, every finished run
would read "not submitted" and a real run would train it again; ``ifbf status`` finds every paper's runs."""

from __future__ import annotations

from pathlib import Path

from ifbf.errors import IfbfError
from ifbf.experiments import DEFAULT_PAPER, Paper, load_paper, papers, presets, results_of
from ifbf.store.rundir import runs_root


def paper_folder(folder: Path) -> str | None:
    """The paper whose own folder (``<results>/<paper>/``) ``folder`` is: named after a paper other than the
    default, without a folder of that name inside, with a preset of that paper holding runs; else None."""
    name = folder.resolve().name  # ".": the folder's own name
    if name == DEFAULT_PAPER or name not in papers() or (folder / name).exists():
        return None
    return name if any(runs_root(preset, folder).is_dir() for preset in presets(name)) else None


def results_root(folder: Path) -> Path:
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
                        f"above it: --results {results_root(folder)}")


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
