"""Checkpoints: whatever a stage returns comes back the same, names and types and rows."""

from __future__ import annotations

import datetime as dt
import decimal
import json

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_recover import Job, checkpoint
from spark_recover.errors import CheckpointError
from spark_recover.storage import Layout

# Every name Delta refuses in a column (at the top and nested), a dot, and two names equal but for case.
ODD_NAMES = T.StructType([
    T.StructField("sum(v)", T.LongType()),
    T.StructField("with space", T.StringType()),
    T.StructField("a.b", T.IntegerType()),
    T.StructField("k=v;x,y{z}\t", T.IntegerType()),
    T.StructField("Case", T.IntegerType()),
    T.StructField("case", T.IntegerType()),
    T.StructField("nested", T.StructType([T.StructField("in ner", T.StringType()),
                                          T.StructField("deep (x)", T.StructType([T.StructField("y z", T.LongType())]))])),
    T.StructField("items", T.ArrayType(T.StructType([T.StructField("item name", T.StringType())]))),
    T.StructField("lookup", T.MapType(T.StringType(), T.StructType([T.StructField("v al", T.DoubleType())]))),
])

EVERY_TYPE = T.StructType([
    T.StructField("bool", T.BooleanType()), T.StructField("byte", T.ByteType()),
    T.StructField("short", T.ShortType()), T.StructField("int", T.IntegerType()),
    T.StructField("long", T.LongType()), T.StructField("float", T.FloatType()),
    T.StructField("double", T.DoubleType()), T.StructField("dec", T.DecimalType(38, 18)),
    T.StructField("small_dec", T.DecimalType(5, 2)), T.StructField("text", T.StringType()),
    T.StructField("bytes", T.BinaryType()), T.StructField("day", T.DateType()),
    T.StructField("ts", T.TimestampType()), T.StructField("ts_ntz", T.TimestampNTZType()),
    T.StructField("longs", T.ArrayType(T.LongType())),
    T.StructField("by_key", T.MapType(T.StringType(), T.ArrayType(T.IntegerType()))),
    T.StructField("pair", T.StructType([T.StructField("a", T.IntegerType()), T.StructField("b", T.StringType())])),
])


def _every_type_rows():
    ts = dt.datetime(2026, 11, 25, 13, 45, 12, 123456)
    full = (True, 1, 2, 3, 4, 1.5, 2.25, decimal.Decimal("12345678901234567890.123456789012345678"),
            decimal.Decimal("-3.14"), "héllo 世界", b"\x00\xff\x10", dt.date(2026, 11, 25), ts, ts,
            [1, None, 3], {"k": [1, 2], "e": []}, (7, "x"))
    return [full, tuple([None] * len(EVERY_TYPE.fields))]


@pytest.mark.parametrize("schema,rows", [
    (ODD_NAMES, [(1, "a", 2, 3, 4, 5, ("x", (6,)), [("i",)], {"m": (0.5,)}),
                 (None, None, None, None, None, None, None, None, None)]),
    (EVERY_TYPE, _every_type_rows()),
], ids=["odd-names", "every-type"])
def test_checkpoint_round_trips_names_types_and_rows(spark, tmp_path, schema, rows):
    layout = Layout.at(str(tmp_path))
    df = spark.createDataFrame(rows, schema)
    location = layout.checkpoint("job", "key", "stage", "run")
    written = checkpoint.write(df, location, {"run_id": "run", "stage": "stage"}, layout)
    assert (written.version, written.rows) == (0, len(rows))
    back = checkpoint.read(spark, location, written.version, layout)
    assert back.schema.names == df.schema.names
    # chispa cannot sort by these names or by a map: order both by the first column (distinct per row),
    # under positional top-level names; nested names, types and every value are still compared.
    plain = [f"c{i}" for i in range(len(df.columns))]
    assert_df_equality(back.toDF(*plain).orderBy("c0"), df.toDF(*plain).orderBy("c0"), ignore_nullable=True)
    # Any Delta reader opens it (under positional names when Delta refuses the stage's own), with our userMetadata.
    table = deltalake.DeltaTable(location)
    assert table.to_pyarrow_table().num_rows == len(rows)
    assert json.loads(table.history(1)[0]["userMetadata"])["run_id"] == "run"
    stored = checkpoint._positional(back) if checkpoint._needs_positional_names(df.schema) else back
    by_delta = spark.read.format("delta").load(location)
    assert_df_equality(by_delta.toDF(*plain).orderBy("c0"), stored.toDF(*plain).orderBy("c0"))


def test_a_variant_column_round_trips(spark, tmp_path):
    if int(spark.version.split(".")[0]) < 4:
        pytest.skip(f"Spark {spark.version} has no VARIANT type (Spark 4.0+)")
    layout = Layout.at(str(tmp_path))
    df = spark.sql("""SELECT id, parse_json(CASE WHEN id = 1 THEN NULL ELSE '{"a": ' || id || ', "b": [1, "x"]}' END) AS v
                      FROM range(3)""")
    location = layout.checkpoint("job", "key", "stage", "run")
    written = checkpoint.write(df, location, {"run_id": "run"}, layout)
    as_json = [F.col("id"), F.to_json("v").alias("v")]
    assert_df_equality(checkpoint.read(spark, location, written.version, layout).select(as_json),
                       df.select(as_json), ignore_row_order=True, ignore_nullable=True)
    assert "variantType" in (deltalake.DeltaTable(location).protocol().reader_features or [])


def test_a_stage_returning_a_global_aggregate_checkpoints_and_resumes(spark, recover_root):
    job = Job("global_sum")

    @job.stage
    def total(spark):
        return spark.range(10).withColumn("v", F.col("id") * 2).groupBy().sum("v")

    @job.stage
    def doubled(total):
        return total.select((F.col("`sum(v)`") * 2).alias("twice"))

    first = job.run(root=recover_root, spark=spark, echo=False)
    assert first.ok, first.error
    assert first.output("total").schema.names == ["sum(v)"] and first.output("total").first()[0] == 90
    again = job.resume(first.run_id, root=recover_root, spark=spark, echo=False, rerun=["doubled"])
    assert [s.reused for s in again.stages] == [True, False]
    assert again.output("doubled").first()["twice"] == 180


def test_an_interval_column_is_refused_by_name(spark, tmp_path):
    layout = Layout.at(str(tmp_path))
    df = spark.range(1).select(F.make_dt_interval(F.lit(1)).alias("wait"))
    with pytest.raises(CheckpointError, match="column 'wait' is interval day to second"):
        checkpoint.write(df, layout.checkpoint("j", "k", "s", "r"), {}, layout)
    assert not deltalake.DeltaTable.is_deltatable(layout.checkpoint("j", "k", "s", "r"))


def test_each_run_writes_its_own_checkpoint_table(spark, recover_root, source_data, small_job):
    first = small_job.run({"data": str(source_data)}, root=recover_root, spark=spark, echo=False)
    again = small_job.resume(first.run_id, root=recover_root, spark=spark, echo=False, rerun=["summary"])
    before = {s.name: s.checkpoint for s in first.stages}
    after = {s.name: s for s in again.stages}
    assert after["summary"].checkpoint != before["summary"] and after["summary"].version == 0
    assert after["cleaned"].reused and after["cleaned"].checkpoint == before["cleaned"]
    assert deltalake.DeltaTable(before["summary"]).version() == 0  # the first run's table is as it was


def _with_stray_file(df, location: str, template: str):
    """``df``, whose write also copies the file ``template`` into ``location`` from inside the job (a zombie writer)."""
    from pyspark.sql import types as T

    def leave_file(value):
        import shutil

        shutil.copyfile(template, f"{location}/part-99999-stray.parquet")
        return value

    return df.select(F.udf(leave_file, T.LongType(), useArrow=False)("id").alias("id"))  # the workers have no pyarrow


@pytest.mark.parametrize("kind", ["whole", "partial"])
def test_a_stray_file_in_the_checkpoint_folder_is_caught_before_the_commit(spark, tmp_path, kind):
    layout = Layout.at(str(tmp_path))
    location = layout.checkpoint("j", "k", "s", "r")
    template = tmp_path / "stray.parquet"  # a real parquet file of 5 rows, or its first half
    pq.write_table(pa.table({"id": list(range(5))}), template)
    if kind == "partial":  # as a writer killed mid-file leaves it
        template.write_bytes(template.read_bytes()[: template.stat().st_size // 2])
    df = _with_stray_file(spark.range(0, 20, numPartitions=1), location, str(template))
    with pytest.raises(CheckpointError) as caught:
        checkpoint.write(df, location, {"run_id": "r"}, layout)
    assert "part-99999-stray.parquet" in str(caught.value), caught.value
    assert not deltalake.DeltaTable.is_deltatable(location)  # nothing committed


def test_a_checkpoint_missing_a_file_fails_loudly_even_when_the_session_ignores_missing_files(spark, tmp_path):
    layout = Layout.at(str(tmp_path))
    location = layout.checkpoint("j", "k", "s", "r")
    written = checkpoint.write(spark.range(0, 100, numPartitions=4), location, {"run_id": "r"}, layout)
    assert written.files == 4
    df = checkpoint.read(spark, location, written.version, layout)
    first = sorted(p for p in (tmp_path / location).parent.glob(f"{location.rsplit('/', 1)[-1]}/*.parquet"))[0]
    first.unlink()  # after the read was planned, before it runs: what a lazy DataFrame meets
    spark.conf.set("spark.sql.files.ignoreMissingFiles", "true")
    spark.conf.set("spark.sql.files.ignoreCorruptFiles", "true")
    try:
        with pytest.raises(Exception, match="(?i)does not exist|FileNotFound|not found"):
            df.collect()
    finally:
        spark.conf.unset("spark.sql.files.ignoreMissingFiles")
        spark.conf.unset("spark.sql.files.ignoreCorruptFiles")
