"""The primitives under the run store's files (``ifbf.store.rundir`` decides which files; this module how).

Atomic writes that turn a full disk into one clear error: write a temporary file beside the target, flush it
to the disk, then rename it over the target; a crash or ENOSPC mid-write leaves the previous file intact and
removes the partial one (the run store, checkpoints, the decoded cache's index and every output of the reports
write through here). A read-only file system or a missing permission is one line too (``NotWritable``). The
temporary file of a writer that was killed is removed later by ``remove_stale_temporaries``.
Versioned JSON: every JSON file carries the store's schema version, and reading one that is empty,
truncated, of a newer version or of another config raises ``UnreadableRunFile`` naming the run and the file."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from ifbf import __version__
from ifbf.errors import NoSpace, UnreadableRunFile, write_error
from ifbf.store.runlock import DEFAULT_STALE_S, pid_alive

# ".<target name>.tmp<pid>@<host>" (an older ifbf: without "@<host>"): whose writer it is, for the sweep
CHUNK = 64 << 20  # bytes per write of an atomic write
TEMPORARY = re.compile(r"\.(?P<target>.+)\.tmp(?P<pid>\d+)(?:@(?P<host>.+))?")


def open_for_write(path: Path) -> BinaryIO:
    """The one place files are opened for an atomic write (fault-injection tests replace it)."""
    return open(path, "wb")


def temporary(path: Path) -> Path:
    """Where ``path`` is written before it is renamed over the target: names this process and its host."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}@{socket.gethostname()}")


def atomic_write_bytes(path: Path, data: bytes | memoryview, previous: Path | None = None) -> None:
    """Replace ``path`` with ``data``; on a full disk raise ``NoSpace`` (a read-only or forbidden folder:
    ``NotWritable``) and keep the previous ``path``. ``previous``: where the replaced file goes (kept, one
    generation), once the new one is complete."""
    tmp, view = temporary(path), memoryview(data).cast("B")
    try:
        with open_for_write(tmp) as f:
            for start in range(0, len(view), CHUNK):  # each write refreshes the mtime: the writer is seen alive
                f.write(view[start : start + CHUNK])
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.is_file():
            os.replace(path, previous)
        os.replace(tmp, path)
    except OSError as err:
        _discard(tmp)
        raise_for_write(err, path)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _discard(path: Path) -> None:
    """Remove a partial file if there is one (on a read-only file system there is none, and unlink says EROFS)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def raise_if_full(err: OSError, path: Path) -> None:
    """``NoSpace`` for ``path`` when ``err`` says the disk or quota is full; else nothing."""
    if isinstance(error := write_error(err, path), NoSpace):
        raise error from None


def raise_for_write(err: OSError, path: Path) -> None:
    """The one-line error (``NoSpace``, ``NotWritable``) for ``path`` when ``err`` is one of a write; else nothing."""
    if (error := write_error(err, path)) is not None:
        raise error from None


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Writes of ``path`` inside the block: a full disk, a read-only folder or a missing permission as one line."""
    try:
        yield
    except OSError as err:
        raise_for_write(err, path)
        raise


def make_dirs(path: Path) -> Path:
    """``path`` and its parents, created if missing (a read-only or full disk: one line)."""
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def check_writable(folder: Path) -> None:
    """Create and remove a file in ``folder`` (made if missing), so that work whose result would be lost
    fails before it starts: ``NotWritable`` or ``NoSpace``."""
    probe = temporary(make_dirs(folder) / "write-check")
    with writing(folder):
        with open_for_write(probe):
            pass
        probe.unlink()


def remove_stale_temporaries(folder: Path, stale_s: float = DEFAULT_STALE_S) -> list[Path]:
    """Remove the temporary files (``temporary``) in ``folder`` whose writer is dead: a pid of this host that no
    longer exists (an older ifbf's file, without a host, counts as this host's), or a file of another host
    untouched for ``stale_s`` (as a lock's heartbeat is judged). A live writer's file is left alone. Returns
    what was removed."""
    removed = []
    here, now = socket.gethostname(), time.time()
    for path in folder.glob(".*.tmp*"):
        match = TEMPORARY.fullmatch(path.name)
        if match is None or not path.is_file():
            continue
        try:
            if match["host"] in (None, here):
                dead = not pid_alive(int(match["pid"]))
            else:
                dead = now - path.stat().st_mtime > stale_s
            if dead:
                path.unlink()
                removed.append(path)
        except OSError:  # gone meanwhile, or a read-only folder: nothing to do
            continue
    return removed


# Version of the run store's files, written into each (where: ``ifbf.store.rundir``'s docstring). A file without one
# was written by an older ifbf and still loads; a file of a higher version is refused with the version it
# needs. Bump it when an older reader could misread the new files.
SCHEMA = 1


def check_schema(run_dir: Path, name: str, version: object) -> None:
    """Refuse a file written by a newer ifbf (``version`` None or absent: an older ifbf's file, accepted)."""
    if version is None:
        return
    if not isinstance(version, int) or version > SCHEMA:
        raise UnreadableRunFile(run_dir, name, f"written by a newer ifbf (schema {version}; ifbf {__version__} "
                                               f"reads schema <= {SCHEMA}): it needs an ifbf that reads schema {version}")


def write_json(run_dir: Path, name: str, data: dict[str, Any]) -> None:
    """Write ``run_dir/name`` atomically with the store's schema version (full disk: ``NoSpace``)."""
    data = {"schema": SCHEMA, **{k: v for k, v in data.items() if k != "schema"}}  # rewritten: this version
    atomic_write_text(run_dir / name, json.dumps(data, indent=1) + "\n")


def read_json(run_dir: Path, name: str, expected_hash: str | None = None) -> dict[str, Any] | None:
    """``run_dir/name`` (None when absent); ``UnreadableRunFile`` when empty, truncated, not an object, of a
    newer schema, or (a file that records one) of a config hash other than ``expected_hash``."""
    path = run_dir / name
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = "empty file" if path.stat().st_size == 0 else f"not valid JSON ({err})"
        raise UnreadableRunFile(run_dir, name, f"{reason}: truncated or corrupt") from None
    if not isinstance(data, dict):
        raise UnreadableRunFile(run_dir, name, f"expected a JSON object, found {type(data).__name__}")
    check_schema(run_dir, name, data.get("schema"))
    check_hash(run_dir, name, data.get("config_hash"), expected_hash)
    return data


def check_hash(run_dir: Path, name: str, found: object, expected: str | None) -> None:
    if found is not None and expected is not None and found != expected:
        raise UnreadableRunFile(run_dir, name, f"it belongs to config hash {found}, but the run's config.yaml has "
                                               f"hash {expected}: a file copied from another run")
