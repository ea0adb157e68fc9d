"""A lock file that works on NFS: one owner at a time, proven alive by a heartbeat.

Taking the lock is one atomic ``open(O_CREAT | O_EXCL)`` (atomic on NFSv3+ and on local disks; ``flock``
is not reliable on NFS). The file holds who owns it (host, pid, scheduler job id, a random token); the owner
refreshes the file's modification time every few seconds from a thread (the heartbeat). A lock is stale,
and is broken with a warning, when its owner's pid no longer exists on this host, or when its heartbeat is
older than ``stale_s`` (an owner on another host that died or lost its node). A lock held by the same
scheduler job (a requeued job resuming its run on another node) is taken over. The job id is the caller's to
give (its executor knows which environment variable holds it: ``orchestrate.executors.this_job``); this module
knows no scheduler. File names are chosen by the run store (``ifbf.store.rundir``); this module knows none.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ifbf.errors import IfbfError, write_error

DEFAULT_STALE_S = 300.0


class LockHeld(IfbfError):
    """Another live process owns the lock."""


def pid_alive(pid: object) -> bool:
    """Whether process ``pid`` exists on this host: the one answer every liveness check in ifbf uses. A
    ``PermissionError`` means it exists (another user's process); a pid that is not a number is no process."""
    try:
        os.kill(int(pid), 0)  # type: ignore[call-overload]
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock, as its file says, and the age of its heartbeat. A field is None when the file lacks it
    or holds another type (a file being written this instant: all of them)."""

    age_s: float  # seconds since the owner's last heartbeat (the file's mtime, by this host's clock)
    host: str | None = None
    pid: int | None = None
    job_id: str | None = None  # the scheduler's job id (the executor's variable), the same across requeues
    purpose: str | None = None  # "training", "submitting"
    token: str | None = None  # the owning RunLock object's
    since: float | None = None
    stale_s: float | None = None

    @classmethod
    def from_json(cls, record: dict[str, Any], age_s: float) -> LockOwner:
        """The owner of a lock file's ``record``; never raises (a lock is read to decide, not to validate)."""
        fields = {name: record.get(name) for name, kind in _OWNER_TYPES.items()
                  if isinstance(record.get(name), kind) and not isinstance(record.get(name), bool)}
        return cls(age_s, **fields)

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "job_id": self.job_id, "purpose": self.purpose,
                "token": self.token, "since": self.since, "stale_s": self.stale_s}

    def describe(self) -> str:
        job = f", job {self.job_id}" if self.job_id else ""
        return f"pid {self.pid} on {self.host}{job} ({self.purpose or 'lock'})"


_OWNER_TYPES: dict[str, type | tuple[type, ...]] = {
    "host": str, "pid": int, "job_id": str, "purpose": str, "token": str, "since": (int, float),
    "stale_s": (int, float)}


class RunLock:
    """``with RunLock(path, "training"):`` or ``acquire()``/``release()``; ``LockHeld`` if a live owner has it.
    ``job_id``: the scheduler job this process runs in, the same across its requeues (None: none, or a reader)."""

    def __init__(self, path: Path, purpose: str, stale_s: float = DEFAULT_STALE_S, heartbeat: bool = True,
                 job_id: str | None = None) -> None:
        self.path, self.purpose, self.stale_s, self.heartbeat = Path(path), purpose, float(stale_s), heartbeat
        self.job_id = job_id
        self.token = uuid.uuid4().hex
        self.lost = False  # the heartbeat found the lock broken by someone else
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- reading -----------------------------------------------------------------------------------
    def owner(self) -> LockOwner | None:
        """The current owner with its heartbeat age, or None when the lock is free."""
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
        except json.JSONDecodeError:  # being written this instant (create, then write)
            record = {}
        return LockOwner.from_json(record if isinstance(record, dict) else {}, age)

    def stale_reason(self, owner: LockOwner) -> str | None:
        """Why ``owner`` no longer holds the lock, or None while it may still."""
        same_host = owner.host == socket.gethostname()
        if same_host and owner.pid and not pid_alive(owner.pid):
            return f"its pid {owner.pid} is gone"
        if owner.age_s > self.stale_s:
            return f"its heartbeat is {owner.age_s:.0f} s old (limit runtime.lock_stale_s={self.stale_s:.0f})"
        if not same_host and owner.job_id and owner.job_id == self.job_id:
            return f"it belongs to this job {owner.job_id} before its requeue (on {owner.host})"
        return None

    def held_by_other(self) -> LockOwner | None:
        """The owner when a live process other than this object holds the lock."""
        owner = self.owner()
        if owner is None or owner.token == self.token or self.stale_reason(owner):
            return None
        return owner

    # --- taking and giving back --------------------------------------------------------------------
    def acquire(self) -> RunLock:
        for _ in range(5):  # a few rounds: a broken stale lock may be retaken by someone else first
            if self._create():
                if self.heartbeat:
                    self._start_heartbeat()
                return self
            owner = self.owner()
            if owner is None:
                continue
            reason = self.stale_reason(owner)
            if reason is None:
                raise LockHeld(f"{self.path} is held by {owner.describe()}, heartbeat {owner.age_s:.0f} s ago; "
                               "it is working on this run: wait for it (or stop it) instead of starting another")
            self._break(owner, reason)
        raise LockHeld(f"{self.path}: could not take the lock (others keep taking it); try again")

    def _create(self) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as err:  # a read-only or full disk: one line, nothing taken
            if (error := write_error(err, self.path)) is not None:
                raise error from None
            raise
        owner = LockOwner(0.0, socket.gethostname(), os.getpid(), self.job_id, self.purpose, self.token, time.time(),
                          self.stale_s)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(owner.to_json()) + "\n")
        return True

    def _break(self, owner: LockOwner, reason: str) -> None:
        """Remove a stale lock: rename it away (only one breaker wins the rename), then check that what was
        moved is the stale owner's file; a fresh lock moved by mistake is put back with a hard link."""
        print(f"warning: breaking the stale lock {self.path} of {owner.describe()}: {reason}", file=sys.stderr)
        aside = self.path.with_name(f"{self.path.name}.broken.{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except (OSError, json.JSONDecodeError):
            moved = {}
        if moved.get("token") != owner.token:
            try:
                os.link(aside, self.path)  # atomic, fails if someone created a lock meanwhile
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        owner = self.owner()
        if owner is not None and owner.token == self.token:
            self.path.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        interval = min(30.0, max(0.2, self.stale_s / 10))

        def beat() -> None:
            while not self._stop.wait(interval):
                owner = self.owner()
                if owner is None or owner.token != self.token:
                    if not self.lost:
                        print(f"warning: lost the lock {self.path} (now {owner.describe() if owner else 'free'})",
                              file=sys.stderr)
                    self.lost = True
                    continue
                now = time.time()
                try:
                    os.utime(self.path, (now, now))  # this host's clock, as the readers compare with theirs
                except FileNotFoundError:
                    pass

        self._thread = threading.Thread(target=beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._thread.start()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
