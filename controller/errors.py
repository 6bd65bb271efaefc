"""The CLI's two failures, in a leaf module so `cli` (parsing) and `app` (wiring) both import it."""


class UsageError(Exception):
    """Arguments that cannot work: printed as one line, exit code 2."""


class CommandError(Exception):
    """The command failed (not found, store unusable, port in use): one line, exit code 1."""
