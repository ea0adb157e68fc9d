"""The one exception type for user mistakes: the CLI prints its message and exits with status 2."""


class IfbfError(Exception):
    """A problem the user can fix (bad config, missing file, ...). The message names the fix."""


class ConfigError(IfbfError):
    """A config file or override is invalid."""
