"""Fault injection: die hard at a named point, the way a killed driver would.

``SPARK_RECOVER_FAILPOINT=<stage>:<point>`` makes the process SIGKILL itself
when it reaches that point of that stage: no ``finally``, no ledger update, no
cleanup. Points of a stage:

* ``before``: the stage is marked running, nothing computed yet;
* ``after_write``: the checkpoint commit is in Delta, the ledger does not know it;
* ``after_commit``: the ledger has recorded the checkpoint.

Points of a stage's sink: ``sink_before`` (the ledger holds the planned
transaction version, nothing written), ``sink_after_write`` (the Delta commit is
in, the ledger does not know it), ``sink_after_commit`` (recorded). Points of a
rollback, as ``rollback:<point>``: ``before_restore`` (journal started, nothing
restored) and ``after_restore`` (the first table is restored, not yet recorded).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Collection

from .errors import UsageError

__all__ = ["ENV", "STAGE_POINTS", "ROLLBACK_POINTS", "check", "hit"]

ENV = "SPARK_RECOVER_FAILPOINT"
STAGE_POINTS = ("before", "after_write", "after_commit",
                "sink_before", "sink_after_write", "sink_after_commit")
ROLLBACK_POINTS = ("before_restore", "after_restore")


def check(stages: Collection[str] | None) -> tuple[str, str] | None:
    """Validate ``$SPARK_RECOVER_FAILPOINT`` against a job's stages (or ``rollback``).

    With ``stages=None`` (a rollback, which knows no job) only rollback points are checked.
    """
    spec = os.environ.get(ENV)
    if not spec:
        return None
    stage, _, point = spec.partition(":")
    if stages is None and stage != "rollback":
        return None
    ok = point in ROLLBACK_POINTS if stage == "rollback" else (stage in stages and point in STAGE_POINTS)
    if not ok:
        raise UsageError(f"bad {ENV} value {spec!r}",
                         f"expected <stage>:<point> with stage one of {sorted(stages or ())} and point "
                         f"one of {list(STAGE_POINTS)}, or rollback:<point> with point one of "
                         f"{list(ROLLBACK_POINTS)}", value=spec)
    return stage, point


def hit(stage: str, point: str) -> None:
    """Kill this process if the failpoint names ``stage:point``."""
    if os.environ.get(ENV) == f"{stage}:{point}":
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
