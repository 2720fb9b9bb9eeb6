"""Recovery points, rollback and redo.

Delta Lake has no multi-table transactions, so a rollback of several tables
cannot be atomic. It is *journaled and idempotent* instead: the ledger records
the targets before the first RESTORE and each table's restore after it; a
table whose content already equals its recovery point is left alone. A crash at
any moment is finished by running the same rollback again.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping, Sequence

from . import checkpoint, failpoints
from .config import Settings, load_settings
from .errors import RecoveryPointError, RefusedError, RollbackError, UnknownRunError, UsageError
from .ledger import Ledger, RunRecord
from .sinks import TableState, session_confs, table_state
from .storage import Layout, Target, delete_tree

__all__ = ["rollback", "create_point", "list_points", "redo"]


def _ledger(settings: Settings) -> Ledger:
    return Ledger(Layout.at(settings.root, settings.storage_options), settings.dead_after_seconds)


def _spark(spark, settings: Settings):
    if spark is not None:
        return spark
    from .session import get_spark
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
    targets = [Target.parse(t) for t in tables]
    if any(t.catalog for t in targets):
        spark = _spark(spark, settings)
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


def _files(uri: str, version: int | None = None) -> set[tuple[str, int]]:
    import deltalake
    import pyarrow as pa

    adds = pa.table(deltalake.DeltaTable(uri, version=version).get_add_actions(flatten=True))
    return set(zip(adds.column("path").to_pylist(), adds.column("size_bytes").to_pylist()))


def _at_point(state: TableState, point: Mapping[str, Any]) -> bool:
    """Whether a table's content already equals the recovery point's."""
    if not point.get("exists"):
        return not state.exists
    return state.exists and _files(state.uri) == _files(state.uri, int(point["version"]))


def _tag(commit: Mapping[str, Any]) -> dict[str, Any]:
    """A commit's ``userMetadata`` as we write it (JSON), or ``{}``."""
    try:
        meta = json.loads(commit.get("userMetadata") or "{}")
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _restored_before_crash(state: TableState, journal_id: str) -> dict[str, Any] | None:
    """The RESTORE an earlier attempt of this rollback committed but did not journal (it crashed)."""
    import deltalake

    if not state.exists:
        return None
    last = deltalake.DeltaTable(state.uri).history(1)[0]
    if last.get("operation") != "RESTORE" or _tag(last).get("rollback_of") != journal_id:
        return None
    metrics = last.get("operationMetrics") or {}
    return {"restore_version": last["version"], "seconds": None, "journaled_after_crash": True,
            "files": sum(int(metrics.get(k) or 0) for k in ("numRestoredFiles", "numRemovedFiles"))}


def _foreign_commits(state: TableState, point: Mapping[str, Any], ours: set[str]) -> list[str]:
    """Commits after the point that neither this run's lineage nor a rollback made."""
    import deltalake

    if not state.exists:
        return []
    since = int(point["version"]) if point.get("exists") else -1
    out = []
    for commit in deltalake.DeltaTable(state.uri).history():
        if commit["version"] <= since:
            continue
        meta = _tag(commit)
        if meta.get("run_id") in ours or meta.get("rollback_of") in ours:
            continue
        out.append(f"version {commit['version']} ({commit.get('operation')} at "
                   f"{commit.get('timestamp')}, {commit.get('userMetadata') or 'no userMetadata'})")
    return out


def _lineage(ledger: Ledger, record: RunRecord) -> set[str]:
    ids, run = {record.run_id}, record
    while run.origin_run_id and run.origin_run_id not in ids:
        ids.add(run.origin_run_id)
        try:
            run = ledger.run(run.origin_run_id)
        except UnknownRunError:
            break
    return ids


def rollback(run_id: str | None = None, *, point: str | None = None, force: bool = False,
             root: str | None = None, settings: Settings | None = None, spark=None,
             echo: bool = True) -> dict[str, Any]:
    """Restore every table a run wrote (or a named point covers) to its recovery point.

    Returns the journal: tables restored, restore versions, files, seconds and
    the recovery rate D = tables restored / mean seconds per table.

    >>> spark_recover.rollback(result.run_id)   # doctest: +SKIP
    """
    say = (lambda line: print(line, flush=True)) if echo else (lambda line: None)
    if (run_id is None) == (point is None):
        raise UsageError("rollback needs a run id or --point NAME", "expected exactly one of them")
    settings = settings or load_settings(root=root)
    ledger = _ledger(settings)
    failpoints.check(None)
    if point is not None:
        points = ledger.points()
        if point not in points:
            raise RecoveryPointError(f"unknown recovery point {point!r}",
                                     f"known points: {sorted(points) or 'none'}", point=point)
        journal_id, targets, ours = f"point:{point}", points[point]["tables"], set()
        check_foreign, earlier = False, None
    else:
        record = ledger.run(run_id)
        if record.status == "running":
            raise RefusedError(f"run {run_id} is still running",
                               "roll it back once it has stopped (or its lease has expired)", run_id=run_id)
        if record.rolled_back:
            say(f"run {run_id} is already rolled back ({record.rollback.get('finished_at')}): nothing to do")
            return {**record.rollback, "noop": True}
        written = set(record.sinks)
        targets = {t: s for t, s in (record.recovery_point or {}).items() if t in written}
        journal_id, ours, check_foreign = run_id, _lineage(ledger, record), True
        # An unfinished journal: an earlier attempt crashed; what it restored stays restored.
        earlier = dict(record.rollback["restored"]) if record.rollback else None
    catalog = {t: bool(s.get("catalog")) for t, s in targets.items()}
    if any(catalog.values()):  # a catalog table's location needs Spark; paths are read by delta-rs
        spark = _spark(spark, settings)
    states = {t: table_state(spark, Target(t, catalog[t])) for t in targets}

    if check_foreign:
        foreign = {t: c for t in targets if (c := _foreign_commits(states[t], targets[t], ours))}
        if foreign and not force:
            listing = "; ".join(f"{t}: {', '.join(c)}" for t, c in foreign.items())
            raise RefusedError("other writers committed after the run",
                               f"rolling back would discard their commits: {listing}. "
                               "Pass --force to restore anyway", tables=sorted(foreign))
    for table, state in states.items():  # a point whose files are gone cannot be restored
        target_point = targets[table]
        if target_point.get("exists") and state.exists:
            problem = checkpoint.verify(state.uri, int(target_point["version"]), settings.storage_options)
            if problem:
                raise RecoveryPointError(
                    f"recovery point of {table} can no longer be restored",
                    f"version {target_point['version']}: {problem} (VACUUM removed it?); nothing was changed",
                    table=table)

    spark = _spark(spark, settings) if targets else spark  # checks passed: now the JVM is worth it
    ledger.append(journal_id, "", "rollback_started", detail={"targets": targets, "force": force})
    failpoints.hit("rollback", "before_restore")
    restored, started = [], time.monotonic()
    for table, target_point in targets.items():
        target = Target(table, catalog[table])
        state = table_state(spark, target)
        if _at_point(state, target_point):
            found = (_restored_before_crash(state, journal_id)
                     if earlier is not None and table not in earlier else None)
            say(f"  {table}: " + (f"restored as version {found['restore_version']} before a crash; journaled now"
                                  if found else "already at its recovery point"))
            if not found:
                continue
            done = found
        else:
            t0 = time.monotonic()
            metrics = _restore(spark, target, state, target_point, journal_id)
            failpoints.hit("rollback", "after_restore")
            after = table_state(spark, target)
            if not _at_point(after, target_point):
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
    restored = list((earlier or {}).values()) + restored  # the whole rollback, across attempts
    n = len(restored)
    timed = [e["seconds"] for e in restored if e.get("seconds") is not None]
    mean = sum(timed) / len(timed) if timed else 0.0
    summary = {"tables": n, "files": sum(e.get("files", 0) for e in restored), "seconds": round(total, 3),
               "recovery_rate": round(n / mean, 3) if mean else None}
    ledger.append(journal_id, "", "rollback_finished", detail={"metrics": summary})
    say(f"rolled back {journal_id}: {n} table(s) restored in {total:.2f}s")
    return {"id": journal_id, "restored": restored, "metrics": summary, "noop": False}


def _restore(spark, target: Target, state: TableState, point: Mapping[str, Any], journal_id: str) -> dict[str, Any]:
    tag = json.dumps({"rollback_of": journal_id})
    if not point.get("exists"):  # the run created the table: remove it
        if target.catalog:
            spark.sql(f"DROP TABLE IF EXISTS {target.location}")
        else:
            delete_tree(spark, target.location)
        return {"files": 0, "removed_table": True}
    with session_confs(spark, {"spark.databricks.delta.commitInfo.userMetadata": tag}):
        row = spark.sql(f"RESTORE TABLE {target.ident} TO VERSION AS OF {int(point['version'])}").first()
    data = row.asDict() if row is not None else {}
    return {"files": int(data.get("num_restored_files", 0) or 0) + int(data.get("num_removed_files", 0) or 0),
            "restore_metrics": {k: v for k, v in data.items()}}


def redo(job, run_id: str, *, from_stage: str | None = None, root: str | None = None,
         settings: Settings | None = None, spark=None, force: bool = False, echo: bool = True):
    """Roll back ``run_id``'s sinks, then replay it from ``from_stage`` (or its first invalid stage).

    >>> job.redo(result.run_id, from_stage="daily")   # doctest: +SKIP
    """
    from .runner import resume_job

    settings = settings or load_settings(root=root)
    if from_stage is not None:
        job.downstream([from_stage])  # validate before changing anything
    rollback(run_id, force=force, settings=settings, spark=spark, echo=echo)
    return resume_job(job, run_id, settings=settings, spark=spark, echo=echo,
                      rerun=[from_stage] if from_stage else ())


