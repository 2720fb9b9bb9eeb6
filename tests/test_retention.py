"""gc removes what no resumable run needs, never what one does, and warns about short retention."""

from __future__ import annotations

import deltalake

from spark_recover.job import load_job
from spark_recover.ledger import Ledger
from spark_recover.liveness import this_process
from spark_recover.recovery import create_point
from spark_recover.retention import gc
from spark_recover.storage import Layout

from conftest import JOBS


def test_gc_keeps_what_a_failed_run_needs(spark, recover_root, tmp_path):
    job = load_job(str(JOBS / "failing_job.py"))
    failed = job.run({"fail": "yes"}, root=recover_root, spark=spark, echo=False)
    assert failed.status == "failed"
    numbers = next(s for s in failed.stages if s.name == "numbers")
    ghost = Layout.at(recover_root).checkpoint("ghost_job", "0000", "orphan", "gone")  # no run refers to it
    spark.range(3).write.format("delta").save(ghost)

    report = gc(0, root=recover_root, spark=spark, echo=False)

    assert report["deleted_tables"] == [ghost]
    assert not deltalake.DeltaTable.is_deltatable(ghost)
    assert report["vacuumed_tables"] == []  # a run's own table: kept whole, nothing to vacuum
    assert deltalake.DeltaTable.is_deltatable(numbers.checkpoint)
    resumed = job.resume(failed.run_id, params={"fail": "no"}, root=recover_root, spark=spark, echo=False)
    assert resumed.status == "succeeded"
    assert [s.reused for s in resumed.stages] == [True, False]  # the checkpoint survived gc



def test_gc_handles_the_older_checkpoint_layout_and_empties_run_folders(spark, recover_root):
    layout = Layout.at(recover_root)
    ledger = Ledger(layout)
    # Older layout: one table per stage (<key>/<stage>), a version per run; a failed run needs version 1.
    needed = f"{layout.checkpoints}/old_job/k1/numbers"
    spark.range(3).write.format("delta").save(needed)
    spark.range(4).write.format("delta").mode("overwrite").save(needed)
    unneeded = f"{layout.checkpoints}/old_job/k2/numbers"
    spark.range(3).write.format("delta").save(unneeded)
    ledger.append("r1", "old_job", "run_started", detail={"params": {}, "params_key": "k1", "stages": ["numbers"],
                                                           "process": this_process()})
    ledger.append("r1", "old_job", "stage_succeeded", stage="numbers", version=1, checkpoint=needed)
    ledger.append("r1", "old_job", "run_finished", status="failed")
    # This layout: <key>/<run id>/<stage>, a table a crashed run left and no run recorded.
    orphan = layout.checkpoint("new_job", "k3", "numbers", "20261125T000000Z-000000")

    spark.range(2).write.format("delta").save(orphan)
    report = gc(0, root=recover_root, spark=spark, echo=False)

    assert sorted(report["deleted_tables"]) == sorted([unneeded, orphan])
    assert [v["table"] for v in report["vacuumed_tables"]] == [needed]
    assert deltalake.DeltaTable(needed, version=1).to_pyarrow_table().num_rows == 4
    assert Layout.at(recover_root).entries(f"{layout.checkpoints}/new_job/k3") == []  # no empty run folder left

def test_gc_warns_when_table_retention_is_shorter_than_window(spark, recover_root, tmp_path):
    table = str(tmp_path / "short")
    spark.range(3).write.format("delta").save(table)
    spark.sql(f"ALTER TABLE delta.`{table}` SET TBLPROPERTIES "
              "('delta.deletedFileRetentionDuration' = 'interval 1 days')")
    create_point("keep", [table], root=recover_root)
    report = gc(7, root=recover_root, spark=spark, echo=False, dry_run=True)
    assert len(report["warnings"]) == 1
    assert report["warnings"][0].startswith(f"{table}: delta.deletedFileRetentionDuration is 1 days")
