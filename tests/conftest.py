"""Shared fixtures: source tables for tests/jobs/small_job.py, and its clean output."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from spark_recover.job import load_job
from spark_recover.ledger import Ledger
from spark_recover.storage import Layout
from spark_recover.testing import run_args, run_cli

JOBS = Path(__file__).parent / "jobs"
SMALL_JOB = str(JOBS / "small_job.py")
STAGES = ["cleaned", "enriched", "daily", "ranked", "summary"]
SINK_JOB = str(JOBS / "sink_job.py")
TABLES = ["daily_log", "by_day", "store_totals", "region_totals"]  # its sinks: append, replace_where, merge, overwrite
# The environment of a job process that builds a local session even when the tests run through Connect.
LOCAL_MODE = {"SPARK_REMOTE": None, "SPARK_CONNECT_MODE_ENABLED": None}


def pytest_configure(config) -> None:
    # A SIGKILLed job process leaves its Spark scratch (spark-*: ~90 MB of jars each) in the temp folder for
    # ever: every Spark process of the run keeps it in one folder, removed at the end.
    if not os.environ.get("SPARK_LOCAL_DIRS"):
        config.spark_local_dirs = os.environ["SPARK_LOCAL_DIRS"] = tempfile.mkdtemp(prefix="spark-recover-tests-")


def pytest_unconfigure(config) -> None:
    if getattr(config, "spark_local_dirs", None):
        shutil.rmtree(config.spark_local_dirs, ignore_errors=True)
        os.environ.pop("SPARK_LOCAL_DIRS", None)


def make_sources(spark, data: Path, rows: int = 20_000) -> None:
    """Deterministic source tables: events (rows) and stores (50)."""
    events = spark.range(rows).select(
        (F.col("id") % 50).alias("store_id"),
        (F.col("id") % 7).cast("string").alias("day"),
        (F.col("id") % 5).alias("qty"),
        ((F.col("id") * 13) % 100 / 10.0).alias("price"))
    events.write.format("delta").mode("overwrite").save(str(data / "events"))
    stores = spark.range(50).select(F.col("id").alias("store_id"),
                                    (F.col("id") % 4).cast("string").alias("region"))
    stores.write.format("delta").mode("overwrite").save(str(data / "stores"))


@pytest.fixture(scope="session")
def source_data(spark, tmp_path_factory) -> Path:
    """Read-only source tables shared by the session."""
    data = tmp_path_factory.mktemp("sources")
    make_sources(spark, data)
    return data


@pytest.fixture
def own_sources(source_data, tmp_path) -> Path:
    """A private copy of the source tables, for tests that change them."""
    data = tmp_path / "sources"
    shutil.copytree(source_data, data)
    return data


@pytest.fixture(scope="session")
def small_job():
    return load_job(SMALL_JOB)


@pytest.fixture(scope="session")
def clean_outputs(spark, small_job, source_data, tmp_path_factory):
    """Every stage's output of one clean, uninterrupted run (the reference)."""
    root = str(tmp_path_factory.mktemp("clean-root"))
    result = small_job.run({"data": str(source_data)}, root=root, spark=spark, echo=False)
    assert result.status == "succeeded", result.error
    return {name: result.output(name).collect() for name in STAGES}, result


@pytest.fixture(scope="session")
def sink_job():
    return load_job(SINK_JOB)


def read_table(spark, out: Path, table: str, version: int | None = None):
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(str(out / table))


@pytest.fixture(scope="session")
def clean_sinks(request, spark, sink_job, source_data, tmp_path_factory):
    """Each sink table's rows after one clean run into empty tables.

    With ``pytest --connect`` that run is a local-mode process, so every sink
    test through Connect is checked against local mode, row by row.
    """
    out = tmp_path_factory.mktemp("clean-out")
    params = {"data": str(source_data), "out": str(out), "day": "3"}
    root = str(tmp_path_factory.mktemp("clean-sink-root"))
    if request.config.getoption("connect"):
        local = run_cli(*run_args(SINK_JOB, root, params, []), env=LOCAL_MODE)
        assert local.returncode == 0, local.stdout + local.stderr
        assert Ledger(Layout.at(root)).run(local.run_id).metrics["session"].startswith("local")
    else:
        result = sink_job.run(params, root=root, spark=spark, echo=False)
        assert result.status == "succeeded", result.error
    return {t: read_table(spark, out, t).collect() for t in TABLES}


def check_tables(spark, out: Path, clean_sinks) -> None:
    """Every sink table equals the clean run's, row for row (Spark and delta-rs agree)."""
    from recovery_checks import assert_same_rows
    from spark_recover.storage import read_delta

    for table in TABLES:
        assert_same_rows(spark, read_table(spark, out, table), clean_sinks[table])
        assert read_delta(str(out / table)).num_rows == len(clean_sinks[table])


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 server (moto) on localhost, one per test module that asks for it."""
    from clusterkit import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def options(s3):
    """The storage options that reach :func:`s3` (delta-rs spelling)."""
    from spark_recover.storage import with_s3_defaults

    return with_s3_defaults(s3.options, {})
