"""SIGTERM and SIGHUP stop ``reproduce.py`` as Ctrl-C does (docs/cluster.md, "Stopping reproduce.py").

Ctrl-C reaches the whole foreground process group: ``reproduce.py``, its local job controllers and their
trainings, each of which stops where it is (its last checkpoint stays; the same command resumes it). A SIGTERM
(``kill PID``, a session's end) or a SIGHUP (a closed terminal, a dropped ssh) reaches ``reproduce.py`` alone,
so on either of them it sends SIGINT to every process below it (what Ctrl-C would have delivered to them) and
then stops itself with ``KeyboardInterrupt``: one line, exit 130. SLURM jobs are not below it: they belong to
the cluster, as with Ctrl-C.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STOPPING = (signal.SIGTERM, signal.SIGHUP)
PROC = Path("/proc")


def descendants(pid: int, proc: Path = PROC) -> list[int]:
    """Every process below ``pid``, parents before their children, read from /proc (none where there is no
    /proc: those processes are left to the signal that reached them)."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)", which may hold spaces: state, ppid
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(0), [])
        found += below
        todo += below
    return found


def interrupt_descendants(signum: int, frame: Any = None) -> None:
    """The handler: SIGINT to every process below this one, then ``KeyboardInterrupt`` here (naming ``signum``)."""
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGINT)
        except (ProcessLookupError, PermissionError):
            pass
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def stopped_like_ctrl_c() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP stop this process and everything below it as Ctrl-C does."""
    previous = {}
    for sig in STOPPING:
        try:
            previous[sig] = signal.signal(sig, interrupt_descendants)
        except ValueError:  # not the main thread: leave the handlers alone
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
