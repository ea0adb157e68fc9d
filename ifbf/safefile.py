"""The primitives under the run store's files (``ifbf.rundir`` decides which files; this module how).

Atomic writes that turn a full disk into one clear error: write a temporary file beside the target, flush it
to the disk, then rename it over the target; a crash or ENOSPC mid-write leaves the previous file intact and
removes the partial one (the run store, checkpoints and the decoded cache all write through here).
Versioned JSON: every JSON file carries the store's schema version, and reading one that is empty,
truncated, of a newer version or of another config raises ``UnreadableRunFile`` naming the run and the file."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

from ifbf import __version__
from ifbf.errors import NoSpace, UnreadableRunFile

FULL = (errno.ENOSPC, errno.EDQUOT)


def open_for_write(path: Path) -> BinaryIO:
    """The one place files are opened for an atomic write (fault-injection tests replace it)."""
    return open(path, "wb")


def atomic_write_bytes(path: Path, data: bytes | memoryview, previous: Path | None = None) -> None:
    """Replace ``path`` with ``data``; on a full disk raise ``NoSpace`` and keep the previous ``path``.
    ``previous``: where the replaced file goes (kept, one generation), once the new one is complete."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open_for_write(tmp) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.is_file():
            os.replace(path, previous)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise_if_full(err, path)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def raise_if_full(err: OSError, path: Path) -> None:
    """``NoSpace`` for ``path`` when ``err`` says the disk or quota is full; else nothing."""
    if err.errno in FULL:
        raise NoSpace(path) from None


# Version of the run store's files, written into each (where: ``ifbf.rundir``'s docstring). A file without one
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
