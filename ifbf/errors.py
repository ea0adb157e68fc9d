"""Every user-facing error kind. The CLI (``ifbf.commands.cli``) prints the message of any of them on
one line and exits with status 2; the message names the problem and the fix."""


class IfbfError(Exception):
    """A problem the user can fix (bad config, missing file, ...). The message names the fix."""


class ConfigError(IfbfError):
    """A config file or override is invalid."""


class DataError(IfbfError):
    """The dataset is missing, incomplete or unreadable."""


class ScoreError(IfbfError):
    """Predictions or ground truth given to ``ifbf score`` do not match."""


class TrainingDiverged(IfbfError):
    """The loss became NaN or infinite."""


class NoSpace(IfbfError):
    """A write failed on a full disk (or quota); the file it was replacing is intact, and a rerun resumes."""

    def __init__(self, path: object) -> None:
        super().__init__(f"no space left on {path} (the previous file is intact): free space on that disk, "
                         f"then run the same command again (it resumes)")
        self.path = path


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
