"""Spark Connect: jobs, crashes, resumes and drills through a remote session (`make test-connect`).

Run with ``pytest --connect``: the plugin starts one Connect server with Delta
for the session, the ``spark`` fixture is a remote session to it, and job
processes the helpers start connect there too (``$SPARK_REMOTE``). `make
test-connect` also runs the sink, recovery, replay and retention tests that way.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from spark_recover.sinks import isolated_session
from spark_recover.testing import ConnectServer, kill_during, run_args, run_cli, runs_of

from conftest import JOBS, LOCAL_MODE, SINK_JOB, SMALL_JOB, TABLES, check_tables, read_table
from recovery_checks import assert_same_rows

pytestmark = pytest.mark.connect

NO_JAVA = {"JAVA_HOME": "/nonexistent/jdk"}
SLOW_SINK_JOB = str(JOBS / "slow_sink_job.py")
CATALOG_JOB = str(JOBS / "catalog_sink_job.py")
TXN_CONFS = ("spark.databricks.delta.write.txnAppId", "spark.databricks.delta.write.txnVersion")


@pytest.fixture(autouse=True)
def _needs_connect(request):
    if not request.config.getoption("connect"):
        pytest.skip("a Spark Connect test: run with `pytest --connect` (make test-connect)")


def test_client_killed_mid_run_then_resumed_by_a_new_client_matches_local_mode(spark, source_data, tmp_path):
    """SIGKILL of the client process once two stages committed; `run --resume` from a new client; sinks
    equal a local-mode run's, row by row. Neither client starts a JVM."""
    params = {"data": str(source_data), "out": str(tmp_path / "out"), "day": "3"}
    root = str(tmp_path / "root")
    killed = kill_during(SINK_JOB, root=root, params=params,
                         when=lambda run: sum(s.status == "succeeded" for s in run.stage_list()) >= 2)
    assert killed.killed, killed.stderr
    [dead] = runs_of(root)
    committed = [s.name for s in dead.stage_list() if s.status == "succeeded"]
    assert dead.status == "failed" and len(committed) >= 2

    t0 = time.monotonic()
    resumed = run_cli(*run_args(SINK_JOB, root, params, ["--resume"]), env=NO_JAVA)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    run = runs_of(root)[-1]
    assert run.origin_run_id == dead.run_id and [s.name for s in run.stage_list() if s.reused] == committed
    assert run.metrics["session"].startswith("Spark Connect at 127.0.0.1")
    print(f"\nresume over Connect: {time.monotonic() - t0:.1f}s (process), run {run.total_seconds:.1f}s")

    reference = tmp_path / "local-out"
    local = run_cli(*run_args(SINK_JOB, str(tmp_path / "local-root"), {**params, "out": str(reference)}, []),
                    env=LOCAL_MODE)
    assert local.returncode == 0, local.stdout + local.stderr
    assert runs_of(str(tmp_path / "local-root"))[-1].metrics["session"] == "local[2]"
    check_tables(spark, tmp_path / "out", {t: read_table(spark, reference, t).collect() for t in TABLES})


def test_merge_identifiers_stay_in_their_own_server_session(spark, spark_connect_server, tmp_path):
    """The idempotent-DML confs live in a server-side clone: the job's session and any other client's
    session never see them, and another client's write is not taken for a replay."""
    from pyspark.sql.connect.session import SparkSession as RemoteSession

    table = str(tmp_path / "t")
    spark.range(3).write.format("delta").save(table)
    other = RemoteSession.builder.remote(spark_connect_server).create()
    try:
        with isolated_session(spark, dict(zip(TXN_CONFS, ("app-1", "7")))) as merge_session:
            assert merge_session.conf.get(TXN_CONFS[0]) == "app-1"
            assert [spark.conf.get(k, None) for k in TXN_CONFS] == [None, None]
            assert [other.conf.get(k, None) for k in TXN_CONFS] == [None, None]
            other.range(3, 5).write.format("delta").mode("append").save(table)  # meanwhile, elsewhere
            merge_session.range(5, 6).write.format("delta").mode("append").save(table)
        import deltalake

        dt = deltalake.DeltaTable(table)
        assert dt.version() == 2 and dt.transaction_version("app-1") == 7
        assert sorted(r["id"] for r in dt.to_pyarrow_table().to_pylist()) == [0, 1, 2, 3, 4, 5]
    finally:
        other.client.release_session()
        other.client.close()


def test_drill_through_connect(spark, source_data, tmp_path):
    done = run_cli("drill", SINK_JOB, "-p", f"data={source_data}", "-p", f"out={tmp_path / 'out'}", "-p", "day=3",
                   "--kills", "2", "--seed", "3", "--root", str(tmp_path / "root"),
                   "--remote", os.environ["SPARK_REMOTE"], env=NO_JAVA)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PASS" in done.stdout


@pytest.mark.parametrize("exists", [True, False], ids=["table-exists", "table-absent"])
def test_drill_covers_catalog_sinks_through_connect(spark, source_data, tmp_path, monkeypatch, exists):
    """A job with a catalog sink and a path sink: its drivers write a scratch *catalog* table of the
    drill's (the server's catalog outlives each client), checked like a path sink (rows, one data
    commit per logical run, each rollback back at the recovery point: restored, or dropped when the
    run created it); the user's catalog table is untouched and the scratch schema is gone."""
    from pyspark.sql import functions as F

    table = "spark_recover_user.regions"
    monkeypatch.setenv("CATALOG_SINK_TABLE", table)  # the job's catalog sink, in its drivers too
    spark.sql(f"CREATE SCHEMA spark_recover_user LOCATION '{tmp_path / 'user-catalog'}'")
    try:
        if exists:
            events = spark.read.format("delta").load(str(source_data / "events")).where("store_id < 3")
            stores = spark.read.format("delta").load(str(source_data / "stores"))
            (events.join(stores, "store_id").groupBy("region")  # the job's rows' shape, other values
             .agg(F.sum(F.col("qty") * F.col("price")).alias("total"), F.count("*").alias("orders"))
             .write.format("delta").saveAsTable(table))
        mine = lambda: (spark.catalog.tableExists(table) and  # noqa: E731
                        (sorted(spark.table(table).collect()), spark.sql(f"DESCRIBE HISTORY {table}").count()))
        before = mine()
        out = tmp_path / "out"
        done = run_cli("drill", CATALOG_JOB, "-p", f"data={source_data}", "-p", f"out={out}", "--kills", "2",
                       "--seed", "5", "--with-rollback", "--root", str(tmp_path / "root"),
                       "--remote", os.environ["SPARK_REMOTE"], "--json", env=NO_JAVA)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        report = json.loads(done.stdout)
        print("\n" + json.dumps(report["summary"]))
        assert report["ok"], report["verdict"]
        scratch = report["sinks_redirected"][table]
        schema = scratch.rsplit(".", 1)[0]
        assert schema.startswith("spark_recover_drill_") and "/" not in scratch  # a catalog table, not a path
        # Each trial: both sinks checked, one data commit each by its logical run, counted in the verdict.
        assert all(t["commits"] == {table: 1, str(out / "store_totals"): 1} for t in report["trials"]), \
            report["trials"]
        s = report["summary"]
        assert (s["sink_commits"], s["sink_commit_faults"], s["rollbacks"], s["rollback_wrong_rows"]) == (4, 0, 2, 0)
        # The drivers published through the catalog: the clean run's ledger names the scratch catalog table.
        assert scratch in runs_of(f"{report['drill_root']}/clean")[-1].sinks
        assert mine() == before  # the user's table: same rows, no new commit (or still absent)
        assert not spark.catalog.databaseExists(schema)  # the scratch schema (and its tables) dropped
        assert not out.exists()
    finally:
        spark.sql("DROP SCHEMA IF EXISTS spark_recover_user CASCADE")


def test_server_without_delta_is_a_clear_error(spark, source_data, tmp_path_factory):
    server = ConnectServer.start(tmp_path_factory.mktemp("bare-connect"), delta=False)
    root = tmp_path_factory.mktemp("root") / "r"
    try:
        done = run_cli(*run_args(SMALL_JOB, str(root), {"data": str(source_data)}, ["--remote", server.url]),
                       env=NO_JAVA)
    finally:
        server.stop()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "has no Delta Lake" in done.stderr and "io.delta:delta-spark_4.2_2.13:4.4.0" in done.stderr
    assert "Traceback" not in done.stderr
    assert not root.exists() or not any(root.rglob("*.json"))  # nothing written


def _killed_mid_sink_write(spark, tmp_path):
    """A run of the slow-sink job SIGKILLed 3 s into its sink write (1000 files, ~15 s on the server),
    over a sink table that holds 5 rows; the server keeps writing."""
    out, root = tmp_path / "out", str(tmp_path / "root")
    spark.range(1000, 1005).withColumnRenamed("id", "n").write.format("delta").save(str(out / "rows"))
    before = spark.read.format("delta").load(str(out / "rows")).collect()
    params = {"rows": "1000", "out": str(out)}
    killed = kill_during(SLOW_SINK_JOB, root=root, params=params, delay=3,
                         when=lambda run: any(s.get("status") == "planned" for s in run.sinks.values()))
    assert killed.killed, killed.stderr
    [dead] = runs_of(root)
    assert dead.died and dead.connect and dead.connect["tag"] == f"spark-recover-run-{dead.run_id}"
    return out / "rows", root, params, dead, before


def _no_late_commit(table, version: int, wait: float = 30) -> None:
    """The table stays at ``version`` while the killed client's write would have ended (polled, bounded)."""
    import deltalake

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        assert deltalake.DeltaTable(str(table)).version() == version, "a late commit landed"
        time.sleep(2)


@pytest.mark.parametrize("mode", ["append", "merge"])
def test_rollback_interrupts_the_killed_clients_sink_write(spark, tmp_path, monkeypatch, mode):
    """A client killed mid sink write; `rollback` from a new client interrupts the write still running on
    the server and says so; long after the write would have ended, the table is at its recovery point.
    A MERGE runs in a server session of its own (its transaction confs stay there): it is stopped too."""
    import deltalake

    monkeypatch.setenv("SLOW_SINK_MODE", mode)
    table, root, _, dead, before = _killed_mid_sink_write(spark, tmp_path)
    done = run_cli("rollback", dead.run_id, "--root", root, env=NO_JAVA)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"interrupted 1 operation of dead run {dead.run_id} on the Spark Connect server" in done.stdout
    print("\n" + next(line for line in done.stdout.splitlines() if line.startswith("interrupted")))
    version = deltalake.DeltaTable(str(table)).version()
    _no_late_commit(table, version)
    assert_same_rows(spark, spark.read.format("delta").load(str(table)), before)
    assert runs_of(root)[-1].status == "rolled_back"


@pytest.mark.parametrize("mode", ["append", "merge"])
def test_resume_takes_over_after_interrupting_the_killed_clients_sink_write(spark, tmp_path, monkeypatch, mode):
    """`run --resume` from a new client over a client killed mid sink write: it interrupts the dead run's
    write first and says so; the sink then holds its rows once, and nothing lands afterwards."""
    import deltalake

    monkeypatch.setenv("SLOW_SINK_MODE", mode)
    table, root, params, dead, before = _killed_mid_sink_write(spark, tmp_path)
    resumed = run_cli(*run_args(SLOW_SINK_JOB, root, params, ["--resume"]), env=NO_JAVA)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"interrupted 1 operation of dead run {dead.run_id} on the Spark Connect server" in resumed.stdout
    run = runs_of(root)[-1]
    assert run.origin_run_id == dead.run_id and run.status == "succeeded"
    [sink] = run.sinks.values()
    assert sink["skipped_duplicate"] is False  # the dead write never committed: the resume published
    _no_late_commit(table, deltalake.DeltaTable(str(table)).version())
    assert_same_rows(spark, spark.read.format("delta").load(str(table)), before + [(n,) for n in range(1000)])


def test_a_dead_runs_session_the_server_already_closed_has_nothing_left_to_stop(spark, spark_connect_server):
    """A dead run's server session that expired or was released: nothing of it runs; no warning."""
    from pyspark.sql.connect.session import SparkSession as RemoteSession

    from spark_recover.session import connect_identity, dead_operations_text, stop_dead_operations

    gone = RemoteSession.builder.remote(spark_connect_server).create()
    gone.range(1).collect()
    identity = connect_identity(gone, "r1")
    gone.client.release_session()
    gone.client.close()
    outcome = stop_dead_operations(identity, spark=spark)
    assert outcome["operations"] == [] and outcome["unreachable"] is None, outcome
    assert dead_operations_text("r1", outcome) == \
        "dead run r1: no operation of it was still running on the Spark Connect server"
