"""The publication rule: each sink's data is published at most once per logical run.

A *logical run* is a first run and every resume or redo that replays it. Its
sink writes are Delta idempotent writes: ``txnAppId`` (one per job, the
logical run's first parameters, and table) and ``txnVersion`` (a number the
ledger records before the write). Whatever sequence of crashes, resumes and
retries happens, the choice of the pair is one pure function of the lineage
(what its runs planned to publish) and of what Delta says it committed:

* the same data as the lineage's last planned write of that table → the same
  pair, so Delta skips it if it was committed, and writes it once if not;
* different data, while the lineage's write is committed → refused (exit 3):
  ``redo`` rolls back first, then publishes afresh;
* different data, never committed, or nothing planned yet → a new version,
  above every version any run ever planned for that ``txnAppId``.

A finished rollback of the logical run undoes its earlier writes: they no
longer count. Nothing here touches storage or a JVM; :mod:`spark_recover.runner`
feeds it what the ledger and the tables say.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .errors import RefusedError
from .fingerprint import digest
from .history import RunRecord, StageRecord
from .storage import Target, canonical, interval_days

__all__ = ["Prior", "Decision", "app_id", "catalog_problem", "require_lasting_catalog", "priors", "data_identity",
           "decide", "recovery_point", "taken_versions", "output_identity", "planned_output", "created_tables", "TXN_RETENTION",
           "writers", "txn_retention_warning", "check_txn_retention"]


def app_id(job: str, params_key: str, target: Target) -> str:
    """The Delta ``txnAppId`` of one job, parameters and table.

    >>> app_id("daily", "ab12", Target.parse("/w/t"))
    'spark-recover-daily-ab12-960dd5843d03'
    """
    return f"spark-recover-{job}-{params_key}-{digest(canonical(target.location), 12)}"


_CATALOG_KIND = "spark.sql.catalogImplementation"
_METASTORE_URL = "spark.hadoop.javax.jdo.option.ConnectionURL"
_METASTORE_SERVER = "spark.hadoop.hive.metastore.uris"
_DERBY_DEFAULT = "jdbc:derby:;databaseName=metastore_db;create=true"  # Hive's, relative to the working directory


def catalog_problem(spark_confs: Mapping[str, str], *, shared: bool = False) -> str | None:
    """Why the catalog of a session built from ``spark_confs`` cannot hold a sink (``None``: it can).

    A sink's catalog must outlive the driver and be the same from any working
    directory: a resume is a new process, maybe elsewhere. ``shared``: other
    processes open it at the same time (a drill beside its drivers), which an
    embedded Derby metastore refuses.

    >>> catalog_problem({})
    'spark.sql.catalogImplementation=in-memory: the catalog lives in the driver and dies with it'
    >>> hive = {"spark.sql.catalogImplementation": "hive"}
    >>> print(catalog_problem(hive))
    the Hive metastore is Derby's metastore_db in the working directory: a process elsewhere would not see it
    >>> derby = {**hive, "spark.hadoop.javax.jdo.option.ConnectionURL": "jdbc:derby:;databaseName=/m/db;create=true"}
    >>> catalog_problem(derby) is None, catalog_problem(derby, shared=True)[:45]
    (True, 'an embedded Derby metastore (jdbc:derby:;data')
    >>> catalog_problem({**hive, "spark.hadoop.hive.metastore.uris": "thrift://meta:9083"}, shared=True) is None
    True
    """
    found = spark_confs.get(_CATALOG_KIND, "in-memory")
    if found != "hive":
        return f"{_CATALOG_KIND}={found}: the catalog lives in the driver and dies with it"
    url = spark_confs.get(_METASTORE_URL, _DERBY_DEFAULT)
    if spark_confs.get(_METASTORE_SERVER) or not url.startswith("jdbc:derby:") or url.startswith("jdbc:derby://"):
        return None  # a metastore server, or a database server
    head, *attributes = url[len("jdbc:derby:"):].split(";")
    name = head or dict(a.split("=", 1) for a in attributes if "=" in a).get("databaseName", "")
    if name.startswith("memory:"):
        return f"{_METASTORE_URL}={url}: an in-memory Derby metastore dies with the driver"
    if not os.path.isabs(name.removeprefix("directory:")):
        return (f"the Hive metastore is Derby's {name or 'metastore_db'} in the working directory: a process "
                "elsewhere would not see it")
    if shared:
        return (f"an embedded Derby metastore ({url}) admits one process at a time, the drill and its "
                "drivers are several")
    return None


def require_lasting_catalog(tables: Sequence[str], spark_confs: Mapping[str, str], *, shared: bool = False) -> None:
    """Refuse catalog sinks (:class:`UsageError`, exit 2) in a session spark-recover would build
    from ``spark_confs`` (the settings' ``[spark]`` section) whose catalog cannot hold them
    (:func:`catalog_problem`): Spark's default in-memory catalog dies with the driver, so a resume
    (a new process) would not find the table its run created, nor could a rollback drop it.

    An attached session (spark-submit, a notebook, Spark Connect) is used as it is: not checked.

    >>> require_lasting_catalog([], {})
    >>> require_lasting_catalog(["db.t"], {})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    spark_recover.errors.UsageError: catalog sink db.t needs a catalog that outlives the driver: ...
    """
    from .errors import UsageError

    problem = catalog_problem(spark_confs, shared=shared) if tables else None
    if problem is not None:
        raise UsageError(
            f"catalog sink {', '.join(tables)} needs a catalog that outlives the driver",
            f"{problem}. Set \"{_CATALOG_KIND}\" = \"hive\" in the conf file's [spark] section, with a "
            f"metastore every process reaches from any directory (\"{_METASTORE_URL}\" = "
            "\"jdbc:derby:;databaseName=/absolute/path/metastore_db;create=true\", a database, or a metastore "
            f"server: \"{_METASTORE_SERVER}\"; a drill needs a server), or run in a session that has a persistent "
            "catalog (spark-submit or Databricks with a metastore, a Spark Connect server: --remote)",
            tables=list(tables), problem=problem)


def created_tables(lineage: Sequence[RunRecord]) -> set[str]:
    """The tables (canonical) a logical run's recovery point records as absent: its runs create them.

    >>> created_tables([])
    set()
    """
    point, _ = recovery_point(lineage, [], {})
    return {canonical(t) for t, state in point.items() if not state.get("exists")}


@dataclass(frozen=True)
class Prior:
    """The lineage's last planned write of one table."""

    run_id: str
    app: str
    txn_version: int
    data: tuple | None


def data_identity(checkpoint: str | None, version: int | None, predicate: str | None = None,
                  chunks: Sequence[Mapping[str, Any]] | None = None) -> tuple | None:
    """What a sink publishes: the checkpoint table and version it reads (a chunked stage: each chunk's),
    and where (``replace_where``).

    >>> data_identity("/ck/a", 0) == data_identity(None, None, chunks=[{"checkpoint": "/ck/a", "version": 0}])
    False
    """
    if chunks:
        return ("chunks", *((canonical(c["checkpoint"]), int(c["version"])) for c in chunks)) + \
            ((predicate,) if predicate else ())
    if checkpoint is None or version is None:
        return None
    return (canonical(checkpoint), int(version)) + ((predicate,) if predicate else ())


def output_identity(stage: StageRecord | None, predicate: str | None = None) -> tuple | None:
    """What a sink fed by ``stage``'s recorded output publishes (:func:`data_identity`)."""
    if stage is None:
        return None
    return data_identity(stage.checkpoint, stage.version, predicate,
                         stage.output if stage.chunk_order is not None else None)


def planned_output(stage: StageRecord) -> dict[str, Any]:
    """What a ``sink_planned`` event records of the data it publishes (read back by :func:`priors`)."""
    out: dict[str, Any] = {"checkpoint": stage.checkpoint, "checkpoint_version": stage.version}
    if stage.chunk_order is not None:
        out["checkpoint_chunks"] = [{"checkpoint": c["checkpoint"], "version": c["version"]} for c in stage.output]
    return out


def priors(lineage: Sequence[RunRecord]) -> dict[str, Prior]:
    """Each table's last planned write by a run of the lineage whose writes were not undone.

    >>> priors([])
    {}
    """
    out: dict[str, Prior] = {}
    for run in lineage:
        if run.rolled_back:
            continue
        for table, entry in run.sinks.items():
            if entry.get("txn_app_id") is None or entry.get("txn_version") is None:
                continue
            out[canonical(table)] = Prior(run.run_id, entry["txn_app_id"], int(entry["txn_version"]),
                                          data_identity(entry.get("checkpoint"), entry.get("checkpoint_version"),
                                                        entry.get("predicate"), entry.get("checkpoint_chunks")))
    return out


def taken_versions(runs: Iterable[RunRecord], app: str) -> list[int]:
    """Every transaction version any run planned for ``app``."""
    return [int(v["txn_version"]) for r in runs for v in r.sinks.values()
            if v.get("txn_app_id") == app and v.get("txn_version") is not None]


@dataclass(frozen=True)
class Decision:
    """The transaction identifiers of one sink write."""

    app: str
    txn_version: int
    repeats: str | None = None  # the run whose planned write this repeats (Delta skips it if committed)


def _republish_error(table: str, prior: Prior) -> RefusedError:
    return RefusedError(
        f"sink {table} was already published by run {prior.run_id} from other data",
        "this replay would publish different data for it (a parameter it reads changed, or the stage "
        f"feeding it was recomputed); publishing twice would duplicate or change rows. Roll back and "
        f"replay instead: `spark-recover redo {prior.run_id}`", table=table, published_by=prior.run_id)


def decide(table: str, data: tuple | None, prior: Prior | None, default_app: str,
           committed: int | None, taken: Iterable[int]) -> Decision:
    """Choose ``txnAppId``/``txnVersion`` for writing ``data`` to ``table``.

    ``committed`` is the version Delta holds for ``prior.app`` (or ``default_app``
    when there is no prior); ``taken`` every version planned for that app.

    >>> p = Prior("A", "app", 3, ("/ck/daily", 7))
    >>> decide("/t", ("/ck/daily", 7), p, "other", committed=3, taken=[3])
    Decision(app='app', txn_version=3, repeats='A')
    >>> decide("/t", ("/ck/daily", 8), p, "other", committed=2, taken=[3]).txn_version
    4
    >>> decide("/t", None, None, "app", committed=None, taken=[]).txn_version
    0
    """
    if prior is not None:
        if data is not None and data == prior.data:
            return Decision(prior.app, prior.txn_version, repeats=prior.run_id)
        if committed is not None and committed >= prior.txn_version:
            raise _republish_error(table, prior)
    app = prior.app if prior is not None else default_app
    return Decision(app, max([*taken, committed if committed is not None else -1]) + 1)


def recovery_point(lineage: Sequence[RunRecord], tables: Iterable[str],
                   state_now: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """The logical run's recovery point, extended to every table this run may write.

    The first point the lineage recorded stays (a replay restores to before the
    original run); a table it does not cover (a sink added or moved since) gets
    its state now, before this run writes it. Returns the point and the run it
    came from.

    >>> recovery_point([], ["/t"], {"/t": {"exists": False}})
    ({'/t': {'exists': False}}, None)
    """
    point: dict[str, Any] = {}
    source = None
    for run in lineage:
        if run.recovery_point is not None:
            source = source or run.run_id
            for table, state in run.recovery_point.items():
                point.setdefault(table, state)
    for table in tables:
        if table not in point:
            point[table] = dict(state_now[table])
    return point, source


TXN_RETENTION = "delta.setTransactionRetentionDuration"  # unset: Delta keeps transactions for ever


def writers(lineage: Sequence[RunRecord], table: str) -> list[RunRecord]:
    """The runs of the lineage that planned a write of ``table`` not undone by a rollback, oldest first."""
    return [r for r in lineage if not r.rolled_back
            and any(canonical(t) == canonical(table) and e.get("txn_app_id") for t, e in r.sinks.items())]


def txn_retention_warning(table: str, retention: str | None, window_days: float) -> str | None:
    """A warning when ``table`` forgets transactions sooner than a run may be resumed.

    >>> txn_retention_warning("/t", "interval 1 hour", 7.0)[:62]
    '/t: delta.setTransactionRetentionDuration is interval 1 hour ('
    >>> txn_retention_warning("/t", None, 7.0) is None
    True
    """
    if retention is None or interval_days(retention) >= window_days:
        return None
    return (f"{table}: {TXN_RETENTION} is {retention} ({interval_days(retention):g} days), shorter than the "
            f"recovery window of {window_days:g} days; a resume later than that cannot rely on Delta to skip "
            f"a write already made, and is refused (ALTER TABLE ... SET TBLPROPERTIES ('{TXN_RETENTION}' = "
            f"'interval {max(1, round(window_days))} days'), or unset it)")


def check_txn_retention(table: str, retention: str | None, first_write: dt.datetime, by_run: str,
                        now: dt.datetime) -> None:
    """Refuse (exit 3) a replay whose logical run first wrote ``table`` longer ago than it keeps transactions.

    Delta may have dropped that transaction, so a replay of the write would not be
    skipped but published again (a crash after the commit leaves no other trace).

    >>> t0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    >>> check_txn_retention("/t", "interval 2 days", t0, "A", now=t0 + dt.timedelta(days=1))
    >>> check_txn_retention("/t", "interval 2 days", t0, "A", now=t0 + dt.timedelta(days=3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    spark_recover.errors.RefusedError: sink /t may have forgotten this logical run's write: ...
    """
    if retention is None or now - first_write <= dt.timedelta(days=interval_days(retention)):
        return
    raise RefusedError(
        f"sink {table} may have forgotten this logical run's write",
        f"its {TXN_RETENTION} is {retention} and run {by_run} first wrote it at {first_write:%Y-%m-%dT%H:%M:%S}Z, "
        f"{now - first_write} ago: Delta may no longer skip the write already made, so this replay could publish "
        f"its rows twice. Roll back and replay instead: `spark-recover redo {by_run}`",
        table=table, published_by=by_run, retention=retention)
