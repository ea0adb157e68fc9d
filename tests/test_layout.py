"""The architecture's import rules (../shared/guide/LAYOUT.md), checked on the source so they keep holding:
reporting never reaches into the engine, the models or the orchestrator; the engine never into the
orchestrator or the reports; models, data and experiments only into config and errors (experiments also into
the run store's plain types, for the scores a table may list); the run store
only into config and errors (its lock files, ifbf.store.runlock, only into errors). Also: argparse only in ifbf/commands,
status.json and the lock file names only in the run store, executor names compared only in
orchestrate/executors.py, exit codes only from errors.ExitCode, files under 400 lines and functions under 60."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ifbf"

# part -> parts it must never import (a part is a sub-package or a top-level module of ifbf)
OUTER = {"engine", "orchestrate", "report", "commands", "models", "data", "experiments", "store"}
FORBIDDEN = {
    "report": {"engine", "models", "orchestrate", "commands", "data"},
    "engine": {"orchestrate", "report", "commands", "experiments"},
    "models": {"engine", "orchestrate", "report", "commands", "data", "experiments", "store"},
    "data": {"engine", "orchestrate", "report", "commands", "models", "experiments", "store"},
    "experiments": {"engine", "orchestrate", "report", "commands", "models", "data", "store"},
    "config": OUTER,
    "identity": OUTER,
    "limits": OUTER | {"config", "errors"},
    "_torchvision": OUTER | {"config", "identity", "limits"},
    "store": OUTER - {"store"},
}
# within the run store, finer: its types and its lock know no config, the lock only errors; RunDir's collaborators
# (evaluation files, the log) never reach back into RunDir
COLLABORATORS = {"store.rundir", "store.evaluations", "store.runlog"}
STORE_FORBIDDEN = {
    "runtypes": {"config", "store.runlock", "store.safefile", "store.environment", "store.measurement"} | COLLABORATORS,
    "measurement": {"config", "store.runlock", "store.safefile", "store.environment"} | COLLABORATORS,
    "runlock": {"config", "identity", "store.runtypes", "store.safefile", "store.environment"} | COLLABORATORS,
    "safefile": {"config", "identity", "store.environment"} | COLLABORATORS,
    "environment": COLLABORATORS,
    "evaluations": {"store.rundir", "store.runlog", "store.environment"},
    "runlog": {"config", "store.rundir", "store.evaluations", "store.environment"},
}
# what a part may take from the store although it may not import the store as a whole
STORE_EXCEPT = {"data": {"store.safefile"},  # runtypes: the scores a table lists; labels: a paper's classes
                "experiments": {"store.runtypes", "data.labels"}}
FLAT_ALLOWED = 3  # top-level modules besides config, errors and experiments (issue 26)


def part_of(module: str) -> str | None:
    """'ifbf.report.tables' -> 'report'; 'ifbf.store.rundir' -> 'store'; other packages -> None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "ifbf" and len(parts) > 1 else None


def store_part(module: str) -> str | None:
    """A module within a sub-package: 'ifbf.store.rundir.RunDir' -> 'store.rundir', 'ifbf.data.labels' ->
    'data.labels'; a flat module: 'ifbf.config' -> 'config'."""
    parts = module.split(".")
    if parts[0] != "ifbf" or len(parts) < 2:
        return None
    return f"{parts[1]}.{parts[2]}" if (PACKAGE / parts[1]).is_dir() and len(parts) > 2 else parts[1]


def imports(path: Path) -> list[str]:
    """Every module an ifbf source file imports, at any depth of the file (function-local imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def own_part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_the_rules_see_every_import():
    """The checker itself: it finds a known import (so an empty result below means something)."""
    assert "ifbf.store.rundir.RunDir" in imports(PACKAGE / "report" / "records.py")
    assert part_of("ifbf.store.rundir.RunDir") == "store" and store_part("ifbf.store.rundir.RunDir") == "store.rundir"
    assert any(part_of(m) == "engine" for m in imports(PACKAGE / "orchestrate" / "jobs.py"))


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_import_rules(part):
    broken = [
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in sources() if own_part(path) == part
        for module in imports(path)
        if part_of(module) in FORBIDDEN[part] and store_part(module) not in STORE_EXCEPT.get(part, set())
    ]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("module", sorted(STORE_FORBIDDEN))
def test_store_import_rules(module):
    path = PACKAGE / "store" / f"{module}.py"
    broken = [f"store/{module}.py imports {m}" for m in imports(path) if store_part(m) in STORE_FORBIDDEN[module]]
    assert not broken, "\n".join(broken)


def test_few_modules_lie_flat():
    """Besides config, errors and experiments, at most three modules lie flat under ifbf/ (the rest are parts)."""
    flat = sorted(p.stem for p in PACKAGE.glob("*.py")
                  if p.stem not in {"__init__", "__main__", "config", "errors", "experiments"})
    assert len(flat) <= FLAT_ALLOWED, flat
    assert set(flat) <= set(FORBIDDEN), f"a flat module without import rules: {sorted(set(flat) - set(FORBIDDEN))}"


def test_argparse_only_in_commands():
    offenders = [str(p) for p in sources() if "argparse" in imports(p) and own_part(p) != "commands"]
    assert not offenders


@pytest.mark.parametrize("name", ["status.json", "train.lock", "submit.lock"])
def test_run_files_have_one_owner(name):
    offenders = [str(p) for p in sources() if name in p.read_text() and p.name != "rundir.py"]
    assert not offenders


def test_files_stay_small():
    long = {str(p.relative_to(PACKAGE)): n for p in sources() if (n := len(p.read_text().splitlines())) > 400}
    assert not long


def test_report_class_order_is_the_engines():
    """Reports take a paper's classes from its dataset (the engine's trainId order); a per-class table lists
    them in that order."""
    from ifbf.data.labels import CLASS_NAMES
    from ifbf.experiments import Metric, class_names, load_paper, load_table, papers

    assert class_names() == CLASS_NAMES
    for paper in papers():
        for table in (load_table(n, paper) for n in load_paper(paper).tables):
            if table.per_class:
                assert tuple(table.classes) == class_names(paper), (paper, table.number)


def test_executors_are_told_apart_in_one_module():
    """Only orchestrate/executors.py compares executor names; everything else asks the Executor object."""
    pattern = re.compile(r"executor\w*[\"')\]]*\s*(==|!=|in\s*[(\[{])|(==|!=|\bin\s*[(\[{])\s*[\"'](slurm|local|debug)[\"']")
    assert all(pattern.search(line) for line in ('if executor == "slurm":', 'status.get("executor") != "slurm"',
                                                 'kind in ("slurm", "local")', 'x if args.executor in ("a",) else y'))
    offenders = [f"{p.relative_to(PACKAGE)}:{n}" for p in sources() if p.name != "executors.py"
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, "compare executors in ifbf/orchestrate/executors.py only:\n" + "\n".join(offenders)


def test_functions_stay_short():
    """No function in ifbf/ over 60 lines (decorators aside): a reader holds one on a screen."""
    long = [f"{p.relative_to(PACKAGE)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for p in sources() for node in ast.walk(ast.parse(p.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60]
    assert not long, "split these functions:\n" + "\n".join(long)


def test_exit_codes_are_defined_once():
    """Exit statuses come from ifbf.errors.ExitCode; no module keeps numbers of its own."""
    pattern = re.compile(r"^\s*EXIT_\w+\s*=|sys\.exit\(\d")
    offenders = [f"{p.relative_to(PACKAGE)}:{n}" for p in sources()
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, "use ifbf.errors.ExitCode:\n" + "\n".join(offenders)


def test_paths_anchored_on_a_module_point_into_the_repository():
    """A module that finds the repository from its own file (``Path(__file__).parents[n]``) must be told when it
    moves: the default results folder once landed in ifbf/results/ after the run store became ifbf/store/."""
    from ifbf.config import BASE_CONFIG
    from ifbf.orchestrate.cluster import PROFILES
    from ifbf.store import environment
    from ifbf.store.rundir import RESULTS

    repo = PACKAGE.parent
    assert RESULTS == repo / "results" and environment.REPO == repo
    assert BASE_CONFIG.is_file() and BASE_CONFIG.is_relative_to(repo / "experiments")
    assert PROFILES.is_dir() and PROFILES == repo / "slurm" / "profiles"
    anchored = [f"{p.relative_to(repo)}:{n}" for p in sorted(PACKAGE.rglob("*.py"))
                for n, line in enumerate(p.read_text().splitlines(), 1) if "Path(__file__)" in line]
    known = {"ifbf/config.py", "ifbf/store/rundir.py", "ifbf/store/environment.py", "ifbf/orchestrate/cluster.py"}
    assert {a.split(":")[0] for a in anchored} <= known, f"check the new anchor(s) here too: {anchored}"


CITED_PATH = re.compile(r"(?<![\w/.-])(?:experiments|docs)/[^\s`'\"),;:\]#]*")  # a link's #anchor left off


def test_cited_paths_exist():
    """Every concrete experiments/ or docs/ path that the specs, the docs, the README and the package cite
    exists (the specs moved to experiments/<paper>/ once and left comments pointing at experiments/presets/)."""
    repo = PACKAGE.parent
    files = [repo / "README.md", *sorted((repo / "docs").rglob("*.md")),
             *sorted((repo / "experiments").rglob("*.yaml")), *sources()]
    missing = [f"{p.relative_to(repo)}:{n}: {path}" for p in files
               for n, line in enumerate(p.read_text().splitlines(), 1) for path in CITED_PATH.findall(line)
               if not _cited_path_exists(repo, path)]
    assert not missing, "\n".join(missing)


def _cited_path_exists(repo: Path, path: str) -> bool:
    """A path names a file or folder of ``repo``; one with placeholders (``experiments/<paper>/table<N>.yaml``,
    ``{png,pdf}``) names at least one."""
    pattern = re.sub(r"<[^>]*>|\{[^}]*\}", "*", path.rstrip(".").rstrip("/"))
    return "$" in pattern or any(repo.glob(pattern))
