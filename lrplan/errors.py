"""Exception hierarchy: every error lrplan raises on purpose derives from `LrplanError`.

The CLI turns an `LrplanError` into one line on stderr and exit status 2, so messages must
say what was wrong, where (file, column, run, row) and how to fix it.
"""

__all__ = ["LrplanError", "DataError", "ScheduleError", "PriorError", "FitError"]


class LrplanError(Exception):
    """Root of lrplan's errors."""


class DataError(LrplanError, ValueError):
    """A runs, metadata or LR file is malformed."""


class ScheduleError(LrplanError, ValueError):
    """A schedule spec or LR file cannot be turned into a per-step LR."""


class PriorError(LrplanError, ValueError):
    """A priors file is malformed or names an unknown parameter."""


class FitError(LrplanError):
    """A fit cannot be made or a posterior file cannot be used as asked."""
