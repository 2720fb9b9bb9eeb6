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

A rollback (and a redo, rollback and replay under one hold) holds the same
lease: :func:`hold` commits its start under the key's hold journal
(``lease:<job>:<params key>``) the same way, as the very next commit after a
version with no live run and no live hold of the key, and a run's
:func:`claim` is refused while a hold is live. A hold is released by a commit
when the rollback ends, however it ends; a holder that died expires like a
dead run (its process is gone, or, on another host, ``dead_after_seconds``
after it started). A process's own hold does not block it (redo).

A sink table on S3 is leased too, unless Delta-Spark is given a multi-driver
log store for it: Delta-Spark's default S3 log store is safe for one driver
only, so two runs with different parameters (a per-day backfill) writing one
table could lose a commit. :func:`take_table` commits the run's
``sink_planned`` event as the very next commit after a version at which no
other live run has planned a write of the table without finishing it
(``sink_written`` or ``sink_failed`` releases it; a dead writer's expires), and
waits, bounded, while one has.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

from .errors import RefusedError
from .history import RunRecord, holder_error
from .ledger import LeaseConflict, Ledger
from .liveness import BEATS_BEFORE_DEAD, process_alive, this_process
from .storage import canonical, is_s3, require_conditional_put

__all__ = ["Claim", "claim", "Heartbeat", "hold", "hold_key", "hold_is_live", "hold_refusal", "claim_refusal",
           "LOG_STORE_KEYS", "needs_table_lease", "table_writer", "take_table", "TABLE_WAIT_SECONDS"]

_ATTEMPTS = 200
# The Delta-Spark settings that choose a log store (per scheme, and the older one for all schemes).
LOG_STORE_KEYS = ("spark.delta.logStore.s3a.impl", "spark.delta.logStore.s3.impl",
                  "spark.delta.logStore.s3n.impl", "spark.delta.logStore.class")
# Log stores that make concurrent commits from several drivers safe: no table lease needed.
_MULTI_DRIVER_LOG_STORES = frozenset({"io.delta.storage.S3DynamoDBLogStore"})
TABLE_WAIT_SECONDS = 1800.0  # how long a sink write waits for another run's write of the same table
_TABLE_POLL_SECONDS = 1.0
_T = TypeVar("_T")


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
                                        (self.logical_run is not None and run.logical_run_id == self.logical_run))

    def check(self) -> None:
        """Raise :class:`RefusedError` if a newer run of the same key started (the lease is lost).

        >>> claim_.check()   # doctest: +SKIP
        """
        newer = [r for r in self.ledger.runs(self.job, params_key=self.params_key, logical_run=self.logical_run)
                 if self.covers(r)
                 and r.run_id != self.run_id and r.run_id not in self.known]
        if newer:
            raise RefusedError(
                f"run {self.run_id} lost its lease to run {newer[0].run_id}",
                f"its heartbeat was missing long enough for run {newer[0].run_id} to take over; "
                "it stops before writing any sink. Check the newer run with "
                f"`spark-recover show {newer[0].run_id}`", holder=newer[0].run_id, run_id=self.run_id)
        held = _live_hold(self.ledger, self.job, {self.params_key})
        if held:  # a rollback is admitted only when no run of the key lives: this run was judged dead
            raise RefusedError(
                f"run {self.run_id} lost its lease to a rollback of run {held['attempt'].get('of')}",
                "its heartbeat was missing long enough for the rollback to take the lease; it stops "
                "before writing any sink", holder=f"rollback of {held['attempt'].get('of')}", run_id=self.run_id)


def hold_key(job: str, params_key: str) -> str:
    """The ledger key of the hold journal of one job and parameters.

    >>> hold_key("daily", "ab12")
    'lease:daily:ab12'
    """
    return f"lease:{job}:{params_key}"


def hold_is_live(journal: Mapping[str, Any] | None, dead_after: float,
                 now: dt.datetime | None = None) -> bool:
    """Whether a hold journal is held: started, not released, and its holder not known dead.

    >>> hold_is_live({"finished": True}, 60.0)
    False
    >>> hold_is_live({"finished": False, "started_at": "2026-01-01T00:00:00Z",
    ...               "attempt": {"process": {"host": "elsewhere", "pid": 1}}}, 60.0)
    False
    """
    if not journal or journal.get("finished"):
        return False
    alive = process_alive((journal.get("attempt") or {}).get("process") or {})
    if alive is not None:
        return alive
    # Another host or container: alive while its heartbeat (or its start) is recent.
    seen = max(dt.datetime.fromisoformat(str(t).replace("Z", "+00:00"))
               for t in (journal.get("started_at"), journal.get("last_seen")) if t)
    return ((now or dt.datetime.now(dt.timezone.utc)) - seen).total_seconds() <= dead_after


def _live_hold(ledger: Ledger, job: str, params_keys: set[str]) -> dict[str, Any] | None:
    """A live hold of one of the keys by another process, or ``None``."""
    for key in sorted(params_keys):
        journal = ledger.journal(hold_key(job, key))
        if hold_is_live(journal, ledger.dead_after) and journal["attempt"].get("process") != this_process():
            return journal
    return None


def _hold_error(job: str, journal: Mapping[str, Any]) -> RefusedError:
    attempt = journal["attempt"]
    process = attempt.get("process") or {}
    return RefusedError(f"a rollback of run {attempt.get('of')} holds the lease of job {job!r} with these parameters",
                        f"one run or rollback per job and parameters at a time; the rollback is pid "
                        f"{process.get('pid')} on {process.get('host')}, started {journal.get('started_at')}. "
                        "Retry once it has finished (a rollback that died expires like a dead run)",
                        holder=f"rollback of {attempt.get('of')}", rollback_of=attempt.get("of"))


def claim(ledger: Ledger, job: str, params_key: str, run_id: str, detail: Mapping[str, Any]) -> Claim:
    """Take the lease of ``job`` + ``params_key`` by committing ``run_started``, or refuse.

    >>> claim(ledger, "daily_sales", key, run_id, {"params": {...}})   # doctest: +SKIP
    """
    runs, version, logical = _take(ledger, job, params_key, run_id, lambda at, logical: ledger.append(
        run_id, job, "run_started", only_at=at, params_key=params_key, logical_run_id=logical or run_id,
        detail=dict(detail)), origin_run_id=detail.get("origin_run_id"))
    return Claim(ledger, run_id, job, params_key, frozenset(r.run_id for r in runs), version + 1, logical)


def _take(ledger: Ledger, job: str, params_key: str, who: str, commit: Callable[[int, str | None], Any], *,
          origin_run_id: str | None = None) -> tuple[list[RunRecord], int, str | None]:
    """Make ``commit(version, logical run)`` the very next commit after a ``version`` with the key free, or refuse.

    Free: no live run of the key or of the logical run ``origin_run_id`` belongs to, and no live
    hold of the key; ``who`` is not a run id the ledger knows. Returns the competing runs then,
    that version, and the logical run. The lease is only as exclusive as the ledger's commits: a
    root on a store without conditional puts is refused first (:func:`require_conditional_put`).
    """
    require_conditional_put(ledger.layout)
    (runs, logical), version = _commit_when_free(
        ledger, who, lambda version: _free(ledger, job, params_key, who, origin_run_id, version),
        lambda at, found: commit(at, found[1]))
    return runs, version, logical


def _free(ledger: Ledger, job: str, params_key: str, who: str, origin_run_id: str | None,
          version: int) -> tuple[list[RunRecord], str | None]:
    """The competing runs and the logical run at ``version``; refused (exit 3) if the key is not free then."""
    known = ledger.runs(version=version, params_key=params_key, run_ids=[who, *filter(None, [origin_run_id])]) \
        if version >= 0 else []
    if any(r.run_id == who for r in known):
        raise RefusedError(f"run id {who} is already in the ledger",
                           "expected a new run id for a new run; one run's events never merge into "
                           "another's record", run_id=who)
    origin = next((r for r in known if r.run_id == origin_run_id), None) if origin_run_id else None
    logical = (origin.logical_run_id or origin.run_id) if origin is not None else None
    probe = Claim(ledger, who, job, params_key, frozenset(), version + 1, logical)
    runs = [r for r in known if probe.covers(r)]
    live = [r for r in runs if r.status == "running"]
    if live:
        raise holder_error(live[0], logical_run=logical if live[0].params_key != params_key else None)
    held = _live_hold(ledger, job, {params_key} | {r.params_key for r in runs})  # the logical run's keys too
    if held:
        raise _hold_error(job, held)
    return runs, logical


def hold_refusal(ledger: Ledger, job: str, params_key: str, of: str) -> RefusedError | None:
    """Why :func:`hold` for a rollback of run ``of`` would be refused now, or ``None`` (read only: a dry run's)."""
    journal = ledger.journal(hold_key(job, params_key))
    if hold_is_live(journal, ledger.dead_after) and journal["attempt"].get("process") == this_process():
        return None  # this process holds it already
    return claim_refusal(ledger, job, params_key, f"the rollback of {of}", of)


def claim_refusal(ledger: Ledger, job: str, params_key: str, who: str,
                  origin_run_id: str | None) -> RefusedError | None:
    """Why :func:`claim` by a new run ``who`` would be refused now (a live run or hold), or ``None`` (read only)."""
    try:
        _free(ledger, job, params_key, who, origin_run_id, ledger.head())
    except RefusedError as refused:
        return refused
    return None


def _commit_when_free(ledger: Ledger, who: str, free: Callable[[int], _T],
                      commit: Callable[[int, _T], Any]) -> tuple[_T, int]:
    """Make ``commit(version, found)`` the very next commit after a ``version`` that ``free(version)`` accepts.

    ``free`` raises when the lease is taken at that version; what it returns
    (``found``) is passed to ``commit`` and returned with the version. Commit
    order decides, never a clock.
    """
    for _ in range(_ATTEMPTS):
        version = ledger.version()
        found = free(version)
        try:
            commit(version, found)
        except LeaseConflict:
            continue  # someone committed first (maybe a rival): read again
        return found, version
    raise RefusedError("could not take the lease", f"the ledger at {ledger.uri} kept changing during "
                       f"{_ATTEMPTS} attempts to commit the lease of {who}", run_id=who)


def needs_table_lease(location: str, confs: Mapping[str, str | None]) -> bool:
    """Whether Delta-Spark writers of the table at ``location`` must take its lease.

    ``confs`` holds the session's :data:`LOG_STORE_KEYS`. Local, HDFS, ABFS and
    GCS tables commit by atomic rename or conditional create: no lease.

    >>> needs_table_lease("s3a://bucket/daily", {})
    True
    >>> needs_table_lease("s3a://bucket/daily",
    ...                   {"spark.delta.logStore.s3a.impl": "io.delta.storage.S3DynamoDBLogStore"})
    False
    >>> needs_table_lease("/warehouse/daily", {}), needs_table_lease("abfss://c@acct.dfs.core.windows.net/d", {})
    (False, False)
    """
    if not is_s3(location):
        return False
    scheme = location.split(":", 1)[0].lower()
    store = confs.get(f"spark.delta.logStore.{scheme}.impl") or confs.get("spark.delta.logStore.class")
    return store not in _MULTI_DRIVER_LOG_STORES


def table_writer(runs: Iterable[RunRecord], table: str, run_id: str) -> RunRecord | None:
    """The live run other than ``run_id`` that planned a write of ``table`` and has not finished it."""
    key = canonical(table)
    return next((r for r in runs if r.run_id != run_id and r.status == "running" and any(
        canonical(t) == key and s.get("status") == "planned" for t, s in r.sinks.items())), None)


class _TableBusy(Exception):
    def __init__(self, holder: RunRecord) -> None:
        super().__init__(holder.run_id)
        self.holder = holder


def take_table(ledger: Ledger, run_id: str, table: str, commit: Callable[[int], Any], *,
               wait_seconds: float = TABLE_WAIT_SECONDS, on_wait: Callable[[str], None] | None = None) -> None:
    """Take the lease of sink ``table`` by ``commit(version)`` (the run's ``sink_planned``), waiting if held.

    Refused (:class:`RefusedError`, exit 3) when another live run still writes
    the table after ``wait_seconds``; ``on_wait`` is told once per holder.

    >>> take_table(ledger, run_id, "s3a://bucket/daily", lambda at: ledger.append(..., only_at=at))   # doctest: +SKIP
    """
    def free(version: int) -> None:
        holder = table_writer(ledger.sink_writers(version=version), table, run_id)
        if holder is not None:
            raise _TableBusy(holder)

    deadline, told = time.monotonic() + wait_seconds, None
    while True:
        try:
            _commit_when_free(ledger, run_id, free, lambda at, _: commit(at))
            return
        except _TableBusy as busy:
            holder = busy.holder
        where = f"pid {holder.process.get('pid')} on {holder.process.get('host')}"
        if time.monotonic() >= deadline:
            raise RefusedError(
                f"sink table {table} is still being written by run {holder.run_id} of job {holder.job!r}",
                f"one writer of an S3 table at a time (Delta-Spark's S3 log store is safe for one driver only); "
                f"waited {wait_seconds:.0f} s for run {holder.run_id} ({where}, last seen {holder.last_seen}). "
                "Resume this run once it has finished, or configure a multi-driver log store "
                "(spark.delta.logStore.s3a.impl=io.delta.storage.S3DynamoDBLogStore)",
                table=table, holder=holder.run_id, run_id=run_id)
        if on_wait is not None and told != holder.run_id:
            on_wait(f"  sink {table}: waiting for run {holder.run_id} ({where}), which is writing it")
            told = holder.run_id
        time.sleep(_TABLE_POLL_SECONDS)


@contextlib.contextmanager
def hold(ledger: Ledger, job: str, params_key: str, of: str) -> Iterator[None]:
    """Hold the lease of ``job`` + ``params_key`` for a rollback of run ``of``, or refuse.

    Refused (:class:`RefusedError`, exit 3) while a run of the key is live or
    another process holds it; re-entrant within one process (a redo's rollback
    inside the redo's hold). Released on the way out, however the body ends.

    >>> with hold(ledger, "daily_sales", key, run_id): ...   # doctest: +SKIP
    """
    key = hold_key(job, params_key)
    journal = ledger.journal(key)
    if hold_is_live(journal, ledger.dead_after) and journal["attempt"].get("process") == this_process():
        yield  # this process holds it already
        return
    _take(ledger, job, params_key, f"the rollback of {of}", lambda at, _logical: ledger.append(
        key, "", "rollback_started", only_at=at, detail={"attempt": {"of": of, "process": this_process()}}),
        origin_run_id=of)  # a live resume of the run's logical run, whatever its parameters, holds it too
    # Beats under the hold's key (a ledger object of its own: the rollback's journal writes must not
    # silence it), so a long rollback is never judged dead from another host.
    beat = Heartbeat(Ledger(ledger.layout, ledger.dead_after), key, "", ledger.dead_after / (2 * BEATS_BEFORE_DEAD))
    beat.start()
    try:
        yield
    finally:
        beat.stop()
        ledger.append(key, "", "rollback_finished")


class Heartbeat(threading.Thread):
    """Appends a heartbeat event while a run is quiet, so a dead driver is noticed."""

    def __init__(self, ledger: Ledger, run_id: str, job: str, every: float) -> None:
        super().__init__(name=f"spark-recover-heartbeat-{run_id}", daemon=True)
        self.ledger, self.run_id, self.job, self.every = ledger, run_id, job, every
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.every / 2):
            if time.monotonic() - self.ledger.last_write >= self.every:
                try:
                    self.ledger.append(self.run_id, self.job, "heartbeat")
                except Exception:
                    # Whatever failed (a damaged or unreachable ledger, a full disk), the run goes on:
                    # the next beat, or the run's own next event, tries again.
                    continue

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=self.every)
