"""Run history: what the ledger's events mean (pure: no storage, no JVM).

Three words, defined once:

- **logical run**: a first run and every resume or redo that replays it
  (following ``origin_run_id``); its id is the first run's (``logical_run_id``);
- **lineage**: the runs of one logical run, oldest first;
- **origin chain**: a replay's origin, then its origin, nearest first: what a
  replay may build on.

A run's record is a fold of its events (:func:`apply_event`), in ledger commit
order (:func:`commit_order`), never by a clock. :func:`fold` folds events into
records and links them (:func:`link_runs`): logical run, recovered by, undone
by a rollback. Liveness of a run's driver comes from :mod:`~spark_recover.liveness`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from . import liveness
from .errors import RefusedError
from .liveness import process_alive

__all__ = ["StageRecord", "RunRecord", "apply_event", "fold", "link_runs", "lineage", "origin_chain",
           "commit_order", "start_order", "holder_error", "iso", "JOURNAL_EVENTS", "replay_choice",
           "replayable_lineage", "origin_stage"]

# A rollback's journal is kept under the run's id but written by the rollback's process, not the run's.
JOURNAL_EVENTS = frozenset({"rollback_started", "table_restored", "rollback_finished"})


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
    started_at: dt.datetime | None = None  # its stage_started (a reuse: its stage_reused)
    ended_at: dt.datetime | None = None  # its stage_succeeded, stage_reused or stage_failed
    # A chunked stage: each chunk's checkpoint by chunk key (``chunk``, ``checkpoint``, ``version``, ``rows``,
    # ``seconds``, ``fingerprint``, ``from_run``, ``reused``), as they are done; ``chunk_order`` once all are.
    chunks: dict[str, dict[str, Any]] = field(default_factory=dict)
    chunk_order: list[str] | None = None

    @property
    def chunk_list(self) -> list[dict[str, Any]]:
        """A chunked stage's chunks in order: the recorded order once the stage is done, else as they were done."""
        if self.chunk_order is None:
            return list(self.chunks.values())
        return [self.chunks[k] for k in self.chunk_order]

    @property
    def output(self) -> list[dict[str, Any]]:
        """The checkpoints its output is read from: one table, or each chunk's in order (their union)."""
        if self.chunk_order is not None:
            return self.chunk_list
        return [{"checkpoint": self.checkpoint, "version": self.version}] if self.checkpoint else []

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "status": self.status, "reused": self.reused,
               "version": self.version, "seconds": self.seconds, "reason": self.reason,
               "rows": self.rows, "fingerprint": self.fingerprint,
               "checkpoint": self.checkpoint, "from_run": self.from_run, "error": self.error}
        if self.chunks:
            out["chunks"] = self.chunk_list
        return out


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
    logical_run_id: str = ""
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
            error = error or (f"the run's process died (last seen {iso(self.last_seen)}; "
                              f"host {self.process.get('host')}, pid {self.process.get('pid')})")
        metrics = {"total_seconds": self.total_seconds, **self.metrics}
        return {"run_id": self.run_id, "job": self.job, "status": self.status,
                "params": self.params, "origin_run_id": self.origin_run_id,
                "logical_run_id": self.logical_run_id or self.run_id, "recovered_by": self.recovered_by,
                "started_at": iso(self.started_at), "last_seen": iso(self.last_seen),
                "job_file": self.job_file, "conf_file": self.conf_file, "error": error,
                "stages": [s.to_json() for s in self.stage_list()],
                "sinks": [_sink_json(v) for v in self.sinks.values()], "sources": self.sources,
                "recovery_point": self.recovery_point, "rollback": self.rollback, "metrics": metrics}


def _sink_json(sink: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("table", "stage", "mode", "version_before", "version_after", "skipped_duplicate",
            "txn_app_id", "txn_version", "status", "error")
    return {k: sink.get(k) for k in keys}


def iso(value: dt.datetime | None) -> str | None:
    """An ISO time stamp as the JSON views write it (UTC as ``Z``)."""
    return value.isoformat().replace("+00:00", "Z") if value else None


def apply_event(run: RunRecord, ev: Mapping[str, Any]) -> None:
    """Fold one event into a run record (the one place that gives events meaning)."""
    detail = json.loads(ev["detail"]) if ev.get("detail") else {}
    kind, ts = ev["event"], ev["ts"]
    if kind not in JOURNAL_EVENTS:  # liveness comes from the run's own driver only
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
    elif kind in JOURNAL_EVENTS:
        journal = run.rollback = run.rollback or {"restored": {}}
        if kind == "rollback_started":
            existed = set(journal.get("existed", [])) | set(detail.get("existed", []))  # across attempts
            journal.update(started_at=iso(ts), targets=detail.get("targets", {}), finished=False,
                           force=bool(detail.get("force")), attempt=detail.get("attempt"), existed=sorted(existed))
        elif kind == "table_restored":
            journal["restored"][detail["table"]] = detail
        else:
            journal.update(finished=True, finished_at=iso(ts), metrics=detail.get("metrics", {}))
            run.rolled_back_at, run.rolled_back_version = ts, ev.get("ledger_version")
    elif ev.get("stage"):
        st = run.stages.setdefault(ev["stage"], StageRecord(ev["stage"]))
        if kind in ("chunk_succeeded", "chunk_reused"):
            st.chunks[detail["key"]] = {"chunk": detail.get("chunk"), "checkpoint": ev.get("checkpoint"),
                                        "version": ev.get("version"), "rows": ev.get("rows"),
                                        "seconds": ev.get("seconds"), "fingerprint": ev.get("fingerprint"),
                                        "from_run": detail.get("from_run"), "reused": kind == "chunk_reused"}
            return
        status = _STAGE_STATUS.get(kind)
        if status is None:
            return
        st.status, st.reused = status, kind == "stage_reused"
        if kind in ("stage_started", "stage_reused"):
            st.started_at, st.ended_at = ts, None
        if kind != "stage_started":
            st.ended_at = ts
        for attr in ("version", "rows", "seconds", "reason", "fingerprint", "checkpoint", "error"):
            if ev.get(attr) is not None:
                setattr(st, attr, ev[attr])
        st.parts = detail.get("parts", st.parts)
        st.from_run = detail.get("from_run", st.from_run)
        if kind == "stage_started":
            st.chunks, st.chunk_order = {}, None
        if "chunks" in detail:  # a chunked stage done (a reuse carries its origin's chunk records)
            st.chunks.update({c["key"]: {k: v for k, v in c.items() if k != "key"}
                              for c in detail.get("chunk_records", [])})
            st.chunk_order = list(detail["chunks"])


_STAGE_STATUS = {"stage_started": "running", "stage_succeeded": "succeeded",
                 "stage_reused": "succeeded", "stage_failed": "failed"}


def fold(events: Iterable[Mapping[str, Any]], *, dead_after: float = 60.0) -> dict[str, RunRecord]:
    """Fold events (in commit order) into linked run records by run id; journals (no ``run_started``) left out."""
    runs: dict[str, RunRecord] = {}
    for ev in events:
        run = runs.get(ev["run_id"])
        if run is None:
            run = runs[ev["run_id"]] = RunRecord(ev["run_id"], ev["job"], dead_after=dead_after)
        apply_event(run, ev)
    found = {k: r for k, r in runs.items() if r.started_at is not None}
    link_runs(found)
    return found


def lineage(record: RunRecord, runs: Iterable[RunRecord]) -> list[RunRecord]:
    """Every run of ``record``'s logical run among ``runs``, oldest first."""
    logical = record.logical_run_id or record.run_id
    return [r for r in runs if r.logical_run_id == logical]


def origin_chain(origin: RunRecord | None, runs: Sequence[RunRecord]) -> list[RunRecord]:
    """The origin, its origin, and so on (what a replay may build on), nearest first."""
    by_id = {r.run_id: r for r in runs}
    chain = [by_id.get(origin.run_id, origin)] if origin is not None else []
    while chain and chain[-1].origin_run_id in by_id and by_id[chain[-1].origin_run_id] not in chain:
        chain.append(by_id[chain[-1].origin_run_id])
    return chain


def replay_choice(runs: Sequence[RunRecord], params_key: str) -> tuple[RunRecord | None, str]:
    """What ``run --resume`` does over ``runs`` (oldest first): resume the newest failed run with these parameters, or not.

    Returns ``(origin, why)``: the run to resume, or ``None`` with the reason
    (no run to resume: start a new one; already succeeded or recovered: nothing
    to do, which ``why`` starting with ``"done:"`` says).

    >>> replay_choice([], "k")
    (None, 'no earlier run with these parameters: starting a new run')
    """
    mine = [r for r in runs if r.params_key == params_key and not r.refused]
    if not mine:
        return None, "no earlier run with these parameters: starting a new run"
    newest = mine[-1]
    if newest.status == "running":
        raise holder_error(newest)
    if newest.status == "succeeded":
        return None, f"done: run {newest.run_id} with these parameters already succeeded; nothing to resume"
    if newest.recovered_by:
        return None, (f"done: run {newest.run_id} was already recovered by run {newest.recovered_by}; "
                      "nothing to resume")
    if newest.status == "failed":
        return newest, f"resuming failed run {newest.run_id}"
    return None, f"run {newest.run_id} was rolled back: starting a new run"


def replayable_lineage(origin: RunRecord, runs: Sequence[RunRecord]) -> list[RunRecord]:
    """The lineage a replay of ``origin`` builds on; refused (exit 3) if it still runs or was recovered already."""
    if origin.status == "running":
        raise RefusedError(f"run {origin.run_id} is still running",
                           f"its driver (pid {origin.process.get('pid')} on {origin.process.get('host')}) "
                           f"was last seen {origin.last_seen}; resume it once it has stopped",
                           run_id=origin.run_id)
    fresh = next((r for r in runs if r.run_id == origin.run_id), origin)
    if fresh.recovered_by:
        raise RefusedError(f"run {origin.run_id} was already recovered by run {fresh.recovered_by}",
                           "replaying it again would repeat a finished recovery; see "
                           f"`spark-recover show {fresh.recovered_by}` (to replace its output, "
                           f"`spark-recover redo {fresh.recovered_by}`)", run_id=origin.run_id,
                           recovered_by=fresh.recovered_by)
    return lineage(fresh, runs)


def origin_stage(chain: Sequence[RunRecord], name: str) -> tuple[RunRecord, StageRecord | None]:
    """The record of stage ``name`` a replay builds on, and the run it comes from.

    ``chain`` is the origin, then its own origin, and so on. A replay that died
    before it reached a stage (no record of starting it) passes that stage's
    record on from its own origin: a resume of a resume that was killed early
    must not lose what the first run computed. A stage the replay started
    (running, failed, or decided to recompute) stops the walk.
    """
    for run in chain:
        record = run.stages.get(name)
        if record is not None and record.status != "pending":
            return run, record
    return chain[0], chain[0].stages.get(name)


def holder_error(holder: RunRecord, logical_run: str | None = None) -> RefusedError:
    """The refusal that names a live holder (of these parameters, or of the same ``logical_run``)."""
    whose = f"of logical run {logical_run}" if logical_run else "with these parameters"
    return RefusedError(f"run {holder.run_id} of job {holder.job!r} {whose} is still running",
                        f"one run per job and parameters, and per logical run, at a time; the holder is pid "
                        f"{holder.process.get('pid')} on {holder.process.get('host')}, last seen "
                        f"{holder.last_seen}", holder=holder.run_id)


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


def start_order(run: RunRecord) -> tuple[bool, int, dt.datetime]:
    return commit_order(run.started_version, run.started_at)


def link_runs(runs: Mapping[str, RunRecord]) -> None:
    """Give each run its logical run, and mark runs recovered, or undone by a rollback.

    A logical run is a first run and every resume or redo that replays it
    (following ``origin_run_id``). A finished rollback of any of its runs undoes
    the sink writes of every run of it whose ``run_started`` committed before
    the rollback's ``rollback_finished`` (ledger commit order, not clocks).
    """
    ordered = sorted(runs.values(), key=start_order)
    for run in ordered:
        seen, root = {run.run_id}, run
        while root.origin_run_id and root.origin_run_id in runs and root.origin_run_id not in seen:
            root = runs[root.origin_run_id]
            seen.add(root.run_id)
        run.logical_run_id = root.origin_run_id if root.origin_run_id and root.origin_run_id not in runs \
            else root.run_id
    groups: dict[str, list[RunRecord]] = {}
    for run in ordered:
        groups.setdefault(run.logical_run_id, []).append(run)
    for members in groups.values():
        for rb in (m for m in members if m.rolled_back_at is not None):
            finished = commit_order(rb.rolled_back_version, rb.rolled_back_at)
            for m in members:
                if m is not rb and start_order(m) < finished:
                    m.undone_by = m.undone_by or rb.run_id
        for i, run in enumerate(members):
            if run.status == "failed" and not run.refused:
                later = [m for m in members[i + 1:] if m.status == "succeeded"]
                run.recovered_by = later[0].run_id if later else None


