"""Rollback safety (issue 24, sections 2-4): it never deletes files its table's log never referenced,
never restores away another writer's commit, and never races a run of the same job and parameters.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import spark_recover
from spark_recover import failpoints, lease
from spark_recover.errors import RefusedError
from spark_recover.ledger import Ledger
from spark_recover.history import RunRecord
from spark_recover.liveness import this_process
from spark_recover.storage import Layout, read_delta
from spark_recover.testing import run_args, run_cli

from conftest import SINK_JOB, TABLES, read_table
from recovery_checks import assert_same_rows

NO_JAVA = {"JAVA_HOME": "/nonexistent/jdk"}  # proves a command started no JVM
FAILPOINT = "SPARK_RECOVER_FAILPOINT"


def _plain_parquet_dataset(folder: Path) -> list[Path]:
    """What `df.write.parquet(folder)` leaves, partitions included."""
    rows = pa.table({"id": [1, 2, 3]})
    files = [folder / "part-00000-6c1f.snappy.parquet", folder / "year=2024" / "part-00001-6c1f.snappy.parquet"]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, f)
    (folder / "_SUCCESS").write_text("")
    return files + [folder / "_SUCCESS"]


def test_a_run_refuses_a_plain_parquet_folder_as_sink(source_data, recover_root, tmp_path):
    out = tmp_path / "out"
    user_files = _plain_parquet_dataset(out / "store_totals")
    (out / "daily_log").mkdir(parents=True)  # an empty folder is fine
    refused = run_cli(*run_args(SINK_JOB, recover_root, {"data": str(source_data), "out": str(out), "day": "3"},
                                []), env=NO_JAVA)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "points at a folder that is not a Delta table" in refused.stderr
    assert "part-00000-6c1f.snappy.parquet" in refused.stderr and "3 files" in refused.stderr
    assert not Path(recover_root).exists()  # nothing written: no lease, no ledger
    assert all(f.exists() for f in user_files)


def test_rollback_removes_only_what_the_created_tables_log_referenced(spark, sink_job, source_data,
                                                                        recover_root, tmp_path):
    out = tmp_path / "out"
    (out / "notes.txt").parent.mkdir(parents=True)
    (out / "notes.txt").write_text("the parent folder's own file\n")
    run = sink_job.run({"data": str(source_data), "out": str(out), "day": "3"}, root=recover_root,
                       spark=spark, echo=False)
    assert all(not s["exists"] for s in run.record.recovery_point.values())  # the run created every table
    stray = out / "region_totals" / "part-00007-0d1e-c000.snappy.parquet"  # named like the table's files
    pq.write_table(pa.table({"region": ["x"], "total": [1.0]}), stray)
    versions = {t: deltalake.DeltaTable(str(out / t)).version() for t in TABLES}

    refused = run_cli("rollback", run.run_id, "--root", recover_root, env=NO_JAVA)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "holds files that are not the Delta table's" in refused.stderr and stray.name in refused.stderr
    assert stray.exists()
    assert {t: deltalake.DeltaTable(str(out / t)).version() for t in TABLES} == versions  # nothing changed

    stray.unlink()
    done = spark_recover.rollback(run.run_id, root=recover_root, spark=spark, echo=False)
    assert done["metrics"]["tables"] == len(TABLES)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # each table folder gone, its parent kept
    assert (out / "notes.txt").read_text() == "the parent folder's own file\n"


def _seed(spark, out: Path) -> None:
    seeded = spark.createDataFrame([("9", "9", 1.0, 1)], "region string, day string, total double, orders long")
    seeded.write.format("delta").save(str(out / "daily_log"))


def test_a_commit_landing_between_check_and_restore_is_never_restored_away(spark, sink_job, source_data,
                                                                           recover_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _seed(spark, out)
    run = sink_job.run({"data": str(source_data), "out": str(out), "day": "3"}, root=recover_root,
                       spark=spark, echo=False)
    table = str(out / "daily_log")
    foreign = pa.table({"region": ["foreign"], "day": ["3"], "total": [5.0], "orders": [1]})
    real_hit, injected = failpoints.hit, []

    def another_writer_commits(stage: str, point: str) -> None:
        """After rollback checked for foreign commits and before it restores: a real Delta append."""
        if (stage, point) == ("rollback", "before_restore") and not injected:
            deltalake.write_deltalake(table, foreign, mode="append", schema_mode="merge")
            injected.append(deltalake.DeltaTable(table).version())
        real_hit(stage, point)

    monkeypatch.setattr(failpoints, "hit", another_writer_commits)
    with pytest.raises(RefusedError, match="other writers committed") as refused:
        spark_recover.rollback(run.run_id, root=recover_root, spark=spark, echo=False)
    assert refused.value.exit_code == 3
    assert injected == [2] and "daily_log: version 2 (WRITE" in str(refused.value)
    assert deltalake.DeltaTable(table).version() == 2  # the foreign commit is still the latest
    assert "foreign" in read_delta(table).column("region").to_pylist()

    forced = spark_recover.rollback(run.run_id, root=recover_root, spark=spark, force=True, echo=False)
    assert forced["metrics"]["tables"] == len(TABLES)
    assert_same_rows(spark, read_table(spark, out, "daily_log"), read_table(spark, out, "daily_log", 0).collect())


def _hold_of_live_process(ledger: Ledger, job: str, params_key: str, run_id: str) -> None:
    ledger.append(run_id, job, "run_started",
                  detail={"params": {}, "params_key": params_key, "stages": [], "process": this_process()})


def test_rollback_and_runs_of_the_same_key_exclude_each_other(spark, sink_job, source_data, recover_root,
                                                              tmp_path, monkeypatch):
    out = tmp_path / "out"
    _seed(spark, out)
    run = sink_job.run({"data": str(source_data), "out": str(out), "day": "3"}, root=recover_root,
                       spark=spark, echo=False)
    ledger = Ledger(Layout.at(recover_root))

    # A run of the same job and parameters (a new logical run) is live: no rollback.
    _hold_of_live_process(ledger, run.record.job, run.record.params_key, "other-live-run")
    with pytest.raises(RefusedError, match="other-live-run") as refused:
        spark_recover.rollback(run.run_id, root=recover_root, spark=spark, echo=False)
    assert refused.value.exit_code == 3 and refused.value.fields["holder"] == "other-live-run"
    assert deltalake.DeltaTable(str(out / "daily_log")).version() == 1  # nothing restored
    ledger.append("other-live-run", run.record.job, "run_finished", status="failed")

    # While the rollback holds the lease, a resume of the run (another process) is refused.
    real_hit, during = failpoints.hit, []

    def resume_meanwhile(stage: str, point: str) -> None:
        if (stage, point) == ("rollback", "before_restore"):
            during.append(run_cli("resume", run.run_id, "--root", recover_root, env=NO_JAVA))
        real_hit(stage, point)

    monkeypatch.setattr(failpoints, "hit", resume_meanwhile)
    done = spark_recover.rollback(run.run_id, root=recover_root, spark=spark, echo=False)
    assert done["metrics"]["tables"] == len(TABLES)
    assert during[0].returncode == 3, during[0].stdout + during[0].stderr
    assert "rollback" in during[0].stderr and run.run_id in during[0].stderr
    # The rollback is over: the lease is free again.
    lease.claim(ledger, run.record.job, run.record.params_key, "after-rollback", {"params_key": run.record.params_key,
                                                                                 "process": this_process()})


def test_a_rollback_that_died_does_not_hold_the_lease(spark, sink_job, source_data, recover_root, tmp_path):
    out = tmp_path / "out"
    _seed(spark, out)
    run = sink_job.run({"data": str(source_data), "out": str(out), "day": "3"}, root=recover_root,
                       spark=spark, echo=False)
    died = run_cli("rollback", run.run_id, "--root", recover_root, env={FAILPOINT: "rollback:before_restore"})
    assert died.killed, died.stdout + died.stderr
    ledger = Ledger(Layout.at(recover_root))
    taken = lease.claim(ledger, run.record.job, run.record.params_key, "after-dead-rollback",
                        {"params_key": run.record.params_key, "process": this_process()})
    assert taken.run_id == "after-dead-rollback"


def test_a_live_run_never_shows_as_rolled_back():
    now = dt.datetime.now(dt.timezone.utc)
    live = RunRecord("r2", "j", process=this_process(), started_at=now, last_seen=now, undone_by="r1")
    assert live.rolled_back and live.status == "running"
    live.rollback = {"finished": True, "restored": {}}
    assert live.status == "running"
    dead = RunRecord("r3", "j", process={**this_process(), "pid": 0}, started_at=now, last_seen=now,
                     undone_by="r1", dead_after=0.0)
    assert dead.status == "rolled_back"


def test_a_created_tables_files_are_what_its_log_ever_referenced(tmp_path):
    """JVM-free: every version's files (added, then removed by an overwrite), checkpoints included."""
    from spark_recover import table_files
    from spark_recover.storage import Storage

    import os
    import time

    since = time.time()  # the logical run that created the table started now
    table = tmp_path / "parent" / "t"
    for mode in ("append", "append", "overwrite"):
        deltalake.write_deltalake(str(table), pa.table({"k": ["a", "b"], "v": [1, 2]}), mode=mode,
                                  partition_by=["k"])
    deltalake.DeltaTable(str(table)).create_checkpoint()
    store = Storage(None)
    logged = table_files.logged_files(store, str(table))
    assert len(logged) == 6 and all(p.startswith(("k=a/", "k=b/")) for p in logged)  # 3 versions x 2 partitions
    debris = table / "k=a" / "part-00009-0c1e2d3f-0000-4000-8000-000000000000-c000.snappy.parquet"
    debris.write_bytes(b"an uncommitted task file")
    (table / "_SUCCESS").write_text("")
    assert table_files.unlogged_files(store, str(table), since=since) == ["_SUCCESS"]
    (table / "_SUCCESS").unlink()
    # A writer-named file older than the logical run is someone else's (a dataset Spark wrote before).
    assert table_files.unlogged_files(store, str(table)) == ["k=a/" + debris.name]  # no start known: never ours
    os.utime(debris, (since - 3600, since - 3600))
    assert table_files.unlogged_files(store, str(table), since=since) == ["k=a/" + debris.name]
    os.utime(debris, (since, since))
    (tmp_path / "parent" / "keep.txt").write_text("x")
    assert table_files.remove_table(store, str(table), since=since) == 7
    assert sorted(p.name for p in (tmp_path / "parent").iterdir()) == ["keep.txt"]


def test_a_replay_accepts_what_its_own_killed_writer_left(spark, sink_job, source_data, recover_root, tmp_path):
    """The run created the table's folder; its writer died before the first commit: the resume goes on."""
    from spark_recover.testing import crash_at

    out = tmp_path / "out"
    params = {"data": str(source_data), "out": str(out), "day": "3"}
    crashed = crash_at(SINK_JOB, "region_totals", "sink_before", root=recover_root, params=params)
    assert crashed.killed, crashed.stdout + crashed.stderr
    debris = out / "region_totals" / "part-00000-5b0c7a1e-0000-4000-8000-000000000001-c000.snappy.parquet"
    debris.parent.mkdir(parents=True)
    pq.write_table(pa.table({"region": ["x"], "total": [1.0]}), debris)  # as a writer killed mid-write leaves
    result = sink_job.resume(crashed.run_id, root=recover_root, spark=spark, echo=False)
    assert result.status == "succeeded", result.error
    done = spark_recover.rollback(result.run_id, root=recover_root, spark=spark, echo=False)
    assert done["metrics"]["tables"] == len(TABLES)
    assert not out.exists() or list(out.iterdir()) == []  # the writer's leftover went with its table
