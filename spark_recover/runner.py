"""Executing a run: pin sources, plan, compute or reuse each stage, record it all.

Every step that matters is an event in the ledger before the next begins, so a
crash at any instant leaves a record a resume can build on:

``run_started`` (the lease) → ``sources_pinned`` → per stage (``stage_started``
→ checkpoint commit → ``stage_succeeded``) or ``stage_reused`` →
``recovery_point`` → per sink (``sink_planned`` → Delta commit →
``sink_written``) → ``run_finished``.

Policy lives elsewhere: what to reuse in :mod:`~spark_recover.plan`, who may
run in :mod:`~spark_recover.lease`, what a sink may publish in
:mod:`~spark_recover.publication`.
"""

from __future__ import annotations

import contextlib
import time
import traceback
import uuid
from types import MappingProxyType
from typing import Any, Callable, Collection, Mapping

from dataclasses import dataclass, field

from . import __version__, checkpoint, failpoints, history, lease, publication, retention, session, sinks, sources
from .rerun import check_params, new_run_id, params_key, plain_rerun_refusal, replay_params
from .config import Settings, load_settings
from .errors import RecoverError, RefusedError, StageError, UsageError
from .fingerprint import digest
from .job import Job, chunk_key
from .history import RunRecord, apply_event
from .ledger import Ledger
from .lease import Heartbeat
from .liveness import this_process
from .plan import StagePlan, chunk_fingerprint, plan_run, reusable_chunk
from .sinks import SinkTarget
from .display import params_text, run_text
from .storage import Layout, canonical, is_local

__all__ = ["RunResult", "run_job", "resume_job", "resume_command", "replay_choice"]


class RunResult:
    """The outcome of a run: status, per-stage records, metrics, outputs.

    >>> result = job.run(params={"day": "2026-11-23"})   # doctest: +SKIP
    >>> result.status, [s.name for s in result.stages]   # doctest: +SKIP
    ('succeeded', ['cleaned', 'daily'])
    >>> result.output("daily").show()   # doctest: +SKIP
    """

    def __init__(self, record: RunRecord, spark, layout: Layout) -> None:
        self.record, self._spark, self.layout = record, spark, layout

    run_id = property(lambda self: self.record.run_id)
    job = property(lambda self: self.record.job)
    status = property(lambda self: self.record.status)
    params = property(lambda self: self.record.params)
    origin_run_id = property(lambda self: self.record.origin_run_id)
    metrics = property(lambda self: self.record.to_json()["metrics"])
    error = property(lambda self: self.record.error)
    stages = property(lambda self: self.record.stage_list())

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def output(self, stage: str):
        """The stage's checkpointed DataFrame, read at its recorded version."""
        rec = self.record.stages.get(stage)
        if rec is None or rec.status != "succeeded":
            raise UsageError(f"stage {stage!r} has no checkpoint in run {self.run_id}",
                             f"expected a succeeded stage, one of "
                             f"{[s.name for s in self.stages if s.status == 'succeeded']}", stage=stage)
        return checkpoint.read_stage(self._spark, rec, self.layout)

    def to_json(self) -> dict[str, Any]:
        return self.record.to_json()

    def __repr__(self) -> str:
        return run_text(self.record)

    def _repr_html_(self) -> str:
        """Jupyter shows the report of the run's logical run (:func:`spark_recover.report`)."""
        from .timeline import timeline_html

        return timeline_html(Ledger(self.layout).logical_run(self.record))


def _echo_to(enabled: bool) -> Callable[[str], None]:
    return (lambda line: print(line, flush=True)) if enabled else (lambda line: None)


def resume_command(run_id: str, settings: Settings) -> str:
    """The exact command that resumes ``run_id``."""
    parts = ["spark-recover", "resume", run_id, "--root", settings.root]
    if settings.conf_file:
        parts += ["--conf", settings.conf_file]
    return " ".join(parts)


def replay_choice(ledger: Ledger, job: Job, params: Mapping[str, Any]) -> tuple[RunRecord | None, str]:
    """What ``run --resume`` does (:func:`spark_recover.history.replay_choice`), read from ``ledger``. Needs no JVM."""
    key = params_key(params)
    return history.replay_choice(ledger.runs(job.name, params_key=key), key)


@dataclass
class RunContext:
    """One run being executed: who it is, where it writes, and its ledger record."""

    job: Job
    params: dict[str, Any]
    params_key: str
    settings: Settings
    layout: Layout
    ledger: Ledger
    run_id: str
    say: Callable[[str], None]
    record: RunRecord = field(init=False)
    claim: lease.Claim | None = None

    def __post_init__(self) -> None:
        self.record = RunRecord(self.run_id, self.job.name, dead_after=self.settings.dead_after_seconds)

    def log(self, event: str, **values: Any) -> None:
        apply_event(self.record, self.ledger.append(self.run_id, self.job.name, event, **values))


def _new_context(job: Job, params: Mapping[str, Any], settings: Settings, echo: bool) -> RunContext:
    layout = Layout.at(settings.root, settings.storage_options)
    params = check_params(params)
    return RunContext(job, params, params_key(params), settings, layout,
                      Ledger(layout, dead_after=settings.dead_after_seconds), new_run_id(), _echo_to(echo))


def _check_cluster_storage(ctx: RunContext, master: str, targets: list[SinkTarget]) -> None:
    """Refuse a local folder as root or sink on a cluster: each node would write its own disk."""
    if master.startswith("local") and not master.startswith("local-cluster") or ctx.settings.shared_root:
        return
    local = [("root", ctx.layout.root)] if is_local(ctx.layout.root) else []
    local += [(f"sink {t.sink.stage!r}", t.table) for t in targets if not t.target.catalog and is_local(t.table)]
    if local:
        raise UsageError(
            f"a local folder on a cluster (master {master})",
            "expected the root and path sinks on storage every node shares (s3a://, hdfs://, abfss://, gs://), "
            "found " + ", ".join(f"{what} {where!r}" for what, where in local) + ": each executor would write "
            "its own disk. Set --root (or SPARK_RECOVER_ROOT) to shared storage, or, if that folder is "
            "mounted on every node (NFS), declare it with `shared_root = true` under [recover] or "
            "SPARK_RECOVER_SHARED_ROOT=1", master=master, locations=[w for _, w in local])


def run_job(job: Job, params: Mapping[str, Any], *, root: str | None = None,
            settings: Settings | None = None, spark=None, resume_from: RunRecord | str | None = None,
            rerun: Collection[str] = (), refresh_sources: bool = False, new_run: bool = False,
            echo: bool = True) -> RunResult:
    """Run ``job`` (or replay ``resume_from``, a run id or record) and return its :class:`RunResult`.

    Errors before the run starts (bad parameters or sinks, a held lease, a
    replay of a recovered run) raise and write nothing. A plain run over a
    failed run of the same parameters that already published a sink is
    refused unless ``new_run`` (it would publish again). A stage that raises
    ends the run as ``failed``; the result carries the error and the ledger
    the resume point. A replay that would publish other data to a sink its
    logical run already published is refused (:class:`RefusedError`).
    """
    ctx = _new_context(job, params, settings or load_settings(root=root, project=job.project), echo)
    if isinstance(resume_from, str):
        resume_from = ctx.ledger.run(resume_from)
    stage_names = [s.name for s in job.stages]
    if not stage_names:
        raise UsageError(f"job {job.name!r} has no stages", "expected at least one @job.stage")
    failpoints.check(stage_names)
    for stage in job.stages:  # chunks named by the parameters: checked before anything is written
        if stage.chunks is not None and stage.chunks.of_params is not None:
            stage.chunk_values(ctx.params)
    job.downstream(list(rerun))  # validates the names
    lineage = history.replayable_lineage(resume_from, ctx.ledger.runs(job.name, run_ids=[resume_from.run_id])) \
        if resume_from is not None else []
    if resume_from is None and not new_run:
        refusal = plain_rerun_refusal(ctx.ledger.runs(job.name, params_key=ctx.params_key), ctx.params_key, job.file)
        if refusal is not None:
            raise refusal
    targets = sinks.resolve_sinks(job, ctx.params, ctx.layout, ctx.settings.sink_root,
                                  created=publication.created_tables(lineage))
    if spark is None and (session.attached() or ctx.settings.remote):
        spark = session.get_spark(ctx.settings)  # spark-submit made it, or a Connect server: cheap, says where we run
    elif spark is None:  # spark-recover builds the session (after the lease): refuse now what it cannot hold
        session.check_buildable()
        publication.require_lasting_catalog([t.table for t in targets if t.target.catalog], ctx.settings.spark)
    _check_cluster_storage(ctx, session.master(spark) if spark is not None else
                           ctx.settings.spark.get("spark.master", "local[*]"), targets)

    connect = session.connect_identity(spark, ctx.run_id) if spark is not None else None
    ctx.claim = lease.claim(ctx.ledger, job.name, ctx.params_key, ctx.run_id, {
        "params": ctx.params, "params_key": ctx.params_key, "job_file": job.file, "stages": stage_names,
        "root": ctx.layout.root, "conf_file": ctx.settings.conf_file, "sinks": [t.table for t in targets],
        "origin_run_id": resume_from.run_id if resume_from else None, "rerun": list(rerun),
        "process": this_process(), "heartbeat_seconds": ctx.settings.heartbeat_seconds,
        "library": __version__, "connect": connect})
    ctx.record = ctx.ledger.run(ctx.run_id)
    heartbeat = Heartbeat(ctx.ledger, ctx.run_id, job.name, ctx.settings.heartbeat_seconds)
    heartbeat.start()
    origin_text = f", resuming {resume_from.run_id}" if resume_from else ""
    ctx.say(f"run {ctx.run_id} of job {job.name} started (params: {params_text(ctx.params)}{origin_text})")
    started = time.monotonic()
    try:
        if spark is None:
            spark = session.get_spark(ctx.settings)
        session_seconds = time.monotonic() - started
        _stop_dead_operations(ctx, spark, resume_from)
        session.tag_operations(spark, connect)
        started = time.monotonic()  # the run's clock excludes starting the JVM
        chain = history.origin_chain(resume_from, lineage)
        pins = _pin_sources(ctx, spark, chain, refresh_sources)
        plans = plan_run(job, ctx.params, pins, origin=resume_from, rerun=rerun, ancestors=chain[1:],
                         verify=lambda rec: checkpoint.verify_stage(rec, ctx.layout),
                         session_parts=session.fingerprint_parts(spark))
        _check_publication(ctx, spark, targets, plans, lineage)
        for warning in sinks.txn_retention_warnings(spark, targets, lineage, retention.RECOVERY_WINDOW_DAYS):
            ctx.say(f"warning: {warning}")
        _execute(ctx, spark, plans, pins)
        if targets:
            _publish(ctx, spark, targets, lineage)
        status, error = "succeeded", None
    except StageError as exc:
        status, error = "failed", exc.detail
    except BaseException as exc:  # refused, no session, interrupted (Ctrl-C in a notebook), the ledger failed
        heartbeat.stop()
        refused = isinstance(exc, RefusedError)
        why = f"refused: {exc}" if refused else str(exc) if isinstance(exc, RecoverError) \
            else f"interrupted: {type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):  # record it if we still can: the run is not running
            ctx.log("run_finished", status="refused" if refused else "failed",
                    seconds=round(time.monotonic() - started, 3), error=why[:2000])
        raise
    finally:
        heartbeat.stop()
        if spark is not None:
            session.untag_operations(spark, connect)
    total = time.monotonic() - started
    metrics = _recovery_metrics(ctx, plans, total) if resume_from is not None else {}
    metrics["session_seconds"] = round(session_seconds, 3)  # starting (or reusing) the JVM, not in total
    metrics["session"] = session.describe(spark)
    ctx.log("run_finished", status=status, seconds=round(total, 3), error=error, detail={"metrics": metrics})
    ctx.ledger.compact()
    if status == "succeeded":
        ratio = f", R = {metrics['recovery_ratio']}" if metrics.get("recovery_ratio") else ""
        ctx.say(f"run {ctx.run_id} succeeded in {total:.1f}s{ratio}")
    else:
        ctx.say(f"run {ctx.run_id} failed: {error}")
        ctx.say(f"resume with: {resume_command(ctx.run_id, ctx.settings)}")
    return RunResult(ctx.record, spark, ctx.layout)


def dead_connect_runs(runs: list[RunRecord], run_id: str, params_key: str,
                      origin: RunRecord | None) -> list[RunRecord]:
    """The dead Connect runs whose operations a run taking the lease must stop first.

    The newest other run of the same parameters (the lease's last holder; every
    run before it was taken over the same way) and the run being replayed.
    """
    same = [r for r in runs if r.params_key == params_key and r.run_id != run_id]
    candidates = {r.run_id: r for r in same[-1:] + ([origin] if origin is not None else [])}
    return [r for r in candidates.values() if r.connect and r.died]


def _stop_dead_operations(ctx: RunContext, spark, origin: RunRecord | None) -> None:
    """A Connect server keeps a killed client's operations running: stop them before this run writes."""
    for dead in dead_connect_runs(ctx.ledger.runs(ctx.job.name, params_key=ctx.params_key), ctx.run_id,
                                  ctx.params_key, origin):
        outcome = session.stop_dead_operations(dead.connect, sessions=dead.merge_sessions, spark=spark,
                                               remote=ctx.settings.remote)
        ctx.log("dead_operations_stopped", detail={"run_id": dead.run_id, **outcome})
        ctx.say(session.dead_operations_text(dead.run_id, outcome))


def _recovery_metrics(ctx: RunContext, plans: list[StagePlan], total: float) -> dict[str, Any]:
    clean, basis = _clean_seconds(ctx.ledger.runs(ctx.job.name, params_key=ctx.params_key), ctx.record)
    return {"recovery_seconds": round(total, 3), "clean_seconds": clean, "clean_seconds_basis": basis,
            "recovery_ratio": round(total / clean, 4) if clean else None,
            "reused_stages": sum(1 for p in plans if p.reuse),
            "recomputed_stages": sum(1 for p in plans if not p.reuse)}


def _pin_sources(ctx: RunContext, spark, chain: list[RunRecord], refresh: bool) -> dict[str, Any]:
    """Pin every source a stage reads, and record the pins."""
    pins: dict[str, Any] = {}
    read = {i for s in ctx.job.stages for i in s.inputs}
    for src in ctx.job.sources:
        if src.name not in read:
            continue
        pins[src.name] = sources.kept_pin(src, ctx.params, chain, refresh) or \
            sources.pin(spark, src, ctx.params, ctx.layout)
    ctx.log("sources_pinned", detail={"sources": pins})
    return pins


def _check_publication(ctx: RunContext, spark, targets: list[SinkTarget], plans: list[StagePlan],
                       lineage: list[RunRecord]) -> None:
    """Before computing anything: refuse a replay that would publish other data to a published sink."""
    for st in targets:
        if st.target.catalog:
            uri = sinks.physical_uri(spark, st.target)
            if uri is not None and not st.target.is_delta(uri):
                raise UsageError(f"sink table {st.table} is not a Delta table",
                                 f"expected a Delta table (or none) named {st.table}, found one stored at {uri}",
                                 table=st.table)
    prior_of = publication.priors(lineage)
    if not prior_of:
        return
    by_stage = {p.name: p for p in plans}
    for st in targets:
        prior = prior_of.get(canonical(st.table))
        if prior is None:
            continue
        plan = by_stage[st.sink.stage]
        data = publication.output_identity(plan.origin, st.predicate) if plan.reuse else None
        committed = sinks.table_state(spark, st.target, prior.app).txn_version
        publication.decide(st.table, data, prior, prior.app, committed, [])  # raises if refused


def _clean_seconds(ledger_runs: list[RunRecord], record: RunRecord) -> tuple[float | None, str]:
    """T_t: a clean run's total time (the newest full, non-resumed success), else an estimate."""
    clean = [r for r in ledger_runs if r.params_key == record.params_key and r.origin_run_id is None
             and r.final_status == "succeeded" and r.total_seconds]  # a later rollback does not matter
    if clean:
        return clean[-1].total_seconds, f"clean run {clean[-1].run_id}"
    compute = [s.parts.get("compute_seconds") for s in record.stages.values()]
    if compute and all(c is not None for c in compute):
        return float(sum(compute)), "estimate: sum of the stages' compute seconds"
    return None, "unknown"


def _execute(ctx: RunContext, spark, plans: list[StagePlan], pins: Mapping[str, Any]) -> None:
    job, frames = ctx.job, {}

    def frame(name: str):
        if name not in frames:
            if name in pins:
                frames[name] = sources.read(spark, next(s for s in job.sources if s.name == name), pins[name])
            else:
                frames[name] = checkpoint.read_stage(spark, ctx.record.stages[name], ctx.layout)
        return frames[name]

    width = max(len(p.name) for p in plans)
    for n, plan in enumerate(plans, 1):
        tag = f"  [{n}/{len(plans)}] {plan.name:<{width}}"
        if plan.reuse:
            o = plan.origin
            assert o is not None
            chunks = {"chunks": o.chunk_order, "chunk_records": [{"key": k, **o.chunks[k], "reused": True} for k in o.chunk_order]} \
                if o.chunk_order is not None else {}
            ctx.log("stage_reused", stage=plan.name, version=o.version, rows=o.rows, seconds=0.0,
                    fingerprint=o.fingerprint, checkpoint=o.checkpoint, reason="reused",
                    detail={"parts": {**plan.parts, "compute_seconds": o.parts.get("compute_seconds")},
                            "from_run": o.from_run, **chunks})
            ctx.say(f"{tag} reused (version {o.version}, {_rows(o.rows)} from run {o.from_run})")
            continue
        ctx.say(f"{tag} started" + (f": recomputed because {plan.reason}" if plan.reason else ""))
        ctx.log("stage_started", stage=plan.name, reason=plan.reason, fingerprint=plan.fingerprint,
                detail={"parts": plan.parts})
        failpoints.hit(plan.name, "before")
        location = ctx.layout.checkpoint(job.name, ctx.params_key, plan.name, ctx.run_id)
        t0 = time.monotonic()
        try:
            if plan.stage.chunks is not None:
                _execute_chunks(ctx, spark, plan, frame)
                written = None
            else:
                out = plan.stage.call(frame, MappingProxyType(dict(ctx.params)), spark)
                _check_dataframe(plan.name, out)
                written = checkpoint.write(out, location, {"run_id": ctx.run_id, "stage": plan.name,
                                                           "fingerprint": plan.fingerprint}, ctx.layout)
        except Exception as exc:
            seconds = time.monotonic() - t0
            message = _first_line(exc)
            error = f"stage {plan.name!r} failed: {type(exc).__name__}: {message}"[:2000]
            ctx.log("stage_failed", stage=plan.name, seconds=round(seconds, 3), error=error,
                    reason=plan.reason, detail={"traceback": traceback.format_exc()[-8000:]})
            ctx.say(f"{tag} FAILED after {seconds:.1f}s: {type(exc).__name__}: {message}")
            raise StageError(f"stage {plan.name!r} failed", error, stage=plan.name) from exc
        failpoints.hit(plan.name, "after_write")
        seconds = time.monotonic() - t0
        if written is None:  # chunked: each chunk is recorded; the stage records their order
            chunks = ctx.record.stages[plan.name].chunks
            rows = sum(c["rows"] or 0 for c in chunks.values())
            ctx.log("stage_succeeded", stage=plan.name, rows=rows, seconds=round(seconds, 3),
                    fingerprint=plan.fingerprint, reason=plan.reason,
                    detail={"parts": {**plan.parts, "compute_seconds": round(seconds, 3)}, "from_run": ctx.run_id,
                            "chunks": list(chunks)})
            done = f"{_rows(rows)} in {len(chunks)} chunks ({sum(c['reused'] for c in chunks.values())} reused)"
        else:
            ctx.log("stage_succeeded", stage=plan.name, version=written.version, rows=written.rows,
                    seconds=round(seconds, 3), fingerprint=plan.fingerprint, checkpoint=location,
                    reason=plan.reason, detail={"parts": {**plan.parts, "compute_seconds": round(seconds, 3)},
                                                "from_run": ctx.run_id, "files": written.files,
                                                "bytes": written.bytes})
            done = f"{_rows(written.rows)}, version {written.version}"
        failpoints.hit(plan.name, "after_commit")
        ctx.say(f"{tag} done in {seconds:.1f}s: {done}")


def _execute_chunks(ctx: RunContext, spark, plan: StagePlan, frame: Callable[[str], Any]) -> None:
    """Run a chunked stage chunk by chunk, each committed and recorded on its own; a chunk the replayed
    run committed with the same fingerprint (and a whole checkpoint) is reused, unless the stage is forced."""
    values = plan.stage.chunk_values(ctx.params, frame)
    params = MappingProxyType(dict(ctx.params))
    for n, value in enumerate(values, 1):
        key = chunk_key(value)
        fingerprint = chunk_fingerprint(plan.chunk_base, key)
        old = reusable_chunk(plan, key, lambda c: checkpoint.verify(c["checkpoint"], c["version"], ctx.layout))
        if old is not None:
            ctx.log("chunk_reused", stage=plan.name, version=old["version"], rows=old["rows"], seconds=0.0,
                    fingerprint=fingerprint, checkpoint=old["checkpoint"],
                    detail={"key": key, "chunk": value, "from_run": old.get("from_run")})
            continue
        location = ctx.layout.checkpoint(ctx.job.name, ctx.params_key, f"{plan.name}@{digest(key, 12)}", ctx.run_id)
        t0 = time.monotonic()
        out = plan.stage.call(frame, params, spark, chunk=value)
        _check_dataframe(plan.name, out)
        written = checkpoint.write(out, location, {"run_id": ctx.run_id, "stage": plan.name, "chunk": key,
                                                   "fingerprint": fingerprint}, ctx.layout)
        ctx.log("chunk_succeeded", stage=plan.name, version=written.version, rows=written.rows,
                seconds=round(time.monotonic() - t0, 3), fingerprint=fingerprint, checkpoint=location,
                detail={"key": key, "chunk": value, "from_run": ctx.run_id})
        ctx.say(f"      chunk {n}/{len(values)} {value!r}: {_rows(written.rows)} in {time.monotonic() - t0:.1f}s")


def _publish(ctx: RunContext, spark, targets: list[SinkTarget], lineage: list[RunRecord]) -> None:
    """Write every sink at most once per logical run, after its recovery point is in the ledger.

    A sink on S3 is written under its table lease (:func:`lease.take_table`): its ``sink_planned``
    takes it, its ``sink_written`` or ``sink_failed`` releases it.
    """
    ctx.claim.check()  # a run that lost its lease writes no sink
    states = {st.table: {**sinks.table_state(spark, st.target).to_json(), "catalog": st.target.catalog}
              for st in targets}
    point, inherited = publication.recovery_point(lineage, [st.table for st in targets], states)
    ctx.log("recovery_point", detail={"tables": point, "inherited_from": inherited})
    prior_of = publication.priors(lineage)
    first_key = lineage[0].params_key if lineage else ctx.params_key
    runs = ctx.ledger.runs(ctx.job.name, params_key=first_key)  # every run with a sink transaction of this app
    log_stores = {key: spark.conf.get(key, None) for key in lease.LOG_STORE_KEYS}  # S3 tables: lease or not
    for st in targets:
        data = ctx.record.stages[st.sink.stage]
        prior = prior_of.get(canonical(st.table))
        app = prior.app if prior else publication.app_id(ctx.job.name, first_key, st.target)
        committed = sinks.table_state(spark, st.target, app).txn_version
        identity = publication.output_identity(data, st.predicate)
        decision = publication.decide(st.table, identity, prior, app, committed,
                                      publication.taken_versions(runs, app))
        ctx.claim.check()
        planned = {"table": st.table, "mode": st.sink.mode, "txn_app_id": decision.app,
                   "txn_version": decision.txn_version, "repeats": decision.repeats, "predicate": st.predicate,
                   **publication.planned_output(data)}
        if (st.sink.mode == "merge" or st.target.catalog) and session.is_connect(spark):
            # A MERGE (or a catalog table's creation) runs in a server session of its own: its id goes in
            # the ledger first, so a takeover or rollback can stop it there if this client dies mid-write.
            planned["merge_session"] = str(uuid.uuid4())
        if not st.target.catalog and lease.needs_table_lease(st.table, log_stores):
            lease.take_table(ctx.ledger, ctx.run_id, st.table, lambda at: ctx.log(
                "sink_planned", stage=st.sink.stage, only_at=at, detail=planned), on_wait=ctx.say)
        else:
            ctx.log("sink_planned", stage=st.sink.stage, detail=planned)
        failpoints.hit(st.sink.stage, "sink_before")
        t0 = time.monotonic()
        try:
            def read(session):
                return checkpoint.read_stage(session, data, ctx.layout)

            def renew_session() -> str:  # a retry's server session is in the ledger before it runs
                planned["merge_session"] = str(uuid.uuid4())
                ctx.log("sink_planned", stage=st.sink.stage, detail=planned)
                return planned["merge_session"]

            written = sinks.publish(spark, st, read, decision.app, decision.txn_version,
                                    {"run_id": ctx.run_id, "sink": st.table},
                                    merge_session=planned.get("merge_session"),
                                    on_conflict=lambda said: ctx.say(f"  sink {st.table}: {said}"),
                                    renew_session=renew_session)
        except Exception as exc:
            message = _first_line(exc)
            error = f"sink of stage {st.sink.stage!r} to {st.table} failed: {type(exc).__name__}: {message}"
            ctx.log("sink_failed", stage=st.sink.stage, error=error[:2000],
                    detail={"table": st.table, "traceback": traceback.format_exc()[-8000:]})
            ctx.say(f"  sink {st.table} FAILED: {type(exc).__name__}: {message}")
            raise StageError(f"sink of stage {st.sink.stage!r} failed", error, stage=st.sink.stage) from exc
        failpoints.hit(st.sink.stage, "sink_after_write")
        ctx.log("sink_written", stage=st.sink.stage, seconds=round(time.monotonic() - t0, 3), detail=written)
        failpoints.hit(st.sink.stage, "sink_after_commit")
        ctx.say(f"  sink {st.table} ({st.sink.mode}): " + (
            f"already committed as txn {decision.txn_version}, skipped (no duplicate)"
            if written["skipped_duplicate"]
            else f"version {_version(written['version_before'])} -> {written['version_after']}"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _version(version: int | None) -> str:
    return "(absent)" if version is None else str(version)


def _rows(rows: int | None) -> str:
    return f"{rows:,} rows" if rows is not None else "rows unknown"


def _check_dataframe(stage: str, value: Any) -> None:
    from pyspark.sql import DataFrame

    if not isinstance(value, DataFrame):
        raise TypeError(f"stage {stage!r} returned {type(value).__name__}; "
                        "expected a pyspark.sql.DataFrame")


def resume_job(job: Job, run_id: str, *, root: str | None = None, settings: Settings | None = None,
               params: Mapping[str, Any] | None = None, **options: Any) -> RunResult:
    """Replay run ``run_id`` as a new run (``origin_run_id``), reusing what is valid.

    ``params`` overrides some of the origin's parameters; stages that see them
    are recomputed, with the changed parameter as the reason. A run that a
    later run already recovered is not replayed again (:class:`RefusedError`).
    """
    settings = settings or load_settings(root=root, project=job.project)
    ledger = Ledger(Layout.at(settings.root, settings.storage_options), settings.dead_after_seconds)
    origin = ledger.run(run_id)
    return run_job(job, replay_params(origin, job.name, params), settings=settings, resume_from=origin, **options)
