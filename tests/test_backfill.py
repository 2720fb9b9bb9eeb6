"""Backfills (issue 28): one logical run per value, resumable as a whole, each value's sinks exactly once.

A real backfill process over ten days of the four-sink job is SIGKILLed midway
and run again; every value must then have succeeded, every sink table must hold
what a clean backfill gives (row for row), and each value's logical run must
have committed each sink exactly once. Bad input exits 2 with nothing written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import deltalake
import pytest
from pyspark.sql import functions as F

from spark_recover.backfill import expand, expand_value
from spark_recover.drill import sink_commits
from spark_recover.errors import UsageError
from spark_recover.job import load_job
from spark_recover.ledger import Ledger
from spark_recover.rerun import params_key
from spark_recover.storage import Layout
from spark_recover.testing import job_env, run_cli, runs_of

from conftest import SINK_JOB, TABLES
from recovery_checks import assert_same_rows

DAYS = [str(d) for d in range(10)]


def test_values_expand_from_ranges_and_lists():
    assert expand_value("day", "2026-02-27..2026-03-01") == ["2026-02-27", "2026-02-28", "2026-03-01"]
    assert expand_value("n", "-1..1") == ["-1", "0", "1"]
    swept, values = expand({"day": "1..2", "region": "eu,us", "out": "/w"})
    assert swept == ["day", "region"] and len(values) == 4 and values[-1] == {"day": "2", "region": "us", "out": "/w"}
    assert expand({"n": range(3), "out": "/w"})[1] == [{"n": 0, "out": "/w"}, {"n": 1, "out": "/w"},
                                                        {"n": 2, "out": "/w"}]
    for bad, said in [("3..1", "empty range"), ("1..x", "malformed range"), ("2026-11-01..5", "malformed range"),
                      ("a,,b", "malformed list"), ("a,b,a", "twice"), ("0..20000", "values")]:
        with pytest.raises(UsageError, match=said):
            expand_value("k", bad)
    with pytest.raises(UsageError, match="nothing to backfill"):
        expand({"day": "3"})


@pytest.mark.parametrize("params, said", [
    (["day=9..1"], "empty range for parameter 'day'"),
    (["day=0..3", "dya=3"], "reads no parameter 'dya'"),
    (["day=1,2,1"], "lists '1' twice"),
    (["day=3"], "nothing to backfill"),
])
def test_bad_backfill_input_exits_2_and_writes_nothing(recover_root, tmp_path, params, said):
    args = [a for p in ["data=/nowhere", f"out={tmp_path / 'out'}", *params] for a in ("-p", p)]
    done = run_cli("backfill", SINK_JOB, "--root", recover_root, *args, env={"JAVA_HOME": "/nonexistent"})
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert not os.path.exists(recover_root) or not os.listdir(recover_root)
    assert not (tmp_path / "out").exists()


def _backfill_args(root: str, data: Path, out: Path) -> list[str]:
    return ["backfill", SINK_JOB, "--root", root, "-p", f"data={data}", "-p", f"out={out}", "-p", "day=0..9"]


def test_a_killed_backfill_run_again_completes_each_value_exactly_once(spark, source_data, recover_root, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "spark_recover", *_backfill_args(recover_root, source_data, out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=job_env(),
                            start_new_session=True)
    try:  # SIGKILL the backfill's driver (Python and JVM) once four values are done
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            if sum(r.status == "succeeded" for r in runs_of(recover_root)) >= 4:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = {r.params["day"]: r.status for r in runs_of(recover_root)}
    assert 4 <= sum(s == "succeeded" for s in before.values()) < 10, before

    again = run_cli(*_backfill_args(recover_root, source_data, out), "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads(again.stdout)
    by_day = {v["value"]["day"]: v for v in report["values"]}
    assert list(by_day) == DAYS
    assert {d for d, v in by_day.items() if v["status"] == "skipped"} == {d for d, s in before.items()
                                                                           if s == "succeeded"}
    resumed = [d for d, v in by_day.items() if v["origin_run_id"]]  # the value the kill interrupted, if any
    assert all(before.get(d) == "failed" for d in resumed) and len(resumed) <= 1
    assert all(v["status"] in ("skipped", "succeeded") for v in by_day.values())

    shown = run_cli("backfill", "show", SINK_JOB, "--root", recover_root, "-p", f"data={source_data}",
                    "-p", f"out={out}", "-p", "day=0..9", "--json", env={"JAVA_HOME": "/nonexistent"})
    assert shown.returncode == 0, shown.stderr
    assert [(r["value"]["day"], r["status"]) for r in json.loads(shown.stdout)] == [(d, "succeeded") for d in DAYS]

    # Each value's logical run committed each sink exactly once, whatever the kill interrupted.
    histories = {str(out / t): deltalake.DeltaTable(str(out / t)).history() for t in TABLES}
    ledger = Ledger(Layout.at(recover_root))
    for day in DAYS:
        value = {"data": str(source_data), "out": str(out), "day": day}
        counts, problems = sink_commits(histories, ledger.runs("sink_sales", params_key=params_key(value)))
        assert not problems and set(counts.values()) == {1}, (day, counts, problems)

    # Row for row, what a clean backfill (the Python API, in this process) publishes.
    clean = load_job(SINK_JOB).backfill({"data": str(source_data), "out": str(tmp_path / "clean"), "day": "0..9"},
                                        root=str(tmp_path / "clean-root"), spark=spark, echo=False)
    assert clean.ok and [o.status for o in clean.outcomes] == ["succeeded"] * 10
    for table in TABLES:
        reference = spark.read.format("delta").load(str(tmp_path / "clean" / table)).collect()
        assert_same_rows(spark, spark.read.format("delta").load(str(out / table)), reference)


SHARED_JOB = '''
from pyspark.sql import functions as F
from spark_recover import Job

job = Job("shared_tables")
events = job.source("events", path="{data}/events")


@job.stage
def sliced(events, params):
    return events.where(F.col("day") == params["day"]).groupBy("day", "store_id").agg(F.sum("qty").alias("qty"))


# Tables every value writes, created by whichever value commits first.
job.sink("sliced", path="{out}/log", mode="append")
job.sink("sliced", path="{out}/by_day", mode="replace_where", predicate="day = '{day}'")
job.sink("sliced", path="{out}/merged", mode="merge", keys=["day", "store_id"])
'''
SHARED = ["log", "by_day", "merged"]


def test_a_parallel_backfill_into_shared_tables_commits_each_value_once(spark, source_data, tmp_path):
    """Three values at a time write three tables none of them has created yet: Delta refuses the commits
    that lose a race, and those are written again, so each value's logical run commits each table once."""
    path = tmp_path / "shared.py"
    path.write_text(SHARED_JOB)
    job, root, out = load_job(str(path)), str(tmp_path / "root"), tmp_path / "out"
    params = {"data": str(source_data), "out": str(out), "day": "0..5"}
    first = job.backfill(params, parallel=3, root=root, spark=spark, echo=False)
    assert [o.status for o in first.outcomes] == ["succeeded"] * 6 and first.exit_code == 0, first
    assert [o.value for o in first.outcomes] == [{"day": str(d)} for d in range(6)]  # value order, not end order

    want = spark.read.format("delta").load(str(source_data / "events")).where("day IN ('0','1','2','3','4','5')") \
        .groupBy("day", "store_id").agg(F.sum("qty").alias("qty")).collect()
    histories = {str(out / t): deltalake.DeltaTable(str(out / t)).history() for t in SHARED}
    ledger = Ledger(Layout.at(root))
    for table in SHARED:
        assert_same_rows(spark, spark.read.format("delta").load(str(out / table)), want)
    for o in first.outcomes:
        counts, problems = sink_commits(histories, ledger.runs("shared_tables", params_key=params_key(o.params)))
        assert not problems and set(counts.values()) == {1}, (o.value, counts, problems)

    again = job.backfill(params, parallel=3, root=root, spark=spark, echo=False)
    assert [o.status for o in again.outcomes] == ["skipped"] * 6
    assert [o.run_id for o in again.outcomes] == [o.run_id for o in first.outcomes]
    assert [r["attempts"] for r in job.backfill_status(params, root=root)] == [1] * 6


def test_a_parallel_backfill_of_a_table_two_values_overwrite_exits_2(recover_root, tmp_path):
    """The four-sink job overwrites region_totals whole for every day: at once, the last commit would win."""
    out = tmp_path / "out"
    done = run_cli("backfill", SINK_JOB, "--root", recover_root, "-p", "data=/nowhere", "-p", f"out={out}",
                   "-p", "day=0..3", "--parallel", "2", env={"JAVA_HOME": "/nonexistent"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "values day=0 and day=1 both overwrite sink" in done.stderr, done.stderr
    assert "region_totals (overwrite, stage 'region_totals')" in done.stderr
    assert "by_day" not in done.stderr  # replace_where on {day}: a slice per value
    assert not out.exists() and not (Path(recover_root) / "ledger").exists()
