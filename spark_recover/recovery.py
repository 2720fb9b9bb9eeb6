"""Recovery points, rollback and redo.

Delta Lake has no multi-table transactions, so a rollback of several tables
cannot be atomic. It is *journaled and idempotent* instead: the ledger records
the targets before the first RESTORE and each table's restore after it; a
table whose content already equals its recovery point is left alone. A crash at
any moment is finished by running the same rollback again: each RESTORE is
tagged with the rollback and its attempt, so one committed just before a crash
is recognised and journaled. A run's rollback covers its logical run.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Callable, Mapping, Sequence

from . import checkpoint, failpoints, lease, table_files
from .config import Settings, load_settings
from .errors import DamagedStateError, RecoverError, RecoveryPointError, RefusedError, RollbackError, UsageError
from .ledger import Ledger
from .history import RunRecord
from .fingerprint import digest
from .publication import recovery_point, require_lasting_catalog
from .sinks import TableState, commit_tag, isolated_session, table_state
from .session import dead_operations_text, stop_dead_operations
from .storage import Layout, Target, canonical

__all__ = ["rollback_plan", "rollback_plan_text", "rollback", "create_point", "list_points", "redo"]


def _ledger(settings: Settings) -> Ledger:
    return Ledger(Layout.at(settings.root, settings.storage_options), settings.dead_after_seconds)


def _spark(spark, settings: Settings, catalog_tables: Sequence[str] = ()):
    if spark is not None:
        return spark
    from .session import attached, get_spark
    if not attached() and not settings.remote:  # a session of our own: its catalog may not hold the tables
        require_lasting_catalog(catalog_tables, settings.spark)
    return get_spark(settings)


def create_point(name: str, tables: Sequence[str], *, root: str | None = None,
                 settings: Settings | None = None, spark=None) -> dict[str, Any]:
    """Record the current version of each table under ``name``.

    >>> create_point("before-backfill", ["warehouse/daily"], root="/tmp/recover")   # doctest: +SKIP
    """
    settings = settings or load_settings(root=root)
    ledger = _ledger(settings)
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UsageError(f"bad recovery point name {name!r}", "expected letters, digits, '-', '_', '.'")
    if name in ledger.points():
        raise UsageError(f"recovery point {name!r} exists", "choose another name; `point list` shows them")
    if not tables:
        raise UsageError("no tables given", "expected at least one --table")
    targets = [ledger.layout.target(t) for t in tables]
    if any(t.catalog for t in targets):
        spark = _spark(spark, settings, [t.location for t in targets if t.catalog])
    states = {}
    for target in targets:
        state = table_state(spark, target)
        if not state.exists:
            raise UsageError(f"unknown table {target.location!r}",
                             "expected an existing Delta table (a path with a _delta_log, or a catalog name)",
                             table=target.location)
        states[target.location] = {**state.to_json(), "catalog": target.catalog}
    ledger.append(f"point:{name}", "", "point_created", detail={"name": name, "tables": states})
    return {"name": name, "tables": states}


def list_points(*, root: str | None = None, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every named recovery point, oldest first (no JVM)."""
    settings = settings or load_settings(root=root)
    return sorted(_ledger(settings).points().values(), key=lambda p: p["created_at"])


def _files(target: Target, uri: str, version: int | None = None) -> set[tuple]:
    """A version's content: (path, size) of its files, and each file's deletion vector.

    A DELETE with deletion vectors keeps paths and sizes: only the vectors tell.
    """
    import pyarrow as pa

    table = target.delta(uri, version=version)
    adds = pa.table(table.get_add_actions(flatten=True))
    content: set[tuple] = set(zip(adds.column("path").to_pylist(), adds.column("size_bytes").to_pylist()))
    if "deletionVectors" in (table.protocol().reader_features or []):
        vectors = pa.RecordBatchReader.from_stream(table.deletion_vectors()).read_all()
        content |= {("deletion vector", path, digest(mask)) for path, mask in
                    zip(vectors.column("filepath").to_pylist(), vectors.column("selection_vector").to_pylist())}
    return content


def _at_point(target: Target, state: TableState, point: Mapping[str, Any]) -> bool:
    """Whether a table's content already equals the recovery point's."""
    if not point.get("exists"):
        return not state.exists
    return state.exists and _files(target, state.uri) == _files(target, state.uri, int(point["version"]))


def _restored_before_crash(target: Target, state: TableState, journal_id: str,
                           earlier: Mapping[str, Any]) -> dict[str, Any] | None:
    """The restore an earlier attempt of this rollback committed but did not journal (it crashed).

    A RESTORE carries the rollback's tags; a table the run created was removed
    if it existed when the earlier attempt started and is gone now.
    """
    if not state.exists:
        if target.location not in earlier.get("existed", []):
            return None
        return {"restore_version": None, "seconds": None, "journaled_after_crash": True, "files": 0,
                "removed_table": True}
    last = target.delta(state.uri).history(1)[0]
    tag = commit_tag(last)
    if last.get("operation") != "RESTORE" or tag.get("rollback_of") != journal_id \
            or tag.get("attempt") != earlier.get("attempt"):
        return None
    return {"restore_version": last["version"], "seconds": None, "journaled_after_crash": True,
            "files": _restored_files(last.get("operationMetrics") or {})}


def _foreign_commits(target: Target, state: TableState, point: Mapping[str, Any], ours: set[str]) -> list[str]:
    """Commits after the point that neither this run's lineage nor a rollback made."""
    if not state.exists:
        return []
    since = int(point["version"]) if point.get("exists") else -1
    out = []
    for commit in target.delta(state.uri).history():
        if commit["version"] <= since:
            continue
        meta = commit_tag(commit)
        if meta.get("run_id") in ours or meta.get("rollback_of") in ours:
            continue
        out.append(f"version {commit['version']} ({commit.get('operation')} at "
                   f"{commit.get('timestamp')}, {commit.get('userMetadata') or 'no userMetadata'})")
    return out


def _run_targets(ledger: Ledger, run_id: str) -> tuple[RunRecord, dict[str, Any], set[str]]:
    """A run's rollback covers its logical run: every table any of its runs planned to write."""
    record = ledger.run(run_id)
    lineage = ledger.logical_run(record)
    live = [r for r in lineage if r.status == "running"]
    if live:
        raise RefusedError(f"run {live[0].run_id} is still running",
                           "roll back once it has stopped (or its lease has expired)",
                           run_id=run_id, running=live[0].run_id)
    written = {canonical(t) for r in lineage for t in r.sinks}
    point, _ = recovery_point(lineage, [], {})
    # A table the logical run created did not exist when its first run started: a file older than
    # that is someone else's, whatever its name.
    absent_at = min((r.started_at for r in lineage if r.started_at), default=None)
    targets = {t: s if s.get("exists") or absent_at is None else {**s, "absent_at": absent_at.isoformat()}
               for t, s in point.items() if canonical(t) in written}
    return record, targets, {r.run_id for r in lineage}


def _stop_dead_operations(ledger: Ledger, record: RunRecord, spark, settings: Settings,
                          say: Callable[[str], None]) -> dict[str, Any]:
    """Stop what dead Connect runs of the logical run still run on their server, before anything is
    checked or restored: a write the server finished after the restore would put the table off its point."""
    stopped = {}
    for dead in (r for r in ledger.logical_run(record) if r.connect and r.died):
        stopped[dead.run_id] = stop_dead_operations(dead.connect, sessions=dead.merge_sessions, spark=spark,
                                                    remote=settings.remote)
        say(dead_operations_text(dead.run_id, stopped[dead.run_id]))
    return stopped


def rollback(run_id: str | None = None, *, point: str | None = None, force: bool = False,
             root: str | None = None, settings: Settings | None = None, spark=None,
             echo: bool = True, dry_run: bool = False) -> dict[str, Any]:
    """Restore every table a run wrote (or a named point covers) to its recovery point.

    A run's rollback covers its logical run (the run, what it replays and what
    replayed it) and holds the lease of its job and parameters (refused, exit 3,
    while a run of them is live). Returns the journal: tables restored, restore
    versions, files, seconds and the recovery rate D = tables restored / mean
    seconds per table. A rollback that crashed is finished by running it again
    (with ``--force`` kept if the first attempt had it). With ``dry_run`` it
    changes nothing and returns what it would do (:func:`rollback_plan`).

    >>> spark_recover.rollback(result.run_id)   # doctest: +SKIP
    """
    say = (lambda line: print(line, flush=True)) if echo else (lambda line: None)
    if (run_id is None) == (point is None):
        raise UsageError("rollback needs a run id or --point NAME", "expected exactly one of them")
    settings = settings or load_settings(root=root)
    ledger = _ledger(settings)
    failpoints.check(None)
    if dry_run:
        return rollback_plan(ledger, settings, spark, run_id=run_id, point=point, force=force)
    if point is not None:  # a named point covers any tables, of no job: it holds no lease
        return _roll_back(ledger, settings, spark, say, point=point, force=force)
    record = ledger.run(run_id)
    with lease.hold(ledger, record.job, record.params_key, run_id):
        return _roll_back(ledger, settings, spark, say, run_id=run_id, force=force)


def _point_tables(ledger: Ledger, point: str) -> dict[str, Any]:
    """The tables a named point covers, as they were then; :class:`RecoveryPointError` if it is unknown."""
    points = ledger.points()
    if point not in points:
        raise RecoveryPointError(f"unknown recovery point {point!r}",
                                 f"known points: {sorted(points) or 'none'}", point=point)
    return points[point]["tables"]


def rollback_plan(ledger: Ledger, settings: Settings, spark=None, *, run_id: str | None = None,
                  point: str | None = None, force: bool = False) -> dict[str, Any]:
    """What a rollback would do, changing nothing (no lease, no journal, no interrupt, no restore).

    Per table: its version now, the version it would go back to (or removal of
    a table the run created), the data files that would leave it, the other
    writers' commits it would discard; and ``refused``: each reason the real
    rollback would refuse (exit 3) for, empty when it would proceed.
    """
    refusals: list[RecoverError] = []
    if point is not None:
        journal_id, targets, ours = f"point:{point}", _point_tables(ledger, point), None
    else:
        record = ledger.run(run_id)
        journal_id = run_id
        held = lease.hold_refusal(ledger, record.job, record.params_key, run_id)
        try:
            record, targets, ours = _run_targets(ledger, run_id)
        except RefusedError as refused:  # a run of its logical run still runs
            return {"dry_run": True, "id": journal_id, "tables": [], "refused": [str(refused)]}
        if record.rolled_back:
            return {"dry_run": True, "id": journal_id, "tables": [], "refused": [], "noop": True}
        refusals += [held] if held else []
    catalog = {t: bool(s.get("catalog")) for t, s in targets.items()}
    if any(catalog.values()):
        spark = _spark(spark, settings, [t for t, c in catalog.items() if c])
    tables = {t: ledger.layout.target(t, catalog[t]) for t in targets}
    states = {t: table_state(spark, tables[t]) for t in targets}
    foreign = {t: _foreign_commits(tables[t], states[t], targets[t], ours) if ours is not None else [] for t in targets}
    if not force:
        refusals += [r for r in [_foreign_refusal(foreign)] if r]
    plans = []
    for table, target_point in targets.items():
        target, state = tables[table], states[table]
        refusal = _refusal(table, target, state, target_point)
        refusals += [refusal] if refusal else []
        at_point = refusal is None and _at_point(target, state, target_point)
        now = _files(target, state.uri) if state.exists else set()
        kept = _files(target, state.uri, int(target_point["version"])) \
            if target_point.get("exists") and state.exists and refusal is None else set()
        plans.append({"table": table, "version_now": state.version if state.exists else None,
                      "to_version": target_point.get("version") if target_point.get("exists") else None,
                      "action": "none" if at_point else "restore" if target_point.get("exists") else "remove",
                      "files_leaving": 0 if at_point else len({f[0] for f in now} - {f[0] for f in kept}),
                      "foreign_commits": foreign[table]})
    return {"dry_run": True, "id": journal_id, "tables": plans, "refused": [str(r) for r in refusals]}


def rollback_plan_text(plan: Mapping[str, Any]) -> str:
    """A rollback's dry run as the terminal shows it."""
    if plan.get("noop"):
        return f"dry run: {plan['id']} is already rolled back: nothing to do"
    lines = [f"dry run of the rollback of {plan['id']} (nothing changed):"]
    for t in plan["tables"]:
        what = {"none": "already at its recovery point",
                "restore": f"restore from version {t['version_now']} to version {t['to_version']}",
                "remove": "remove the table the run created"}[t["action"]]
        lines.append(f"  {t['table']}: {what}" + (f", {t['files_leaving']} data file(s) leave it"
                                                   if t["files_leaving"] else ""))
        lines += [f"    discards another writer's commit: {c}" for c in t["foreign_commits"]]
    lines += [f"refused: {r}" for r in plan["refused"]] or ["it would proceed"]
    return "\n".join(lines)


def _roll_back(ledger: Ledger, settings: Settings, spark, say: Callable[[str], None], *,
               run_id: str | None = None, point: str | None = None, force: bool) -> dict[str, Any]:
    layout = ledger.layout
    if point is not None:
        journal_id, targets, ours = f"point:{point}", _point_tables(ledger, point), None
        stopped = {}
        journal = ledger.journal(journal_id)
    else:
        record, targets, ours = _run_targets(ledger, run_id)
        if record.rolled_back:
            say(f"run {run_id} is already rolled back: nothing to do")
            return {**(record.rollback or {}), "noop": True, "undone_by": record.undone_by}
        journal_id, journal = run_id, record.rollback
        stopped = _stop_dead_operations(ledger, record, spark, settings, say)
    # An unfinished journal: an earlier attempt crashed. What it restored stays
    # restored, and it is finished as it was started (same attempt tag, same --force).
    earlier = journal if journal and not journal.get("finished") else None
    force = force or bool(earlier and earlier.get("force"))
    attempt = (earlier or {}).get("attempt") or secrets.token_hex(4)
    catalog = {t: bool(s.get("catalog")) for t, s in targets.items()}
    if any(catalog.values()):  # a catalog table's location needs Spark; paths are read by delta-rs
        spark = _spark(spark, settings, [t for t, c in catalog.items() if c])
    tables = {t: layout.target(t, catalog[t]) for t in targets}
    states = {t: table_state(spark, tables[t]) for t in targets}

    if ours is not None and not force:
        refusal = _foreign_refusal({t: _foreign_commits(tables[t], states[t], targets[t], ours) for t in targets})
        if refusal is not None:
            raise refusal
    for table in targets:
        refusal = _refusal(table, tables[table], states[table], targets[table])
        if refusal is not None:
            raise refusal

    ledger.append(journal_id, "", "rollback_started", detail={
        "targets": targets, "force": force, "attempt": attempt, "existed": sorted(t for t in targets if states[t].exists),
        "dead_operations": stopped})
    failpoints.hit("rollback", "before_restore")
    restored, started = [], time.monotonic()
    done_before = dict(earlier["restored"]) if earlier else {}
    for table, target_point in targets.items():
        target = tables[table]
        state = table_state(spark, target)
        if _at_point(target, state, target_point):
            found = (_restored_before_crash(target, state, journal_id, earlier)
                     if earlier is not None and table not in done_before else None)
            say(f"  {table}: " + ("restored before a crash; journaled now" if found
                                  else "already at its recovery point"))
            if not found:
                continue
            done = found
        else:
            if target.catalog:  # a catalog table's RESTORE or DROP is Spark's work
                spark = _spark(spark, settings)
            t0 = time.monotonic()
            metrics = _restore_checked(lambda: _spark(spark, settings), target, target_point,
                                       {"rollback_of": journal_id, "attempt": attempt},
                                       checked=states[table].version, ours=ours, force=force)
            failpoints.hit("rollback", "after_restore")
            after = table_state(spark, target)
            if not _at_point(target, after, target_point):
                raise RollbackError(f"restore of {table} did not verify",
                                    f"expected the content of version {target_point.get('version')}, "
                                    f"found version {after.version} with other files", table=table)
            done = {"restore_version": after.version, "seconds": round(time.monotonic() - t0, 3), **metrics}
            say(f"  {table}: restored to version "
                f"{target_point.get('version') if target_point.get('exists') else '(absent)'} in {done['seconds']:.2f}s")
        entry = {"table": table, "to_version": target_point.get("version"), **done}
        ledger.append(journal_id, "", "table_restored", detail=entry)
        restored.append(entry)
    total = time.monotonic() - started
    restored = [e for t, e in done_before.items() if t not in {r["table"] for r in restored}] + restored
    n = len(restored)
    timed = [e["seconds"] for e in restored if e.get("seconds") is not None]
    mean = sum(timed) / len(timed) if timed else 0.0
    summary = {"tables": n, "files": sum(e.get("files", 0) for e in restored), "seconds": round(total, 3),
               "recovery_rate": round(n / mean, 3) if mean else None}
    ledger.append(journal_id, "", "rollback_finished", detail={"metrics": summary})
    say(f"rolled back {journal_id}: {n} table(s) restored in {total:.2f}s")
    return {"id": journal_id, "restored": restored, "metrics": summary, "noop": False}


def _refusal(table: str, target: Target, state: TableState, point: Mapping[str, Any]) -> RecoverError | None:
    """Why one table cannot be put back to its point, or ``None``.

    A point whose files are gone cannot be restored (VACUUM); a table the run
    created is removed only if its folder holds nothing but the table's files.
    """
    if point.get("exists") and state.exists:
        problem = checkpoint.verify(state.uri, int(point["version"]), target)
        if problem:
            return DamagedStateError(f"recovery point of {table} can no longer be restored",
                                     f"version {point['version']}: {problem} (VACUUM removed it?); nothing was changed",
                                     table=table)
    if not point.get("exists") and state.exists and not target.catalog:
        return _strangers_refusal(target, point)
    return None


def _foreign_refusal(foreign: Mapping[str, list[str]]) -> RefusedError | None:
    """The refusal (exit 3) naming other writers' commits after the run, or ``None``."""
    foreign = {t: c for t, c in foreign.items() if c}
    if not foreign:
        return None
    listing = "; ".join(f"{t}: {', '.join(c)}" for t, c in foreign.items())
    return RefusedError("other writers committed after the run",
                        f"rolling back would discard their commits: {listing}. "
                        "Pass --force to restore anyway", tables=sorted(foreign))


def _absent_at(point: Mapping[str, Any]) -> float | None:
    """When a created table was known not to exist yet (its logical run's start), in epoch seconds."""
    import datetime as dt

    text = point.get("absent_at")
    return dt.datetime.fromisoformat(text).timestamp() if text else None


def _strangers_refusal(target: Target, point: Mapping[str, Any]) -> RefusedError | None:
    """A table the run created is removed: only if its folder holds nothing but the table's files.

    The table's files are those of :mod:`spark_recover.table_files`: its log, what the log ever
    referenced, and what its writers left uncommitted since the logical run started.
    """
    strangers = table_files.unlogged_files(target, target.location, since=_absent_at(point))
    if strangers:
        return RefusedError(f"{target.location} holds files that are not the Delta table's",
                            f"rolling back would remove the table the run created, and its log never referenced "
                            f"{len(strangers)} file{'s' if len(strangers) > 1 else ''} there "
                            f"({', '.join(strangers[:5])}{', ...' if len(strangers) > 5 else ''}); nothing was "
                            "changed. Move those files away, then run the rollback again",
                            table=target.location, files=strangers[:20], count=len(strangers))
    return None


class _Moved(Exception):
    """The table is no longer at the version the rollback checked: a commit came in between."""


_RESTORE_ATTEMPTS = 5


def _restore_checked(spark: Callable[[], Any], target: Target, point: Mapping[str, Any], tag: Mapping[str, str],
                     *, checked: int | None, ours: set[str] | None, force: bool) -> dict[str, Any]:
    """Restore one table only from the version that was checked; a commit in between is checked again.

    A foreign commit found then refuses the rollback (exit 3) unless ``force``;
    commits of the run's own lineage, and any commit under a named point's
    rollback (``ours`` is ``None``: it discards what came after by definition),
    are restored over from the new version.
    """
    for _ in range(_RESTORE_ATTEMPTS):
        try:
            return _restore(spark, target, point, tag, checked, force)
        except _Moved:
            now = table_state(None if not target.catalog else spark(), target)
            refusal = _foreign_refusal({target.location: _foreign_commits(target, now, point, ours)}) \
                if ours is not None and not force else None
            if refusal is not None:
                raise refusal
            checked = now.version
    raise RefusedError(f"{target.location} kept changing during the rollback",
                       f"{_RESTORE_ATTEMPTS} restores each found a newer commit than the one checked; "
                       "run the rollback again once its writers have stopped", table=target.location)


def _restore(spark: Callable[[], Any], target: Target, point: Mapping[str, Any],
             tag: Mapping[str, str], checked: int | None, force: bool) -> dict[str, Any]:
    """Put one table back to its point, from version ``checked`` only (:class:`_Moved` otherwise).

    ``spark()`` gives a session, started only if needed. A path table is
    restored by delta-rs: a metadata-only commit (the point's files added back,
    the later ones removed), milliseconds against seconds and a JVM for Spark's
    RESTORE; the commit reads as a ``RESTORE`` with our ``userMetadata`` to
    both. It is made on the table loaded at ``checked`` with no commit retries,
    so it can only be version ``checked + 1``: a commit in between makes it
    fail. A protocol delta-rs cannot write, and catalog tables, go to Spark's
    RESTORE, which cannot be pinned to a version: the version is checked just
    before it, and the commits are checked again right after (unless ``force``).
    """
    import deltalake

    text = json.dumps(dict(tag))
    if not point.get("exists"):  # the run created the table: remove it
        if target.catalog:
            spark().sql(f"DROP TABLE IF EXISTS {target.location}")
            return {"files": 0, "removed_table": True}
        since = _absent_at(point)
        refusal = _strangers_refusal(target, point)
        if refusal is not None:
            raise refusal
        if _version(target) != checked:
            raise _Moved()
        return {"files": table_files.remove_table(target, target.location, since=since), "removed_table": True}
    if not target.catalog:
        try:
            metrics = target.delta(target.location, version=checked).restore(
                int(point["version"]), commit_properties=deltalake.CommitProperties(
                    custom_metadata={"userMetadata": text}, max_commit_retries=0))
            return {"files": _restored_files(metrics), "restore_metrics": dict(metrics), "engine": "delta-rs"}
        except deltalake.exceptions.CommitFailedError:
            raise _Moved() from None
        except deltalake.exceptions.DeltaError:
            pass  # a table feature delta-rs cannot write: Spark's RESTORE below
    session = spark()
    if table_state(session, target).version != checked:
        raise _Moved()
    with isolated_session(session, {"spark.databricks.delta.commitInfo.userMetadata": text}) as isolated:
        row = isolated.sql(f"RESTORE TABLE {target.ident} TO VERSION AS OF {int(point['version'])}").first()
    if not force:
        _refuse_landed_during(session, target, checked, text)
    data = row.asDict() if row is not None else {}
    return {"files": int(data.get("num_restored_files", 0) or 0) + int(data.get("num_removed_files", 0) or 0),
            "restore_metrics": {k: v for k, v in data.items()}, "engine": "spark"}


def _version(target: Target) -> int | None:
    return target.delta(target.location).version() if target.is_delta(target.location) else None


def _refuse_landed_during(session, target: Target, checked: int, text: str) -> None:
    """Refuse (exit 3) when commits landed while Spark's RESTORE ran: it may have restored them away."""
    state = table_state(session, target)
    landed = [c for c in target.delta(state.uri).history() if c["version"] > checked
              and c.get("userMetadata") != text]
    if landed:
        mine = max(c["version"] for c in target.delta(state.uri).history() if c.get("userMetadata") == text)
        raise RefusedError(
            f"other writers committed to {target.location} while it was restored",
            "Spark's RESTORE cannot be made conditional on a version, and versions "
            f"{', '.join(str(c['version']) for c in landed)} landed during it, so it may have undone them. "
            f"Bring them back with `RESTORE TABLE {target.ident} TO VERSION AS OF {mine - 1}`, then run the "
            "rollback again (with --force to discard them)", table=target.location,
            versions=[c["version"] for c in landed])


def _restored_files(metrics: Mapping[str, Any]) -> int:
    """Files a RESTORE put back or took away, from Spark's or delta-rs's metric names."""
    return sum(int(metrics.get(k) or 0) for k in ("numRestoredFiles", "numRemovedFiles",
                                                   "numRestoredFile", "numRemovedFile"))


def redo(job, run_id: str, *, from_stage: str | None = None, root: str | None = None,
         settings: Settings | None = None, spark=None, force: bool = False, echo: bool = True):
    """Roll back ``run_id``'s sinks, then replay it from ``from_stage`` (or its first invalid stage).

    Both happen under one hold of the job-and-parameters lease: no other run of
    them can start between the rollback and the replay.

    >>> job.redo(result.run_id, from_stage="daily")   # doctest: +SKIP
    """
    from .runner import resume_job

    settings = settings or load_settings(root=root, project=job.project)
    if from_stage is not None:
        job.downstream([from_stage])  # validate before changing anything
    ledger = _ledger(settings)
    record = ledger.run(run_id)
    with lease.hold(ledger, record.job, record.params_key, run_id):
        rollback(run_id, force=force, settings=settings, spark=spark, echo=echo)
        return resume_job(job, run_id, settings=settings, spark=spark, echo=echo,
                          rerun=[from_stage] if from_stage else ())
