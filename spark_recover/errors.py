"""One error family for spark-recover.

Every error carries a short ``headline`` (what went wrong, printed first by
the CLI), structured ``fields`` that tests and callers can assert on, and the
process ``exit_code`` the CLI uses for it (DESIGN.md: 1 a stage failed,
2 bad usage or input, 3 refused).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "RecoverError",
    "UsageError",
    "JobDefinitionError",
    "JobFileError",
    "UnknownRunError",
    "SessionError",
    "StageError",
    "CheckpointError",
    "LedgerError",
    "RefusedError",
    "DamagedStateError",
    "RecoveryPointError",
    "RollbackError",
]


class RecoverError(Exception):
    """Base of every spark-recover error.

    >>> err = UsageError("bad parameter", "expected key=value, found 'x'", arg="x")
    >>> err.exit_code, err.fields["arg"]
    (2, 'x')
    """

    exit_code = 2

    def __init__(self, headline: str, detail: str = "", **fields: Any) -> None:
        self.headline = headline
        self.detail = detail
        self.fields = fields
        super().__init__(f"{headline}: {detail}" if detail else headline)


class UsageError(RecoverError):
    """The command line or a Python API call was malformed."""


class JobDefinitionError(RecoverError):
    """A job, source or stage definition is invalid (raised at definition time)."""


class JobFileError(RecoverError):
    """A job file is missing, does not import, or defines no usable Job."""


class UnknownRunError(RecoverError):
    """A run id (or other ledger key) names nothing in the ledger."""


class SessionError(RecoverError):
    """No usable SparkSession with Delta Lake could be had."""


class CheckpointError(RecoverError):
    """A checkpoint could not be written or verified."""


class LedgerError(RecoverError):
    """The ledger could not be read or written."""


class StageError(RecoverError):
    """A stage raised, or returned something other than a DataFrame."""

    exit_code = 1


class RecoveryPointError(RecoverError):
    """A recovery point is unknown, or can no longer be restored (its files were vacuumed)."""


class RollbackError(RecoverError):
    """A restore did not produce the recovery point's content."""

    exit_code = 1


class RefusedError(RecoverError):
    """The operation is refused to protect data (lease held, conflict)."""

    exit_code = 3


class DamagedStateError(RefusedError):
    """State spark-recover relies on is damaged and cannot be recomputed around.

    A torn ledger commit, or a recovery point whose files were vacuumed: the
    operation is refused (exit 3) and nothing is changed.
    """
