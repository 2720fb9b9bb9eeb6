"""`spark-recover plan` says what the next real command does, stage by stage and sink by sink (issue 27).

Each case crashes a real job process, asks `plan` (a process with no Java to
start: it must not need one), then runs the real command and compares what it
did with what the plan said: every stage reused or recomputed (with the same
reason), every sink written or skipped as a duplicate, or both refused (exit 3).
The code-change case (a helper module edited) is in test_fingerprint_coverage.py.
"""

from __future__ import annotations

import json

from spark_recover.history import RunRecord
from spark_recover.ledger import Ledger
from spark_recover.storage import Layout
from spark_recover.testing import crash_at, no_jvm_env, run_args, run_cli, runs_of

from conftest import SINK_JOB, TABLES


def plan(root: str, params: dict[str, str], *args: str) -> tuple[int, dict]:
    done = run_cli("plan", SINK_JOB, "--root", root, *[a for k, v in params.items() for a in ("-p", f"{k}={v}")],
                   *args, "--json", env=no_jvm_env())
    assert done.returncode in (0, 3), done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)


def did(record: RunRecord) -> tuple[dict[str, str], dict[str, str]]:
    """What a run did: each stage's action (and why), each sink's."""
    stages = {s.name: "reuse" if s.reused else f"recompute: {s.reason}" for s in record.stages.values()}
    sinks = {t: "skip" if e.get("skipped_duplicate") else "write" for t, e in record.sinks.items()}
    return stages, sinks


def said(p: dict) -> tuple[dict[str, str], dict[str, str]]:
    stages = {s["stage"]: "reuse" if s["action"] == "reuse" else f"recompute: {s['reason']}" for s in p["stages"]}
    return stages, {s["table"]: s["action"] for s in p["sinks"]}


def test_plan_of_a_crash_matches_the_resume_and_both_refusals(own_sources, recover_root, tmp_path):
    params = {"data": str(own_sources), "out": str(tmp_path / "out"), "day": "3"}
    crashed = crash_at(SINK_JOB, "day_slice", "sink_after_commit", root=recover_root, params=params)
    assert crashed.killed, crashed.stderr[-3000:]

    # A replay that must be refused: day 4 changes what by_day publishes, which the crashed run committed.
    code, refused = plan(recover_root, {"day": "4"}, "--from", crashed.run_id)
    assert code == 3 and refused["refused"]
    assert len(refused["refusals"]) == 1, refused["refusals"]
    [sink_refusal] = refused["refusals"]
    assert sink_refusal["at"] == "sink" and "already published" in sink_refusal["headline"]
    assert {s["table"].rsplit("/", 1)[-1]: s["action"] for s in refused["sinks"]}["by_day"] == "refuse"
    before = len(runs_of(recover_root))
    real = run_cli("resume", crashed.run_id, "--root", recover_root, "-p", "day=4")
    assert real.returncode == 3, real.stderr[-3000:]
    assert sink_refusal["headline"] in real.stderr
    assert all(r.refused for r in runs_of(recover_root)[before:])  # nothing computed, nothing published

    # The crash: every stage reused, the two committed sinks skipped, the other two written.
    code, p = plan(recover_root, params, "--resume")
    assert code == 0 and p["origin_run_id"] == crashed.run_id, p
    assert said(p) == ({s: "reuse" for s in ("daily", "day_slice", "store_totals", "region_totals")},
                       {f"{params['out']}/{t}": a for t, a in zip(TABLES, ["skip", "skip", "write", "write"])})
    resumed = run_cli(*run_args(SINK_JOB, recover_root, params, ["--resume"]))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = Ledger(Layout.at(recover_root)).run(resumed.run_id)
    assert record.origin_run_id == crashed.run_id and did(record) == said(p)

    # Now recovered: replaying the crashed run again is refused, by the plan and by the command.
    code, again = plan(recover_root, {}, "--from", crashed.run_id)
    assert code == 3 and again["refusals"][0]["at"] == "replay", again
    real = run_cli("resume", crashed.run_id, "--root", recover_root)
    assert real.returncode == 3 and again["refusals"][0]["headline"] in real.stderr
    code, done = plan(recover_root, params, "--resume")
    assert code == 0 and done["done"] and not done["stages"]


def test_plan_of_a_parameter_override_matches_the_resume(own_sources, recover_root, tmp_path):
    params = {"data": str(own_sources), "out": str(tmp_path / "out"), "day": "3"}
    crashed = crash_at(SINK_JOB, "region_totals", "before", root=recover_root, params=params)
    assert crashed.killed, crashed.stderr[-3000:]
    code, p = plan(recover_root, {"day": "5"}, "--from", crashed.run_id)
    assert code == 0, p
    stages, sinks = said(p)
    assert stages == {"daily": "reuse", "day_slice": "recompute: parameter 'day' changed ('3' -> '5')",
                      "store_totals": "reuse", "region_totals": f"recompute: it did not complete in run {crashed.run_id}"}
    assert set(sinks.values()) == {"write"}
    resumed = run_cli("resume", crashed.run_id, "--root", recover_root, "-p", "day=5")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert did(Ledger(Layout.at(recover_root)).run(resumed.run_id)) == (stages, sinks)


def test_plan_of_a_moved_source_matches_the_resume(spark, own_sources, recover_root, tmp_path):
    params = {"data": str(own_sources), "out": str(tmp_path / "out"), "day": "3"}
    crashed = crash_at(SINK_JOB, "region_totals", "before", root=recover_root, params=params)
    assert crashed.killed, crashed.stderr[-3000:]
    pinned = crashed_pin = Ledger(Layout.at(recover_root)).run(crashed.run_id).sources["events"]["version"]
    spark.read.format("delta").load(str(own_sources / "events")).limit(10) \
        .write.format("delta").mode("append").save(str(own_sources / "events"))

    code, kept = plan(recover_root, params, "--resume")  # a resume keeps the pinned version: same input
    events = next(s for s in kept["sources"] if s["source"] == "events")
    assert events["kept"] and events["moved"] and events["pin"]["version"] == pinned
    assert events["now"]["version"] == pinned + 1
    assert [s["action"] for s in kept["stages"]] == ["reuse", "reuse", "reuse", "recompute"]

    code, p = plan(recover_root, params, "--resume", "--refresh-sources")  # re-pinned: what reads it recomputes
    assert code == 0, p
    stages, sinks = said(p)
    moved = f"source 'events' changed (version {crashed_pin} -> version {pinned + 1})"
    assert stages["daily"] == f"recompute: {moved}" and stages["store_totals"] == f"recompute: {moved}"
    resumed = run_cli(*run_args(SINK_JOB, recover_root, params, ["--resume", "--refresh-sources"]))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = Ledger(Layout.at(recover_root)).run(resumed.run_id)
    assert record.sources["events"]["version"] == pinned + 1
    assert did(record) == (stages, sinks)
