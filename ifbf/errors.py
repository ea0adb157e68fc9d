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
