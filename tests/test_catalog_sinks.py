"""Catalog sinks: a catalog that outlives no process is refused; a drill's scratch catalog tables."""

from __future__ import annotations

from pathlib import Path

import deltalake
import pytest

from spark_recover.errors import UsageError
from spark_recover.job import load_job
from spark_recover.publication import require_lasting_catalog
from spark_recover.sinks import commit_tag, redirected, redirected_table, resolve_sinks, scratch_schema
from spark_recover.storage import Layout, native_uri
from spark_recover.testing import CHILD_JAVA_OPTIONS, TEST_SPARK_CONFS, run_args, run_cli, runs_of

from conftest import JOBS, LOCAL_MODE

CATALOG_JOB = str(JOBS / "catalog_sink_job.py")


def _conf(tmp_path: Path, **spark: str) -> str:
    """A conf file: the tests' Spark settings, a warehouse in ``tmp_path``, and ``spark``."""
    confs = {**TEST_SPARK_CONFS, "spark.driver.extraJavaOptions": CHILD_JAVA_OPTIONS,
             "spark.sql.warehouse.dir": str(tmp_path / "warehouse"), **spark}
    path = tmp_path / "spark-recover.toml"
    path.write_text("\n".join(["[spark]"] + [f'"{k}" = "{v}"' for k, v in confs.items()]) + "\n")
    return str(path)


@pytest.fixture
def catalog_table(spark, tmp_path, monkeypatch):
    """The catalog job's sink table, in a schema of the test's own whose files are under ``tmp_path``."""
    schema = f"test_{tmp_path.name[-12:].lower().replace('-', '_')}"
    spark.sql(f"CREATE SCHEMA {schema} LOCATION '{tmp_path / 'catalog'}'")
    monkeypatch.setenv("CATALOG_SINK_TABLE", f"{schema}.regions")
    yield f"{schema}.regions"
    spark.sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_catalog_sink_in_a_self_built_in_memory_catalog_is_refused(source_data, tmp_path):
    """Spark's in-memory catalog dies with the driver: a resume (a new process) could not see the
    table the run created. A run with a catalog sink is refused before it writes anything."""
    root, conf = str(tmp_path / "root"), _conf(tmp_path)
    params = {"data": str(source_data), "out": str(tmp_path / "out")}
    env = {**LOCAL_MODE, "SPARK_RECOVER_FAILPOINT": "store_totals:sink_before"}  # after the catalog sink
    first = run_cli(*run_args(CATALOG_JOB, root, params, ["--conf", conf]), env=env)
    assert first.returncode == 2, first.stdout + first.stderr
    assert "default.spark_recover_regions" in first.stderr
    assert "spark.sql.catalogImplementation" in first.stderr and "hive" in first.stderr
    assert runs_of(root) == [] and not (tmp_path / "warehouse").exists() and not (tmp_path / "out").exists()


def test_a_drill_redirects_a_catalog_sink_to_a_scratch_table_of_its_own(tmp_path):
    """The drill and its driver processes name the same scratch table from the sink root alone; it is
    a catalog table (written through the catalog, like the user's), never the user's, never a path."""
    job = load_job(CATALOG_JOB)
    params = {"data": "/d", "out": str(tmp_path / "out")}
    sink_root = str(tmp_path / "drill" / "sinks")
    real, scratch = (resolve_sinks(job, params, Layout.at(str(tmp_path)), root) for root in (None, sink_root))
    assert [(t.table, t.target.catalog) for t in real] == [("default.spark_recover_regions", True),
                                                          (str(tmp_path / "out" / "store_totals"), False)]
    schema = scratch_schema(sink_root)
    assert [(t.table, t.target.catalog) for t in scratch] == [
        (f"{schema}.spark_recover_regions_{redirected_table(sink_root, 'default.spark_recover_regions')[-8:]}", True),
        (redirected(sink_root, str(tmp_path / "out" / "store_totals")), False)]
    assert scratch_schema(sink_root + "/") == schema != scratch_schema(str(tmp_path / "other" / "sinks"))
    assert redirected_table(sink_root, "a.daily") != redirected_table(sink_root, "b.daily")  # same table name
    assert redirected_table(sink_root, "DEFAULT.Spark_Recover_Regions") == scratch[0].table  # names ignore case
    assert redirected_table(sink_root, "cat.db.t").startswith(f"cat.{schema}.t_")  # stays in its catalog


HIVE = {"spark.sql.catalogImplementation": "hive"}
URL = "spark.hadoop.javax.jdo.option.ConnectionURL"


@pytest.mark.parametrize("confs,shared,why", [
    ({}, False, "in-memory: the catalog lives in the driver"),
    ({"spark.sql.catalogImplementation": "in-memory"}, False, "in-memory: the catalog lives in the driver"),
    (HIVE, False, "Derby's metastore_db in the working directory"),  # Hive's default metastore
    ({**HIVE, URL: "jdbc:derby:;databaseName=rel/db;create=true"}, False, "Derby's rel/db in the working directory"),
    ({**HIVE, URL: "jdbc:derby:memory:m;create=true"}, False, "an in-memory Derby metastore dies with the driver"),
    ({**HIVE, URL: "jdbc:derby:;databaseName=/abs/db;create=true"}, False, None),
    ({**HIVE, URL: "jdbc:derby:/abs/db;create=true"}, True, "admits one process at a time"),  # a drill
    ({**HIVE, URL: "jdbc:postgresql://meta/hive"}, True, None),
    ({**HIVE, "spark.hadoop.hive.metastore.uris": "thrift://meta:9083"}, True, None),
])
def test_a_catalog_that_dies_with_the_driver_or_depends_on_the_directory_is_refused(confs, shared, why):
    if why is None:
        require_lasting_catalog(["db.t"], confs, shared=shared)
        return
    with pytest.raises(UsageError) as err:
        require_lasting_catalog(["db.t", "db.u"], confs, shared=shared)
    assert err.value.exit_code == 2 and "db.t, db.u" in str(err.value) and why in err.value.detail
    assert '"spark.sql.catalogImplementation" = "hive"' in err.value.detail


def test_a_drill_of_a_catalog_sink_in_an_in_memory_catalog_is_refused_before_any_driver(source_data, tmp_path):
    root, conf = tmp_path / "root", _conf(tmp_path)
    done = run_cli("drill", CATALOG_JOB, "-p", f"data={source_data}", "-p", f"out={tmp_path / 'out'}",
                   "--kills", "1", "--root", str(root), "--conf", conf, env=LOCAL_MODE)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "catalog sink default.spark_recover_regions needs a catalog that outlives the driver" in done.stderr
    assert not list(root.rglob("_delta_log")) and not (tmp_path / "warehouse").exists()


def test_a_catalog_sink_in_a_hive_metastore_is_resumed_from_another_directory(source_data, tmp_path):
    """With a metastore that outlives the driver (Derby at an absolute path), a run killed after its
    catalog sink's commit is resumed by a new process in another working directory: the resume sees
    the table, skips the write already made, and publishes the rest."""
    root = str(tmp_path / "root")
    conf = _conf(tmp_path, **{"spark.sql.catalogImplementation": "hive",
                              URL: f"jdbc:derby:;databaseName={tmp_path / 'metastore_db'};create=true",
                              "spark.driver.extraJavaOptions": f"{CHILD_JAVA_OPTIONS} "
                                                               f"-Dderby.stream.error.file={tmp_path / 'derby.log'}"})
    params = {"data": str(source_data), "out": str(tmp_path / "out")}
    env = {**LOCAL_MODE, "SPARK_RECOVER_FAILPOINT": "store_totals:sink_before"}  # after the catalog sink
    first = run_cli(*run_args(CATALOG_JOB, root, params, ["--conf", conf]), env=env)
    assert first.returncode == -9, first.stdout + first.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = run_cli(*run_args(CATALOG_JOB, root, params, ["--conf", conf, "--resume"]), env=LOCAL_MODE,
                      cwd=str(elsewhere))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    dead, run = runs_of(root)
    sinks = {t.rsplit("/", 1)[-1]: e for t, e in run.sinks.items()}
    assert run.origin_run_id == dead.run_id and run.status == "succeeded"
    assert sinks["default.spark_recover_regions"]["skipped_duplicate"] is True
    assert sinks["store_totals"]["skipped_duplicate"] is False
    table = deltalake.DeltaTable(str(tmp_path / "warehouse" / "spark_recover_regions"))  # the managed table
    assert table.version() == 0 and len(table.to_pyarrow_table()) == 4  # one commit: 4 regions, once
    assert not list(elsewhere.iterdir())  # no metastore_db, no warehouse in the working directory


def test_a_catalog_table_a_run_creates_carries_its_tag_and_is_rolled_back(spark, source_data, tmp_path,
                                                                           catalog_table):
    """Delta's CREATE TABLE AS SELECT (``saveAsTable`` of a new table) drops the ``userMetadata`` write
    option: the run's own commit looked like another writer's, and its rollback was refused (exit 3)."""
    from spark_recover.recovery import rollback

    root = str(tmp_path / "root")
    result = load_job(CATALOG_JOB).run({"data": str(source_data), "out": str(tmp_path / "out")}, root=root,
                                       spark=spark, echo=False)
    assert result.ok
    location = spark.sql(f"DESCRIBE DETAIL {catalog_table}").first()["location"]
    [commit] = deltalake.DeltaTable(native_uri(location)).history()
    assert commit_tag(commit)["run_id"] == result.run_id, commit
    rollback(result.run_id, root=root, spark=spark, echo=False)
    assert not spark.catalog.tableExists(catalog_table)  # the run created it: dropped


def test_a_rollback_in_a_session_whose_catalog_cannot_see_the_runs_table_is_refused(spark, source_data, tmp_path,
                                                                                      catalog_table):
    """A run from an attached session (a notebook) wrote a catalog table; `spark-recover rollback` from
    the command line builds a session of its own, whose in-memory catalog does not hold that table (it
    said "already at its recovery point" and succeeded). It is refused (exit 2, nothing changed)."""
    root = str(tmp_path / "root")
    result = load_job(CATALOG_JOB).run({"data": str(source_data), "out": str(tmp_path / "out")}, root=root,
                                       spark=spark, echo=False)
    assert result.ok and spark.catalog.tableExists(catalog_table)
    done = run_cli("rollback", result.run_id, "--root", root, "--conf", _conf(tmp_path), env=LOCAL_MODE)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"catalog sink {catalog_table} needs a catalog that outlives the driver" in done.stderr
    assert spark.catalog.tableExists(catalog_table) and not runs_of(root)[-1].rolled_back  # nothing changed
    assert deltalake.DeltaTable(str(tmp_path / "out" / "store_totals")).version() == 0
