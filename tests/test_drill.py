"""Drills: random SIGKILLs of real driver processes, recovery, and every sink compared row by row."""

from __future__ import annotations

import json

from spark_recover.testing import assert_recovers, run_cli

from conftest import SINK_JOB


def test_drill_of_every_sink_mode_loses_and_duplicates_nothing(spark, source_data, recover_root, tmp_path):
    out = tmp_path / "out"
    report = assert_recovers(SINK_JOB, {"data": str(source_data), "out": str(out), "day": "3"},
                             kills=10, seed=2026, spark=spark)
    s = report["summary"]
    assert s["trials"] == 10 and s["kills"] >= 5, report["trials"]  # a kill may miss a run that ended early
    assert (s["duplicated_rows"], s["missing_rows"], s["extra_rows"]) == (0, 0, 0)
    assert {t["hit"].split()[0] for t in report["trials"] if t["kill_at"] is not None} - {"start-up"}
    assert not out.exists()  # the user's tables were never touched: the drill wrote its own copies
    print(json.dumps(s))


BROKEN_JOB = '''
import os
import time

from pyspark.sql import functions as F

import spark_recover.sinks as sinks
from spark_recover import Job

if os.environ.get("SPARK_RECOVER_SINK_ROOT"):  # only in the drill's driver processes

    def publish_without_txn(spark, sink, read, app, txn_version, metadata):
        # The bug under drill: an append without txnAppId/txnVersion, so a replay appends again.
        read(spark).write.format("delta").mode("append").save(sink.target.location)
        time.sleep(6)  # a slow commit hook: a kill now makes the resume replay the append
        return {"table": sink.table, "mode": "append", "txn_app_id": None, "txn_version": None,
                "version_before": None, "version_after": None, "skipped_duplicate": False}

    sinks.publish = publish_without_txn

job = Job("broken_append")


@job.stage
def numbers(spark):
    return spark.range(50).select(F.col("id"))


job.sink("numbers", path="{out}/numbers", mode="append")
'''


def test_drill_of_a_broken_sink_fails_and_names_the_seed(recover_root, tmp_path):
    job_file = tmp_path / "broken_job.py"
    job_file.write_text(BROKEN_JOB)
    # Seed 0 kills at 84% of the clean run: after the append committed, inside the slow hook.
    result = run_cli("drill", str(job_file), "-p", f"out={tmp_path / 'out'}", "--kills", "1", "--seed", "0",
                     "--root", recover_root, "--json")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    [trial] = report["trials"]
    assert trial["hit"] == "sink numbers" and trial["duplicates"] == 50, trial
    assert report["verdict"] == "FAIL: trial 1 (reproduce with --seed 0 --kills 1)" and report["failing_seed"] == 0
    assert not (tmp_path / "out").exists()
