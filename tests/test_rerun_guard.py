"""A run's identity: a plain rerun never republishes, one key per parameter values, a lease per logical run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spark_recover import lease
from spark_recover.errors import RefusedError
from spark_recover.fingerprint import digest
from spark_recover.ledger import Ledger
from spark_recover.liveness import this_process
from spark_recover.rerun import new_run_id, params_key
from spark_recover.storage import Layout
from spark_recover.testing import crash_at, run_args, run_cli

from conftest import SINK_JOB, check_tables, read_table


def test_plain_rerun_after_a_published_sink_is_refused(spark, sink_job, source_data, clean_sinks, recover_root,
                                                       tmp_path):
    """Issue 24 §5: a scheduler retry without --resume republished the first sink (100 -> 200 rows)."""
    out = tmp_path / "out"
    params = {"data": str(source_data), "out": str(out), "day": "3"}
    crashed = crash_at(SINK_JOB, "daily", "sink_after_commit", root=recover_root, params=params)
    assert crashed.killed, crashed.stdout + crashed.stderr
    published = read_table(spark, out, "daily_log").count()
    assert published == len(clean_sinks["daily_log"])

    retry = run_cli(*run_args(SINK_JOB, recover_root, params, []))  # the same command again, no --resume
    assert retry.returncode == 3, retry.stdout + retry.stderr
    for hint in ("--resume", f"spark-recover redo {crashed.run_id}", "--new-run"):
        assert hint in retry.stderr
    with pytest.raises(RefusedError, match="failed after publishing"):  # the API, with a typed value: one key
        sink_job.run({**params, "day": 3}, root=recover_root, spark=spark, echo=False)
    assert read_table(spark, out, "daily_log").count() == published  # nothing written by the refusals
    assert [r.run_id for r in Ledger(Layout.at(recover_root)).runs()] == [crashed.run_id]

    resumed = sink_job.run(params, resume_from=crashed.run_id, root=recover_root, spark=spark, echo=False)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.origin_run_id == crashed.run_id
    check_tables(spark, out, clean_sinks)  # each sink exactly once

    again = sink_job.run(params, new_run=True, root=recover_root, spark=spark, echo=False)
    assert again.status == "succeeded" and again.origin_run_id is None  # asked for: a new logical run
    assert read_table(spark, out, "daily_log").count() == 2 * published


def test_params_key_ignores_python_types_of_equal_values():
    assert params_key({"n": 5, "day": "3"}) == params_key({"n": "5", "day": "3"})
    assert params_key({"on": True, "xs": [1, 2]}) == params_key({"on": "true", "xs": ["1", "2"]})
    assert params_key({"n": 5}) != params_key({"n": 6})
    text = {"day": "2026-11-23", "data": "/d"}
    assert params_key(text) == digest(text, 16)  # CLI runs recorded before keep their key


def test_run_ids_carry_64_random_bits_and_are_never_reused(tmp_path):
    ids = {new_run_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i.split("-")[1]) == 16 for i in ids)
    ledger = Ledger(Layout.at(str(tmp_path / "root")))
    lease.claim(ledger, "j", "k", "r1", {"params_key": "k", "process": this_process()})
    with pytest.raises(RefusedError, match="run id r1 is already in the ledger"):
        lease.claim(ledger, "j", "other", "r1", {"params_key": "other", "process": this_process()})
    assert len(ledger.runs()) == 1


def test_two_resumes_of_one_logical_run_share_its_lease(tmp_path):
    """Issue 24 §7: resumes with different overrides had different leases but one logical run and txnAppId."""
    ledger = Ledger(Layout.at(str(tmp_path / "root")))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = {**this_process(), "pid": int(gone.stdout)}
    lease.claim(ledger, "j", "k0", "first", {"params_key": "k0", "process": dead})  # failed: its driver died
    lease.claim(ledger, "j", "k1", "resume-a", {"params_key": "k1", "origin_run_id": "first",
                                                "process": this_process()})
    with pytest.raises(RefusedError, match="run resume-a of job 'j' of logical run first is still running"):
        lease.claim(ledger, "j", "k2", "resume-b", {"params_key": "k2", "origin_run_id": "first",
                                                    "process": this_process()})
    with pytest.raises(RefusedError, match="of logical run first"):  # a resume of the resume: same logical run
        lease.claim(ledger, "j", "k3", "resume-c", {"params_key": "k3", "origin_run_id": "resume-a",
                                                    "process": this_process()})
    other = lease.claim(ledger, "j", "k9", "unrelated", {"params_key": "k9", "process": this_process()})
    other.check()  # another logical run with other parameters: no conflict
    assert sorted(r.run_id for r in ledger.runs()) == ["first", "resume-a", "unrelated"]


def test_a_failed_resume_still_owes_its_logical_runs_sinks():
    """A resume that failed before its sinks: a plain rerun must still see what the first run published."""
    from spark_recover.history import RunRecord
    from spark_recover.rerun import plain_rerun_refusal

    first = RunRecord("A", "j", params_key="k", finished=True, final_status="failed", logical_run_id="A",
                      sinks={"/w/t": {"status": "written"}})
    resume = RunRecord("B", "j", params_key="k", origin_run_id="A", finished=True, final_status="failed",
                       logical_run_id="A")
    refusal = plain_rerun_refusal([first, resume], "k", "/jobs/j.py")
    assert refusal is not None and refusal.fields["tables"] == ["/w/t"] and refusal.exit_code == 3
    assert "spark-recover redo B" in str(refusal)
    assert plain_rerun_refusal([resume], "k", None) is None  # nothing published in its logical run


HOLD = """
import sys, time
from spark_recover import lease
from spark_recover.ledger import Ledger
from spark_recover.storage import Layout
with lease.hold(Ledger(Layout.at(sys.argv[1])), "j", "k1", "first"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_rollback_hold_refuses_a_resume_with_other_overrides(tmp_path):
    """A rollback of a run holds its logical run: a resume of it with other -p overrides waits."""
    root = str(tmp_path / "root")
    ledger = Ledger(Layout.at(root))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lease.claim(ledger, "j", "k1", "first", {"params_key": "k1", "process": {**this_process(),
                                                                             "pid": int(gone.stdout)}})
    holder = subprocess.Popen([sys.executable, "-c", HOLD, root], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RefusedError, match="a rollback of run first holds the lease"):
            lease.claim(ledger, "j", "k2", "resume", {"params_key": "k2", "origin_run_id": "first",
                                                      "process": this_process()})
    finally:
        holder.kill()
        holder.wait()
    assert [r.run_id for r in ledger.runs()] == ["first"]


def test_a_hold_seen_from_another_host_lives_while_it_beats():
    import datetime as dt

    now = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)
    journal = {"finished": False, "started_at": "2026-11-29T11:50:00Z", "last_seen": "2026-11-29T11:59:50Z",
               "attempt": {"process": {"host": "elsewhere", "pid": 1}}}
    assert lease.hold_is_live(journal, 60.0, now=now)  # a 10-minute rollback, beating
    assert not lease.hold_is_live({**journal, "last_seen": "2026-11-29T11:55:00Z"}, 60.0, now=now)
