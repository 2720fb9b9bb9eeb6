"""The ledger: a durable, append-only record of runs and stages.

It is a plain Delta table (``<root>/ledger/events``) of events, written with
delta-rs from the driver, one atomic commit per event. A SIGKILL at any
instant therefore leaves whole events only: the state of a run is a fold of
its events, and a run that stopped without a ``run_finished`` event is
recognised as dead by its process (:mod:`spark_recover.liveness`) or by its
missing heartbeat. Each event records ``ledger_version``, the version of its
own commit, so events and runs are ordered by the storage's commit order,
never by a clock (``ts`` is for people).

Reading needs no JVM (``spark-recover runs`` and ``show``), and Spark SQL
reads the same table::

    SELECT run_id, stage, event, version, rows, seconds
    FROM delta.`<root>/ledger/events` ORDER BY ledger_version
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from typing import Any, Iterable, Mapping

import pyarrow as pa

from . import history
from .errors import DamagedStateError, LedgerError, RecoverError, UnknownRunError
from .history import RunRecord, apply_event, commit_order, iso, start_order
from .storage import Layout, native_uri

__all__ = ["Ledger", "LeaseConflict", "SCHEMA"]

SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("job", pa.string()),
    ("event", pa.string()),
    ("stage", pa.string()),
    ("status", pa.string()),
    ("ts", pa.timestamp("us", tz="UTC")),
    ("version", pa.int64()),
    ("rows", pa.int64()),
    ("seconds", pa.float64()),
    ("fingerprint", pa.string()),
    ("checkpoint", pa.string()),
    ("reason", pa.string()),
    ("error", pa.string()),
    ("detail", pa.string()),  # JSON: whatever else the event carries
    ("ledger_version", pa.int64()),  # the version of this event's own commit (null in older ledgers)
])
_TABLE_CONF = {"delta.checkpointInterval": "20"}
_COMPACT_ABOVE_FILES = 200
_APPEND_ATTEMPTS = 200  # exclusive commits retried while other writers commit first
_TORN_SCAN = 3  # newest commit files checked for a torn write: only the last write can be torn
_COMMIT_FILE = re.compile(r"^\d{20}\.json$")



class LeaseConflict(Exception):
    """An exclusive append found that another commit came first (see :mod:`spark_recover.lease`)."""


class Ledger:
    """Append events and fold them into run records.

    >>> from spark_recover.storage import Layout
    >>> ledger = Ledger(Layout.at("/tmp/recover"))   # doctest: +SKIP
    >>> [r.run_id for r in ledger.runs(job="daily_sales")]   # doctest: +SKIP
    """

    def __init__(self, layout: Layout, dead_after: float = 60.0) -> None:
        self.layout = layout
        self.uri = native_uri(layout.ledger)
        self.dead_after = dead_after
        self._lock = threading.Lock()
        self._table = None
        self.last_write = 0.0

    # -- writing ---------------------------------------------------------
    def _open_for_write(self):
        """The ledger's table, created if absent (callers hold the lock; errors are theirs to convert)."""
        import deltalake

        if self._table is None:
            options = dict(self.layout.storage_options or {}) or None
            try:
                self._table = deltalake.DeltaTable.create(
                    self.uri, SCHEMA, mode="ignore", configuration=_TABLE_CONF, storage_options=options)
            except Exception:  # another process created it first
                self._table = self.layout.delta(self.uri)
        return self._table

    def version(self) -> int:
        """The ledger's latest commit version (-1 when it does not exist yet)."""
        try:
            with self._lock:
                table = self._open_for_write()
                table.update_incremental()
                return table.version()
        except Exception as exc:  # diagnosed outside the lock
            raise self.unreadable(exc) from exc

    def append(self, run_id: str, job: str, event: str, *, only_at: int | None = None,
               **values: Any) -> dict[str, Any]:
        """Append one event as one Delta commit (atomic: it is there whole or not at all).

        Every commit is exclusive: it must be the version right after the one
        the writer read, and the event records that version (``ledger_version``)
        in its row, where it survives :meth:`compact`. When another commit came
        first the event is written again on top of it. With ``only_at=V`` the
        commit must be version ``V + 1``: if any other commit came first,
        nothing is written and :class:`LeaseConflict` is raised. The storage's
        commit order decides, never a clock.
        """
        detail = values.pop("detail", None)
        row: dict[str, Any] = {name: None for name in SCHEMA.names}
        row.update(values, run_id=run_id, job=job, event=event, ts=self._now(),
                   detail=json.dumps(detail, sort_keys=True, default=str) if detail else None)
        try:
            with self._lock:
                self._commit(row, only_at)
        except (LeaseConflict, LedgerError):
            raise
        except Exception as exc:  # diagnosed outside the lock
            raise self.unreadable(exc, "could not append to the ledger",
                                  f"writing event {event!r} of run {run_id} to ") from exc
        self.last_write = time.monotonic()
        return row

    def _commit(self, row: dict[str, Any], only_at: int | None) -> None:
        """Commit ``row`` as the next version, stamped with it (the caller holds the lock)."""
        import deltalake

        props = deltalake.CommitProperties(max_commit_retries=0)
        for _ in range(_APPEND_ATTEMPTS):
            table = self._open_for_write()
            if only_at is None:
                table.update_incremental()
                read = table.version()
            else:
                table, read = self.layout.delta(self.uri, version=only_at), only_at
            row["ledger_version"] = read + 1
            # A ledger written before events recorded their version gains the column on its first such write.
            merge = "merge" if "ledger_version" not in {f.name for f in table.schema().fields} else None
            try:
                deltalake.write_deltalake(table, pa.Table.from_pylist([row], schema=SCHEMA), mode="append",
                                          schema_mode=merge, commit_properties=props)
                return
            except deltalake.exceptions.CommitFailedError as exc:
                if only_at is not None:
                    raise LeaseConflict(str(exc)) from None
                # another writer took that version: read again and stamp the next one
        raise LedgerError("could not append to the ledger",
                          f"writing event {row['event']!r} of run {row['run_id']} to {self.uri}: other writers "
                          f"committed first {_APPEND_ATTEMPTS} times", uri=self.uri)

    def _now(self) -> dt.datetime:
        """The time stamp of a new event (the writer's wall clock: for people, not for order)."""
        return dt.datetime.now(dt.timezone.utc)

    def compact(self) -> None:
        """Merge the ledger's small per-event files once there are many (keeps reads fast)."""
        try:
            with self._lock:
                table = self._open_for_write()
        except Exception as exc:
            raise self.unreadable(exc) from exc
        with self._lock:
            try:
                table.update_incremental()
                if len(table.file_uris()) > _COMPACT_ABOVE_FILES:
                    table.optimize.compact()
            except Exception:  # a concurrent compaction won; nothing is lost
                pass

    # -- reading ---------------------------------------------------------
    def _events(self, run_id: str | None = None, version: int | None = None) -> list[dict[str, Any]]:
        """Events in commit order (events of an older ledger without versions first, by time)."""
        import deltalake
        import pyarrow.dataset as ds

        flt = ds.field("run_id") == run_id if run_id else None
        try:
            table = self.layout.read_delta(self.uri, version=version, filter=flt)
        except deltalake.exceptions.TableNotFoundError:
            return []
        except Exception as exc:
            raise self.unreadable(exc) from exc
        events = table.to_pylist()
        return sorted(events, key=lambda ev: commit_order(ev.get("ledger_version"), ev["ts"]))

    def unreadable(self, exc: Exception, headline: str = "could not read the ledger",
                   doing: str = "") -> RecoverError:
        """The error for a ledger that fails: a torn commit file is named (exit 3)."""
        torn = self._torn_commit()
        if torn is None:
            return LedgerError(headline, f"{doing}{self.uri}: {exc}", uri=self.uri)
        return DamagedStateError(
            "the ledger is damaged",
            f"its commit file {torn} is not whole JSON (a store without atomic writes leaves a torn "
            "file when its writer dies mid-write). Nothing was read or changed: spark-recover will not "
            "guess what that commit recorded. Put the file back from a backup of the store, then rerun",
            file=torn)

    def _torn_commit(self) -> str | None:
        """The newest ``_delta_log`` commit file of the ledger that is not whole JSON lines.

        Only the newest few are read: a commit file is written once, so only a
        writer that died during the last writes can have left one torn.
        """
        import pyarrow.fs as pafs

        fs, base = self.layout.filesystem(f"{self.uri}/_delta_log")
        try:
            infos = fs.get_file_info(pafs.FileSelector(base))
        except OSError:
            return None
        commits = sorted((i for i in infos if _COMMIT_FILE.match(i.base_name)), key=lambda i: i.base_name)
        for info in reversed(commits[-_TORN_SCAN:]):
            with fs.open_input_stream(info.path) as stream:
                text = stream.read().decode("utf-8", "replace")
            try:
                for line in text.splitlines():
                    if line.strip():
                        json.loads(line)
            except ValueError:
                return info.path
        return None

    def _fold(self, events: Iterable[Mapping[str, Any]]) -> dict[str, RunRecord]:
        return history.fold(events, dead_after=self.dead_after)

    def points(self) -> dict[str, dict[str, Any]]:
        """Named recovery points: name -> {created_at, tables}."""
        out: dict[str, dict[str, Any]] = {}
        for ev in self._events():
            if ev["event"] == "point_created":
                detail = json.loads(ev["detail"])
                out[detail["name"]] = {"name": detail["name"], "created_at": iso(ev["ts"]),
                                       "tables": detail["tables"]}
        return out

    def journal(self, journal_id: str) -> dict[str, Any] | None:
        """The newest rollback journal kept under ``journal_id`` (a named point's: ``point:NAME``)."""
        record = RunRecord(journal_id, "")
        for ev in self._events(journal_id):
            if ev["event"] == "rollback_started" and record.rollback and record.rollback.get("finished"):
                record.rollback = None  # a new rollback to the same point: a new journal
            apply_event(record, ev)
        if record.rollback is None:
            return None
        return {**record.rollback, "last_seen": iso(record.last_seen)}  # heartbeats under this id, if any

    def run(self, run_id: str) -> RunRecord:
        """The record of one run; :class:`UnknownRunError` if the ledger has none."""
        found = self._fold(self._events()).get(run_id)
        if found is None:
            raise UnknownRunError(f"unknown run id {run_id!r}",
                                  f"the ledger at {self.uri} has no run with that id; "
                                  "`spark-recover runs` lists the known ones", run_id=run_id)
        return found

    def runs(self, job: str | None = None, version: int | None = None) -> list[RunRecord]:
        """All runs (of one job), oldest first; with ``version``, as the ledger was then."""
        runs = self._fold(self._events(version=version)).values()
        return sorted((r for r in runs if job is None or r.job == job), key=start_order)

    def logical_run(self, record: RunRecord) -> list[RunRecord]:
        """The runs of ``record``'s logical run (its lineage), oldest first."""
        return history.lineage(record, self.runs(record.job))
