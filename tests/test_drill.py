"""Drills: random SIGKILLs of real driver processes, recovery, and every sink compared row by row."""

from __future__ import annotations

import json

import deltalake
import pytest

from spark_recover.config import load_settings
from spark_recover.display import drill_text
from spark_recover.drill import drill, sink_commits
from spark_recover.history import RunRecord
from spark_recover.job import load_job
from spark_recover.testing import assert_recovers, job_env, run_cli

from conftest import JOBS, SINK_JOB, TABLES

FAILING_JOB = str(JOBS / "failing_job.py")


@pytest.mark.soak  # ~3 minutes of driver processes: `make soak`
def test_drill_damage_cases_are_recomputed_or_refused_plainly(spark, source_data, recover_root, tmp_path):
    out = tmp_path / "out"
    params = {"data": str(source_data), "out": str(out), "day": "3"}
    # The user's tables exist (so their recovery point has files a VACUUM can take).
    assert load_job(SINK_JOB).run(params, root=str(tmp_path / "own-root"), spark=spark, echo=False).ok
    versions = {t: deltalake.DeltaTable(str(out / t)).version() for t in TABLES}
    report = drill(SINK_JOB, params, kills=0, damage=True, settings=load_settings(root=recover_root),
                   env=job_env(), echo=False)
    cases = {c["name"]: c for c in report["damage"]}
    assert report["ok"], drill_text(report)
    assert {n: c["outcome"] for n, c in cases.items()} == {
        "checkpoint-file-deleted": "recomputed", "checkpoint-file-truncated": "recomputed",
        "checkpoint-log-deleted": "recomputed", "checkpoint-log-truncated": "recomputed",
        "checkpoint-folder-removed": "recomputed", "ledger-commit-truncated": "refused",
        "sink-point-vacuumed": "refused"}
    said = {n: c["said"] for n, c in cases.items()}
    assert "its checkpoint is damaged: data file" in said["checkpoint-file-deleted"] and "is missing" in said[
        "checkpoint-file-deleted"]
    assert "the Delta log recorded" in said["checkpoint-file-truncated"]
    for name in ("checkpoint-log-deleted", "checkpoint-log-truncated", "checkpoint-folder-removed"):
        assert "checkpoint table cannot be loaded" in said[name], said[name]
    assert said["ledger-commit-truncated"].startswith("the ledger is damaged: its commit file")
    assert "can no longer be restored" in said["sink-point-vacuumed"] and "nothing was changed" in said[
        "sink-point-vacuumed"]
    assert all(cases[n]["exit_code"] == 3 for n in ("ledger-commit-truncated", "sink-point-vacuumed"))
    assert all((c["duplicates"], c["missing"], c["extra"]) == (0, 0, 0) for c in cases.values())
    assert versions == {t: deltalake.DeltaTable(str(out / t)).version() for t in TABLES}  # yours, untouched


BROKEN_JOB = '''
import os
import sys
import time

from pyspark.sql import functions as F

import spark_recover.sinks as sinks
from spark_recover import Job

if os.environ.get("SPARK_RECOVER_SINK_ROOT"):  # only in the drill's driver processes

    def publish_without_txn(spark, sink, read, app, txn_version, metadata, **_):
        # The bug under drill: an append without txnAppId/txnVersion, so a replay appends again.
        read(spark).write.format("delta").mode("append").save(sink.target.location)
        # A slow commit hook: a kill now makes the resume replay the append. The clean run's (root .../clean)
        # sets where the kill lands; a trial's lasts until the kill, however fast its driver; a resume's is short.
        time.sleep(2 if "--resume" in sys.argv else 8 if sys.argv[sys.argv.index("--root") + 1].endswith("/clean")
                   else 600)
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
    # Seed 0 kills at 84% of the clean run: after the append committed (8 s of the clean run's hook and what
    # follows it came after), inside the trial's slow hook.
    result = run_cli("drill", str(job_file), "-p", f"out={tmp_path / 'out'}", "--kills", "1", "--seed", "0",
                     "--root", recover_root, "--json")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    [trial] = report["trials"]
    assert trial["hit"] == "sink numbers" and trial["duplicates"] == 50, (trial, report["clean_timeline"])
    assert report["verdict"] == "FAIL: trial 1 (reproduce with --seed 0 --kills 1)" and report["failing_seed"] == 0
    assert not (tmp_path / "out").exists()


def test_a_drill_whose_clean_run_fails_exits_with_that_runs_code(recover_root):
    # The job's stage raises (exit 1): the drill must exit 1 too, not 2 (bad usage) with the code in a field.
    result = run_cli("drill", FAILING_JOB, "-p", "fail=yes", "--kills", "1", "--seed", "0", "--root", recover_root)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "the clean run of the drill failed" in result.stderr and "exit code 1" in result.stderr, result.stderr


def test_the_commit_checker_catches_a_double_commit_that_leaves_the_same_rows(spark, tmp_path):
    # An overwrite sink written twice by one logical run (a replay under a new txnVersion): the final
    # rows equal a single write's, so only the table's history shows it.
    once, twice = str(tmp_path / "once"), str(tmp_path / "twice")
    tag = json.dumps({"run_id": "R1", "sink": "/w/totals"})
    for path, versions in ((once, [0]), (twice, [0, 1])):
        for txn in versions:
            (spark.range(5).write.format("delta").mode("overwrite").option("txnAppId", "app")
             .option("txnVersion", txn).option("userMetadata", tag).save(path))
    assert deltalake.DeltaTable(twice).to_pyarrow_table().num_rows == 5  # same rows as a single write
    runs = [RunRecord(run_id="R0", job="j"),  # killed before it published
            RunRecord(run_id="R1", job="j", sinks={twice: {"status": "written", "skipped_duplicate": False}})]
    histories = {once: deltalake.DeltaTable(once).history(), twice: deltalake.DeltaTable(twice).history()}
    counts, problems = sink_commits(histories, runs, {once: "once", twice: "twice"})
    assert counts == {"once": 1, "twice": 2}
    assert problems == ["sink twice: 2 data commits in one logical run (runs R1, R1), expected exactly 1",
                        "sink twice: run R1 recorded a write but made 2 commits"]
    # A run that recorded a skip must have made no commit; another logical run's commits do not count.
    skipped = [RunRecord(run_id="R1", job="j", sinks={once: {"status": "written", "skipped_duplicate": True}})]
    assert sink_commits({once: histories[once]}, skipped)[1] == [
        f"sink {once}: run R1 recorded a skip but committed 1 time(s)"]
    assert sink_commits({once: histories[once]}, [RunRecord(run_id="R9", job="j")])[0] == {once: 0}


def test_a_drill_counts_each_sinks_commits_and_recovers_from_other_directories(spark, source_data, recover_root,
                                                                                tmp_path):
    params = {"data": str(source_data), "out": str(tmp_path / "out"), "day": "3"}
    report = assert_recovers(SINK_JOB, params, kills=2, seed=11, spark=spark)
    s = report["summary"]
    assert s["sink_commits"] == 2 * len(TABLES) and s["sink_commit_faults"] == 0, report["trials"]
    for t in report["trials"]:  # per trial (one logical run): every sink committed exactly once
        assert sorted(t["commits"]) == sorted(report["sinks_redirected"]) and set(t["commits"].values()) == {1}, t
        assert t["moved_recoveries"] >= 1 and t["commit_problems"] == []
    text = drill_text(report)
    assert "commits" in text and f"sink data commits {2 * len(TABLES)}" in text and "0 off" in text, text
