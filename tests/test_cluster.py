"""The demo job on a Spark standalone cluster, with its root, sources and sinks on S3 (`make test-cluster`).

A master and two workers from the pyspark wheel, moto's S3 server, and every
run through ``spark-submit --master spark://...`` as a user would. Each
recovered output is compared row by row with a local-mode run of the same job
on the same data. Times go to stdout (and ``$SPARK_RECOVER_CLUSTER_TIMES``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from spark_recover.job import load_job
from spark_recover.ledger import Ledger
from spark_recover.storage import Layout, filesystem, is_local, native_uri, read_delta
from spark_recover.testing import job_env

from clusterkit import Standalone, kill_group
from recovery_checks import assert_same_rows

pytestmark = pytest.mark.cluster

JOB_FILE = str(Path(__file__).parents[1] / "jobs" / "demo_sales.py")
ROWS = 60_000
SINKS = ["daily_revenue", "customer_value", "top_customers"]
# The merge sink's table exists before the run: rollback must restore it, not remove it.
SEED = pa.table({"customer_id": pa.array([-3, -2, -1], pa.int64()), "country": ["XX"] * 3,
                 "segment": ["seed"] * 3, "total": [1.0, 2.0, 3.0], "orders": pa.array([1, 1, 1], pa.int64()),
                 "first_day": pa.array([19000] * 3, pa.date32()), "last_day": pa.array([19001] * 3, pa.date32())})
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3):
    standalone = Standalone(tmp_path_factory.mktemp("standalone"))
    yield standalone
    standalone.stop()
    if TIMES:
        print("\ncluster times (s): " + json.dumps(TIMES))
        if os.environ.get("SPARK_RECOVER_CLUSTER_TIMES"):
            Path(os.environ["SPARK_RECOVER_CLUSTER_TIMES"]).write_text(json.dumps(TIMES, indent=1))


def _upload(local: Path, uri: str, options) -> None:
    fs, base = filesystem(uri, options)
    pafs.copy_files(str(local), base, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def _seed(warehouse: str, options) -> None:
    import deltalake

    deltalake.write_deltalake(native_uri(f"{warehouse}/customer_value"), SEED,
                              storage_options=dict(options) if not is_local(warehouse) else None)


@pytest.fixture(scope="module")
def sources(spark, tmp_path_factory, s3, options):
    """The demo's sources (``ROWS`` orders), locally and in the bucket."""
    from jobs.demo import generate

    local = tmp_path_factory.mktemp("demo-sources")
    generate(local, ROWS)
    _upload(local, s3.uri("sources"), options)
    return local, s3.uri("sources")


@pytest.fixture(scope="module")
def reference(spark, sources, tmp_path_factory):
    """Each sink's rows after a clean local-mode run of the job on the same data (the reference)."""
    out = tmp_path_factory.mktemp("local-warehouse")
    _seed(str(out), None)
    job = load_job(JOB_FILE)
    result = job.run({"data": str(sources[0]), "warehouse": str(out)},
                     root=str(tmp_path_factory.mktemp("local-root")), spark=spark, echo=False)
    assert result.status == "succeeded", result.error
    return {name: read_delta(str(out / name)) for name in SINKS}


def _env(options, **extra: str) -> dict[str, str]:
    return job_env({**options, **extra})


def _args(s3, name: str, *more: str) -> list[str]:
    return ["-p", f"data={s3.uri('sources')}", "-p", f"warehouse={s3.uri(name + '/warehouse')}",
            "--root", s3.uri(name + "/recover"), *more]


def _assert_same_rows(spark, reference, s3, options, name: str) -> None:
    """Every sink of run ``name`` equals the local-mode run's, row by row: no duplicate, no missing row."""
    for sink in SINKS:
        want = reference[sink]
        got = read_delta(s3.uri(f"{name}/warehouse/{sink}"), storage_options=options).select(want.column_names)
        assert_same_rows(spark, spark.createDataFrame(got), [tuple(r.values()) for r in want.to_pylist()])


def _runs(s3, options, name: str):
    return Ledger(Layout.at(s3.uri(name + "/recover"), options)).runs()


def test_clean_run_on_cluster_and_s3_matches_local_mode(spark, cluster, s3, options, sources, reference):
    _seed(s3.uri("clean/warehouse"), options)
    done = cluster.submit(JOB_FILE, _args(s3, "clean"), _env(options))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    TIMES["clean_run"] = round(done.seconds, 1)
    print(done.stdout)
    # stdout is ours and readable: progress lines only, Spark's own log went to stderr
    assert done.stdout.splitlines()[-1].startswith("run ") and "succeeded" in done.stdout.splitlines()[-1]
    assert not [ln for ln in done.stdout.splitlines() if " WARN " in ln or " INFO " in ln]
    _assert_same_rows(spark, reference, s3, options, "clean")
    [run] = _runs(s3, options, "clean")
    assert run.metrics["session"] == cluster.url
    assert run.status == "succeeded" and all(c.startswith("s3a://") for c in
                                             [s.checkpoint for s in run.stage_list()])


def test_rollback_on_s3_restores_every_table(cluster, s3, options):
    """Verified with delta-rs: the seeded table back to its rows, the tables the run created gone."""
    import deltalake

    [run] = _runs(s3, options, "clean")  # the previous test's run
    rolled = subprocess.run([sys.executable, "-m", "spark_recover", "rollback", run.run_id,
                             "--root", s3.uri("clean/recover")], capture_output=True, text=True,
                            env=_env(options))
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    warehouse = native_uri(s3.uri("clean/warehouse"))
    table = deltalake.DeltaTable(f"{warehouse}/customer_value", storage_options=dict(options))
    assert table.history(1)[0]["operation"] == "RESTORE"
    assert sorted(table.to_pyarrow_table().to_pylist(), key=str) == sorted(SEED.to_pylist(), key=str)
    for created in ("daily_revenue", "top_customers"):
        assert not deltalake.DeltaTable.is_deltatable(f"{warehouse}/{created}", dict(options))
    [after] = _runs(s3, options, "clean")
    assert after.status == "rolled_back"


def test_executor_killed_mid_stage_run_succeeds(spark, cluster, s3, options, reference):
    _seed(s3.uri("executor-kill/warehouse"), options)
    killed = []

    def kill_an_executor(line: str, proc) -> None:
        if not killed and "[2/7]" in line and "started" in line:
            executors = cluster.executors()
            if executors:
                executors[0].kill()
                killed.append(executors[0].pid)

    done = cluster.submit(JOB_FILE, _args(s3, "executor-kill"), _env(options), on_line=kill_an_executor)
    assert killed, "no executor was running when the second stage started"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Lost executor" in done.stderr  # Spark saw it and ran its tasks elsewhere
    TIMES["executor_kill_run"] = round(done.seconds, 1)
    _assert_same_rows(spark, reference, s3, options, "executor-kill")


def test_driver_killed_then_resume_through_spark_submit(spark, cluster, s3, options, reference):
    _seed(s3.uri("driver-kill/warehouse"), options)
    done_stages: list[str] = []

    def kill_after_two_stages(line: str, proc) -> None:
        if " done in " in line:
            done_stages.append(line)
            if len(done_stages) == 2:
                kill_group(proc)

    killed = cluster.submit(JOB_FILE, _args(s3, "driver-kill"), _env(options), on_line=kill_after_two_stages)
    assert killed.returncode == -9, killed.stdout[-3000:] + killed.stderr[-3000:]
    [dead] = _runs(s3, options, "driver-kill")
    committed = [s.name for s in dead.stage_list() if s.status == "succeeded"]
    assert len(committed) >= 2 and dead.status == "failed"

    resumed = cluster.submit(JOB_FILE, _args(s3, "driver-kill", "--resume"), _env(options))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    TIMES["resume"] = round(resumed.seconds, 1)
    run = _runs(s3, options, "driver-kill")[-1]
    assert run.origin_run_id == dead.run_id and run.status == "succeeded"
    assert [s.name for s in run.stage_list() if s.reused] == committed  # only the rest recomputed
    TIMES["resume_run_seconds"] = run.total_seconds
    _assert_same_rows(spark, reference, s3, options, "driver-kill")  # sinks exactly once


def test_local_root_on_a_cluster_is_refused(cluster, s3, options, tmp_path):
    root = tmp_path / "local-root"
    done = cluster.submit(JOB_FILE, ["-p", f"data={s3.uri('sources')}", "-p",
                                     f"warehouse={s3.uri('refused/warehouse')}", "--root", str(root)],
                          _env(options))
    assert done.returncode == 2, done.stdout + done.stderr[-2000:]
    # spark-submit's PythonRunner merges the Python driver's stderr into its stdout
    assert "a local folder on a cluster" in done.stdout and "SPARK_RECOVER_SHARED_ROOT" in done.stdout
    assert not root.exists()


_CLAIM = """
import sys, time
from spark_recover import lease
from spark_recover.errors import RefusedError
from spark_recover.ledger import Ledger
from spark_recover.storage import Layout
import json
root, options, key, start = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], float(sys.argv[4])
ledger = Ledger(Layout.at(root, options))
time.sleep(max(0.0, start - time.time()))
try:
    lease.claim(ledger, "race", key, sys.argv[5], {"params": {}, "params_key": key})
    print("won")
except RefusedError:
    print("refused")
"""


def test_simultaneous_drivers_on_s3_exactly_one_takes_the_lease(s3, options):
    """Racing commits to the ledger on S3: conditional writes (If-None-Match) let exactly one win."""
    root = s3.uri("race/recover")
    Ledger(Layout.at(root, options)).version()  # the ledger table exists before the race
    outcomes = []
    for trial in range(6):
        start = time.time() + 3
        procs = [subprocess.Popen([sys.executable, "-c", _CLAIM, root, json.dumps(dict(options)), f"k{trial}",
                                   str(start), f"run-{trial}-{i}"], stdout=subprocess.PIPE, text=True)
                 for i in range(4)]
        outcomes.append(sorted(p.communicate()[0].strip() for p in procs))
    assert outcomes == [["refused", "refused", "refused", "won"]] * 6
