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


PER_VALUE_JOB = '''
from pyspark.sql import functions as F
from spark_recover import Job

job = Job("per_value")
events = job.source("events", path="{data}/events")


@job.stage
def sliced(events, params):
    return events.where(F.col("day") == params["day"]).groupBy("store_id").agg(F.sum("qty").alias("qty"))


job.sink("sliced", path="{out}/day={day}", mode="overwrite")
'''


def test_a_parallel_backfill_runs_each_value_once_then_skips_them_all(spark, source_data, tmp_path):
    path = tmp_path / "per_value.py"
    path.write_text(PER_VALUE_JOB)
    job, root = load_job(str(path)), str(tmp_path / "root")
    params = {"data": str(source_data), "out": str(tmp_path / "out"), "day": "0..5"}
    first = job.backfill(params, parallel=3, root=root, spark=spark, echo=False)
    assert [o.status for o in first.outcomes] == ["succeeded"] * 6 and first.exit_code == 0, first
    assert [o.value for o in first.outcomes] == [{"day": str(d)} for d in range(6)]  # value order, not end order
    for day in range(6):
        rows = spark.read.format("delta").load(str(tmp_path / "out" / f"day={day}")).collect()
        want = spark.read.format("delta").load(str(source_data / "events")).where(f"day = '{day}'") \
            .groupBy("store_id").sum("qty").collect()
        assert sorted(map(tuple, rows)) == sorted(map(tuple, want))
    again = job.backfill(params, parallel=3, root=root, spark=spark, echo=False)
    assert [o.status for o in again.outcomes] == ["skipped"] * 6
    assert [o.run_id for o in again.outcomes] == [o.run_id for o in first.outcomes]
    assert [r["attempts"] for r in job.backfill_status(params, root=root)] == [1] * 6
