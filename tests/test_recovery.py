"""Crash a real job process, resume it, and compare with a clean run row by row."""

from __future__ import annotations

import json
import random
import time

import pytest

from spark_recover.ledger import Ledger
from spark_recover.storage import Layout
from spark_recover.testing import crash_at, kill_during, no_jvm_env, run_cli, runs_of

from conftest import SMALL_JOB, STAGES
from recovery_checks import assert_same_rows

NO_JAVA = {"JAVA_HOME": "/nonexistent/jdk"}


def _check_recovered(spark, result, clean_outputs) -> None:
    assert result.status == "succeeded", result.error
    clean, _ = clean_outputs
    for stage in ("ranked", "summary"):
        assert_same_rows(spark, result.output(stage), clean[stage])


def _recomputed(result) -> list[str]:
    return [s.name for s in result.stages if not s.reused]


@pytest.mark.parametrize("point, completed", [
    ("before", ["cleaned", "enriched"]),
    ("after_write", ["cleaned", "enriched"]),
    ("after_commit", ["cleaned", "enriched", "daily"]),
])
def test_failpoint_in_middle_stage_then_resume(spark, small_job, source_data, clean_outputs,
                                               recover_root, point, completed):
    crashed = crash_at(SMALL_JOB, "daily", point, root=recover_root, params={"data": str(source_data)})
    assert crashed.killed, crashed.stderr
    origin = Ledger(Layout.at(recover_root)).run(crashed.run_id)
    assert origin.status == "failed"
    assert [s.name for s in origin.stage_list() if s.status == "succeeded"] == completed

    result = small_job.resume(crashed.run_id, root=recover_root, spark=spark, echo=False)

    _check_recovered(spark, result, clean_outputs)
    assert result.origin_run_id == crashed.run_id
    assert [s.name for s in result.stages if s.reused] == completed
    assert _recomputed(result) == [s for s in STAGES if s not in completed]
    assert {s.reason for s in result.stages if not s.reused} == {f"it did not complete in run {crashed.run_id}"}
    # The failed run's record is history: the resume did not rewrite it, only links to it.
    after = Ledger(Layout.at(recover_root)).run(crashed.run_id).to_json()
    before = origin.to_json()
    assert (before.pop("recovered_by"), after.pop("recovered_by")) == (None, result.run_id)
    assert after == before
    metrics = result.metrics
    assert metrics["recovery_seconds"] > 0 and metrics["recovery_ratio"] > 0


def test_sigkill_at_random_moment_then_resume(spark, small_job, source_data, clean_outputs, recover_root,
                                              tmp_path):
    seen = {}

    def inspect_live(run):
        # While the run is alive, the JVM-free CLI shows it as running.
        for args in (["show", run.run_id, "--json"], ["runs", "--json"]):
            started = time.monotonic()
            out = run_cli(*args, "--root", recover_root, env=NO_JAVA)
            seen[args[0]] = (out.returncode, json.loads(out.stdout), time.monotonic() - started)
        # ... and `plan` says a run now would be refused, naming the live holder.
        out = run_cli("plan", SMALL_JOB, *[a for k, v in params.items() for a in ("-p", f"{k}={v}")], "--json",
                      "--root", recover_root, env=no_jvm_env())
        seen["plan"] = (out.returncode, json.loads(out.stdout) if out.stdout.strip() else out.stderr)

    # Kill at a random moment (seeded: reproducible) once two stages are checkpointed, so the kill lands
    # mid-run with work to reuse; the third stage holds while the hold file exists, so the live checks and the
    # kill land inside it however slow the checks are (the resume, with the file gone, does not wait).
    delay = random.Random(7).uniform(0.0, 1.0)
    hold = tmp_path / "hold"
    hold.touch()
    params = {"data": str(source_data), "pause_seconds": "300", "hold": str(hold)}
    killed = kill_during(SMALL_JOB, root=recover_root, params=params,
                         when=lambda run: sum(s.status == "succeeded" for s in run.stages.values()) >= 2,
                         delay=delay, while_running=inspect_live)
    hold.unlink()
    assert killed.killed, killed.stderr
    code, shown, _ = seen["show"]
    assert code == 0 and shown["status"] == "running"
    assert seen["runs"][1][0]["run_id"] == killed.run_id
    code, planned = seen["plan"]
    assert code == 3 and planned["refusals"][0]["at"] == "lease", planned
    assert killed.run_id in planned["refusals"][0]["headline"] + planned["refusals"][0]["detail"]

    after = run_cli("show", killed.run_id, "--json", "--root", recover_root, env=NO_JAVA)
    record = json.loads(after.stdout)
    assert record["status"] == "failed" and "died" in record["error"]
    done = [s["name"] for s in record["stages"] if s["status"] == "succeeded"]
    assert done == STAGES[:2], done  # killed mid-run, in the held third stage

    result = small_job.resume(killed.run_id, root=recover_root, spark=spark, echo=False)
    _check_recovered(spark, result, clean_outputs)
    assert [s.name for s in result.stages if s.reused] == done
    assert [run.status for run in runs_of(recover_root)] == ["failed", "succeeded"]
