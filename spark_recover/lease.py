"""The lease: one run per job and parameters at a time, with exactly one winner.

A run takes the lease by committing its ``run_started`` event to the ledger as
*the very next commit* after the ledger version it read and found free (no
live run of the same job and parameters). Two runs that start together read
the same version; the storage lets exactly one of them create the next commit
file (Delta's put-if-absent), and the other reads again, finds the winner, and
is refused, naming it. Commit order decides, never a clock.

A logical run is leased too: two resumes of one failed run with different
parameter overrides have different keys but share the logical run and its
sinks' transactions, so the second is refused while the first lives.

A dead holder's lease expires (its process is gone, or its heartbeat is older
than ``dead_after_seconds``), and a new run may take over. A run that was
declared dead while it still ran has *lost* its lease: :func:`Claim.check`
sees the newer run and the old run stops before writing any sink.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import RefusedError
from .ledger import LeaseConflict, Ledger, RunRecord

__all__ = ["Claim", "claim", "holder_error"]

_ATTEMPTS = 200


@dataclass(frozen=True)
class Claim:
    """A held lease: who holds it, and which runs of the key existed when it was taken."""

    ledger: Ledger
    run_id: str
    job: str
    params_key: str
    known: frozenset[str]
    version: int  # the ledger version of the run_started commit
    logical_run: str | None = None  # the logical run a replay belongs to (its first run's id)

    def covers(self, run: RunRecord) -> bool:
        """Whether ``run`` competes for this lease: same key, or same logical run."""
        return run.job == self.job and (run.params_key == self.params_key or
                                        (self.logical_run is not None and run.root_run_id == self.logical_run))

    def check(self) -> None:
        """Raise :class:`RefusedError` if a newer run of the same key started (the lease is lost).

        >>> claim_.check()   # doctest: +SKIP
        """
        newer = [r for r in self.ledger.runs(self.job) if self.covers(r)
                 and r.run_id != self.run_id and r.run_id not in self.known]
        if newer:
            raise RefusedError(
                f"run {self.run_id} lost its lease to run {newer[0].run_id}",
                f"its heartbeat was missing long enough for run {newer[0].run_id} to take over; "
                "it stops before writing any sink. Check the newer run with "
                f"`spark-recover show {newer[0].run_id}`", holder=newer[0].run_id, run_id=self.run_id)


def holder_error(holder: RunRecord, logical_run: str | None = None) -> RefusedError:
    """The refusal that names a live holder (of these parameters, or of the same ``logical_run``)."""
    whose = f"of logical run {logical_run}" if logical_run else "with these parameters"
    return RefusedError(f"run {holder.run_id} of job {holder.job!r} {whose} is still running",
                        f"one run per job and parameters, and per logical run, at a time; the holder is pid "
                        f"{holder.process.get('pid')} on {holder.process.get('host')}, last seen "
                        f"{holder.last_seen}", holder=holder.run_id)


def claim(ledger: Ledger, job: str, params_key: str, run_id: str, detail: Mapping[str, Any]) -> Claim:
    """Take the lease of ``job`` + ``params_key`` by committing ``run_started``, or refuse.

    >>> claim(ledger, "daily_sales", key, run_id, {"params": {...}})   # doctest: +SKIP
    """
    for _ in range(_ATTEMPTS):
        version = ledger.version()
        known = ledger.runs(version=version) if version >= 0 else []
        if any(r.run_id == run_id for r in known):
            raise RefusedError(f"run id {run_id} is already in the ledger",
                               "expected a new run id for a new run; one run's events never merge into "
                               "another's record", run_id=run_id)
        origin = next((r for r in known if r.run_id == detail.get("origin_run_id")), None)
        logical = (origin.root_run_id or origin.run_id) if origin is not None else None
        probe = Claim(ledger, run_id, job, params_key, frozenset(), version + 1, logical)
        runs = [r for r in known if probe.covers(r)]
        live = [r for r in runs if r.status == "running"]
        if live:
            raise holder_error(live[0], logical_run=logical if live[0].params_key != params_key else None)
        try:
            ledger.append(run_id, job, "run_started", only_at=version, detail=dict(detail))
        except LeaseConflict:
            continue  # someone committed first (maybe a rival): read again
        return dataclasses.replace(probe, known=frozenset(r.run_id for r in runs))
    raise RefusedError("could not take the lease", f"the ledger at {ledger.uri} kept changing during "
                       f"{_ATTEMPTS} attempts to commit run_started", run_id=run_id)
