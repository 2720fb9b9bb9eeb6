"""The ledger and checkpoints are plain Delta tables; the lease protects a running run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import deltalake
import pyarrow as pa
import pytest

from spark_recover.errors import RefusedError
from spark_recover.fingerprint import digest
from spark_recover.ledger import Ledger
from spark_recover.liveness import this_process
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


# -- liveness, settings, heartbeat and commit order: pure, no JVM (issue 24, sections 6 and 10) ----------

import datetime as dt
import socket
import time
from pathlib import Path

from spark_recover.config import Settings
from spark_recover.errors import DamagedStateError, UsageError
from spark_recover.job import Job
from spark_recover.ledger import SCHEMA
from spark_recover.history import RunRecord, apply_event
from spark_recover.liveness import process_alive
from spark_recover.lease import Heartbeat
from spark_recover.runner import replay_choice

_NOW = dt.datetime.now(dt.timezone.utc)
_ELSEWHERE = {"host": "another-host", "pid": 1, "boot_id": "another-boot", "proc_start": 0.0}


def _started(process: dict, *, ago: float, **detail) -> RunRecord:
    """A run record folded from a ``run_started`` event written ``ago`` seconds ago."""
    record = RunRecord("r1", "j", dead_after=60.0)
    apply_event(record, {"event": "run_started", "ts": dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=ago),
                         "detail": json.dumps({"params": {}, "params_key": "k", "process": process, **detail})})
    return record


def test_this_process_is_alive():
    me = this_process()
    assert process_alive(me) is True
    assert _started(me, ago=3600).alive  # by its process, however old its last event


def test_identity_from_another_boot_or_container_is_judged_by_heartbeat():
    me = this_process()
    for other in ({**me, "boot_id": "another-boot"}, {**me, "pid_ns": "pid:[1]"}):
        # Same host name and pid, but another boot or pid namespace: this machine cannot see that process.
        assert process_alive(other) is None
        assert _started(other, ago=5).alive
        assert not _started(other, ago=600).alive


def test_wall_clock_step_does_not_make_a_live_driver_dead():
    me = this_process()
    stepped = {**me, "proc_start": me["proc_start"] - 7.0}  # the clock moved 7 s since it was recorded
    assert process_alive(stepped) is True
    assert process_alive({**me, "start_ticks": me["start_ticks"] + 1}) is False  # a reused pid


def test_old_identity_records_stay_readable():
    old = {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": this_process()["proc_start"]}
    assert process_alive(old) is True
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert process_alive({**old, "pid": int(gone.stdout)}) is False
    assert process_alive({**old, "host": "another-host"}) is None


def test_reader_waits_three_beats_of_the_writer():
    # The writer beats every 45 s; a reader whose own dead-after is 60 s must not call it dead at 100 s.
    assert _started(_ELSEWHERE, ago=100, heartbeat_seconds=45).alive
    assert not _started(_ELSEWHERE, ago=140, heartbeat_seconds=45).alive
    assert not _started(_ELSEWHERE, ago=100).alive  # no recorded beat (an old record): the reader's 60 s


def test_rollback_events_do_not_refresh_liveness():
    record = _started(_ELSEWHERE, ago=600)
    started = record.last_seen
    for kind in ("rollback_started", "table_restored"):
        apply_event(record, {"event": kind, "ts": dt.datetime.now(dt.timezone.utc),
                             "detail": json.dumps({"table": "t", "targets": {}})})
    assert record.last_seen == started
    assert not record.alive and record.status == "failed"


def test_timing_settings_are_checked():
    with pytest.raises(UsageError) as info:
        Settings(heartbeat_seconds=45, dead_after_seconds=60)
    assert "dead_after_seconds" in str(info.value) and "135" in str(info.value)
    with pytest.raises(UsageError):
        Settings(heartbeat_seconds=0)
    assert Settings(heartbeat_seconds=20, dead_after_seconds=60).dead_after_seconds == 60


@pytest.mark.parametrize("lines, named", [
    ("heartbeat_seconds = 45\ndead_after_seconds = 60", ("dead_after_seconds = 60", "135")),
    ("heartbeat_seconds = -1", ("heartbeat_seconds = -1", "positive")),
    ("dead_after_seconds = 0", ("dead_after_seconds = 0", "positive")),
])
def test_timing_settings_refused_by_the_cli(tmp_path, lines, named):
    conf = tmp_path / "recover.toml"
    conf.write_text(f"[recover]\n{lines}\n")
    done = run_cli("runs", "--conf", str(conf), "--root", str(tmp_path / "root"))
    assert done.returncode == 2, done.stderr
    assert all(text in done.stderr for text in named), done.stderr


def _tear_next_commit(ledger: Ledger) -> Path:
    torn = Path(ledger.uri) / "_delta_log" / f"{ledger.version() + 1:020d}.json"
    torn.write_text('{"commitInfo": {"timestamp": 1')  # a writer died mid-write on a store without atomic puts
    return torn


def test_heartbeat_survives_errors_that_are_not_ledger_errors(tmp_path):
    ledger = Ledger(Layout.at(str(tmp_path)))
    ledger.append("r1", "j", "run_started", detail={"params": {}, "params_key": "k", "process": _ELSEWHERE})
    torn = _tear_next_commit(ledger)
    beat = Heartbeat(ledger, "r1", "j", every=0.2)
    beat.start()
    try:
        time.sleep(1.5)  # several beats fail: the ledger is damaged (DamagedStateError, exit 3)
        assert beat.is_alive()
        torn.unlink()  # repaired
        deadline, beats = time.monotonic() + 60, []
        while not beats and time.monotonic() < deadline:  # a beat lands soon after, however loaded the machine
            time.sleep(0.2)
            beats = [e for e in Ledger(Layout.at(str(tmp_path))).events("r1") if e["event"] == "heartbeat"]
        assert beat.is_alive()
    finally:
        beat.stop()
    assert beats, "the heartbeat stopped beating after a failure"


def test_torn_commit_scan_reads_only_the_newest_commits(tmp_path):
    ledger = Ledger(Layout.at(str(tmp_path)))
    for n in range(8):
        ledger.append(f"r{n}", "j", "heartbeat")
    log = Path(ledger.uri) / "_delta_log"
    assert ledger._torn_commit() is None
    (log / f"{0:020d}.json").write_text("{")  # an old commit: no writer can leave it torn now
    assert ledger._torn_commit() is None
    newest = _tear_next_commit(ledger)
    assert ledger._torn_commit() == str(newest)
    for use in (ledger.runs, ledger.version, lambda: ledger.append("r9", "j", "heartbeat")):
        with pytest.raises(DamagedStateError) as info:
            use()
        assert info.value.exit_code == 3 and info.value.fields["file"] == str(newest)


class _SkewedLedger(Ledger):
    """A ledger whose writer's clock jumps around: each append takes the next of ``times``."""

    def __init__(self, root: str, times: list[dt.datetime]) -> None:
        super().__init__(Layout.at(root))
        self.times = iter(times)

    def _now(self) -> dt.datetime:
        return next(self.times)


def test_runs_and_rollbacks_are_ordered_by_commit_not_by_clock(tmp_path):
    hour = dt.timedelta(hours=1)
    # Commit order: a starts and fails; b resumes a; a rollback of the logical run finishes; c resumes b.
    # The clocks disagree: every later commit has an earlier time stamp.
    ledger = _SkewedLedger(str(tmp_path), [_NOW - n * hour for n in range(8)])
    for run_id, origin in (("a", None), ("b", "a")):
        ledger.append(run_id, "j", "run_started", detail={
            "params": {}, "params_key": digest({}, 16), "stages": [], "process": _ELSEWHERE,
            "origin_run_id": origin})
        ledger.append(run_id, "j", "run_finished", status="failed")
    ledger.append("b", "", "rollback_started", detail={"targets": {}})
    ledger.append("b", "", "rollback_finished", detail={"metrics": {}})
    ledger.append("c", "j", "run_started", detail={
        "params": {}, "params_key": digest({}, 16), "stages": [], "process": _ELSEWHERE, "origin_run_id": "b"})
    ledger.append("c", "j", "run_finished", status="failed")
    runs = {r.run_id: r for r in ledger.runs("j")}
    assert [r.run_id for r in ledger.runs("j")] == ["a", "b", "c"]
    assert runs["a"].undone_by == "b" and runs["b"].rolled_back
    assert runs["c"].undone_by is None and runs["c"].status == "failed"
    origin, why = replay_choice(ledger, Job("j"), {})
    assert origin is not None and origin.run_id == "c", why


def test_ledgers_written_before_commit_order_stay_readable(tmp_path):
    old_schema = pa.schema([f for f in SCHEMA if f.name in (
        "run_id", "job", "event", "stage", "status", "ts", "version", "rows", "seconds", "fingerprint",
        "checkpoint", "reason", "error", "detail")])
    uri = str(tmp_path / "ledger" / "events")
    old_rows = [{"run_id": "old", "job": "j", "event": "run_started", "ts": _NOW,
                 "detail": json.dumps({"params": {}, "params_key": "k", "process": _ELSEWHERE})},
                {"run_id": "old", "job": "j", "event": "run_finished", "status": "failed",
                 "ts": _NOW + dt.timedelta(seconds=1)}]
    deltalake.write_deltalake(uri, pa.Table.from_pylist(old_rows, schema=old_schema))
    ledger = _SkewedLedger(str(tmp_path), [_NOW - dt.timedelta(hours=1)] * 2)  # a new run, clock behind
    ledger.append("new", "j", "run_started", detail={"params": {}, "params_key": "k", "process": _ELSEWHERE,
                                                     "origin_run_id": "old"})
    ledger.append("new", "j", "run_finished", status="succeeded")
    runs = ledger.runs("j")
    assert [r.run_id for r in runs] == ["old", "new"]
    assert runs[0].recovered_by == "new" and runs[1].status == "succeeded"


def test_commit_order_survives_compaction(tmp_path, monkeypatch):
    monkeypatch.setattr("spark_recover.ledger._COMPACT_ABOVE_FILES", 3)
    ledger = _SkewedLedger(str(tmp_path), [_NOW - n * dt.timedelta(minutes=1) for n in range(6)])
    for n in range(6):
        ledger.append(f"r{n}", "j", "run_started", detail={"params": {}, "params_key": f"k{n}", "stages": [],
                                                           "process": _ELSEWHERE})
    ledger.compact()  # rewrites the six one-row files as one
    assert len(ledger.layout.delta(ledger.uri).file_uris()) == 1
    assert [r.run_id for r in Ledger(Layout.at(str(tmp_path))).runs("j")] == [f"r{n}" for n in range(6)]


@pytest.mark.parametrize("module", ["liveness", "ledger", "config", "history"])
def test_docstring_examples_of_liveness_hold(module):
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(f"spark_recover.{module}")).failed == 0


def test_a_crashed_rollback_does_not_keep_a_dead_runs_lease(tmp_path):
    from spark_recover import lease

    now = dt.datetime.now(dt.timezone.utc)
    # A run on another host, silent for 10 minutes; a rollback of it started just now and crashed.
    ledger = _SkewedLedger(str(tmp_path), [now - dt.timedelta(minutes=10), now, now, now])
    ledger.append("dead", "j", "run_started", detail={"params": {}, "params_key": "k", "stages": [],
                                                      "process": _ELSEWHERE, "heartbeat_seconds": 10})
    ledger.append("dead", "", "rollback_started", detail={"targets": {"/t": {}}})
    ledger.append("dead", "", "table_restored", detail={"table": "/t"})
    new = lease.claim(ledger, "j", "k", "new", {"params": {}, "params_key": "k", "process": this_process()})
    assert new.known == {"dead"} and ledger.run("dead").status == "failed"
