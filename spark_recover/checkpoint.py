"""Checkpoints: a stage's output stored as one Delta commit, read back pinned.

Each run writes each stage it computes to a Delta table of its own,
``<checkpoints>/<job>/<params key>/<run id>/<stage>``: Spark writes the
parquet files, then delta-rs commits them as version 0 of a new table, whose
``userMetadata`` names run, stage and fingerprint. Delta's own Spark writer
would cost ~0.3 s more a stage (per-file statistics, checksum, log replay
after the commit) for nothing a checkpoint needs. A half-written checkpoint
has no commit, so no reader sees it, and a committed table is never written
to again. The commit is made from a listing of the folder, so before it the
rows in the listed files' parquet footers must equal the rows the write
counted: a stray or cut-short file is refused, never committed. The ledger
pins location and version.

Reading goes through the pinned version's file list (delta-rs reads the log
in milliseconds) and Spark's parquet reader, instead of Delta's own log replay
and state reconstruction in the JVM (~0.5 s a read): the same bytes, the same
rows, never fewer (missing or corrupt files fail the read whatever the
session's ``spark.sql.files.ignore*Files``). A table with deletion vectors or
column mapping (an older release wrote checkpoints with Delta's writer, which
session defaults could give either) is read by Delta instead.

Column names Delta refuses (spaces, ``,;{}()=``, tabs, newlines, names equal
but for case), at any depth, are stored under positional names (``c0``,
``c1``, nested ``f0``...) and the stage's schema is kept in the commit's
``userMetadata``; reading gives back the original names. Before a checkpoint
is reused, :func:`verify` checks, without a JVM, that every data file of that
version still exists with the size the Delta log recorded.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import CheckpointError
from .storage import Storage, native_uri, spark_uri

__all__ = ["Written", "write", "read", "verify", "read_stage", "verify_stage"]

_REFUSED_BY_DELTA = set(" ,;{}()\n\t=")
_GLOB = set("{}[]*?\\")  # a path holding these is a pattern to Spark's file reader
# A session that skips missing or corrupt files would silently drop a checkpoint's rows:
# a checkpoint is read whole or fails (the read options outrank the session's confs).
_STRICT = {"ignoreMissingFiles": "false", "ignoreCorruptFiles": "false"}


@dataclass(frozen=True)
class Written:
    """The commit a checkpoint write produced."""

    version: int
    rows: int | None
    files: int | None
    bytes: int | None


def _children(data_type) -> list:
    """The types directly inside an array or a map."""
    from pyspark.sql import types as T

    if isinstance(data_type, T.ArrayType):
        return [data_type.elementType]
    if isinstance(data_type, T.MapType):
        return [data_type.keyType, data_type.valueType]
    return []


def _needs_positional_names(data_type) -> bool:
    """Whether Delta would refuse a field name somewhere in ``data_type``."""
    from pyspark.sql import types as T

    if isinstance(data_type, T.StructType):
        names = [f.name.lower() for f in data_type.fields]
        if len(set(names)) < len(names) or any(set(f.name) & _REFUSED_BY_DELTA for f in data_type.fields):
            return True
        return any(_needs_positional_names(f.dataType) for f in data_type.fields)
    return any(_needs_positional_names(t) for t in _children(data_type))


def _check_storable(schema) -> None:
    """Refuse, naming the column, a type neither Delta nor parquet can store."""
    from pyspark.sql import types as T

    # CalendarIntervalType is public in pyspark from Spark 4.0 only (3.5 has the other two).
    unstorable = tuple(getattr(T, name) for name in ("DayTimeIntervalType", "YearMonthIntervalType",
                                                      "CalendarIntervalType") if hasattr(T, name))

    def walk(data_type, path: str) -> None:
        if isinstance(data_type, unstorable):
            raise CheckpointError("the stage returned a column a checkpoint cannot store",
                                  f"column {path!r} is {data_type.simpleString()}: Delta and parquet have no "
                                  "interval type; cast it, for example to a number of seconds or months",
                                  column=path)
        if isinstance(data_type, T.StructType):
            for f in data_type.fields:
                walk(f.dataType, f"{path}.{f.name}" if path else f.name)
        for child in _children(data_type):
            walk(child, f"{path}[]")

    walk(schema, "")


def _renamed(data_type, names):
    """``data_type`` with every struct field renamed: ``names(i, field)`` gives the new name."""
    from pyspark.sql import types as T

    if isinstance(data_type, T.StructType):
        return T.StructType([T.StructField(names(i, f), _renamed(f.dataType, names), f.nullable, f.metadata)
                             for i, f in enumerate(data_type.fields)])
    if isinstance(data_type, T.ArrayType):
        return T.ArrayType(_renamed(data_type.elementType, names), data_type.containsNull)
    if isinstance(data_type, T.MapType):
        return T.MapType(_renamed(data_type.keyType, names), _renamed(data_type.valueType, names),
                         data_type.valueContainsNull)
    return data_type


def _like(stored, original):
    """``stored``'s types and nullability under ``original``'s field names (same shape)."""
    from pyspark.sql import types as T

    if isinstance(stored, T.StructType):
        return T.StructType([T.StructField(o.name, _like(s.dataType, o.dataType), s.nullable, o.metadata)
                             for s, o in zip(stored.fields, original.fields)])
    if isinstance(stored, T.ArrayType):
        return T.ArrayType(_like(stored.elementType, original.elementType), stored.containsNull)
    if isinstance(stored, T.MapType):
        return T.MapType(_like(stored.keyType, original.keyType), _like(stored.valueType, original.valueType),
                         stored.valueContainsNull)
    return stored


def _positional(df):
    """``df`` with positional names (``c0``.. at the top, ``f0``.. inside), same types, same rows."""
    from pyspark.sql import functions as F

    fields = df.schema.fields
    # toDF renames by position: names equal but for case cannot be selected by name.
    return df.toDF(*[f"c{i}" for i in range(len(fields))]).select(
        [F.col(f"c{i}").cast(_renamed(f.dataType, lambda j, _: f"f{j}")).alias(f"c{i}") for i, f in enumerate(fields)])


def _original(df, schema_json: str):
    """Undo :func:`_positional`: the original names back, the stored types and nullability kept."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    original = T.StructType.fromJson(json.loads(schema_json))
    return df.select([F.col(s.name).cast(_like(s.dataType, o.dataType)).alias(o.name)
                      for s, o in zip(df.schema.fields, original.fields)])


def _nullable(schema_json: str) -> str:
    """The schema with every field, element and value nullable, as Spark's parquet writer stores them.

    (A non-nullable column would also need Delta's ``invariants`` feature,
    which delta-rs does not list when it must use table features.)
    """
    def walk(node):
        if isinstance(node, dict):
            return {k: True if k in ("nullable", "containsNull", "valueContainsNull") else walk(v)
                    for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    return json.dumps(walk(json.loads(schema_json)))


def write(df, location: str, metadata: Mapping[str, Any], layout: Storage) -> Written:
    """Create the checkpoint table at ``location`` from ``df``, in one commit.

    Spark writes the parquet files (counting rows on the way, no extra pass);
    delta-rs then commits them as version 0 of a new table, with our
    ``userMetadata``, in milliseconds. Until that commit the files are no
    table at all. A committed checkpoint is never written over; files a failed
    attempt left at the location are replaced.

    >>> w = write(df, layout.checkpoint("job", key, "cleaned", run_id), {"run_id": run_id, "stage": "cleaned"})  # doctest: +SKIP
    >>> w.version, w.rows   # doctest: +SKIP
    (0, 1998001)
    """
    import deltalake
    import pyarrow.fs as pafs
    from deltalake.transaction import AddAction, create_table_with_add_actions
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    tag = dict(metadata)
    _check_storable(df.schema)
    if _needs_positional_names(df.schema):
        tag["schema"] = df.schema.json()
        df = _positional(df)
    schema = deltalake.Schema.from_json(_nullable(df.schema.json()))
    fs, base = layout.filesystem(location)
    if fs.get_file_info(f"{base}/_delta_log").type != pafs.FileType.NotFound:
        raise CheckpointError("checkpoint location already holds a table",
                              f"expected no Delta table at {location} (each run writes its own), found one",
                              location=location)
    counted = Observation(f"spark_recover_rows_{uuid.uuid4().hex}")  # unique: jobs may share a session
    df.observe(counted, F.count(F.lit(1)).alias("rows")).write.mode("overwrite").parquet(spark_uri(location))
    files = [info for info in fs.get_file_info(pafs.FileSelector(base))
             if info.type == pafs.FileType.File and info.base_name.endswith(".parquet")
             and not info.base_name.startswith(("_", "."))]
    rows = int(counted.get["rows"])
    _check_listing(fs, files, rows, location)
    adds = [AddAction(path=urllib.parse.quote(info.base_name), size=info.size, partition_values={},
                      modification_time=int(info.mtime.timestamp() * 1000), data_change=True, stats=None)
            for info in files]
    text = json.dumps(tag, sort_keys=True)
    try:
        create_table_with_add_actions(native_uri(location), schema, adds, mode="error",
                                      storage_options=dict(layout.storage_options or {}) or None,
                                      commit_properties=deltalake.CommitProperties(
                                          custom_metadata={"userMetadata": text}))
    except Exception as exc:  # mode="error": someone committed a table here after our check
        raise CheckpointError("checkpoint commit failed", f"expected to create version 0 of {location}, "
                              f"delta-rs refused: {_first(exc)}", location=location) from exc
    return Written(version=0, rows=rows, files=len(files), bytes=sum(i.size for i in files))


def _check_listing(fs, files: list, rows: int, location: str) -> None:
    """Refuse to commit a listing whose parquet footers do not hold the ``rows`` the write produced.

    The commit adds whatever the folder lists: a file a zombie task or another
    writer left there, or one cut short, would otherwise become checkpoint data.
    Only footers are read.
    """
    import pyarrow.parquet as pq

    names = ", ".join(sorted(i.base_name for i in files)[:10]) + (" ..." if len(files) > 10 else "")
    found = 0
    for info in files:
        try:
            with fs.open_input_file(info.path) as fh:
                found += pq.read_metadata(fh).num_rows
        except Exception as exc:  # not parquet, or cut short: no footer
            raise CheckpointError("checkpoint folder holds a file that is not whole parquet",
                                  f"expected the write's parquet files in {location}, found {info.base_name} "
                                  f"without a readable footer ({_first(exc)}); nothing was committed",
                                  location=location, file=info.base_name) from exc
    if found != rows:
        raise CheckpointError("checkpoint folder does not hold what the write produced",
                              f"expected {rows} rows in {location}, the parquet footers of its "
                              f"{len(files)} file(s) ({names}) hold {found}; nothing was committed",
                              location=location, expected_rows=rows, found_rows=found)


def read(spark, location: str, version: int, layout: Storage):
    """The checkpoint exactly as committed at ``version``, under the stage's own column names.

    >>> read(spark, w_location, 0, layout).columns   # doctest: +SKIP
    ['sum(v)']
    """
    import pyarrow as pa
    from pyspark.sql import types as T

    table = layout.delta(location, version=int(version))
    commit = next((c for c in table.history() if int(c["version"]) == int(version)), {})
    meta = json.loads(commit.get("userMetadata") or "{}")
    adds = pa.table(table.get_add_actions(flatten=True))
    dv = next((c for c in adds.column_names if c.startswith("deletionVector")), None)
    base = spark_uri(location).rstrip("/")
    if (table.metadata().configuration.get("delta.columnMapping.mode", "none") == "none"
            and (dv is None or adds.column(dv).null_count == adds.num_rows) and not set(base) & _GLOB):
        schema = T.StructType.fromJson(json.loads(table.schema().to_json()))
        files = [f"{base}/{urllib.parse.unquote(p)}" for p in adds.column("path").to_pylist()]
        df = spark.read.schema(schema).options(**_STRICT).parquet(*files) if files \
            else spark.createDataFrame([], schema)
    else:  # physical column names, deletion vectors, or a path Spark would glob: Delta's own reader
        df = spark.read.format("delta").options(**_STRICT).option("versionAsOf", int(version)).load(spark_uri(location))
    return _original(df, meta["schema"]) if meta.get("schema") else df


def verify(location: str, version: int, layout: Storage) -> str | None:
    """Check a checkpoint's files; return what is wrong, or ``None`` when it is whole.

    >>> verify("/tmp/recover/checkpoints/job/k/20261125T101500Z-ab12cd/cleaned", 0, layout)   # doctest: +SKIP
    "data file part-00000-….parquet is missing"
    """
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        table = layout.delta(location, version=int(version))
    except Exception as exc:  # table gone, or the version's log files were cleaned up
        return f"version {version} of the checkpoint table cannot be loaded ({_first(exc)})"
    adds = pa.table(table.get_add_actions(flatten=True))
    expected = {urllib.parse.unquote(p): s for p, s in
                zip(adds.column("path").to_pylist(), adds.column("size_bytes").to_pylist())}
    fs, base = layout.filesystem(location)
    found = {info.path[len(base.rstrip("/")) + 1:]: info.size
             for info in fs.get_file_info(pafs.FileSelector(base, recursive=True))
             if info.type == pafs.FileType.File}
    for path, size in sorted(expected.items()):
        if path not in found:
            return f"data file {path} is missing"
        if found[path] != size:
            return f"data file {path} has {found[path]} bytes, the Delta log recorded {size}"
    return None


def read_stage(spark, record, layout: Storage):
    """A stage's checkpointed output: its table at its version, or a chunked stage's chunks, unioned by name.

    >>> read_stage(spark, run.stages["daily"], layout).count()   # doctest: +SKIP
    """
    parts = [read(spark, c["checkpoint"], c["version"], layout) for c in record.output]
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out


def verify_stage(record, layout: Storage) -> str | None:
    """What is wrong with a stage's checkpoint (each chunk's, for a chunked stage), or ``None``."""
    for c in record.output:
        problem = verify(c["checkpoint"], c["version"], layout)
        if problem:
            return problem if len(record.output) == 1 else f"chunk {c.get('chunk')!r}: {problem}"
    return None


def _first(exc: BaseException) -> str:
    """An error's name and first line (delta-rs appends a multi-line backtrace)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
