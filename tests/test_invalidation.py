"""Changing code, a parameter or a source invalidates exactly the right stages, with the reason."""

from __future__ import annotations

import os

import pytest
from spark_recover.job import load_job

from conftest import SMALL_JOB, STAGES


def _decisions(result) -> dict[str, str]:
    return {s.name: ("reused" if s.reused else s.reason) for s in result.stages}


@pytest.fixture
def first_run(spark, small_job, source_data, recover_root):
    result = small_job.run({"data": str(source_data)}, root=recover_root, spark=spark, echo=False)
    assert result.status == "succeeded", result.error
    return result


def test_resume_of_unchanged_run_reuses_everything(spark, small_job, first_run, recover_root):
    again = small_job.resume(first_run.run_id, root=recover_root, spark=spark, echo=False)
    assert _decisions(again) == {s: "reused" for s in STAGES}
    assert [s.version for s in again.stages] == [s.version for s in first_run.stages]


def test_code_change_recomputes_that_stage_and_downstream(spark, first_run, recover_root, tmp_path):
    edited = tmp_path / "small_job.py"
    source = open(SMALL_JOB).read()
    assert 'F.asc("store_id")' in source
    edited.write_text(source.replace('F.asc("store_id")', 'F.desc("store_id")'))
    job = load_job(str(edited))
    result = job.resume(first_run.run_id, root=recover_root, spark=spark, echo=False)
    assert result.status == "succeeded"
    assert _decisions(result) == {"cleaned": "reused", "enriched": "reused", "daily": "reused",
                                  "ranked": "code changed", "summary": "input 'ranked' changed"}


def test_helper_constant_change_is_a_code_change(spark, first_run, recover_root, tmp_path):
    edited = tmp_path / "small_job.py"
    edited.write_text(open(SMALL_JOB).read().replace("MIN_QTY = 1", "MIN_QTY = 2"))
    result = load_job(str(edited)).resume(first_run.run_id, root=recover_root, spark=spark, echo=False)
    decisions = _decisions(result)
    assert decisions["cleaned"] == "code changed"
    assert all(decisions[s] == f"input {prev!r} changed"
               for prev, s in zip(STAGES, STAGES[1:]))


def test_parameter_change_recomputes_only_stages_that_read_it(spark, small_job, first_run, recover_root):
    result = small_job.resume(first_run.run_id, params={"threshold": "5"}, root=recover_root,
                              spark=spark, echo=False)
    assert result.params["threshold"] == "5"
    assert _decisions(result) == {
        "cleaned": "reused", "enriched": "reused",
        "daily": "parameter 'threshold' changed (None -> '5')",
        "ranked": "input 'daily' changed", "summary": "input 'ranked' changed"}
    totals = {r["region"]: r["total"] for r in result.output("summary").collect()}
    before = {r["region"]: r["total"] for r in first_run.output("summary").collect()}
    assert all(totals[k] <= before[k] for k in before) and totals != before


def test_source_change_is_pinned_then_refreshed(spark, small_job, own_sources, recover_root):
    run = small_job.run({"data": str(own_sources)}, root=recover_root, spark=spark, echo=False)
    (spark.createDataFrame([(50, "9")], "store_id long, region string")
     .write.format("delta").mode("append").save(str(own_sources / "stores")))
    pinned = small_job.resume(run.run_id, root=recover_root, spark=spark, echo=False)
    assert _decisions(pinned) == {s: "reused" for s in STAGES}  # same input as the original run

    refreshed = small_job.resume(run.run_id, root=recover_root, spark=spark, echo=False,
                                 refresh_sources=True)
    decisions = _decisions(refreshed)
    assert decisions["cleaned"] == "reused"  # reads events only, which did not move
    assert decisions["enriched"] == "source 'stores' changed (version 0 -> version 1)"
    assert [decisions[s] for s in ("daily", "ranked", "summary")] == [
        "input 'enriched' changed", "input 'daily' changed", "input 'ranked' changed"]


def test_rerun_forces_stage_and_downstream(spark, small_job, first_run, recover_root):
    result = small_job.resume(first_run.run_id, rerun=["daily"], root=recover_root, spark=spark,
                              echo=False)
    decisions = _decisions(result)
    assert [decisions[s] for s in ("cleaned", "enriched")] == ["reused", "reused"]
    assert decisions["daily"] == "forced by --rerun"
    assert decisions["ranked"] == decisions["summary"] == "upstream of it was forced by --rerun daily"


def _data_files(stage) -> list[str]:
    import deltalake
    import pyarrow as pa

    table = deltalake.DeltaTable(stage.checkpoint, version=stage.version)
    return [f"{stage.checkpoint}/{p}" for p in pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()]


def test_damaged_checkpoint_is_detected_and_recomputed(spark, small_job, first_run, recover_root):
    stages = {s.name: s for s in first_run.stages}
    missing = _data_files(stages["ranked"])[0]
    os.remove(missing)
    result = small_job.resume(first_run.run_id, root=recover_root, spark=spark, echo=False)
    assert _decisions(result) == {
        "cleaned": "reused", "enriched": "reused", "daily": "reused",
        "ranked": f"its checkpoint is damaged: data file {os.path.basename(missing)} is missing",
        "summary": "input 'ranked' was recomputed"}

    truncated = _data_files(stages["cleaned"])[0]
    with open(truncated, "r+b") as fh:
        fh.truncate(100)
    again = small_job.resume(first_run.run_id, root=recover_root, spark=spark, echo=False)
    decisions = _decisions(again)
    assert decisions["cleaned"].startswith(
        f"its checkpoint is damaged: data file {os.path.basename(truncated)} has 100 bytes")
    assert decisions["enriched"] == "input 'cleaned' was recomputed"
    for result_ in (result, again):
        assert result_.status == "succeeded"
        assert sorted(map(tuple, result_.output("summary").collect())) == \
            sorted(map(tuple, first_run.output("summary").collect()))


PARQUET_JOB = '''
from pyspark.sql import functions as F
from spark_recover import Job

job = Job("parquet_counts")
events = job.source("events", path="{data}", format="parquet")

@job.stage
def per_day(events):
    return events.groupBy("day").agg(F.count("*").alias("n"))
'''


def test_non_delta_source_change_is_seen_and_reported(spark, recover_root, tmp_path):
    data = tmp_path / "events.parquet"
    spark.createDataFrame([("1",), ("1",), ("2",)], "day string").write.parquet(str(data))
    (tmp_path / "parquet_job.py").write_text(PARQUET_JOB)
    job = load_job(str(tmp_path / "parquet_job.py"))
    run = job.run({"data": str(data)}, root=recover_root, spark=spark, echo=False)
    assert run.status == "succeeded", run.error
    assert _decisions(job.resume(run.run_id, root=recover_root, spark=spark, echo=False)) == \
        {"per_day": "reused"}

    spark.createDataFrame([("3",)], "day string").write.mode("append").parquet(str(data))
    moved = job.resume(run.run_id, root=recover_root, spark=spark, echo=False)
    reason = _decisions(moved)["per_day"]
    assert reason.startswith("source 'events' changed (") and "files" in reason, reason
    assert sorted(map(tuple, moved.output("per_day").collect())) == [("1", 2), ("2", 1), ("3", 1)]
