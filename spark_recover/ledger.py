"""The ledger: a durable, append-only store of the events of runs.

It is a plain Delta table (``<root>/ledger/events``) of events, written with
delta-rs from the driver, one atomic commit per event. A SIGKILL at any
instant therefore leaves whole events only; what they mean (a run's record,
its logical run, whether it lives) is :mod:`spark_recover.history`'s. Each
event records ``ledger_version``, the version of its own commit, so events
and runs are ordered by the storage's commit order, never by a clock (``ts``
is for people).

A run's cost does not grow with the history of the root: every event carries
its run's ``params_key`` and ``logical_run_id``, and compaction keeps the
files in key order, so a run start, its lease and ``show`` read only the row
groups of their keys (file and row-group statistics), ``runs`` pages the
newest first, and an append is one small commit whatever the history.
Expired log files go at each checkpoint. A ledger written by an older release
is read in place and gains the key columns, once, on its first write.

Reading needs no JVM (``spark-recover runs`` and ``show``), and Spark SQL or
DuckDB read the same table::

    SELECT run_id, stage, event, version, rows, seconds
    FROM delta.`<root>/ledger/events` ORDER BY ledger_version
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import operator
import re
import threading
import time
from typing import Any, Iterable, Mapping, Sequence

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
    # Every event carries its run's key and logical run, so a read selects what it needs by file statistics.
    ("params_key", pa.string()),
    ("logical_run_id", pa.string()),
])
# The history is in the rows, never in old versions: expired log files go at each compaction (10
# minutes: longer than any read at a version just read), removed data files after an hour (a
# reader's snapshot outlives a compaction). _delta_log holds a checkpoint and the last minutes' commits.
_TABLE_CONF = {"delta.checkpointInterval": "20", "delta.logRetentionDuration": "interval 10 minutes",
               "delta.deletedFileRetentionDuration": "interval 1 hour"}
_RETENTION_HOURS = 1
_SMALL_FILE_BYTES = 1 << 20  # files below this are unsorted (single events, merged small files)
_COMPACT_ABOVE_FILES = 20  # small files merged once there are this many
_SORT_ABOVE_BYTES = 8 << 20  # unsorted bytes rewritten in key order once there are this many
_ROW_GROUP_ROWS = 8192  # row groups a keyed read can skip by their statistics
_SORT_KEYS = [("params_key", "ascending"), ("logical_run_id", "ascending"), ("ledger_version", "ascending")]
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
        self._stamps: dict[str, dict[str, str]] = {}  # run id -> its params_key and logical_run_id
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

    def head(self) -> int:
        """The ledger's latest commit version, read only (-1 when it does not exist yet)."""
        table = self._open()
        return -1 if table is None else table.version()

    def append(self, run_id: str, job: str, event: str, *, only_at: int | None = None,
               **values: Any) -> dict[str, Any]:
        """Append one event as one Delta commit (atomic: it is there whole or not at all).

        Every commit is exclusive: it must be the version right after the one
        the writer read, and the event records that version (``ledger_version``)
        in its row, where it survives :meth:`compact`. When another commit came
        first the event is written again on top of it. With ``only_at=V`` the
        commit must be version ``V + 1``: if any other commit came first,
        nothing is written and :class:`LeaseConflict` is raised. The storage's
        commit order decides, never a clock. The row carries the run's
        ``params_key`` and ``logical_run_id``: given (``run_started``) or as
        the run's ``run_started`` recorded them.
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
            if not _current(table):
                self._migrate()
                continue
            if row["params_key"] is None:
                row.update(self._stamp(row["run_id"]) if row["event"] != "run_started" else self._start_stamp(row))
            if only_at is None:
                table.update_incremental()
                read = table.version()
            else:
                table, read = self.layout.delta(self.uri, version=only_at), only_at
                if not _current(table):  # migrated since the lease read it: the lease reads again
                    raise LeaseConflict(f"the ledger was migrated after version {only_at}")
            row["ledger_version"] = read + 1
            try:
                deltalake.write_deltalake(table, pa.Table.from_pylist([row], schema=SCHEMA), mode="append",
                                          commit_properties=props)
                self._stamps[row["run_id"]] = {k: row[k] for k in ("params_key", "logical_run_id")}
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

    def _stamp(self, run_id: str) -> dict[str, str]:
        """The ``params_key`` and ``logical_run_id`` of the events of ``run_id`` (a run, or a journal)."""
        if run_id not in self._stamps:
            started = [] if run_id.startswith("lease:") else \
                [ev for ev in self.events(run_id) if ev["event"] == "run_started"]
            self._stamps[run_id] = {k: started[0][k] for k in ("params_key", "logical_run_id")} if started \
                else _journal_stamp(run_id)
        return self._stamps[run_id]

    def _start_stamp(self, row: Mapping[str, Any]) -> dict[str, str]:
        """The key columns of a ``run_started`` given without them: its parameters' key, its origin's logical run."""
        detail = json.loads(row["detail"]) if row.get("detail") else {}
        origin = detail.get("origin_run_id")
        return {"params_key": detail.get("params_key", ""),
                "logical_run_id": self._stamp(origin)["logical_run_id"] if origin else row["run_id"]}

    def compact(self) -> None:
        """Keep reads and appends flat as history grows.

        Small per-event files are merged once there are many; once the merged
        ones add up, the whole ledger is rewritten in key order (params key,
        logical run, commit) so a keyed read skips the files and row groups of
        other keys; files removed an hour ago and expired log files are deleted.
        A concurrent writer always wins: compaction gives way and nothing is lost.
        """
        try:
            with self._lock:
                table = self._open_for_write()
                table.update_incremental()
                if not _current(table):
                    return
                sizes = table.get_add_actions(flatten=True).column("size_bytes").to_pylist()
                small = [size for size in sizes if size < _SMALL_FILE_BYTES]
                if sum(small) > _SORT_ABOVE_BYTES:
                    self._rewrite(table, attempts=1)
                elif len(small) > _COMPACT_ABOVE_FILES:
                    table.optimize.compact(target_size=_SMALL_FILE_BYTES)
                else:
                    return
                table.update_incremental()
                table.vacuum(retention_hours=_RETENTION_HOURS, dry_run=False, enforce_retention_duration=False)
                table.cleanup_metadata()
        except Exception:  # a concurrent commit won, or the store is busy: the next run compacts
            pass

    def _migrate(self) -> None:
        """Give a ledger written by an older release its key columns, once (the caller holds the lock).

        Every event gets its run's ``params_key`` and ``logical_run_id``, folded from
        the ledger as it is, in one exclusive commit: a concurrent append makes it
        read and try again, so no event is lost.
        """
        import deltalake

        table = self._open_for_write()
        self._rewrite(table, attempts=_APPEND_ATTEMPTS, migrate=True)
        for _ in range(_APPEND_ATTEMPTS):  # the log's retention, once (another writer may set it first)
            table.update_incremental()
            if all(table.metadata().configuration.get(k) == v for k, v in _TABLE_CONF.items()):
                return
            try:
                table.alter.set_table_properties(dict(_TABLE_CONF), raise_if_not_exists=False)
            except deltalake.exceptions.CommitFailedError:
                continue

    def _rewrite(self, table, *, attempts: int, migrate: bool = False) -> None:
        """Rewrite the whole ledger in key order as the very next commit (an older ledger's key columns filled in)."""
        import deltalake

        props = deltalake.CommitProperties(max_commit_retries=0)
        writer = deltalake.WriterProperties(max_row_group_size=_ROW_GROUP_ROWS, compression="ZSTD")
        for _ in range(attempts):
            table.update_incremental()
            if migrate and _current(table):
                return  # another writer migrated it first
            read = table.version()
            snapshot = self.layout.delta(self.uri, version=read)
            data = self.layout.scan_delta(snapshot, self.uri)
            if not _current(snapshot):
                events = _in_commit_order(data.to_pylist())
                runs = history.fold(events, dead_after=self.dead_after)
                data = pa.Table.from_pylist([{**ev, **_legacy_stamp(ev["run_id"], runs)} for ev in events],
                                            schema=SCHEMA)
            try:
                deltalake.write_deltalake(snapshot, data.sort_by(_SORT_KEYS), mode="overwrite", schema_mode="merge",
                                          writer_properties=writer, commit_properties=props)
                return
            except deltalake.exceptions.CommitFailedError:
                continue  # another writer committed first: read again
        raise LedgerError("could not rewrite the ledger in key order",
                          f"{self.uri}: other writers committed first {attempts} times", uri=self.uri)

    # -- reading ---------------------------------------------------------
    # The ledger's files are kept in params-key order (see compact), so a read by key opens only the
    # row groups of its keys. A read by run id or logical run first resolves them to params keys with
    # a scan of those narrow columns, then reads by key.

    def _open(self, version: int | None = None):
        """The ledger's table (at ``version``), or ``None`` when it does not exist yet."""
        import deltalake

        try:
            return self.layout.delta(self.uri, version=version)
        except deltalake.exceptions.TableNotFoundError:
            return None
        except Exception as exc:
            raise self.unreadable(exc) from exc

    def _scan(self, table, where=None, columns: list[str] | None = None) -> pa.Table:
        """The rows of the ledger's ``table`` that ``where`` selects (the ``columns`` it has)."""
        names = [f.name for f in table.schema().fields]
        try:
            return self.layout.scan_delta(table, self.uri, filter=where,
                                          columns=[c for c in columns if c in names] if columns else None)
        except Exception as exc:
            raise self.unreadable(exc) from exc

    def _rows(self, table, where=None) -> list[dict[str, Any]]:
        """Events in commit order (events of an older ledger without versions first, by time)."""
        if table is None:
            return []
        return _in_commit_order(self._scan(table, where).to_pylist())

    def _keys_of(self, table, *, run_ids: Iterable[str] = (), logical_runs: Iterable[str] = ()) -> set[str]:
        """The params keys of the events of ``run_ids`` and of ``logical_runs`` (a scan of two narrow columns)."""
        import pyarrow.dataset as ds

        terms = [ds.field(column).isin(sorted(values)) for column, values in
                 (("run_id", set(run_ids)), ("logical_run_id", set(logical_runs))) if values]
        if not terms:
            return set()
        found = self._scan(table, functools.reduce(operator.or_, terms), ["params_key"]).column("params_key")
        return set(found.unique().to_pylist())

    def _by_keys(self, table, keys: set[str]) -> list[dict[str, Any]]:
        import pyarrow.dataset as ds

        return self._rows(table, ds.field("params_key").isin(sorted(keys))) if keys else []

    def _related(self, *, version: int | None = None, keys: Iterable[str] = (), logical_runs: Iterable[str] = (),
                 run_ids: Iterable[str] = ()) -> dict[str, RunRecord]:
        """The runs with ``keys``, in ``logical_runs`` or with ``run_ids``, each with its whole logical run.

        A ledger of an older release (no key columns yet) is read whole.
        """
        table = self._open(version)
        if table is None or not _current(table):
            return self._fold(self._rows(table))
        # A run id may be its logical run's first run: one scan finds its key and its logical run's keys.
        scanned = set(logical_runs) | set(run_ids)
        wanted = set(keys) | self._keys_of(table, run_ids=run_ids, logical_runs=scanned)
        events = self._by_keys(table, wanted)
        while True:  # a replay with other parameters (an override) belongs to its logical run too
            unscanned = {ev["logical_run_id"] for ev in events} - scanned
            if not unscanned:
                break
            scanned |= unscanned  # each logical run's keys are looked up once
            more = self._keys_of(table, logical_runs=unscanned) - wanted
            if more:
                wanted |= more
                events = _in_commit_order(events + self._by_keys(table, more))  # only the keys not read yet
        return self._fold(events)

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
        import pyarrow.dataset as ds

        out: dict[str, dict[str, Any]] = {}
        for ev in self._rows(self._open(), ds.field("event") == "point_created"):
            detail = json.loads(ev["detail"])
            out[detail["name"]] = {"name": detail["name"], "created_at": iso(ev["ts"]), "tables": detail["tables"]}
        return out

    def journal(self, journal_id: str) -> dict[str, Any] | None:
        """The newest rollback journal kept under ``journal_id`` (a named point's: ``point:NAME``)."""
        record = RunRecord(journal_id, "")
        for ev in self.events(journal_id):
            if ev["event"] == "rollback_started" and record.rollback and record.rollback.get("finished"):
                record.rollback = None  # a new rollback to the same point: a new journal
            apply_event(record, ev)
        if record.rollback is None:
            return None
        return {**record.rollback, "last_seen": iso(record.last_seen)}  # heartbeats under this id, if any

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """The events kept under ``run_id`` (a run's, or a journal's), in commit order."""
        table = self._open()
        if table is None:
            return []
        events = self._by_keys(table, self._keys_of(table, run_ids=[run_id])) if _current(table) else self._rows(table)
        return [ev for ev in events if ev["run_id"] == run_id]

    def run(self, run_id: str) -> RunRecord:
        """The record of one run, linked with its logical run; :class:`UnknownRunError` if the ledger has none."""
        found = self._related(run_ids=[run_id]).get(run_id)
        if found is None:
            raise UnknownRunError(f"unknown run id {run_id!r}",
                                  f"the ledger at {self.uri} has no run with that id; "
                                  "`spark-recover runs` lists the known ones", run_id=run_id)
        return found

    def runs(self, job: str | None = None, *, params_key: str | None = None, logical_run: str | None = None,
             run_ids: Sequence[str] = (), version: int | None = None) -> list[RunRecord]:
        """Runs (of one job), oldest first; with ``version``, as the ledger was then.

        With ``params_key``, ``logical_run`` or ``run_ids``, only what those need is
        read: the runs with that key, of that logical run or with those ids, each
        with its whole logical run (callers pick from these; a few others, of other
        jobs with the same parameters, may come along). Without, every run.
        """
        selectors = {"keys": [params_key] if params_key else [], "logical_runs": [logical_run] if logical_run else [],
                     "run_ids": list(run_ids)}
        folded = self._related(version=version, **selectors) if any(selectors.values()) \
            else self._fold(self._rows(self._open(version)))
        return sorted((r for r in folded.values() if job is None or r.job == job), key=start_order)

    def sink_writers(self, *, version: int | None = None) -> list[RunRecord]:
        """The runs with a sink write planned and not yet written or failed, that have not finished
        (each with its logical run), as at ``version``: who may hold a sink table's lease.

        Two narrow columns of the whole ledger are scanned (run ids, event
        names), then only those runs are read: an S3 sink's table lease costs
        what the writes in flight cost, not the root's history. A ledger of an
        older release is read whole.
        """
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        table = self._open(version)
        if table is None or not _current(table):
            return self.runs(version=version)
        ends = ["sink_written", "sink_failed", "run_finished"]
        rows = self._scan(table, ds.field("event").isin(["sink_planned", *ends]), ["run_id", "event"])
        # Per run: +1 a write planned, -1 one ended, and a finished run out whatever it planned. A retry
        # that plans again only counts the run in (read, then judged by its record).
        weight = pc.if_else(pc.equal(rows["event"], "sink_planned"), 1,
                            pc.if_else(pc.equal(rows["event"], "run_finished"), -(1 << 40), -1))
        per_run = pa.table({"run_id": rows["run_id"], "w": weight}).group_by("run_id").aggregate([("w", "sum")])
        open_ids = per_run.filter(pc.greater(per_run["w_sum"], 0))["run_id"].to_pylist()
        return self.runs(run_ids=sorted(open_ids), version=version) if open_ids else []

    def logical_run(self, record: RunRecord) -> list[RunRecord]:
        """The runs of ``record``'s logical run (its lineage), oldest first."""
        return history.lineage(record, self.runs(record.job, logical_run=record.logical_run_id or record.run_id))

    def page(self, *, limit: int | None = 50, job: str | None = None, status: str | None = None,
             since: dt.datetime | None = None) -> list[RunRecord]:
        """The newest runs first, at most ``limit`` (``None``: all), of ``job``, with ``status``, started at or after ``since``.

        Reads the runs' start events, then folds only the logical runs of the
        page's candidates, a batch at a time, until the page is full.
        """
        import pyarrow.dataset as ds

        where = ds.field("event") == "run_started"
        if job is not None:
            where &= ds.field("job") == job
        if since is not None:
            where &= ds.field("ts") >= since
        table = self._open()
        if table is None:
            return []
        # Newest first, in Arrow: only the page's candidates become Python objects.
        starts = self._scan(table, where, ["run_id", "logical_run_id", "ledger_version", "ts"]).sort_by(
            [("ledger_version", "descending"), ("ts", "descending")])
        out: list[RunRecord] = []
        batch = max(limit or 0, 50)
        for at in range(0, starts.num_rows, batch):
            chunk = starts.slice(at, batch).to_pylist()
            folded = self._related(logical_runs=sorted({ev.get("logical_run_id") or ev["run_id"] for ev in chunk}),
                                   run_ids=[ev["run_id"] for ev in chunk])
            for ev in chunk:
                run = folded.get(ev["run_id"])
                if run is not None and (status is None or run.status == status):
                    out.append(run)
                    if len(out) == limit:
                        return out
        return out


def _in_commit_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events in commit order (events of an older ledger without versions first, by time)."""
    return sorted(events, key=lambda ev: commit_order(ev.get("ledger_version"), ev["ts"]))


def _current(table) -> bool:
    """Whether the ledger's table has the key columns (a ledger of an older release is migrated once)."""
    return "logical_run_id" in {f.name for f in table.schema().fields}


def _legacy_stamp(run_id: str, runs: Mapping[str, RunRecord]) -> dict[str, str]:
    """The key columns of an event of an older ledger: its run's, else its journal's."""
    run = runs.get(run_id)
    if run is not None:
        return {"params_key": run.params_key, "logical_run_id": run.logical_run_id or run_id}
    return _journal_stamp(run_id)


def _journal_stamp(journal_id: str) -> dict[str, str]:
    """The key columns of a journal's events: a hold's (``lease:<job>:<params key>``) carry its key."""
    key = journal_id.split(":", 2)[2] if journal_id.startswith("lease:") else ""
    return {"params_key": key, "logical_run_id": journal_id}
