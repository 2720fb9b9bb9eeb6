"""Garbage collection of old checkpoints, without ever eating a recovery.

A checkpoint version is *needed* while a run that references it may still be
resumed or redone: every failed or running run, every run younger than the
recovery window (``keep_days``), and the newest successful run of each job and
parameters. ``gc`` deletes checkpoint tables no needed run references, and
VACUUMs the others with a retention long enough to keep their oldest needed
version readable. Sink tables and named recovery points are never vacuumed;
``gc`` warns when a table's Delta retention is shorter than the window.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from typing import Any

from .config import Settings, load_settings
from .ledger import Ledger, RunRecord
from .sinks import session_confs
from .storage import Layout, delete_tree, filesystem, native_uri, spark_uri

__all__ = ["gc"]

_DEFAULT_FILE_RETENTION_DAYS = 7.0  # Delta's delta.deletedFileRetentionDuration default


def _needed_runs(runs: list[RunRecord], keep_days: float, now: dt.datetime) -> list[RunRecord]:
    horizon = now - dt.timedelta(days=keep_days)
    newest_success: dict[tuple[str, str], RunRecord] = {}
    for run in runs:
        if run.status == "succeeded":
            newest_success[(run.job, run.params_key)] = run
    return [r for r in runs if r.status in ("failed", "running") or (r.started_at and r.started_at >= horizon)
            or newest_success.get((r.job, r.params_key)) is r]


def _checkpoint_tables(layout: Layout) -> list[str]:
    import pyarrow.fs as pafs

    fs, base = filesystem(layout.checkpoints)
    found = []

    def children(path: str) -> list[str]:
        return [i.path for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
                if i.type == pafs.FileType.Directory]

    for job_dir in children(base):
        for key_dir in children(job_dir):
            found += [f"{layout.checkpoints}/{d[len(base):].lstrip('/')}" for d in children(key_dir)]
    return found


def _retention_days(uri: str) -> float:
    import deltalake

    text = deltalake.DeltaTable(uri).metadata().configuration.get("delta.deletedFileRetentionDuration")
    if not text:
        return _DEFAULT_FILE_RETENTION_DAYS
    number, unit = text.replace("interval", "").split()[:2]
    per_day = {"day": 1, "days": 1, "hour": 24, "hours": 24, "week": 1 / 7, "weeks": 1 / 7}
    return float(number) / per_day.get(unit.lower(), 1)


def gc(keep_days: float = 7.0, *, root: str | None = None, settings: Settings | None = None,
       spark=None, dry_run: bool = False, echo: bool = True) -> dict[str, Any]:
    """Remove checkpoints no resumable run needs; warn about short Delta retention.

    >>> gc(keep_days=14, root="/tmp/recover")   # doctest: +SKIP
    {'deleted_tables': [...], 'vacuumed_tables': [...], 'warnings': [...]}
    """
    import deltalake

    say = (lambda line: print(line, flush=True)) if echo else (lambda line: None)
    settings = settings or load_settings(root=root)
    layout = Layout.at(settings.root, settings.storage_options)
    ledger = Ledger(layout, settings.dead_after_seconds)
    now = dt.datetime.now(dt.timezone.utc)
    runs = ledger.runs()
    needed: dict[str, set[int]] = defaultdict(set)
    for run in _needed_runs(runs, keep_days, now):
        for stage in run.stages.values():
            if stage.checkpoint and stage.version is not None:
                needed[stage.checkpoint].add(int(stage.version))
    report: dict[str, Any] = {"deleted_tables": [], "vacuumed_tables": [], "warnings": []}
    tables = _checkpoint_tables(layout)
    if tables and spark is None and not dry_run:
        from .session import get_spark
        spark = get_spark(settings)
    for table in tables:
        versions = needed.get(table)
        if not versions:
            report["deleted_tables"].append(table)
            if not dry_run:
                delete_tree(spark, table)
            continue
        oldest = min(versions)
        created = deltalake.DeltaTable(native_uri(table), version=oldest).history(1)[0]["timestamp"]
        age_hours = (now.timestamp() * 1000 - float(created)) / 3_600_000
        retain = max(1, math.ceil(age_hours) + 1)
        report["vacuumed_tables"].append({"table": table, "oldest_needed_version": oldest, "retain_hours": retain})
        if not dry_run:
            # VACUUM lists the table with one task per `parallelism` paths, 10,000 by default:
            # minutes of empty tasks on a small cluster for a checkpoint table of a few files.
            with session_confs(spark, {"spark.databricks.delta.retentionDurationCheck.enabled": "false",
                                       "spark.sql.sources.parallelPartitionDiscovery.parallelism":
                                           str(spark.sparkContext.defaultParallelism)}):
                spark.sql(f"VACUUM delta.`{spark_uri(table)}` RETAIN {retain} HOURS")
    sink_tables = {t for r in runs for t in (r.recovery_point or {})}
    sink_tables |= {t for p in ledger.points().values() for t in p["tables"]}
    for table in sorted(sink_tables):
        uri = native_uri(table)
        if "/" not in table or not deltalake.DeltaTable.is_deltatable(uri):
            continue
        days = _retention_days(uri)
        if days < keep_days:
            report["warnings"].append(
                f"{table}: delta.deletedFileRetentionDuration is {days:g} days, shorter than the recovery "
                f"window of {keep_days:g} days; a VACUUM there can make older recovery points unrestorable "
                f"(ALTER TABLE ... SET TBLPROPERTIES ('delta.deletedFileRetentionDuration' = "
                f"'interval {math.ceil(keep_days)} days'))")
    for line in report["warnings"]:
        say(f"warning: {line}")
    say(f"gc: deleted {len(report['deleted_tables'])} checkpoint table(s), vacuumed "
        f"{len(report['vacuumed_tables'])}" + (" (dry run)" if dry_run else ""))
    return report
