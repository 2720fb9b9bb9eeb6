"""Executing a run: pin sources, plan, compute or reuse each stage, record it all.

Every step that matters is an event in the ledger before the next begins, so a
crash at any instant leaves a record a resume can build on:

``run_started`` → per stage (``stage_started`` → checkpoint commit →
``stage_succeeded``) or ``stage_reused`` → ``run_finished``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import time
import traceback
from types import MappingProxyType
from typing import Any, Callable, Collection, Mapping

from . import __version__, checkpoint, failpoints, sinks, sources
from .config import Settings, load_settings
from .errors import RefusedError, StageError, UsageError
from .fingerprint import digest
from .job import Job
from .ledger import Heartbeat, Ledger, RunRecord, apply_event, this_process
from .plan import StagePlan, plan_run
from .report import params_text, run_html, run_text
from .storage import Layout

__all__ = ["RunResult", "run_job", "resume_job", "resume_command", "latest_failed_run"]


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
        return checkpoint.read(self._spark, rec.checkpoint, rec.version)

    def to_json(self) -> dict[str, Any]:
        return self.record.to_json()

    def __repr__(self) -> str:
        return run_text(self.record)

    def _repr_html_(self) -> str:
        return run_html(self.record)


def _echo_to(enabled: bool) -> Callable[[str], None]:
    return (lambda line: print(line, flush=True)) if enabled else (lambda line: None)


def _check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(params)
    bad = [k for k in out if not isinstance(k, str) or not k]
    if bad:
        raise UsageError("bad parameter name", f"expected non-empty strings, found {bad!r}")
    try:
        json.dumps(out, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise UsageError("parameters must be JSON values",
                         f"expected strings, numbers, booleans, lists or dicts: {exc}") from None
    return out


def resume_command(run_id: str, settings: Settings) -> str:
    """The exact command that resumes ``run_id``."""
    parts = ["spark-recover", "resume", run_id, "--root", settings.root]
    if settings.conf_file:
        parts += ["--conf", settings.conf_file]
    return " ".join(parts)


def latest_failed_run(ledger: Ledger, job: Job, params: Mapping[str, Any]) -> RunRecord | None:
    """The newest failed (or dead) run of ``job`` with exactly these parameters."""
    key = digest(params, 16)
    failed = [r for r in ledger.runs(job.name) if r.params_key == key and r.status == "failed"]
    return failed[-1] if failed else None


def _live_holders(ledger: Ledger, job: Job, params_key: str, me: str | None = None) -> list[RunRecord]:
    return [r for r in ledger.runs(job.name)
            if r.params_key == params_key and r.run_id != me and r.status == "running"]


def _refuse(holders: list[RunRecord]) -> RefusedError:
    h = holders[0]
    return RefusedError(f"run {h.run_id} of job {h.job!r} with these parameters is still running",
                        f"one run per job and parameters at a time; the holder is pid "
                        f"{h.process.get('pid')} on {h.process.get('host')}, last seen "
                        f"{h.last_seen}", holder=h.run_id)


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


def run_job(job: Job, params: Mapping[str, Any], *, root: str | None = None,
            settings: Settings | None = None, spark=None, resume_from: RunRecord | None = None,
            rerun: Collection[str] = (), refresh_sources: bool = False,
            echo: bool = True) -> RunResult:
    """Run ``job`` (or replay ``resume_from``) and return its :class:`RunResult`.

    Errors before the run starts (bad parameters, a missing source, a held
    lease) raise and write nothing. A stage that raises ends the run as
    ``failed``; the result carries the error and the ledger the resume point.
    """
    say = _echo_to(echo)
    settings = settings or load_settings(root=root)
    layout = Layout.at(settings.root, settings.storage_options)
    ledger = Ledger(layout, dead_after=settings.dead_after_seconds)
    params = _check_params(params)
    params_key = digest(params, 16)
    stage_names = [s.name for s in job.stages]
    if not stage_names:
        raise UsageError(f"job {job.name!r} has no stages", "expected at least one @job.stage")
    failpoints.check(stage_names)
    job.downstream(list(rerun))  # validates the names
    holders = _live_holders(ledger, job, params_key)
    if holders:
        raise _refuse(holders)

    if spark is None:
        from .session import get_spark
        spark = get_spark(settings)
    started = time.monotonic()  # the run's clock excludes starting the JVM
    pins: dict[str, Any] = {}
    for src in job.sources:
        if src.name not in {i for s in job.stages for i in s.inputs}:
            continue
        old = resume_from.sources.get(src.name) if resume_from else None
        # A replay reads Delta sources at the versions its origin pinned (same input);
        # files-based sources are re-listed so a change is seen, and a source whose
        # location changed with a parameter override is pinned afresh.
        keep = (old is not None and old.get("kind") == "delta" and not refresh_sources
                and old.get("location") == src.location(params))
        pins[src.name] = old if keep else sources.pin(spark, src, params)
    plans = plan_run(job, params, pins, origin=resume_from, rerun=rerun,
                     verify=lambda rec: checkpoint.verify(rec.checkpoint, rec.version, layout.storage_options))

    run_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    record = RunRecord(run_id, job.name, dead_after=settings.dead_after_seconds)

    def log(event: str, **values: Any) -> None:
        apply_event(record, ledger.append(run_id, job.name, event, **values))

    log("run_started", detail={
        "params": params, "params_key": params_key, "job_file": job.file, "stages": stage_names,
        "origin_run_id": resume_from.run_id if resume_from else None, "rerun": list(rerun),
        "sources": pins, "process": this_process(), "library": __version__})
    holders = _live_holders(ledger, job, params_key, me=run_id)
    if holders:  # lost a race to start: step back, leaving the other run alone
        log("run_finished", status="refused", error=f"run {holders[0].run_id} holds the lease")
        raise _refuse(holders)
    heartbeat = Heartbeat(ledger, run_id, job.name, settings.heartbeat_seconds)
    heartbeat.start()
    origin_text = f", resuming {resume_from.run_id}" if resume_from else ""
    say(f"run {run_id} of job {job.name} started (params: {params_text(params)}{origin_text})")
    try:
        _execute(job, spark, layout, plans, pins, params, params_key, run_id, record, log, say)
        if job.sinks:
            _publish(job, spark, ledger, params, params_key, run_id, record, resume_from, log, say)
        status, error = "succeeded", None
    except StageError as exc:
        status, error = "failed", exc.detail
    except BaseException as exc:  # interrupted (Ctrl-C in a notebook), or the ledger failed
        heartbeat.stop()
        with contextlib.suppress(Exception):  # record it if we still can: the run is not running
            log("run_finished", status="failed", seconds=round(time.monotonic() - started, 3),
                error=f"interrupted: {type(exc).__name__}: {exc}"[:2000])
        raise
    finally:
        heartbeat.stop()
    total = time.monotonic() - started
    metrics: dict[str, Any] = {}
    if resume_from is not None:
        clean, basis = _clean_seconds(ledger.runs(job.name), record)
        metrics = {"recovery_seconds": round(total, 3), "clean_seconds": clean, "clean_seconds_basis": basis,
                   "recovery_ratio": round(total / clean, 4) if clean else None,
                   "reused_stages": sum(1 for p in plans if p.reuse),
                   "recomputed_stages": sum(1 for p in plans if not p.reuse)}
    log("run_finished", status=status, seconds=round(total, 3), error=error, detail={"metrics": metrics})
    ledger.compact()
    if status == "succeeded":
        ratio = f", R = {metrics['recovery_ratio']}" if metrics.get("recovery_ratio") else ""
        say(f"run {run_id} succeeded in {total:.1f}s{ratio}")
    else:
        say(f"run {run_id} failed: {error}")
        say(f"resume with: {resume_command(run_id, settings)}")
    return RunResult(record, spark, layout)


def _execute(job: Job, spark, layout: Layout, plans: list[StagePlan], pins: Mapping[str, Any],
             params: Mapping[str, Any], params_key: str, run_id: str, record: RunRecord,
             log: Callable[..., None], say: Callable[[str], None]) -> None:
    frames: dict[str, Any] = {}

    def frame(name: str):
        if name not in frames:
            if name in pins:
                frames[name] = sources.read(spark, next(s for s in job.sources if s.name == name), pins[name])
            else:
                rec = record.stages[name]
                frames[name] = checkpoint.read(spark, rec.checkpoint, rec.version)
        return frames[name]

    width = max(len(p.name) for p in plans)
    for n, plan in enumerate(plans, 1):
        tag = f"  [{n}/{len(plans)}] {plan.name:<{width}}"
        if plan.reuse:
            o = plan.origin
            assert o is not None
            log("stage_reused", stage=plan.name, version=o.version, rows=o.rows, seconds=0.0,
                fingerprint=o.fingerprint, checkpoint=o.checkpoint, reason="reused",
                detail={"parts": {**plan.parts, "compute_seconds": o.parts.get("compute_seconds")},
                        "from_run": o.from_run})
            say(f"{tag} reused (version {o.version}, {_rows(o.rows)} from run {o.from_run})")
            continue
        say(f"{tag} started" + (f": recomputed because {plan.reason}" if plan.reason else ""))
        log("stage_started", stage=plan.name, reason=plan.reason, fingerprint=plan.fingerprint,
            detail={"parts": plan.parts})
        failpoints.hit(plan.name, "before")
        t0 = time.monotonic()
        try:
            kwargs = {i: frame(i) for i in plan.stage.inputs}
            if plan.stage.wants_params:
                kwargs["params"] = MappingProxyType(dict(params))
            if plan.stage.wants_spark:
                kwargs["spark"] = spark
            out = plan.stage.func(**kwargs)
            _check_dataframe(plan.name, out)
            written = checkpoint.write(out, layout.checkpoint(job.name, params_key, plan.name),
                                       {"run_id": run_id, "stage": plan.name,
                                        "fingerprint": plan.fingerprint}, layout.storage_options)
        except Exception as exc:
            seconds = time.monotonic() - t0
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            error = f"stage {plan.name!r} failed: {type(exc).__name__}: {message}"[:2000]
            log("stage_failed", stage=plan.name, seconds=round(seconds, 3), error=error,
                reason=plan.reason, detail={"traceback": traceback.format_exc()[-8000:]})
            say(f"{tag} FAILED after {seconds:.1f}s: {type(exc).__name__}: {message}")
            raise StageError(f"stage {plan.name!r} failed", error, stage=plan.name) from exc
        failpoints.hit(plan.name, "after_write")
        seconds = time.monotonic() - t0
        location = layout.checkpoint(job.name, params_key, plan.name)
        log("stage_succeeded", stage=plan.name, version=written.version, rows=written.rows,
            seconds=round(seconds, 3), fingerprint=plan.fingerprint, checkpoint=location,
            reason=plan.reason, detail={"parts": {**plan.parts, "compute_seconds": round(seconds, 3)},
                                        "from_run": run_id, "files": written.files,
                                        "bytes": written.bytes})
        failpoints.hit(plan.name, "after_commit")
        say(f"{tag} done in {seconds:.1f}s: {_rows(written.rows)}, version {written.version}")


def _publish(job: Job, spark, ledger: Ledger, params: Mapping[str, Any], params_key: str, run_id: str,
             record: RunRecord, origin: RunRecord | None, log: Callable[..., None],
             say: Callable[[str], None]) -> None:
    """Write every sink exactly once, after its recovery point is in the ledger."""
    # A replay continues its origin's publication: same recovery point, and the same
    # transaction version for a sink whose data is unchanged (so Delta skips a repeat).
    carry = origin is not None and origin.recovery_point is not None and not origin.rolled_back
    point = origin.recovery_point if carry else {
        s.target(params).location: sinks.table_state(spark, s.target(params)).to_json() for s in job.sinks}
    log("recovery_point", detail={"tables": point, "inherited_from": origin.run_id if carry else None})
    history = [r for r in ledger.runs(job.name) if r.params_key == params_key]
    for sink in job.sinks:
        target = sink.target(params)
        app = sinks.app_id(job.name, params_key, target)
        data = record.stages[sink.stage]
        prior = origin.sinks.get(target.location) if carry else None
        if prior and (prior.get("checkpoint"), prior.get("checkpoint_version")) == (data.checkpoint, data.version):
            txn_version = int(prior["txn_version"])
        else:
            used = [int(v["txn_version"]) for r in history for v in r.sinks.values() if v.get("txn_app_id") == app]
            current = sinks.table_state(spark, target, app).txn_version
            txn_version = max(used + [current if current is not None else -1]) + 1
        log("sink_planned", stage=sink.stage, detail={
            "table": target.location, "mode": sink.mode, "txn_app_id": app, "txn_version": txn_version,
            "checkpoint": data.checkpoint, "checkpoint_version": data.version})
        failpoints.hit(sink.stage, "sink_before")
        t0 = time.monotonic()
        try:
            written = sinks.publish(spark, sink, checkpoint.read(spark, data.checkpoint, data.version),
                                    params, app, txn_version, {"run_id": run_id, "sink": target.location})
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            error = f"sink of stage {sink.stage!r} to {target.location} failed: {type(exc).__name__}: {message}"
            log("sink_failed", stage=sink.stage, error=error[:2000],
                detail={"table": target.location, "traceback": traceback.format_exc()[-8000:]})
            say(f"  sink {target.location} FAILED: {type(exc).__name__}: {message}")
            raise StageError(f"sink of stage {sink.stage!r} failed", error, stage=sink.stage) from exc
        failpoints.hit(sink.stage, "sink_after_write")
        log("sink_written", stage=sink.stage, seconds=round(time.monotonic() - t0, 3), detail=written)
        failpoints.hit(sink.stage, "sink_after_commit")
        say(f"  sink {target.location} ({sink.mode}): " + (
            f"already committed as txn {txn_version}, skipped (no duplicate)" if written["skipped_duplicate"]
            else f"version {_version(written['version_before'])} -> {written['version_after']}"))


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
    are recomputed, with the changed parameter as the reason.
    """
    settings = settings or load_settings(root=root)
    ledger = Ledger(Layout.at(settings.root, settings.storage_options), settings.dead_after_seconds)
    origin = ledger.run(run_id)
    if origin.job != job.name:
        raise UsageError(f"run {run_id} is of job {origin.job!r}, not {job.name!r}",
                         f"resume it with the job file that defines {origin.job!r}"
                         + (f" ({origin.job_file})" if origin.job_file else ""), run_id=run_id)
    if origin.status == "running":
        raise RefusedError(f"run {run_id} is still running",
                           f"its driver (pid {origin.process.get('pid')} on {origin.process.get('host')}) "
                           f"was last seen {origin.last_seen}; resume it once it has stopped",
                           run_id=run_id)
    merged = {**origin.params, **(params or {})}
    return run_job(job, merged, settings=settings, resume_from=origin, **options)
