"""Sinks: publishing a stage's output exactly once, with Delta idempotent writes.

Every sink write carries Delta's transaction identifiers: ``txnAppId`` (one per
job, parameters and table) and ``txnVersion`` (a strictly increasing number the
ledger hands out and records *before* the write). Delta ignores a write whose
``txnVersion`` it has already committed for that ``txnAppId``, so replaying a
sink after a crash never duplicates rows. MERGE reads the identifiers from the
session confs ``spark.databricks.delta.write.txnAppId``/``txnVersion``: they are
set on a new session of the MERGE's own (``spark.newSession()``: same Spark
context, its own confs), so no other write can pick them up. Which pair a
write uses is :mod:`spark_recover.publication`'s rule.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import re
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterator, Mapping, Sequence

from . import publication
from .errors import SessionError, UsageError
from .fingerprint import digest
from .job import Job, Sink
from .storage import Layout, Target, canonical, native_uri, spark_uri

if TYPE_CHECKING:  # pragma: no cover
    from .history import RunRecord

__all__ = ["SinkTarget", "resolve_sinks", "redirected", "scratch_schema", "redirected_table", "fill_predicate",
           "placeholders", "TableState", "table_state", "physical_uri", "publish", "isolated_session",
           "txn_retention_warnings", "commit_tag", "conflict", "CONFLICT_ATTEMPTS"]

_TXN_CONFS = ("spark.databricks.delta.write.txnAppId", "spark.databricks.delta.write.txnVersion",
              "spark.databricks.delta.commitInfo.userMetadata")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# Delta's optimistic-concurrency refusals, by class and (Delta 3+) error class: another commit came first and
# nothing of this write was committed. Not ConcurrentTransactionException (a second writer of the same txn).
_CONFLICT = re.compile(r"\b(?:Concurrent(?:Append|DeleteRead|DeleteDelete|Write)Exception|MetadataChangedException|"
                       r"ProtocolChangedException|DELTA_CONCURRENT_(?:APPEND|DELETE_READ|DELETE_DELETE|WRITE)|"
                       r"DELTA_METADATA_CHANGED|DELTA_PROTOCOL_CHANGED)\b")
_CREATED_ELSEWHERE = re.compile(r"\b(?:TableAlreadyExistsException|TABLE_OR_VIEW_ALREADY_EXISTS)\b")
CONFLICT_ATTEMPTS = 6  # a write and its retries when other writers commit to the table first


def _literal_body(value: Any) -> str:
    # Spark SQL string literals take backslash escapes: escape both, keep the value data.
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def placeholders(template: str) -> set[str]:
    """The ``{param}`` names in a path or predicate template.

    >>> sorted(placeholders("{data}/orders/day={day}"))
    ['data', 'day']
    """
    return set(_PLACEHOLDER.findall(template))


def fill_predicate(template: str, params: Mapping[str, Any]) -> str:
    """Fill ``{param}`` placeholders as SQL literals, never as SQL text.

    Inside quotes a value is escaped; a bare placeholder becomes a quoted
    string literal (numbers from the Python API stay numbers).

    >>> print(fill_predicate("day = '{day}'", {"day": "it's"}))
    day = 'it\\'s'
    >>> fill_predicate("n = {n}", {"n": 5})
    'n = 5'
    """
    out, quoted, pos = [], False, 0
    for match in _PLACEHOLDER.finditer(template):
        chunk = template[pos:match.start()]
        quoted ^= chunk.count("'") % 2 == 1
        out.append(chunk)
        key = match.group(1)
        if key not in params:
            raise UsageError(f"replace_where predicate needs parameter {key!r}",
                             f"predicate {template!r}; given parameters: {sorted(params) or 'none'}",
                             missing=key)
        value = params[key]
        if quoted:
            out.append(_literal_body(value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(repr(value))
        else:
            out.append(f"'{_literal_body(value)}'")
        pos = match.end()
    out.append(template[pos:])
    return "".join(out)


@dataclass(frozen=True)
class SinkTarget:
    """A sink with its location and predicate filled from the run's parameters."""

    sink: Sink
    target: Target
    predicate: str | None

    @property
    def table(self) -> str:
        return self.target.location


def redirected(sink_root: str, location: str) -> str:
    """Where a drill writes the sink table at ``location``: a folder of its own under ``sink_root``.

    >>> redirected("/tmp/drill/sinks", "/w/daily")
    '/tmp/drill/sinks/daily-bdc583d9'
    """
    name = canonical(location).rstrip("/").rsplit("/", 1)[-1]
    return f"{sink_root.rstrip('/')}/{name}-{digest(canonical(location), 8)}"


def scratch_schema(sink_root: str) -> str:
    """The catalog schema a drill writing under ``sink_root`` redirects its catalog sinks to.

    A pure function of the sink root, so the drill and its driver processes (which get
    the sink root through ``$SPARK_RECOVER_SINK_ROOT``) name the same schema.

    >>> scratch_schema("/tmp/drill/sinks") == scratch_schema("file:///tmp/drill/sinks/")
    True
    >>> scratch_schema("/tmp/drill/sinks").startswith("spark_recover_drill_")
    True
    """
    return f"spark_recover_drill_{digest(canonical(sink_root), 12)}"


def redirected_table(sink_root: str, name: str) -> str:
    """Where a drill writes the catalog table ``name`` (``[catalog.]schema.table``): a table of its
    own in the drill's scratch schema, in the same catalog (so it is written the same way).

    The table's name keeps the original's (readable in the drill's report) and a digest of the
    whole name (two schemas' ``daily`` stay apart). Spark's names ignore case.

    >>> redirected_table("/tmp/drill/sinks", "sales.Daily")
    'spark_recover_drill_74e36dbfdb13.daily_ff9c10e3'
    >>> redirected_table("/tmp/drill/sinks", "main.sales.daily")
    'main.spark_recover_drill_74e36dbfdb13.daily_866f5000'
    >>> redirected_table("/tmp/drill/sinks", "daily").count(".")
    1
    """
    parts = [p.strip("`") for p in name.split(".")]
    table = re.sub(r"\W", "_", parts[-1].lower())
    return ".".join([*parts[:-2], scratch_schema(sink_root), f"{table}_{digest(name.lower(), 8)}"])


def resolve_sinks(job: Job, params: Mapping[str, Any], layout: Layout, sink_root: str | None = None,
                  created: Collection[str] = ()) -> list[SinkTarget]:
    """Fill and check every sink before a run starts (:class:`UsageError`, exit 2, on a problem).

    A missing ``{param}`` in a path or predicate, or a path that holds files
    which are not a Delta table's (a plain parquet dataset), stops the run before
    it writes anything: a rollback could not tell those files from the table's.
    ``created`` are the tables (canonical) a replayed logical run found absent:
    what its killed writer left there is its own. With ``sink_root`` (a drill),
    path sinks are written under it instead, and catalog sinks to tables of the
    drill's scratch schema (:func:`redirected_table`).
    """
    out = []
    for sink in job.sinks:
        location = sink.location(params)
        if sink_root is not None:
            location = (redirected_table if sink.table is not None else redirected)(sink_root, location)
        target = layout.target(location, catalog=sink.table is not None)
        predicate = fill_predicate(sink.predicate, params) if sink.predicate else None
        if not target.catalog and canonical(target.location) not in created:
            _check_sink_folder(sink.stage, target)
        out.append(SinkTarget(sink, target, predicate))
    return out


def _check_sink_folder(stage: str, target: Target) -> None:
    """Refuse a sink folder holding files that are not a Delta table's (naming a few, and how many)."""
    strangers = target.strangers(target.location)
    if strangers:
        raise UsageError(f"sink of stage {stage!r} points at a folder that is not a Delta table",
                         f"expected a Delta table, an empty folder or nothing at {target.location}, found "
                         f"{len(strangers)} file{'s that are' if len(strangers) > 1 else ' that is'} not a "
                         f"Delta table's ({', '.join(strangers[:5])}{', ...' if len(strangers) > 5 else ''}); "
                         "choose another path, or convert it to Delta first", table=target.location,
                         files=strangers[:20], count=len(strangers))


@dataclass(frozen=True)
class TableState:
    """A table's version and commit time (and our transaction version), or absent."""

    exists: bool
    version: int | None = None
    timestamp: str | None = None
    txn_version: int | None = None
    uri: str | None = None  # where the table's files are (delta-rs spelling)
    txn_retention: str | None = None  # delta.setTransactionRetentionDuration, when set

    def to_json(self) -> dict[str, Any]:
        return {"exists": self.exists, "version": self.version, "timestamp": self.timestamp}


def physical_uri(spark, target: Target) -> str | None:
    """Where a table's files are, in delta-rs spelling (``None``: catalog table absent)."""
    if not target.catalog:
        return native_uri(target.location)
    if spark is None or not spark.catalog.tableExists(target.location):
        return None
    return native_uri(spark.sql(f"DESCRIBE DETAIL {target.location}").first()["location"])


def table_state(spark, target: Target, app: str | None = None) -> TableState:
    """A table's state, read with delta-rs (a catalog table's location comes from Spark)."""
    uri = physical_uri(spark, target)
    if uri is None or not target.is_delta(uri):
        return TableState(exists=False, uri=uri)
    table = target.delta(uri)
    last = table.history(1)[0]
    return TableState(exists=True, version=table.version(), timestamp=str(last.get("timestamp")),
                      txn_version=table.transaction_version(app) if app else None, uri=uri,
                      txn_retention=table.metadata().configuration.get("delta.setTransactionRetentionDuration"))


def commit_tag(commit: Mapping[str, Any]) -> dict[str, Any]:
    """A commit's ``userMetadata`` as spark-recover writes it (a JSON object), or ``{}``.

    >>> commit_tag({"userMetadata": '{"run_id": "r1"}'}), commit_tag({"userMetadata": "free text"})
    ({'run_id': 'r1'}, {})
    """
    try:
        meta = json.loads(commit.get("userMetadata") or "{}")
    except (TypeError, ValueError):  # another writer's free text
        return {}
    return meta if isinstance(meta, dict) else {}


def _first_commit(target: Target, uri: str, run_ids: Collection[str]) -> tuple[dt.datetime, str] | None:
    """The oldest commit in ``uri``'s history whose ``userMetadata`` names one of ``run_ids``: (time, run)."""
    found = None
    for commit in target.delta(uri).history():
        run = commit_tag(commit).get("run_id")
        if run in run_ids:
            found = (dt.datetime.fromtimestamp(int(commit["timestamp"]) / 1000, dt.timezone.utc), run)
    return found  # history is newest first: the last match is the oldest


def txn_retention_warnings(spark, targets: Sequence[SinkTarget], lineage: Sequence[RunRecord], window_days: float,
                        now: dt.datetime | None = None) -> list[str]:
    """At run start: warnings for sinks that forget transactions within ``window_days``; a replay
    whose logical run wrote a sink longer ago than that sink keeps transactions is refused (exit 3).

    The write's time is its commit's in the table's history, else (never committed, or that
    history cleaned up) the start of the run that planned it, the earliest it can have been.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    out = []
    for st in targets:
        state = table_state(spark, st.target)
        if not state.exists or state.txn_retention is None:
            continue
        warning = publication.txn_retention_warning(st.table, state.txn_retention, window_days)
        out += [warning] if warning else []
        runs = publication.writers(lineage, st.table)
        if runs:
            when, by = (_first_commit(st.target, state.uri, {r.run_id for r in runs})
                        or (runs[0].started_at, runs[0].run_id))
            publication.check_txn_retention(st.table, state.txn_retention, when, by, now=now)
    return out


def publish(spark, sink: SinkTarget, read: Callable[[Any], Any], app: str, txn_version: int,
            metadata: Mapping[str, Any], merge_session: str | None = None,
            on_conflict: Callable[[str], None] | None = None,
            renew_session: Callable[[], str] | None = None) -> dict[str, Any]:
    """Write ``read(session)`` to the sink unless Delta already holds ``txn_version`` for ``app``.

    ``merge_session`` (Spark Connect): the id of the server session a MERGE, or the creation of a
    catalog table, runs in.
    When another writer commits to the table first (Delta's optimistic
    concurrency: values of a parallel backfill sharing a table), the write is
    tried again, up to :data:`CONFLICT_ATTEMPTS` times, ``on_conflict`` told
    each time: safe, since each attempt first asks Delta whether ``txn_version``
    is committed. A server session is used once, so under Spark Connect each
    retry runs in a new one that ``renew_session`` gives (and records first);
    without ``renew_session`` the conflict is raised.
    Returns ``version_before``, ``version_after`` and ``skipped_duplicate``.
    """
    tag = json.dumps(dict(metadata), sort_keys=True)
    first = state = table_state(spark, sink.target, app)
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        if state.txn_version is not None and state.txn_version >= txn_version:
            # Committed before this call (a replay's duplicate), or by an attempt whose error came after its commit.
            return _published(sink, app, txn_version, first, state, skipped=attempt == 1)
        creating = sink.target.catalog and not state.exists
        try:
            _write(spark, sink, read, app, txn_version, tag, merge_session, exists=state.exists)
        except Exception as exc:
            raced = conflict(exc, creating=creating)
            if raced is None or attempt == CONFLICT_ATTEMPTS or (merge_session is not None and renew_session is None):
                raise
            pause = min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random())  # spread the retries apart
            if on_conflict is not None:
                on_conflict(f"another writer committed first ({raced}); writing again in {pause:.1f}s "
                            f"(attempt {attempt + 1} of {CONFLICT_ATTEMPTS})")
            time.sleep(pause)
            if merge_session is not None:
                merge_session = renew_session()
            state = table_state(spark, sink.target, app)
            continue
        after = table_state(spark, sink.target, app)
        return _published(sink, app, txn_version, first, after, skipped=after.version == first.version)
    raise AssertionError("unreachable")  # the last attempt returns or raises


def conflict(exc: BaseException, *, creating: bool = False) -> str | None:
    """The name of Delta's refusal when ``exc`` is a commit refused because another writer committed
    first (nothing of this write is in the table: safe to write again), else ``None``.

    Creating a catalog table, another writer creating it first counts too. A
    conflict on the transaction identifiers themselves does not: that is a
    second writer of the same logical run, which must not pass unseen.

    >>> conflict(RuntimeError("[DELTA_CONCURRENT_APPEND.WITHOUT_HINT] Files were added to the table"))
    'DELTA_CONCURRENT_APPEND'
    >>> conflict(RuntimeError(": io.delta.exceptions.ProtocolChangedException: multiple writers, empty directory"))
    'ProtocolChangedException'
    >>> [conflict(RuntimeError(said)) for said in ("java.util.ConcurrentModificationException",
    ...     "[DELTA_MERGE_MISSING_WHEN]", "io.delta.exceptions.ConcurrentTransactionException",
    ...     "[TABLE_OR_VIEW_ALREADY_EXISTS] db.t")]
    [None, None, None, None]
    >>> conflict(RuntimeError("[TABLE_OR_VIEW_ALREADY_EXISTS] db.t"), creating=True)
    'TABLE_OR_VIEW_ALREADY_EXISTS'
    """
    text = f"{type(exc).__name__}: {exc}"
    found = _CONFLICT.search(text) or (_CREATED_ELSEWHERE.search(text) if creating else None)
    return found.group(0) if found else None


def _published(sink: SinkTarget, app: str, txn_version: int, before: TableState, after: TableState, *,
               skipped: bool) -> dict[str, Any]:
    return {"table": sink.target.location, "mode": sink.sink.mode, "txn_app_id": app, "txn_version": txn_version,
            "version_before": before.version, "version_after": after.version, "skipped_duplicate": skipped}


def _write(spark, sink: SinkTarget, read: Callable[[Any], Any], app: str, txn_version: int, tag: str,
           merge_session: str | None, *, exists: bool) -> None:
    """One idempotent write of the sink (a MERGE into an existing table, else a write in the sink's mode)."""
    target = sink.target
    if sink.sink.mode == "merge" and exists:
        _merge(spark, sink, read, app, txn_version, tag, merge_session)
    elif target.catalog and not exists:
        # Creating a catalog table is a CREATE TABLE AS SELECT, which drops the userMetadata option (the
        # commit would look like another writer's to a rollback) but keeps the session conf: set it on a
        # session of the write's own.
        with isolated_session(spark, {_TXN_CONFS[2]: tag}, merge_session) as session:
            _writer(read(session), sink, app, txn_version, tag).saveAsTable(target.location)
    elif target.catalog:
        _writer(read(spark), sink, app, txn_version, tag).saveAsTable(target.location)
    else:
        _writer(read(spark), sink, app, txn_version, tag).save(spark_uri(target.location))


def _writer(df, sink: SinkTarget, app: str, txn_version: int, tag: str):
    """An idempotent Delta write of ``df`` in the sink's mode (``txnAppId``/``txnVersion``, tagged)."""
    writer = (df.write.format("delta").option("txnAppId", app).option("txnVersion", txn_version)
              .option("userMetadata", tag))
    if sink.sink.mode == "replace_where":
        return writer.mode("overwrite").option("replaceWhere", sink.predicate)
    return writer.mode("overwrite" if sink.sink.mode == "overwrite" else "append")


def _merge(spark, sink: SinkTarget, read: Callable[[Any], Any], app: str, txn_version: int, tag: str,
           session_id: str | None) -> None:
    # Delta reads MERGE's transaction identifiers from session confs. They are set
    # on a session of the MERGE's own, so no other write of the job (another
    # thread, a later sink) can ever commit under them. SQL MERGE (not the
    # DeltaTable API) works the same in a classic and a Spark Connect session.
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in sink.sink.keys)
    with isolated_session(spark, dict(zip(_TXN_CONFS, (app, str(txn_version), tag))), session_id) as session:
        view = f"spark_recover_merge_{uuid.uuid4().hex}"
        read(session).createOrReplaceTempView(view)
        try:
            session.sql(f"MERGE INTO {sink.target.ident} AS t USING {view} AS s ON {condition} "
                        "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")
        finally:
            session.catalog.dropTempView(view)


@contextlib.contextmanager
def isolated_session(spark, confs: Mapping[str, str], session_id: str | None = None) -> Iterator[Any]:
    """A session of its own on the same Spark, with ``confs`` set only there.

    Session confs of it (transaction identifiers, ``userMetadata``, VACUUM
    switches) are invisible to every other session, so they cannot leak into
    another thread's or job's writes. Classic: ``newSession()`` on the same
    context, given the caller's settings that change results or reach storage
    (``session.carried_settings``: time zone, ANSI mode, S3A keys and schema
    auto-merge set at runtime), which a new session would not have. Spark
    Connect: a server-side clone of the session (every setting with it),
    released on exit (sessions on a Connect server are per client session id,
    confs included); ``session_id`` names the clone (a UUID), else it gets a new one.

    >>> with isolated_session(spark, {"spark.databricks.delta.commitInfo.userMetadata": "x"}) as s:   # doctest: +SKIP
    ...     s.sql("RESTORE TABLE delta.`/tmp/t` TO VERSION AS OF 0")
    """
    from .compat import pyspark_version
    from .session import carried_settings, explicit_settings, is_connect

    connect = is_connect(spark)
    if connect and not hasattr(spark, "cloneSession"):
        raise SessionError("this Spark Connect client cannot open a session of its own on the server",
                           "expected pyspark 4.0 or newer (server-side session clones), found "
                           f"pyspark {pyspark_version()}: connect with a 4.x client, or run without Spark Connect")
    session = spark.cloneSession(session_id) if connect else spark.newSession()
    try:
        if not connect:
            for key, value in carried_settings(explicit_settings(spark)).items():
                if session.conf.get(key, None) != value:  # what it started with (static ones too) stays
                    session.conf.set(key, value)
        for key, value in confs.items():
            session.conf.set(key, value)
        yield session
    finally:
        if connect:  # an unreleased clone keeps its server session, and the client's exit waits on it
            with contextlib.suppress(Exception):
                session.client.release_session()
            with contextlib.suppress(Exception):
                session.client.close()
