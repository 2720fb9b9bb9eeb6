"""gc removes what no resumable run needs, never what one does, and warns about short retention."""

from __future__ import annotations

import deltalake

from spark_recover.job import load_job
from spark_recover.recovery import create_point
from spark_recover.retention import gc
from spark_recover.storage import Layout

from conftest import JOBS


def test_gc_keeps_what_a_failed_run_needs(spark, recover_root, tmp_path):
    job = load_job(str(JOBS / "failing_job.py"))
    failed = job.run({"fail": "yes"}, root=recover_root, spark=spark, echo=False)
    assert failed.status == "failed"
    numbers = next(s for s in failed.stages if s.name == "numbers")
    ghost = Layout.at(recover_root).checkpoint("ghost_job", "0000", "orphan")  # no run refers to it
    spark.range(3).write.format("delta").save(ghost)

    report = gc(0, root=recover_root, spark=spark, echo=False)

    assert report["deleted_tables"] == [ghost]
    assert not deltalake.DeltaTable.is_deltatable(ghost)
    assert [v["table"] for v in report["vacuumed_tables"]] == [numbers.checkpoint]
    resumed = job.resume(failed.run_id, params={"fail": "no"}, root=recover_root, spark=spark, echo=False)
    assert resumed.status == "succeeded"
    assert [s.reused for s in resumed.stages] == [True, False]  # the checkpoint survived gc


def test_gc_warns_when_table_retention_is_shorter_than_window(spark, recover_root, tmp_path):
    table = str(tmp_path / "short")
    spark.range(3).write.format("delta").save(table)
    spark.sql(f"ALTER TABLE delta.`{table}` SET TBLPROPERTIES "
              "('delta.deletedFileRetentionDuration' = 'interval 1 days')")
    create_point("keep", [table], root=recover_root)
    report = gc(7, root=recover_root, spark=spark, echo=False, dry_run=True)
    assert len(report["warnings"]) == 1
    assert report["warnings"][0].startswith(f"{table}: delta.deletedFileRetentionDuration is 1 days")
