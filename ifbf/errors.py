"""Every user-facing error kind, and the exit codes of every command. The CLI (``ifbf.commands.cli``) prints
the message of any error on one line and exits with its ``exit_code`` (``ExitCode.USAGE``; a diverged
training ``ExitCode.FAILED``); the message names the problem and the fix."""

from __future__ import annotations

import errno
from enum import IntEnum


class ExitCode(IntEnum):
    """The exit status of every command (``ifbf ...`` and ``reproduce.py``); ``--help`` lists them."""

    OK = 0
    FAILED = 1
    USAGE = 2
    INCOMPLETE = 3
    RESUMABLE = 75  # EX_TEMPFAIL of sysexits.h: try again later
    INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


class IfbfError(Exception):
    """A problem the user can fix (bad config, missing file, ...). The message names the fix; ``exit_code`` is
    the status a command exits with when it stops on one."""

    exit_code = ExitCode.USAGE


class ConfigError(IfbfError):
    """A config file or override is invalid."""


class UnreadSwitch(ConfigError):
    """A model switch set away from its default under a ``model.arch`` that does not read it; ``readers``: the
    archs that do (a table's rows add which papers' specs build them: ``experiments.row_config``)."""

    def __init__(self, message: str, readers: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.readers = readers


class DataError(IfbfError):
    """The dataset is missing, incomplete or unreadable."""


class ScoreError(IfbfError):
    """Predictions or ground truth given to ``ifbf score`` do not match."""


class TrainingDiverged(IfbfError):
    """The loss, the weights or the logits became NaN or infinite, or OHEM kept no pixel (engine.divergence):
    the training failed, whatever the loss reads."""

    exit_code = ExitCode.FAILED


class NoSpace(IfbfError):
    """A write failed on a full disk (or quota); the file it was replacing is intact, and a rerun resumes."""

    def __init__(self, path: object) -> None:
        super().__init__(f"no space left on {path} (the previous file is intact): free space on that disk, "
                         f"then run the same command again (it resumes)")
        self.path = path


class NotWritable(IfbfError):
    """A write refused by the file system: read-only (EROFS) or no permission (EACCES, EPERM). Nothing was
    replaced: the file it was writing, if any, is intact."""

    def __init__(self, path: object, why: str) -> None:
        super().__init__(f"cannot write {path}: {why} (nothing there was changed): make that folder writable, "
                         f"or choose another one, then run the same command again")
        self.path = path


FULL = (errno.ENOSPC, errno.EDQUOT)
REFUSED = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
           errno.EPERM: "operation not permitted"}


def write_error(err: OSError, path: object) -> IfbfError | None:
    """The one-line error of a write of ``path`` that failed with ``err``: ``NoSpace`` for a full disk or quota,
    ``NotWritable`` for a read-only file system or a missing permission; None for any other OSError."""
    if err.errno in FULL:
        return NoSpace(path)
    if err.errno in REFUSED:
        return NotWritable(path, REFUSED[err.errno])
    return None


class UnreadableRunFile(IfbfError):
    """A file of a run directory that is empty, truncated, corrupt, of another schema version or of another
    config: one bad run is named and marked (``cell``), never a traceback that hides the rest of a table."""

    def __init__(self, run_dir: object, name: str, reason: str) -> None:
        super().__init__(f"{run_dir}: unreadable {name}: {reason}")
        self.run_dir, self.name, self.reason = run_dir, name, reason

    @property
    def cell(self) -> str:
        """What a table cell or a status line shows instead of a value."""
        return f"unreadable: {self.name}"


class UnreadableCheckpoint(IfbfError):
    """A checkpoint that cannot be loaded: truncated, corrupt (its checksum disagrees), not ifbf's, of a newer
    ifbf, or holding more than tensors and plain types (refused: loading it could run code)."""

    def __init__(self, message: str, path: object) -> None:
        super().__init__(message)
        self.path = path
_MEANINGS = {
    ExitCode.OK: "done: every cell (or the one run) asked for has its value",
    ExitCode.FAILED: 'a training or evaluation failed (its cells read "failed" in the tables; see the log it names), '
                     'or a run file cannot be read (its cells read "unreadable: FILE")',
    ExitCode.USAGE: "a usage or setup error (one line says what to fix)",
    ExitCode.INCOMPLETE: "nothing failed, but cells are still missing (jobs submitted with --no-wait or still running)",
    ExitCode.RESUMABLE: "ifbf train stopped by a signal after writing its checkpoint: the same command resumes",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C; reproduce.py also by SIGTERM or SIGHUP)",
}


def exit_codes_help() -> str:
    """The exit-status list printed at the end of ``--help``."""
    return "exit status:\n" + "\n".join(f"  {code.value:<3d}  {code.meaning}" for code in ExitCode)
