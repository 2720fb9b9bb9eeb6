"""Sinks are exactly-once across crashes; rollback restores every table, verifiably."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import deltalake
import pytest

import spark_recover
from spark_recover.errors import DamagedStateError, RefusedError
from spark_recover.job import load_job
from spark_recover.ledger import Ledger
from spark_recover.recovery import create_point
from spark_recover.sinks import isolated_session
from spark_recover.storage import Layout, read_delta
from spark_recover.testing import crash_at, kill_during, run_cli

from conftest import SINK_JOB, TABLES, check_tables, read_table
from recovery_checks import assert_same_rows

# Each sink mode crashed once at a fixed point (test_replay covers append after its commit and
# replace_where after its write; test_drill kills at random moments of the sink phase).
@pytest.mark.parametrize("stage, point", [
    ("day_slice", "sink_before"),           # replace_where: planned, nothing written
    ("store_totals", "sink_after_write"),   # merge: committed, ledger unaware -> must be skipped
    ("region_totals", "sink_after_write"),  # overwrite: committed, ledger unaware
])
def test_sink_crash_then_resume_is_exactly_once(spark, sink_job, source_data, clean_sinks, recover_root,
                                                tmp_path, stage, point):
    out = tmp_path / "out"
    params = {"data": str(source_data), "out": str(out), "day": "3"}
    crashed = crash_at(SINK_JOB, stage, point, root=recover_root, params=params)
    assert crashed.killed, crashed.stdout + crashed.stderr
    result = sink_job.resume(crashed.run_id, root=recover_root, spark=spark, echo=False)
    assert result.status == "succeeded", result.error
    check_tables(spark, out, clean_sinks)
    sinks = {Path(s["table"]).name: s for s in result.to_json()["sinks"]}
    crashed_table = {"daily": "daily_log", "day_slice": "by_day", "store_totals": "store_totals",
                     "region_totals": "region_totals"}[stage]
    # Sinks committed before the crash (or by it) are skipped, never written twice.
    expect_skipped = TABLES[:TABLES.index(crashed_table) + (point != "sink_before")]
    assert [t for t in TABLES if sinks[t]["skipped_duplicate"]] == expect_skipped
    origin = Ledger(Layout.at(recover_root)).run(crashed.run_id)
    assert result.record.recovery_point == origin.recovery_point  # the replay keeps its origin's point


def test_sigkill_during_sink_phase_then_resume(spark, sink_job, source_data, clean_sinks, recover_root, tmp_path):
    out = tmp_path / "out"
    params = {"data": str(source_data), "out": str(out), "day": "3"}
    delay = random.Random(11).uniform(0.0, 1.5)  # seeded: the same moment on every run
    killed = kill_during(SINK_JOB, root=recover_root, params=params, when=lambda run: bool(run.sinks),
                         delay=delay)
    assert killed.killed, killed.stdout + killed.stderr
    result = sink_job.resume(killed.run_id, root=recover_root, spark=spark, echo=False)
    assert result.status == "succeeded", result.error
    check_tables(spark, out, clean_sinks)


def test_rollback_restores_every_table_and_is_idempotent(spark, sink_job, source_data, recover_root, tmp_path):
    out = tmp_path / "out"
    params = {"data": str(source_data), "out": str(out), "day": "3"}
    seeded = spark.createDataFrame([("9", "9", 1.0, 1)], "region string, day string, total double, orders long")
    seeded.write.format("delta").save(str(out / "daily_log"))  # existed before the run
    seeded.write.format("delta").save(str(out / "by_day"))
    before = {t: read_table(spark, out, t).collect() for t in ("daily_log", "by_day")}
    run = sink_job.run(params, root=recover_root, spark=spark, echo=False)
    point = run.record.recovery_point
    assert point[str(out / "daily_log")]["version"] == 0 and not point[str(out / "store_totals")]["exists"]

    # Crash in the middle of the rollback (after the first restore), then finish it.
    died = run_cli("rollback", run.run_id, "--root", recover_root,
                   env={"SPARK_RECOVER_FAILPOINT": "rollback:after_restore"})
    assert died.returncode == -9, died.stderr
    half = run_cli("show", run.run_id, "--root", recover_root).stdout
    assert f"not finished: run `spark-recover rollback {run.run_id}` again" in half
    finished = run_cli("rollback", run.run_id, "--root", recover_root, "--json")
    assert finished.returncode == 0, finished.stderr
    journal = json.loads(finished.stdout)
    # The journal covers the whole rollback: the restore committed just before the crash is
    # found by its tag and journaled by the second attempt, which restores the other three.
    assert journal["metrics"]["tables"] == 4
    [first] = [e for e in journal["restored"] if e.get("journaled_after_crash")]
    assert Path(first["table"]).name in ("daily_log", "by_day")  # a RESTORE, not a removal
    assert first["restore_version"] == deltalake.DeltaTable(first["table"]).version()
    for table in ("daily_log", "by_day"):
        assert_same_rows(spark, read_table(spark, out, table), before[table])
        assert_same_rows(spark, read_table(spark, out, table), read_table(spark, out, table, 0).collect())
        assert read_delta(str(out / table)).num_rows == 1
    for created in ("store_totals", "region_totals"):
        assert not deltalake.DeltaTable.is_deltatable(str(out / created))  # the run made them: gone
    record = Ledger(Layout.at(recover_root)).run(run.run_id)
    assert record.status == "rolled_back"
    shown = run_cli("show", run.run_id, "--root", recover_root).stdout
    assert "rollback finished" in shown and "4 table(s) restored" in shown
    assert sum(line.startswith(str(out)) for line in shown.splitlines()) == 4  # one line per sink
    again = spark_recover.rollback(run.run_id, root=recover_root, spark=spark, echo=False)
    assert again["noop"] is True


def test_rollback_refuses_over_another_writer_unless_forced(spark, sink_job, source_data, recover_root, tmp_path):
    out = tmp_path / "out"
    run = sink_job.run({"data": str(source_data), "out": str(out), "day": "3"}, root=recover_root,
                       spark=spark, echo=False)
    extra = spark.createDataFrame([(999, 5)], "store_id long, qty long")
    extra.write.format("delta").mode("append").save(str(out / "store_totals"))  # another writer
    refused = run_cli("rollback", run.run_id, "--root", recover_root)
    assert refused.returncode == 3
    assert "other writers committed after the run" in refused.stderr
    assert "store_totals: version 1 (WRITE" in refused.stderr
    assert deltalake.DeltaTable(str(out / "store_totals")).version() == 1  # nothing changed
    forced = spark_recover.rollback(run.run_id, root=recover_root, spark=spark, force=True, echo=False)
    assert forced["metrics"]["tables"] == 4


def test_redo_replays_after_rollback(spark, sink_job, source_data, clean_sinks, recover_root, tmp_path):
    out = tmp_path / "out"
    run = sink_job.run({"data": str(source_data), "out": str(out), "day": "3"}, root=recover_root,
                       spark=spark, echo=False)
    redone = sink_job.redo(run.run_id, from_stage="store_totals", root=recover_root, spark=spark, echo=False)
    assert redone.status == "succeeded"
    assert {s.name: s.reused for s in redone.stages} == {
        "daily": True, "day_slice": True, "store_totals": False, "region_totals": True}
    assert not any(s["skipped_duplicate"] for s in redone.to_json()["sinks"])
    check_tables(spark, out, clean_sinks)  # exactly one copy, even in the append table


def test_replace_where_parameter_is_data_never_sql(spark, sink_job, source_data, recover_root, tmp_path):
    out = tmp_path / "out"
    for day in ("1", "2"):
        sink_job.run({"data": str(source_data), "out": str(out), "day": day}, root=recover_root,
                     spark=spark, echo=False)
    before = sorted(map(tuple, read_table(spark, out, "by_day").collect()))
    assert {r[1] for r in before} == {"1", "2"}
    hostile = "1' OR '1'='1"
    result = sink_job.run({"data": str(source_data), "out": str(out), "day": hostile}, root=recover_root,
                          spark=spark, echo=False)
    assert result.status == "succeeded", result.error
    assert sorted(map(tuple, read_table(spark, out, "by_day").collect())) == before  # nothing deleted


def test_named_point_and_bad_input(spark, sink_job, source_data, recover_root, tmp_path):
    out = tmp_path / "out"
    params = {"data": str(source_data), "out": str(out), "day": "3"}
    sink_job.run(params, root=recover_root, spark=spark, echo=False)
    table = str(out / "region_totals")
    made = run_cli("point", "create", "nightly", "--table", table, "--root", recover_root)
    assert made.returncode == 0, made.stderr
    listed = json.loads(run_cli("point", "list", "--json", "--root", recover_root).stdout)
    assert [(p["name"], p["tables"][table]["version"]) for p in listed] == [("nightly", 0)]
    sink_job.run({**params, "day": "4"}, root=recover_root, spark=spark, echo=False)  # overwrites: v1
    spark_recover.rollback(point="nightly", root=recover_root, spark=spark, echo=False)
    assert deltalake.DeltaTable(table).version() == 2  # the RESTORE commit
    assert_same_rows(spark, read_table(spark, out, "region_totals"), read_table(spark, out, "region_totals", 0).collect())

    unknown_point = run_cli("rollback", "--point", "nope", "--root", recover_root)
    assert unknown_point.returncode == 2 and "unknown recovery point 'nope'" in unknown_point.stderr
    unknown_table = run_cli("point", "create", "p2", "--table", str(tmp_path / "missing"), "--root", recover_root)
    assert unknown_table.returncode == 2 and "unknown table" in unknown_table.stderr
    duplicate = run_cli("point", "create", "nightly", "--table", table, "--root", recover_root)
    assert duplicate.returncode == 2 and "recovery point 'nightly' exists" in duplicate.stderr


def test_vacuumed_recovery_point_is_a_clear_error(spark, source_data, recover_root, tmp_path):
    table = tmp_path / "t"
    spark.range(10).write.format("delta").save(str(table))
    create_point("old", [str(table)], root=recover_root)
    spark.range(5).write.format("delta").mode("overwrite").save(str(table))
    with isolated_session(spark, {"spark.databricks.delta.retentionDurationCheck.enabled": "false"}) as session:
        session.sql(f"VACUUM delta.`{table}` RETAIN 0 HOURS")
    vacuumed = deltalake.DeltaTable(str(table)).version()  # VACUUM logs its own commits
    with pytest.raises(DamagedStateError, match="can no longer be restored") as refused:
        spark_recover.rollback(point="old", root=recover_root, spark=spark, echo=False)
    assert refused.value.exit_code == 3
    assert deltalake.DeltaTable(str(table)).version() == vacuumed  # nothing changed


def test_rollback_of_running_run_is_refused(spark, sink_job, source_data, recover_root):
    from spark_recover.fingerprint import digest
    from spark_recover.liveness import this_process

    ledger = Ledger(Layout.at(recover_root))
    ledger.append("live-run", "sink_sales", "run_started",
                  detail={"params": {}, "params_key": digest({}, 16), "stages": [], "process": this_process()})
    with pytest.raises(RefusedError, match="still running"):
        spark_recover.rollback("live-run", root=recover_root, spark=spark, echo=False)
    unknown = run_cli("rollback", "20990101T000000Z-000000", "--root", recover_root)
    assert unknown.returncode == 2 and "unknown run id" in unknown.stderr


SHORT_TXN_JOB = '''
from spark_recover import Job

job = Job("short_txn_memory")


@job.stage
def numbers(spark):
    return spark.range(10)


job.sink("numbers", path="{out}/numbers", mode="append")
'''


def test_a_late_replay_past_the_sinks_transaction_retention_is_refused(spark, recover_root, tmp_path):
    # The sink forgets transactions after a second: a replay after that cannot trust Delta to skip
    # what the logical run already published, so it is refused (exit 3), and warned about at run start.
    job_file = tmp_path / "short_txn_job.py"
    job_file.write_text(SHORT_TXN_JOB)
    table = tmp_path / "out" / "numbers"
    spark.sql(f"CREATE TABLE delta.`{table}` (id BIGINT) USING DELTA "
              "TBLPROPERTIES ('delta.setTransactionRetentionDuration' = 'interval 1 seconds')")
    crashed = crash_at(str(job_file), "numbers", "sink_after_commit", root=recover_root,
                       params={"out": str(tmp_path / "out")})
    assert crashed.killed, crashed.stdout + crashed.stderr
    assert "delta.setTransactionRetentionDuration" in crashed.stdout, crashed.stdout  # the warning at run start
    published = deltalake.DeltaTable(str(table)).version()
    assert deltalake.DeltaTable(str(table)).to_pyarrow_table().num_rows == 10
    time.sleep(2)  # past the table's transaction retention
    job = load_job(str(job_file))
    with pytest.raises(RefusedError, match="setTransactionRetentionDuration") as refused:
        job.resume(crashed.run_id, root=recover_root, spark=spark, echo=False)
    assert refused.value.fields["table"].endswith("/out/numbers") and "redo" in str(refused.value)
    assert deltalake.DeltaTable(str(table)).version() == published  # nothing published again
    assert deltalake.DeltaTable(str(table)).to_pyarrow_table().num_rows == 10
