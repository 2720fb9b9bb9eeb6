"""What a run or resume would do, said before it runs: ``spark-recover plan`` (and ``job.plan``).

The preview walks the runner's own first steps and rules, with nothing that
needs a JVM: the replay choice and refusals over the ledger
(:mod:`~spark_recover.history`, :mod:`~spark_recover.rerun`, the lease), source
pins read with delta-rs and pyarrow, fingerprints from the job's code and
parameters (:func:`~spark_recover.plan.plan_run`, the same function the run
calls), checkpoints verified with delta-rs, and each sink's publication
decided by :func:`~spark_recover.publication.decide` from what Delta holds.

What only a session knows is predicted, and said: the engine's versions are
the installed pyspark's and the Delta release of its line; the result
settings are those the session spark-recover builds gets (the conf file's
``[spark]`` over its defaults), and otherwise the values the replayed run
recorded (a Connect server's session is taken as recorded). A catalog table (source or sink) has
no location without a session: what depends on it is said to be unknown.

Exit code of ``spark-recover plan``: 0, or 3 when the real command would be
refused (:attr:`Preview.refused`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

from . import compat, history, lease, publication, retention, sinks
from .checkpoint import verify, verify_stage
from .config import Settings, load_settings
from .errors import RefusedError, SessionError, UsageError
from .fingerprint import pin_text
from .history import RunRecord
from .job import Job, Source, chunk_key
from .ledger import Ledger
from .plan import StagePlan, plan_run, reusable_chunk
from .rerun import check_params, new_run_id, params_key, plain_rerun_refusal, replay_params
from .session import RESULT_PREFIXES, RESULT_SETTINGS, local_confs
from .sources import kept_pin, listing_pin
from .storage import Layout, canonical

__all__ = ["Preview", "preview", "preview_text", "expected_session_parts"]

@dataclass
class Preview:
    """What ``run``/``resume`` would do: the replay, sources, stages, sinks, and any refusal.

    >>> p = job.plan({"day": "3"}, resume=True)   # doctest: +SKIP
    >>> [(s["stage"], s["action"]) for s in p.stages]   # doctest: +SKIP
    [('daily', 'reuse'), ('day_slice', 'recompute')]
    """

    job: str
    params: dict[str, Any]
    command: str  # what is previewed: "run", "run --resume", "resume RUN"
    choice: str  # the replay choice, in words
    origin_run_id: str | None = None
    logical_run_id: str | None = None
    done: bool = False  # --resume after a success: nothing would run
    refusals: list[dict[str, Any]] = field(default_factory=list)  # {"headline", "detail", "at"}
    sources: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    sinks: list[dict[str, Any]] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        """Whether the real command would be refused (exit 3)."""
        return bool(self.refusals)

    def to_json(self) -> dict[str, Any]:
        return {"job": self.job, "params": self.params, "command": self.command, "choice": self.choice,
                "origin_run_id": self.origin_run_id, "logical_run_id": self.logical_run_id, "done": self.done,
                "refused": self.refused, "refusals": self.refusals, "sources": self.sources, "stages": self.stages,
                "sinks": self.sinks, "assumptions": self.assumptions}

    def __repr__(self) -> str:
        return preview_text(self)


def expected_session_parts(settings: Settings, recorded: Mapping[str, Any] | None,
                           environ: Mapping[str, str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The session parts (:func:`spark_recover.session.fingerprint_parts`) a run would record, and what was assumed.

    A session spark-recover builds gets :func:`spark_recover.session.local_confs` (the conf file's
    ``[spark]`` over its defaults: the time zone is UTC unless set); a result setting neither sets
    keeps its default, taken as ``recorded`` (the replayed run's ``{"session": ..., "engine": ...}``).
    A Connect server's session is taken as recorded.

    >>> parts, assumed = expected_session_parts(Settings(spark={"spark.sql.ansi.enabled": "false"}),
    ...                                         {"session": {"spark.sql.ansi.enabled": "true"}}, {})
    >>> parts["session"]
    {'spark.sql.ansi.enabled': 'false', 'spark.sql.session.timeZone': 'UTC'}
    """
    recorded = recorded or {}
    environ = os.environ if environ is None else environ
    remote = settings.remote or environ.get("SPARK_REMOTE")
    if remote:
        return ({"session": dict(recorded.get("session") or {}), "engine": dict(recorded.get("engine") or {})},
                [f"the session of the Connect server {remote} (its settings, Spark and Delta versions) is taken "
                 "as the replayed run recorded it"])
    confs = local_confs(settings, [])
    spark_version = compat.pyspark_version()
    jars = ",".join(confs.get(k) or "" for k in ("spark.jars", "spark.jars.packages"))
    found = re.search(r"delta[-_](?:spark|core)[\w.]*?[-_:](\d+\.\d+\.\d+[\w.-]*?)(?:\.jar)?(?:,|$)", jars)
    try:
        delta = found.group(1) if found else compat.spark_line(spark_version).delta
    except SessionError:  # a line with no Delta release: the run would refuse to build a session
        delta = "unknown"
    session = {k: v for k, v in (recorded.get("session") or {}).items() if not k.startswith(RESULT_PREFIXES)}
    session.update({k: str(v) for k, v in confs.items() if k in RESULT_SETTINGS or k.startswith(RESULT_PREFIXES)})
    kept = sorted(k for k in session if k not in confs)
    assumed = [f"{len(kept)} result setting(s) at their defaults are taken as recorded (defaults come with the "
               "Spark version, which is compared on its own)"] if kept else []
    return {"session": dict(sorted(session.items())), "engine": {"Spark": spark_version, "Delta": delta}}, assumed


def _origin_of(ledger: Ledger, job: Job, params: dict[str, Any], resume: bool,
               from_run: str | None) -> tuple[RunRecord | None, dict[str, Any], str, str, bool]:
    """The run a command would replay, its parameters, the command, the choice in words, and ``done``."""
    if from_run is not None:
        origin = ledger.run(from_run)
        return (origin, replay_params(origin, job.name, params), f"resume {from_run}", f"replaying run {from_run}",
                False)
    if resume:
        origin, why = history.replay_choice(ledger.runs(job.name, params_key=params_key(params)), params_key(params))
        return origin, params, "run --resume", why.removeprefix("done: "), why.startswith("done:")
    return None, params, "run", "a new run", False


def _refusal(exc: RefusedError, at: str) -> dict[str, Any]:
    return {"at": at, "headline": exc.headline, "detail": exc.detail}


def preview(job: Job, params: Mapping[str, Any] | None = None, *, resume: bool = False, from_run: str | None = None,
            rerun: Collection[str] = (), refresh_sources: bool = False, new_run: bool = False,
            root: str | None = None, settings: Settings | None = None) -> Preview:
    """Say what ``run`` (``resume=True``: ``run --resume``; ``from_run=``: ``resume RUN``) would do. No JVM.

    Bad input raises as the command would (:class:`UsageError`, exit 2); what the
    command would refuse is in :attr:`Preview.refusals`.

    >>> preview(job, {"day": "3"}, resume=True, root="/tmp/r").refused   # doctest: +SKIP
    False
    """
    if resume and from_run:
        raise UsageError("--resume and --from together", "expected one of them: --resume replays the newest "
                         "failed run with these parameters, --from RUN replays that run")
    settings = settings or load_settings(root=root, project=job.project)
    layout = Layout.at(settings.root, settings.storage_options)
    ledger = Ledger(layout, dead_after=settings.dead_after_seconds)
    if not job.stages:
        raise UsageError(f"job {job.name!r} has no stages", "expected at least one @job.stage")
    job.downstream(list(rerun))  # validates the names
    given = check_params(params or {})
    try:
        origin, run_params, command, choice, done = _origin_of(ledger, job, given, resume, from_run)
    except RefusedError as exc:  # --resume while the newest run still runs
        out = Preview(job.name, given, "run --resume", "refused")
        out.refusals.append(_refusal(exc, "lease"))
        return out
    run_params = check_params(run_params)
    key = params_key(run_params)
    out = Preview(job.name, run_params, command, choice, origin_run_id=origin.run_id if origin else None, done=done)
    if done:
        return out
    lineage: list[RunRecord] = []
    if origin is not None:
        try:
            lineage = history.replayable_lineage(origin, ledger.runs(job.name, run_ids=[origin.run_id]))
        except RefusedError as exc:
            out.refusals.append(_refusal(exc, "replay"))
            return out
        out.logical_run_id = lineage[0].logical_run_id or lineage[0].run_id if lineage else origin.run_id
    elif not new_run:
        refusal = plain_rerun_refusal(ledger.runs(job.name, params_key=key), key, job.file)
        if refusal is not None:
            out.refusals.append(_refusal(refusal, "rerun"))
    targets = sinks.resolve_sinks(job, run_params, layout, settings.sink_root,
                                  created=publication.created_tables(lineage))
    if not (settings.remote or os.environ.get("SPARK_REMOTE")):  # the run would build its session: refused (2)
        publication.require_lasting_catalog([t.table for t in targets if t.target.catalog], settings.spark)
    refusal = lease.claim_refusal(ledger, job.name, key, new_run_id(), origin.run_id if origin else None)
    if refusal is not None:
        out.refusals.append(_refusal(refusal, "lease"))
    chain = history.origin_chain(origin, lineage)
    pins = _pins(out, job, run_params, layout, chain, refresh_sources)
    recorded = next((s.parts for r in chain for s in r.stages.values() if s.parts.get("engine")), None)
    session_parts, assumed = expected_session_parts(settings, recorded)
    out.assumptions += assumed
    plans = plan_run(job, run_params, pins, origin=origin, rerun=rerun, ancestors=chain[1:],
                     verify=lambda rec: verify_stage(rec, layout), session_parts=session_parts)
    out.stages = [_stage(p, run_params, layout) for p in plans]
    out.sinks = _sinks(out, ledger, job, key, targets, plans, lineage)
    return out


def _pins(out: Preview, job: Job, params: Mapping[str, Any], layout: Layout, chain: list[RunRecord],
          refresh: bool) -> dict[str, Any]:
    """The pins the run would take (:func:`spark_recover.sources.kept_pin`, else read now), said per source."""
    pins: dict[str, Any] = {}
    read = {i for s in job.stages for i in s.inputs}
    for src in job.sources:
        if src.name not in read:
            continue
        kept = kept_pin(src, params, chain, refresh)
        now = _pin_now(src, params, layout)
        entry: dict[str, Any] = {"source": src.name, "kind": "delta" if src.format == "delta" else "files",
                                 "location": src.location(params), "pin": kept or now, "kept": kept is not None}
        if kept is not None:
            entry["now"] = now
            entry["moved"] = now is not None and now.get("version") != kept.get("version")
        elif now is None:  # a catalog table: its version is read at run start
            out.assumptions.append(f"source {src.name!r} is catalog table {src.table}: its version is read at run "
                                   "start, taken here as unchanged")
            previous = next((r.sources[src.name] for r in chain if src.name in r.sources), None)
            entry["pin"] = previous
        pins[src.name] = entry["pin"]
        out.sources.append(entry)
    return {k: v for k, v in pins.items() if v is not None}


def _pin_now(src: Source, params: Mapping[str, Any], layout: Layout) -> dict[str, Any] | None:
    """The pin a run would take now, read without a JVM (``None``: a catalog table)."""
    location = src.location(params)
    if src.format != "delta":
        return listing_pin(src, location, layout)
    if src.table is not None:
        return None
    try:
        version = layout.delta(location).version()
    except Exception as exc:
        raise UsageError(f"source {src.name!r} is not a readable Delta table",
                         f"expected a Delta table at {location!r}: {str(exc).splitlines()[0]}",
                         source=src.name, location=location) from None
    return {"kind": "delta", "location": location, "version": int(version)}


def _stage(plan: StagePlan, params: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    o = plan.origin
    entry: dict[str, Any] = {"stage": plan.name, "action": "reuse" if plan.reuse else "recompute",
                             "reason": None if plan.reuse else plan.reason, "fingerprint": plan.fingerprint}
    if plan.reuse and o is not None:
        entry.update(version=o.version, rows=o.rows, from_run=o.from_run)
    spec = plan.stage.chunks
    if spec is not None:  # which chunks a replay reuses (a source column's chunks are listed at run start)
        listed = [chunk_key(v) for v in plan.stage.chunk_values(params)] if spec.of_params is not None else None
        if plan.reuse and o is not None:
            reuse = [c["chunk"] for c in o.output]
        else:
            recorded = o.chunks if o is not None else {}
            reuse = [c["chunk"] for k, c in recorded.items() if (listed is None or k in listed) and reusable_chunk(
                plan, k, lambda c: verify(c["checkpoint"], c["version"], layout))]
        entry["chunks"] = {"by": str(spec), "listed": None if listed is None else len(listed), "reuse": reuse}
    return entry


def _sinks(out: Preview, ledger: Ledger, job: Job, key: str, targets: list[sinks.SinkTarget],
           plans: list[StagePlan], lineage: list[RunRecord]) -> list[dict[str, Any]]:
    """Each sink's decision, by :func:`spark_recover.publication.decide` as the run takes it."""
    by_stage = {p.name: p for p in plans}
    prior_of = publication.priors(lineage)
    first_key = lineage[0].params_key if lineage else key
    runs = ledger.runs(job.name, params_key=first_key)
    try:
        sinks.txn_retention_warnings(None, [t for t in targets if not t.target.catalog], lineage,
                                     retention.RECOVERY_WINDOW_DAYS)
    except RefusedError as exc:
        out.refusals.append(_refusal(exc, "sink"))
    entries = []
    for st in targets:
        plan = by_stage[st.sink.stage]
        prior = prior_of.get(canonical(st.table))
        app = prior.app if prior else publication.app_id(job.name, first_key, st.target)
        entry: dict[str, Any] = {"table": st.table, "stage": st.sink.stage, "mode": st.sink.mode, "txn_app_id": app}
        committed = None if st.target.catalog else sinks.table_state(None, st.target, app).txn_version
        data = publication.output_identity(plan.origin, st.predicate) if plan.reuse else None
        try:
            decision = publication.decide(st.table, data, prior, app, committed,
                                          publication.taken_versions(runs, app))
        except RefusedError as exc:
            out.refusals.append(_refusal(exc, "sink"))
            entries.append({**entry, "action": "refuse", "why": f"{exc.headline}: {exc.detail}"})
            continue
        entry["txn_version"] = decision.txn_version
        if st.target.catalog and decision.repeats:
            entry.update(action="write or skip", why=f"repeats the write run {decision.repeats} planned as txn "
                         f"{decision.txn_version}; Delta skips it if it committed (a catalog table's transactions "
                         "are read at run start)")
        elif decision.repeats and committed is not None and committed >= decision.txn_version:
            entry.update(action="skip", why=f"already committed by run {decision.repeats} as txn "
                         f"{decision.txn_version} in this logical run (no duplicate)")
        elif decision.repeats:
            entry.update(action="write", why=f"run {decision.repeats} planned this write as txn "
                         f"{decision.txn_version}, which never committed")
        else:
            entry.update(action="write", why=f"new data, as txn {decision.txn_version}")
        entries.append(entry)
    return entries


def _chunks_text(chunks: Mapping[str, Any]) -> str:
    listed = f"{chunks['listed']} chunks" if chunks["listed"] is not None else f"chunks: {chunks['by']}"
    return f"{listed}, {len(chunks['reuse'])} reused"


def preview_text(p: Preview) -> str:
    """The plan as the terminal shows it."""
    from .display import params_text, table

    lines = [f"plan of `{p.command}` for job {p.job} (params: {params_text(p.params)}): {p.choice}"]
    if p.logical_run_id:
        lines.append(f"logical run {p.logical_run_id}")
    if p.done:
        lines.append("nothing would run")
        return "\n".join(lines)
    if p.sources:
        rows = []
        for s in p.sources:
            if s["kept"]:
                note = (f"kept from the replayed run; now at {pin_text(s.get('now'))} (moved: --refresh-sources "
                        "to read it)" if s.get("moved") else "kept from the replayed run, unchanged")
            else:
                note = "read now"
            rows.append([s["source"], s["kind"], pin_text(s["pin"]), note])
        lines += ["", "sources:", table(["source", "kind", "pin", "note"], rows)]
    if p.stages:
        rows = [[s["stage"], s["action"] + (f" ({_chunks_text(s['chunks'])})" if "chunks" in s else ""),
                 s.get("version"), s.get("from_run"), s["reason"] or ""] for s in p.stages]
        lines += ["", "stages:", table(["stage", "action", "version", "from run", "why recomputed"], rows)]
    if p.sinks:
        rows = [[s["table"], s["mode"], s["action"], s.get("txn_version"), s["why"]] for s in p.sinks]
        lines += ["", "sinks:", table(["table", "mode", "action", "txn", "why"], rows)]
    for a in p.assumptions:
        lines.append(f"assumed: {a}")
    lines.append("")
    if p.refused:
        lines += [f"REFUSED ({r['at']}): {r['headline']}" + (f"\n  {r['detail']}" if r["detail"] else "")
                  for r in p.refusals]
    else:
        reused = sum(1 for s in p.stages if s["action"] == "reuse")
        lines.append(f"would run: {reused} stage(s) reused, {len(p.stages) - reused} recomputed; "
                     f"{len(p.sinks)} sink(s): " + ", ".join(
                         f"{sum(1 for s in p.sinks if s['action'] == a)} {a}" for a in ("write", "skip")))
    return "\n".join(lines)
