"""Garbage collection of old checkpoints, without ever eating a recovery.

A checkpoint version is *needed* while a run that references it may still be
resumed or redone: every failed or running run, every run younger than the
recovery window (``keep_days``), and the newest successful run of each job and
parameters. Each run's checkpoint of a stage is a table of its own, so ``gc``
deletes whole tables no needed run references: no VACUUM, no JVM. A table of
the older layout (one per stage, a version per run) that a needed run still
references is VACUUMed with a retention long enough to keep its oldest needed
version readable. Sink tables and named recovery points are never vacuumed;
``gc`` warns when a table's Delta retention (``delta.deletedFileRetentionDuration``
for data files, ``delta.logRetentionDuration`` for the log that time travel
needs) is shorter than the window.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from typing import Any

from .config import Settings, load_settings
from .ledger import Ledger
from .history import RunRecord
from .sinks import isolated_session
from .storage import Layout, Storage, canonical, interval_days, native_uri, spark_uri

__all__ = ["gc", "RECOVERY_WINDOW_DAYS"]

RECOVERY_WINDOW_DAYS = 7.0  # gc's default keep-days: how long a run stays resumable
_PROGRESS_EVERY = 1000  # checkpoint tables between two progress lines

_DEFAULTS_DAYS = {"delta.deletedFileRetentionDuration": 7.0, "delta.logRetentionDuration": 30.0}


def _needed_runs(runs: list[RunRecord], keep_days: float, now: dt.datetime) -> list[RunRecord]:
    horizon = now - dt.timedelta(days=keep_days)
    newest_success: dict[tuple[str, str], RunRecord] = {}
    for run in runs:
        if run.status == "succeeded":
            newest_success[(run.job, run.params_key)] = run
    return [r for r in runs if r.status in ("failed", "running") or (r.started_at and r.started_at >= horizon)
            or newest_success.get((r.job, r.params_key)) is r]


def _needed(runs: list[RunRecord], layout: Layout, keep_days: float) -> tuple[dict[str, set[int]], set[str]]:
    """The checkpoint versions ``runs`` need, and the checkpoint folders of the running ones."""
    needed: dict[str, set[int]] = defaultdict(set)
    for run in _needed_runs(runs, keep_days, dt.datetime.now(dt.timezone.utc)):
        for stage in run.stages.values():  # a chunked stage's chunks too, done or not (a resume reuses them)
            for part in [{"checkpoint": stage.checkpoint, "version": stage.version}, *stage.chunks.values()]:
                if part["checkpoint"] and part["version"] is not None:
                    needed[canonical(part["checkpoint"])].add(int(part["version"]))
    running = {canonical(f"{layout.checkpoints}/{r.job}/{r.params_key}") for r in runs if r.status == "running"}
    return needed, running


def _checkpoint_tables(layout: Layout) -> list[tuple[str, bool]]:
    """Every checkpoint table under the root: ``(location, older layout?)``."""
    import pyarrow.fs as pafs

    fs, base = layout.filesystem(layout.checkpoints)
    found = []

    def children(path: str) -> list[str]:
        return [i.path for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
                if i.type == pafs.FileType.Directory]

    def location(path: str) -> str:
        return f"{layout.checkpoints}/{path[len(base):].lstrip('/')}"

    for job_dir in children(base):
        for key_dir in children(job_dir):
            for entry in children(key_dir):
                inside = children(entry)
                if any(d.rsplit("/", 1)[-1] == "_delta_log" for d in inside):  # <key>/<stage>: older layout
                    found.append((location(entry), True))
                else:  # <key>/<run id>/<stage>
                    found += [(location(d), False) for d in inside]
    return found


def _retention(storage: Storage, uri: str, key: str) -> float:
    text = storage.delta(uri).metadata().configuration.get(key)
    return interval_days(text) if text else _DEFAULTS_DAYS[key]


def _retention_warnings(storage: Storage, table: str, keep_days: float) -> list[str]:
    out = []
    for key in ("delta.deletedFileRetentionDuration", "delta.logRetentionDuration"):
        days = _retention(storage, native_uri(table), key)
        if days < keep_days:
            out.append(f"{table}: {key} is {days:g} days, shorter than the recovery window of "
                       f"{keep_days:g} days; older versions there can become unreadable "
                       f"(ALTER TABLE ... SET TBLPROPERTIES ('{key}' = 'interval {math.ceil(keep_days)} days'))")
    return out


def gc(keep_days: float = RECOVERY_WINDOW_DAYS, *, root: str | None = None, settings: Settings | None = None,
       spark=None, dry_run: bool = False, echo: bool = True) -> dict[str, Any]:
    """Remove checkpoints no resumable run needs; warn about short Delta retention.

    Before deleting the tables of a job and parameters, the runs of those
    parameters are read again if the ledger changed, so a run that starts
    meanwhile keeps its checkpoints. A progress line every 1,000 tables.

    >>> gc(keep_days=14, root="/tmp/recover")   # doctest: +SKIP
    {'deleted_tables': [...], 'vacuumed_tables': [...], 'warnings': [...]}
    """
    say = (lambda line: print(line, flush=True)) if echo else (lambda line: None)
    settings = settings or load_settings(root=root)
    layout = Layout.at(settings.root, settings.storage_options)
    ledger = Ledger(layout, settings.dead_after_seconds)
    now = dt.datetime.now(dt.timezone.utc)
    read_at = ledger.head()
    runs = ledger.runs()
    needed, running = _needed(runs, layout, keep_days)
    report: dict[str, Any] = {"deleted_tables": [], "vacuumed_tables": [], "kept_tables": [], "warnings": []}
    fresh_for = None
    tables = _checkpoint_tables(layout)
    for n, (table, older_layout) in enumerate(tables, 1):
        if n % _PROGRESS_EVERY == 0:
            say(f"gc: {n:,} of {len(tables):,} checkpoint tables checked")
        key = canonical(table)
        folder = key.split("/checkpoints/", 1)[-1].split("/")[:2]  # job, params key
        if not needed.get(key) and not dry_run:
            if folder != fresh_for and len(folder) == 2 and ledger.head() != read_at:
                # A run of these params may have started since the ledger was read: read their runs again.
                more_needed, more_running = _needed(ledger.runs(folder[0], params_key=folder[1]), layout, keep_days)
                for location, versions in more_needed.items():
                    needed[location] |= versions
                running |= more_running
            fresh_for = folder
            if any(key.startswith(f + "/") for f in running) and not needed.get(key):
                report["kept_tables"].append(table)
                continue
        versions = needed.get(key)
        if not versions:
            report["deleted_tables"].append(table)
            if not dry_run:
                layout.delete_tree(table)
                run_dir = table.rsplit("/", 1)[0]
                if not older_layout and layout.entries(run_dir) == []:
                    layout.delete_tree(run_dir)
            continue
        if not older_layout:  # a run's own table, one version, needed whole
            continue
        oldest = min(versions)
        try:
            created = layout.delta(table, version=oldest).history(1)[0]["timestamp"]
        except Exception as exc:  # a damaged table: the runs that need it recompute; a human decides
            report["kept_tables"].append(table)
            report["warnings"].append(f"{table}: version {oldest}, which a run still needs, does not load "
                                      f"({type(exc).__name__}); kept as it is")
            continue
        age_hours = (now.timestamp() * 1000 - float(created)) / 3_600_000
        retain = max(1, math.ceil(age_hours) + 1)
        report["vacuumed_tables"].append({"table": table, "oldest_needed_version": oldest, "retain_hours": retain})
        report["warnings"] += _retention_warnings(layout, table, keep_days)
        if not dry_run:
            if spark is None:
                from .session import get_spark
                spark = get_spark(settings)
            # VACUUM lists the table with one task per `parallelism` paths, 10,000 by default:
            # minutes of empty tasks on a small cluster for a checkpoint table of a few files.
            with isolated_session(spark, {
                    "spark.databricks.delta.retentionDurationCheck.enabled": "false",
                    "spark.sql.sources.parallelPartitionDiscovery.parallelism":
                        spark.conf.get("spark.default.parallelism", None) or "8"}) as session:
                session.sql(f"VACUUM delta.`{spark_uri(table)}` RETAIN {retain} HOURS")
    sink_tables = {t for r in runs for t in (r.recovery_point or {})}
    sink_tables |= {t for p in ledger.points().values() for t in p["tables"]}
    for table in sorted(sink_tables):
        if "/" not in table or not layout.is_delta(table):
            continue
        report["warnings"] += _retention_warnings(layout, table, keep_days)
    for line in report["warnings"]:
        say(f"warning: {line}")
    say(f"gc: deleted {len(report['deleted_tables'])} checkpoint table(s), vacuumed "
        f"{len(report['vacuumed_tables'])}" + (" (dry run)" if dry_run else "")
        + (f", kept {len(report['kept_tables'])}" if report["kept_tables"] else ""))
    return report
