"""The ledger and checkpoints are plain Delta tables; the lease protects a running run."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import deltalake
import pyarrow as pa
import pytest

from spark_recover.errors import RefusedError
from spark_recover.fingerprint import digest
from spark_recover.ledger import Ledger, this_process
from spark_recover.storage import Layout, read_delta
from spark_recover.testing import run_cli

from conftest import SMALL_JOB
from recovery_checks import assert_same_rows


def test_checkpoints_and_ledger_open_in_delta_rs(spark, small_job, source_data, recover_root):
    result = small_job.run({"data": str(source_data)}, root=recover_root, spark=spark, echo=False)
    for stage in result.stages:
        table = deltalake.DeltaTable(stage.checkpoint, version=stage.version)
        assert read_delta(stage.checkpoint, version=stage.version).num_rows == stage.rows
        commit = table.history(1)[0]
        assert json.loads(commit["userMetadata"]) == {
            "run_id": result.run_id, "stage": stage.name, "fingerprint": stage.fingerprint}
    events = read_delta(f"{recover_root}/ledger/events").sort_by("ts")
    mine = events.filter(pa.compute.equal(events["run_id"], result.run_id))
    kinds = mine.column("event").to_pylist()
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("stage_succeeded") == len(result.stages)


def test_ledger_is_queryable_from_spark_sql(spark, small_job, source_data, recover_root):
    result = small_job.run({"data": str(source_data)}, root=recover_root, spark=spark, echo=False)
    rows = spark.sql(f"""
        SELECT stage, version, rows FROM delta.`{recover_root}/ledger/events`
        WHERE run_id = '{result.run_id}' AND event = 'stage_succeeded' ORDER BY ts""").collect()
    assert [(r.stage, r.version, r.rows) for r in rows] == \
        [(s.name, s.version, s.rows) for s in result.stages]


def _hold_lease(ledger: Ledger, job: str, params: dict, process: dict) -> str:
    run_id = "holder-" + digest(process, 6)
    ledger.append(run_id, job, "run_started", detail={
        "params": params, "params_key": digest(params, 16), "stages": [], "process": process})
    return run_id


def test_second_run_with_same_params_is_refused(spark, small_job, source_data, recover_root):
    params = {"data": str(source_data)}
    ledger = Ledger(Layout.at(recover_root))
    holder = _hold_lease(ledger, small_job.name, params, this_process())  # alive: this very process
    with pytest.raises(RefusedError) as info:
        small_job.run(params, root=recover_root, spark=spark, echo=False)
    assert info.value.exit_code == 3 and info.value.fields["holder"] == holder
    other = small_job.run({**params, "threshold": "1"}, root=recover_root, spark=spark, echo=False)
    assert other.status == "succeeded"  # other parameters: no conflict
    assert [r.run_id for r in ledger.runs()] == [holder, other.run_id]


def test_dead_holder_does_not_block(spark, small_job, source_data, recover_root):
    params = {"data": str(source_data)}
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    dead = {**this_process(), "pid": int(gone.stdout), "proc_start": "0"}
    holder = _hold_lease(Ledger(Layout.at(recover_root)), small_job.name, params, dead)
    assert Ledger(Layout.at(recover_root)).run(holder).status == "failed"
    result = small_job.run(params, root=recover_root, spark=spark, echo=False)
    assert result.status == "succeeded"


def test_concurrent_runs_with_other_params_do_not_conflict(spark, small_job, source_data, clean_outputs,
                                                           recover_root):
    # Two driver processes at once, sharing the root (ledger and checkpoint folder).
    thresholds = ("0", "5")
    with ThreadPoolExecutor(len(thresholds)) as pool:
        done = list(pool.map(lambda t: run_cli("run", SMALL_JOB, "--root", recover_root,
                                                "-p", f"data={source_data}", "-p", f"threshold={t}"),
                             thresholds))
    assert [p.returncode for p in done] == [0, 0], [p.stderr[-2000:] for p in done]
    runs = {r.params["threshold"]: r for r in Ledger(Layout.at(recover_root)).runs()}
    assert sorted(runs) == sorted(thresholds) and {r.status for r in runs.values()} == {"succeeded"}
    tables = [{s.checkpoint for s in r.stages.values()} for r in runs.values()]
    assert not tables[0] & tables[1]  # each reads and writes its own checkpoint tables
    clean, _ = clean_outputs
    result = small_job.resume(runs["0"].run_id, root=recover_root, spark=spark, echo=False)
    assert all(s.reused for s in result.stages)
    assert_same_rows(spark, result.output("summary"), clean["summary"])
    daily = small_job.resume(runs["5"].run_id, root=recover_root, spark=spark, echo=False).output("daily")
    assert daily.where("total < 5").count() == 0 and daily.count() > 0
