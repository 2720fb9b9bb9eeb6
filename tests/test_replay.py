"""Replay correctness, with real processes and real Delta tables.

Sinks publish at most once per logical run whatever sequence of crashes,
resumes and scheduler retries happens; simultaneous starts have exactly one
winner; a run that lost its lease writes no sink; a MERGE's transaction
identifiers never reach another write; a change in an imported module is seen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import deltalake
import pyarrow as pa
import pytest

import spark_recover
from spark_recover.errors import RefusedError
from spark_recover.job import load_job
from spark_recover.ledger import Ledger
from spark_recover.liveness import this_process
from spark_recover.retention import gc
from spark_recover.storage import Layout, read_delta
from spark_recover.testing import crash_at, job_env, run_args, run_cli, runs_of

from conftest import JOBS, SINK_JOB, TABLES, check_tables

NO_JAVA = {"JAVA_HOME": "/nonexistent/jdk"}  # proves a command started no JVM
FAILPOINT = "SPARK_RECOVER_FAILPOINT"


def _rows(out: Path) -> dict[str, int]:
    return {t: read_delta(str(out / t)).num_rows if deltalake.DeltaTable.is_deltatable(str(out / t)) else None
            for t in TABLES}


def _versions(out: Path) -> dict[str, int | None]:
    return {t: deltalake.DeltaTable(str(out / t)).version() if deltalake.DeltaTable.is_deltatable(str(out / t))
            else None for t in TABLES}


def test_scheduler_retries_after_a_recovery_publish_nothing(spark, source_data, clean_sinks, recover_root, tmp_path):
    out = tmp_path / "out"
    params = {"data": str(source_data), "out": str(out), "day": "3"}
    crashed = crash_at(SINK_JOB, "region_totals", "after_commit", root=recover_root, params=params)
    assert crashed.killed, crashed.stderr  # every stage done, no sink written
    assert _rows(out) == {t: None for t in TABLES}

    resumed = run_cli(*run_args(SINK_JOB, recover_root, params, ["--resume"]))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming failed run {crashed.run_id}" in resumed.stdout
    after_recovery = _rows(out)
    check_tables(spark, out, clean_sinks)

    for _ in range(3):  # the scheduler retries: nothing runs, no JVM starts, nothing is written
        retry = run_cli(*run_args(SINK_JOB, recover_root, params, ["--resume"]), env=NO_JAVA)
        assert retry.returncode == 0, retry.stderr
        assert f"run {resumed.run_id} with these parameters already succeeded; nothing to resume" in retry.stdout
        assert _rows(out) == after_recovery
    again = run_cli("resume", crashed.run_id, "--root", recover_root, env=NO_JAVA)
    assert again.returncode == 3
    assert f"run {crashed.run_id} was already recovered by run {resumed.run_id}" in again.stderr
    check_tables(spark, out, clean_sinks)
    print(f"sink rows after the recovery and 3 scheduler retries: {_rows(out)}")
    listing = run_cli("runs", "--root", recover_root, env=NO_JAVA).stdout
    assert f"failed, recovered by {resumed.run_id}" in listing
    assert [r.run_id for r in runs_of(recover_root)] == [crashed.run_id, resumed.run_id]


def test_chain_of_resumes_with_a_parameter_override_publishes_once(spark, sink_job, source_data, clean_sinks,
                                                                   recover_root, tmp_path):
    out = tmp_path / "out"
    params = {"data": str(source_data), "out": str(out), "day": "3"}
    first = crash_at(SINK_JOB, "daily", "sink_after_commit", root=recover_root, params=params)
    assert first.killed, first.stderr
    published = _versions(out)
    assert published["daily_log"] == 0 and published["by_day"] is None

    # Recomputing a stage whose output the logical run already published is refused: redo it.
    with pytest.raises(RefusedError, match=f"already published by run {first.run_id}") as refused:
        sink_job.resume(first.run_id, rerun=["daily"], root=recover_root, spark=spark, echo=False)
    assert refused.value.exit_code == 3 and f"spark-recover redo {first.run_id}" in refused.value.detail
    assert _versions(out) == published

    second = run_cli("resume", first.run_id, "--root", recover_root, env={FAILPOINT: "day_slice:sink_after_write"})
    assert second.killed, second.stderr
    # A new parameter (no stage reads it) gives a new parameters key: the same logical run all the same.
    third = sink_job.resume(second.run_id, params={"note": "retry"}, root=recover_root, spark=spark, echo=False)
    assert third.status == "succeeded", third.error
    assert all(s.reused for s in third.stages)
    skipped = {Path(s["table"]).name: s["skipped_duplicate"] for s in third.to_json()["sinks"]}
    assert skipped == {"daily_log": True, "by_day": True, "store_totals": False, "region_totals": False}
    check_tables(spark, out, clean_sinks)

    # redo rolls the whole logical run back, then publishes once more: still exactly one copy.
    redone = sink_job.redo(third.run_id, from_stage="daily", root=recover_root, spark=spark, echo=False)
    assert redone.status == "succeeded", redone.error
    assert not any(s["skipped_duplicate"] for s in redone.to_json()["sinks"])
    check_tables(spark, out, clean_sinks)
    statuses = {r.run_id: r.status for r in runs_of(recover_root)}
    assert statuses[third.run_id] == "rolled_back" and statuses[redone.run_id] == "succeeded"


@pytest.mark.soak  # ~2.5 minutes of racing driver processes: `make soak` (CI runs it)
def test_simultaneous_driver_starts_have_exactly_one_winner(recover_root):
    """Two driver processes of the same job and parameters, started together, ten times."""
    job_file = str(JOBS / "failing_job.py")
    args = [sys.executable, "-m", "spark_recover", *run_args(job_file, recover_root, {"fail": "no"}, [])]
    env = job_env(None)
    for trial in range(10):
        procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        codes = [p.returncode for p in procs]
        assert sorted(codes) == [0, 3], (trial, codes, [err[-1500:] for _, err in outs])
        winner_out = outs[codes.index(0)][0]
        winner = winner_out.split()[1]
        assert f"run {winner} of job 'failing' with these parameters is still running" in outs[codes.index(3)][1]
    runs = runs_of(recover_root)
    assert len(runs) == 10 and {r.status for r in runs} == {"succeeded"}  # losers wrote nothing


LEASE_JOB = '''
from spark_recover import Job
from spark_recover.ledger import Ledger
from spark_recover.liveness import this_process
from spark_recover.storage import Layout

job = Job("lease_lost")


@job.stage
def numbers(spark, params):
    # While this run computes, a newer run takes its lease over, as happens when its
    # heartbeat went missing long enough for another driver to declare it dead.
    ledger = Ledger(Layout.at(params["root"]))
    me = [r for r in ledger.runs("lease_lost") if r.status == "running"][0]
    ledger.append("usurper", "lease_lost", "run_started",
                  detail={"params": me.params, "params_key": me.params_key, "process": this_process()})
    return spark.range(10)


job.sink("numbers", path="{out}/numbers", mode="append")
'''


def test_a_run_that_lost_its_lease_writes_no_sink(spark, recover_root, tmp_path):
    (tmp_path / "lease_job.py").write_text(LEASE_JOB)
    job = load_job(str(tmp_path / "lease_job.py"))
    with pytest.raises(RefusedError, match="lost its lease to run usurper"):
        job.run({"root": recover_root, "out": str(tmp_path / "out")}, root=recover_root, spark=spark, echo=False)
    assert not (tmp_path / "out" / "numbers").exists()
    [run] = [r for r in runs_of(recover_root) if r.run_id != "usurper"]
    assert run.status == "failed" and run.refused and "lost its lease" in run.error
    assert [s.status for s in run.stages.values()] == ["succeeded"] and not run.sinks


def test_merge_identifiers_never_reach_another_threads_write(spark, sink_job, source_data, recover_root, tmp_path):
    out, other = tmp_path / "out", str(tmp_path / "other")
    params = {"data": str(source_data), "out": str(out), "day": "3"}
    assert sink_job.run(params, root=recover_root, spark=spark, echo=False).ok  # creates the merge target
    spark.range(1).write.format("delta").save(other)
    stop, written = threading.Event(), []

    def writer() -> None:  # another job's writes on the same session, meanwhile
        while not stop.is_set():
            spark.range(1).write.format("delta").mode("append").save(other)
            written.append(time.time())

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        second = sink_job.run(params, root=recover_root, spark=spark, echo=False)
    finally:
        stop.set()
        thread.join()
    assert second.ok, second.error
    merge = next(s for s in second.to_json()["sinks"] if s["mode"] == "merge")
    events = read_delta(f"{recover_root}/ledger/events").to_pylist()
    window = sorted(e["ts"].timestamp() for e in events if e["run_id"] == second.run_id and e["stage"] == "store_totals"
              and e["event"] in ("sink_planned", "sink_written"))
    assert any(window[0] <= t <= window[1] for t in written), ("no write during the MERGE", window, written)
    table = deltalake.DeltaTable(other)
    assert table.transaction_version(merge["txn_app_id"]) is None  # no identifier leaked into its commits
    assert not any(c.get("userMetadata") for c in table.history())
    assert read_delta(other).num_rows == 1 + len(written)  # no write of it was skipped as a duplicate
    target = deltalake.DeltaTable(merge["table"])
    assert target.transaction_version(merge["txn_app_id"]) == merge["txn_version"]


def test_sinks_are_checked_before_the_run_starts(source_data, recover_root, tmp_path):
    missing = run_cli("run", SINK_JOB, "--root", recover_root, "-p", f"data={source_data}", "-p", "day=3",
                      env=NO_JAVA)
    assert missing.returncode == 2 and "sink of stage 'daily' needs parameter 'out'" in missing.stderr
    out = tmp_path / "out"
    (out / "daily_log").mkdir(parents=True)
    (out / "daily_log" / "notes.csv").write_text("someone's data\n")
    foreign = run_cli(*run_args(SINK_JOB, recover_root, {"data": str(source_data), "out": str(out), "day": "3"},
                                 []), env=NO_JAVA)
    assert foreign.returncode == 2, foreign.stderr
    assert "points at a folder that is not a Delta table" in foreign.stderr and "notes.csv" in foreign.stderr
    assert not Path(recover_root).exists()  # nothing written, not even the ledger
    assert (out / "daily_log" / "notes.csv").read_text() == "someone's data\n"


def test_rollback_never_removes_user_files(spark, sink_job, source_data, recover_root, tmp_path):
    out = tmp_path / "out"
    run = sink_job.run({"data": str(source_data), "out": str(out), "day": "3"}, root=recover_root,
                       spark=spark, echo=False)
    (out / "region_totals" / "README.txt").write_text("keep me\n")  # the run created this table
    with pytest.raises(RefusedError, match="holds files that are not the Delta table's"):
        spark_recover.rollback(run.run_id, root=recover_root, spark=spark, echo=False)
    assert (out / "region_totals" / "README.txt").read_text() == "keep me\n"
    assert all(v == 0 for v in _versions(out).values())  # nothing was restored either


def test_forced_rollback_that_crashed_is_finished_by_running_it_again(spark, sink_job, source_data,
                                                                      recover_root, tmp_path):
    out = tmp_path / "out"
    run = sink_job.run({"data": str(source_data), "out": str(out), "day": "3"}, root=recover_root,
                       spark=spark, echo=False)
    spark.createDataFrame([(999, 5)], "store_id long, qty long").write.format("delta").mode("append") \
        .save(str(out / "store_totals"))  # another writer
    died = run_cli("rollback", run.run_id, "--force", "--root", recover_root,
                   env={FAILPOINT: "rollback:after_restore"})
    assert died.killed, died.stderr
    # The same command again (here without --force: the journal says the rollback was forced).
    finished = spark_recover.rollback(run.run_id, root=recover_root, spark=spark, echo=False)
    assert finished["metrics"]["tables"] == 4
    assert sum(bool(e.get("journaled_after_crash")) for e in finished["restored"]) == 1
    assert all(v is None for v in _versions(out).values())  # the run created them all: all removed
    assert Ledger(Layout.at(recover_root)).run(run.run_id).status == "rolled_back"


def test_point_rollback_that_crashed_is_journaled_and_deletion_vectors_count(spark, recover_root, tmp_path):
    table = str(tmp_path / "dv")
    spark.range(100).selectExpr("id", "id % 7 AS k").write.format("delta") \
        .option("delta.enableDeletionVectors", "true").save(table)
    other = str(tmp_path / "plain")
    spark.range(5).write.format("delta").save(other)
    spark_recover.create_point("before-cleanup", [table, other], root=recover_root)
    spark.sql(f"DELETE FROM delta.`{table}` WHERE k = 3")  # a deletion vector: same files, fewer rows
    spark.range(9).write.format("delta").mode("overwrite").save(other)
    vectors = pa.RecordBatchReader.from_stream(deltalake.DeltaTable(table).deletion_vectors()).read_all()
    assert vectors.num_rows > 0  # the DELETE wrote deletion vectors, not new files

    died = run_cli("rollback", "--point", "before-cleanup", "--root", recover_root,
                   env={FAILPOINT: "rollback:after_restore"})
    assert died.killed, died.stderr
    finished = spark_recover.rollback(point="before-cleanup", root=recover_root, spark=spark, echo=False)
    assert finished["metrics"]["tables"] == 2
    assert sum(bool(e.get("journaled_after_crash")) for e in finished["restored"]) == 1
    assert spark.read.format("delta").load(table).count() == 100
    assert spark.read.format("delta").load(other).count() == 5
    again = spark_recover.rollback(point="before-cleanup", root=recover_root, spark=spark, echo=False)
    assert again["metrics"]["tables"] == 0  # both already at the point: a new journal, nothing to do


def test_gc_keeps_the_folder_of_a_run_that_starts_meanwhile(spark, recover_root):
    layout = Layout.at(recover_root)
    ledger = Ledger(layout)
    ledger.append("starting", "late_job", "run_started",
                  detail={"params": {}, "params_key": "k1", "stages": ["s"], "process": this_process()})
    orphan = layout.checkpoint("late_job", "k1", "s", "starting")
    spark.range(3).write.format("delta").save(orphan)
    report = gc(0, root=recover_root, spark=spark, echo=False)
    assert report["kept_tables"] == [orphan] and report["deleted_tables"] == []
    ledger.append("starting", "late_job", "run_finished", status="failed")
    assert gc(0, root=recover_root, spark=spark, echo=False)["deleted_tables"] == [orphan]


SIBLING_JOB = '''
import sibling_helpers
from spark_recover import Job

job = Job("sibling")


@job.stage
def scaled(spark):
    return sibling_helpers.scale(spark.range(5))


@job.stage
def checked(scaled, params):
    if params.get("fail") == "yes":
        raise ValueError("bad batch")
    return scaled
'''


def test_a_changed_helper_module_is_seen_on_resume(spark, recover_root, tmp_path):
    helpers = tmp_path / "sibling_helpers.py"
    helpers.write_text("def scale(df):\n    return df.selectExpr('id * 2 AS id')\n")
    (tmp_path / "sibling_job.py").write_text(SIBLING_JOB)
    failed = load_job(str(tmp_path / "sibling_job.py")).run({"fail": "yes"}, root=recover_root, spark=spark,
                                                            echo=False)
    assert failed.status == "failed"
    helpers.write_text("def scale(df):\n    return df.selectExpr('id * 3 AS id')\n")  # the fix, in the helper
    # Same size, maybe the same second: Python would take this process's cached bytecode for the new source.
    os.utime(helpers, (os.stat(helpers).st_mtime + 5,) * 2)
    resumed = run_cli("resume", failed.run_id, "-p", "fail=no", "--root", recover_root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "scaled  started: recomputed because module sibling_helpers.py changed" in resumed.stdout
    shown = json.loads(run_cli("show", resumed.run_id, "--json", "--root", recover_root, env=NO_JAVA).stdout)
    assert [s["reused"] for s in shown["stages"]] == [False, False] and shown["logical_run_id"] == failed.run_id
    checked = shown["stages"][1]
    assert sorted(read_delta(checked["checkpoint"], version=checked["version"]).column("id").to_pylist()) == \
        [0, 3, 6, 9, 12]  # computed by the fixed helper


def test_recover_root_fixture_isolates_runs_given_no_root(spark, recover_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = load_job(str(JOBS / "failing_job.py")).run({"fail": "no"}, spark=spark, echo=False)
    assert result.ok, result.error
    assert [r.run_id for r in runs_of(recover_root)] == [result.run_id]
    assert not (tmp_path / ".spark-recover").exists()
