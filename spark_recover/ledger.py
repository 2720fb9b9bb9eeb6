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

import dataclasses
import datetime as dt
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import pyarrow as pa

from . import liveness
from .errors import DamagedStateError, LedgerError, RecoverError, UnknownRunError
from .liveness import process_alive, this_process
from .storage import Layout, native_uri

__all__ = ["Ledger", "LeaseConflict", "RunRecord", "StageRecord", "Heartbeat", "SCHEMA", "apply_event",
           "commit_order", "this_process", "process_alive"]

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
# A rollback's journal is kept under the run's id but written by the rollback's process, not the run's.
_JOURNAL_EVENTS = frozenset({"rollback_started", "table_restored", "rollback_finished"})


@dataclass
class StageRecord:
    """What the ledger knows of one stage of one run."""

    name: str
    status: str = "pending"  # pending, running, succeeded, failed
    reused: bool = False
    version: int | None = None
    rows: int | None = None
    seconds: float | None = None
    reason: str | None = None
    fingerprint: str | None = None
    checkpoint: str | None = None
    error: str | None = None
    parts: dict[str, Any] = field(default_factory=dict)
    from_run: str | None = None  # the run whose computation produced the checkpoint

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "reused": self.reused,
                "version": self.version, "seconds": self.seconds, "reason": self.reason,
                "rows": self.rows, "fingerprint": self.fingerprint,
                "checkpoint": self.checkpoint, "from_run": self.from_run, "error": self.error}


@dataclass
class RunRecord:
    """What the ledger knows of one run, folded from its events."""

    run_id: str
    job: str
    params: dict[str, Any] = field(default_factory=dict)
    params_key: str = ""
    origin_run_id: str | None = None
    job_file: str | None = None
    conf_file: str | None = None  # the settings file it ran with (absolute), which a resume reuses
    started_at: dt.datetime | None = None
    last_seen: dt.datetime | None = None
    finished: bool = False
    final_status: str | None = None
    total_seconds: float | None = None
    error: str | None = None
    process: dict[str, Any] = field(default_factory=dict)
    connect: dict[str, Any] | None = None  # Spark Connect server, session and operation tag of its driver
    sources: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, StageRecord] = field(default_factory=dict)
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)  # table -> planned + written
    recovery_point: dict[str, Any] | None = None  # table -> state before the first sink write
    rollback: dict[str, Any] | None = None  # journal: started, tables restored, finished
    dead_after: float = 60.0  # the reader's setting
    heartbeat_seconds: float | None = None  # the writer's, recorded in run_started
    started_version: int | None = None  # ledger commit version of run_started (None: an older ledger)
    # The logical run (DESIGN.md): the first run of a chain of resumes and redos.
    root_run_id: str = ""
    recovered_by: str | None = None  # a later run of the logical run that succeeded
    undone_by: str | None = None  # a finished rollback of the logical run after this run started
    rolled_back_at: dt.datetime | None = None
    rolled_back_version: int | None = None  # ledger commit version of rollback_finished

    @property
    def alive(self) -> bool:
        """Whether an unfinished run's driver still runs (by its process, else by its heartbeat)."""
        if self.finished:
            return False
        by_process = process_alive(self.process)
        if by_process is not None:
            return by_process
        if self.last_seen is None:
            return False
        age = (dt.datetime.now(dt.timezone.utc) - self.last_seen).total_seconds()
        return age <= liveness.dead_after(reader_seconds=self.dead_after, writer_heartbeat=self.heartbeat_seconds)

    @property
    def rolled_back(self) -> bool:
        """Its sink writes were undone: it, or its logical run after it, was rolled back."""
        return bool(self.rollback and self.rollback.get("finished")) or self.undone_by is not None

    @property
    def refused(self) -> bool:
        """It stopped before computing or publishing anything (a replay the rules refused)."""
        return self.final_status == "refused"

    @property
    def status(self) -> str:
        """``running``, ``succeeded``, ``failed`` (a dead or refused run counts as failed), ``rolled_back``.

        A live driver is ``running`` whatever else the ledger says: a rollback that
        seems to cover it must not let the lease, gc or a rollback forget it.
        """
        if not self.finished and self.alive:
            return "running"
        if self.rolled_back:
            return "rolled_back"
        if self.finished:
            return self.final_status if self.final_status == "succeeded" else "failed"
        return "failed"

    @property
    def died(self) -> bool:
        return not self.finished and not self.alive

    @property
    def merge_sessions(self) -> list[str]:
        """The Spark Connect server sessions its MERGE sinks ran in (each recorded before its MERGE began)."""
        return [s["merge_session"] for s in self.sinks.values() if s.get("merge_session")]

    def stage_list(self) -> list[StageRecord]:
        """Stages in order; in a dead run, the stage caught mid-flight shows as failed."""
        if not self.died:
            return list(self.stages.values())
        return [dataclasses.replace(st, status="failed", reason="the run's process died during this stage")
                if st.status == "running" else st for st in self.stages.values()]

    def to_json(self) -> dict[str, Any]:
        """The ``show --json`` object (DESIGN.md)."""
        error = self.error
        if self.died:
            error = error or (f"the run's process died (last seen {_iso(self.last_seen)}; "
                              f"host {self.process.get('host')}, pid {self.process.get('pid')})")
        metrics = {"total_seconds": self.total_seconds, **self.metrics}
        return {"run_id": self.run_id, "job": self.job, "status": self.status,
                "params": self.params, "origin_run_id": self.origin_run_id,
                "logical_run_id": self.root_run_id or self.run_id, "recovered_by": self.recovered_by,
                "started_at": _iso(self.started_at), "last_seen": _iso(self.last_seen),
                "job_file": self.job_file, "conf_file": self.conf_file, "error": error,
                "stages": [s.to_json() for s in self.stage_list()],
                "sinks": [_sink_json(v) for v in self.sinks.values()], "sources": self.sources,
                "recovery_point": self.recovery_point, "rollback": self.rollback, "metrics": metrics}


def _sink_json(sink: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("table", "stage", "mode", "version_before", "version_after", "skipped_duplicate",
            "txn_app_id", "txn_version", "status", "error")
    return {k: sink.get(k) for k in keys}


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def apply_event(run: RunRecord, ev: Mapping[str, Any]) -> None:
    """Fold one event into a run record (the one place that gives events meaning)."""
    detail = json.loads(ev["detail"]) if ev.get("detail") else {}
    kind, ts = ev["event"], ev["ts"]
    if kind not in _JOURNAL_EVENTS:  # liveness comes from the run's own driver only
        run.last_seen = max(run.last_seen, ts) if run.last_seen else ts
    if kind == "run_started":
        run.started_at, run.started_version = ts, ev.get("ledger_version")
        run.heartbeat_seconds = detail.get("heartbeat_seconds")
        run.params = detail.get("params", {})
        run.params_key = detail.get("params_key", "")
        run.origin_run_id = detail.get("origin_run_id")
        run.job_file = detail.get("job_file")
        run.conf_file = detail.get("conf_file")
        run.process = detail.get("process", {})
        run.connect = detail.get("connect")
        run.sources = detail.get("sources", {})
        for name in detail.get("stages", []):
            run.stages.setdefault(name, StageRecord(name))
    elif kind == "run_finished":
        run.finished = True
        run.final_status = ev.get("status")
        run.total_seconds = ev.get("seconds")
        run.error = ev.get("error")
        run.metrics.update(detail.get("metrics", {}))
    elif kind == "sources_pinned":
        run.sources = detail.get("sources", {})
    elif kind == "recovery_point":
        run.recovery_point = detail.get("tables", {})
    elif kind in ("sink_planned", "sink_written", "sink_failed"):
        entry = run.sinks.setdefault(detail["table"], {"stage": ev.get("stage")})
        entry.update({k: v for k, v in detail.items() if k != "traceback"},
                     status=kind.removeprefix("sink_"), error=ev.get("error"))
    elif kind in _JOURNAL_EVENTS:
        journal = run.rollback = run.rollback or {"restored": {}}
        if kind == "rollback_started":
            existed = set(journal.get("existed", [])) | set(detail.get("existed", []))  # across attempts
            journal.update(started_at=_iso(ts), targets=detail.get("targets", {}), finished=False,
                           force=bool(detail.get("force")), attempt=detail.get("attempt"), existed=sorted(existed))
        elif kind == "table_restored":
            journal["restored"][detail["table"]] = detail
        else:
            journal.update(finished=True, finished_at=_iso(ts), metrics=detail.get("metrics", {}))
            run.rolled_back_at, run.rolled_back_version = ts, ev.get("ledger_version")
    elif ev.get("stage"):
        st = run.stages.setdefault(ev["stage"], StageRecord(ev["stage"]))
        status = _STAGE_STATUS.get(kind)
        if status is None:
            return
        st.status, st.reused = status, kind == "stage_reused"
        for attr in ("version", "rows", "seconds", "reason", "fingerprint", "checkpoint", "error"):
            if ev.get(attr) is not None:
                setattr(st, attr, ev[attr])
        st.parts = detail.get("parts", st.parts)
        st.from_run = detail.get("from_run", st.from_run)


_STAGE_STATUS = {"stage_started": "running", "stage_succeeded": "succeeded",
                 "stage_reused": "succeeded", "stage_failed": "failed"}


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
        runs: dict[str, RunRecord] = {}
        for ev in events:
            run = runs.get(ev["run_id"])
            if run is None:
                run = runs[ev["run_id"]] = RunRecord(ev["run_id"], ev["job"], dead_after=self.dead_after)
            apply_event(run, ev)
        found = {k: r for k, r in runs.items() if r.started_at is not None}
        _link_lineage(found)
        return found

    def points(self) -> dict[str, dict[str, Any]]:
        """Named recovery points: name -> {created_at, tables}."""
        out: dict[str, dict[str, Any]] = {}
        for ev in self._events():
            if ev["event"] == "point_created":
                detail = json.loads(ev["detail"])
                out[detail["name"]] = {"name": detail["name"], "created_at": _iso(ev["ts"]),
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
        return {**record.rollback, "last_seen": _iso(record.last_seen)}  # heartbeats under this id, if any

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
        return sorted((r for r in runs if job is None or r.job == job), key=_start_order)

    def lineage(self, record: RunRecord, runs: Iterable[RunRecord] | None = None) -> list[RunRecord]:
        """Every run of ``record``'s logical run, oldest first."""
        root = record.root_run_id or record.run_id
        return [r for r in (runs if runs is not None else self.runs(record.job)) if r.root_run_id == root]


_NEVER = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def commit_order(version: int | None, ts: dt.datetime | None) -> tuple[bool, int, dt.datetime]:
    """Sort key of an event by its ledger commit version.

    Events of an older ledger carry no version: they were all committed
    before the first one that does, and among themselves only their time
    stamps order them.

    >>> commit_order(3, None) < commit_order(4, None) and commit_order(None, None) < commit_order(0, None)
    True
    """
    return (version is not None, -1 if version is None else version, ts or _NEVER)


def _start_order(run: RunRecord) -> tuple[bool, int, dt.datetime]:
    return commit_order(run.started_version, run.started_at)


def _link_lineage(runs: Mapping[str, RunRecord]) -> None:
    """Give each run its logical run, and mark runs recovered, or undone by a rollback.

    A logical run is a first run and every resume or redo that replays it
    (following ``origin_run_id``). A finished rollback of any of its runs undoes
    the sink writes of every run of it whose ``run_started`` committed before
    the rollback's ``rollback_finished`` (ledger commit order, not clocks).
    """
    ordered = sorted(runs.values(), key=_start_order)
    for run in ordered:
        seen, root = {run.run_id}, run
        while root.origin_run_id and root.origin_run_id in runs and root.origin_run_id not in seen:
            root = runs[root.origin_run_id]
            seen.add(root.run_id)
        run.root_run_id = root.origin_run_id if root.origin_run_id and root.origin_run_id not in runs \
            else root.run_id
    groups: dict[str, list[RunRecord]] = {}
    for run in ordered:
        groups.setdefault(run.root_run_id, []).append(run)
    for members in groups.values():
        for rb in (m for m in members if m.rolled_back_at is not None):
            finished = commit_order(rb.rolled_back_version, rb.rolled_back_at)
            for m in members:
                if m is not rb and _start_order(m) < finished:
                    m.undone_by = m.undone_by or rb.run_id
        for i, run in enumerate(members):
            if run.status == "failed" and not run.refused:
                later = [m for m in members[i + 1:] if m.status == "succeeded"]
                run.recovered_by = later[0].run_id if later else None


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
