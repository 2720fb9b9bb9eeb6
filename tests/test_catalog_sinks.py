"""Catalog sinks: a catalog that outlives no process is refused; a drill's scratch catalog tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_recover.errors import UsageError
from spark_recover.job import load_job
from spark_recover.publication import redirected, redirected_table, require_lasting_catalog, resolve_sinks, \
    scratch_schema
from spark_recover.storage import Layout
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


@pytest.mark.parametrize("confs,refused", [({}, True), ({"spark.sql.catalogImplementation": "in-memory"}, True),
                                           ({"spark.sql.catalogImplementation": "hive"}, False)])
def test_a_catalog_that_dies_with_the_driver_is_refused(confs, refused):
    if not refused:
        require_lasting_catalog(["db.t"], confs)
        return
    with pytest.raises(UsageError) as err:
        require_lasting_catalog(["db.t", "db.u"], confs)
    assert err.value.exit_code == 2 and "db.t, db.u" in str(err.value)
    assert '"spark.sql.catalogImplementation" = "hive"' in err.value.detail


def test_a_drill_of_a_catalog_sink_in_an_in_memory_catalog_is_refused_before_any_driver(source_data, tmp_path):
    root, conf = tmp_path / "root", _conf(tmp_path)
    done = run_cli("drill", CATALOG_JOB, "-p", f"data={source_data}", "-p", f"out={tmp_path / 'out'}",
                   "--kills", "1", "--root", str(root), "--conf", conf, env=LOCAL_MODE)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "catalog sink default.spark_recover_regions needs a catalog that outlives the driver" in done.stderr
    assert not list(root.rglob("_delta_log")) and not (tmp_path / "warehouse").exists()
