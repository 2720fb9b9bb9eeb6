"""The policies, without a JVM: the publication rule, the lease, lineage, fingerprints, retention."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from spark_recover.errors import RefusedError
from spark_recover.fingerprint import code_parts, digest, explain_change
from spark_recover.job import Job, UnpinnedReadWarning
from spark_recover.ledger import Ledger
from spark_recover.liveness import this_process
from spark_recover.publication import Prior, decide, priors, recovery_point
from spark_recover.display import runs_text
from spark_recover.storage import Layout, canonical, interval_days

# -- the publication rule ----------------------------------------------------

PRIOR = Prior("A", "app", 3, ("/ck/daily", 7))


def test_same_data_repeats_the_prior_write():
    # Delta skips it if it committed, writes it once if it did not.
    for committed in (None, 2, 3):
        assert decide("/t", ("/ck/daily", 7), PRIOR, "other", committed, [3]).txn_version == 3


def test_other_data_over_a_committed_write_is_refused():
    with pytest.raises(RefusedError, match="already published by run A") as info:
        decide("/t", ("/ck/daily", 8), PRIOR, "other", committed=3, taken=[3])
    assert "spark-recover redo A" in info.value.detail and info.value.exit_code == 3
    with pytest.raises(RefusedError):  # recomputed (data not known yet) counts as other data
        decide("/t", None, PRIOR, "other", committed=5, taken=[3])


def test_other_data_over_an_uncommitted_write_takes_a_new_version_of_the_same_app():
    got = decide("/t", ("/ck/daily", 8), PRIOR, "other", committed=1, taken=[0, 1, 3])
    assert (got.app, got.txn_version, got.repeats) == ("app", 4, None)


def test_first_write_is_above_every_version_ever_taken():
    assert decide("/t", ("/ck/x", 0), None, "app", committed=None, taken=[]).txn_version == 0
    assert decide("/t", ("/ck/x", 0), None, "app", committed=9, taken=[4]).txn_version == 10
    assert decide("/t", ("/ck/x", 0), None, "app", committed=2, taken=[4, 7]).txn_version == 8


def _ledger(tmp_path: Path) -> Ledger:
    return Ledger(Layout.at(str(tmp_path / "root")))


def _start(ledger: Ledger, run_id: str, origin: str | None = None, key: str = "k", finished: str | None = None):
    ledger.append(run_id, "j", "run_started", detail={"params": {}, "params_key": key, "stages": [],
                                                      "origin_run_id": origin, "process": {"pid": 1}})
    if finished:
        ledger.append(run_id, "j", "run_finished", status=finished)


def _plan(ledger: Ledger, run_id: str, table: str, version: int, ck: int) -> None:
    ledger.append(run_id, "j", "sink_planned", detail={"table": table, "txn_app_id": "app", "txn_version": version,
                                                       "checkpoint": "/ck/s", "checkpoint_version": ck})


def test_lineage_priors_and_rollback_undo(tmp_path):
    ledger = _ledger(tmp_path)
    _start(ledger, "A")
    _plan(ledger, "A", "/t/daily", 0, 1)
    ledger.append("A", "j", "run_finished", status="failed")
    _start(ledger, "B", origin="A")
    _plan(ledger, "B", "/t/daily", 0, 1)
    _plan(ledger, "B", "/t/other", 1, 2)
    ledger.append("B", "j", "run_finished", status="failed")
    _start(ledger, "C", origin="B", finished="succeeded")
    _start(ledger, "X", key="other-params", finished="failed")
    runs = {r.run_id: r for r in ledger.runs("j")}
    assert {r: runs[r].logical_run_id for r in runs} == {"A": "A", "B": "A", "C": "A", "X": "X"}
    assert (runs["A"].recovered_by, runs["B"].recovered_by, runs["X"].recovered_by) == ("C", "C", None)
    assert "failed, recovered by C" in runs_text(list(runs.values()))
    found = priors(ledger.logical_run(runs["C"]))
    assert {t: (p.run_id, p.txn_version) for t, p in found.items()} == {"/t/daily": ("B", 0), "/t/other": ("B", 1)}

    # A finished rollback of the logical run undoes every earlier write of it.
    ledger.append("C", "", "rollback_started", detail={"targets": {}})
    ledger.append("C", "", "rollback_finished", detail={"metrics": {}})
    runs = {r.run_id: r for r in ledger.runs("j")}
    assert {r: runs[r].status for r in "ABC"} == {r: "rolled_back" for r in "ABC"}
    assert priors(ledger.logical_run(runs["C"])) == {}


def test_recovery_point_keeps_the_first_and_covers_new_tables():
    from spark_recover.history import RunRecord

    first = RunRecord("A", "j", recovery_point={"/t/a": {"exists": True, "version": 3}})
    later = RunRecord("B", "j", recovery_point={"/t/a": {"exists": True, "version": 9}})
    point, source = recovery_point([first, later], ["/t/a", "/t/new"],
                                   {"/t/a": {"exists": True, "version": 12}, "/t/new": {"exists": False}})
    assert source == "A"
    assert point == {"/t/a": {"exists": True, "version": 3}, "/t/new": {"exists": False}}


# -- the lease ---------------------------------------------------------------

CLAIMS = """
import glob, sys, time
from spark_recover import lease
from spark_recover.errors import RefusedError
from spark_recover.ledger import Ledger
from spark_recover.liveness import this_process
from spark_recover.storage import Layout
base, t0, me, trials, period = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
ledgers = [Ledger(Layout.at(f"{base}/root{k}")) for k in range(trials)]
for k, ledger in enumerate(ledgers):
    ledger.version()
    time.sleep(max(0.0, t0 + k * period - time.time()))  # every process claims at this instant
    try:
        lease.claim(ledger, "j", "k", me, {"params": {}, "params_key": "k", "stages": [],
                                           "process": this_process()})
        print(k, "won", flush=True)
    except RefusedError as exc:
        print(k, "refused", exc.fields["holder"], flush=True)
    open(f"{base}/looked-{k}-{me}", "w").close()
    deadline = time.time() + 60  # the winner holds it until every rival has looked (a slow machine: no 2nd winner)
    while len(glob.glob(f"{base}/looked-{k}-*")) < 3 and time.time() < deadline:
        time.sleep(0.01)
    ledger.append(me, "j", "run_finished", status="succeeded")
"""


def test_simultaneous_claims_have_exactly_one_winner(tmp_path):
    """20 trials of three processes claiming one lease at the same instant: one wins, each time."""
    trials, period = 20, 0.8
    for k in range(trials):
        Ledger(Layout.at(str(tmp_path / f"root{k}"))).version()  # exists, as after any first run
    t0 = time.time() + 4
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMS, str(tmp_path), str(t0), f"run{i}", str(trials),
                               str(period)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]  # what is tested is one winner, not speed
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    said = {(k, f"run{i}"): rest for i, (out, _) in enumerate(outs)
            for k, _, rest in (line.partition(" ") for line in out.splitlines())}
    for k in range(trials):
        winners = [who for (t, who), what in said.items() if t == str(k) and what == "won"]
        assert len(winners) == 1, (k, said)
        refusals = [what for (t, who), what in said.items() if t == str(k) and what != "won"]
        assert refusals == [f"refused {winners[0]}"] * 2, (k, said)
        started = [r.run_id for r in Ledger(Layout.at(str(tmp_path / f"root{k}"))).runs("j")]
        assert started == winners  # the refused ones wrote nothing


def test_dead_holder_is_taken_over_and_lost_lease_is_seen(tmp_path):
    from spark_recover import lease

    ledger = _ledger(tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = {**this_process(), "pid": int(gone.stdout)}
    old = lease.claim(ledger, "j", "k", "old", {"params_key": "k", "process": dead})
    new = lease.claim(ledger, "j", "k", "new", {"params_key": "k", "process": this_process()})
    new.check()  # still holds it
    with pytest.raises(RefusedError, match="run old lost its lease to run new"):
        old.check()
    with pytest.raises(RefusedError, match="run new of job 'j' with these parameters is still running"):
        lease.claim(ledger, "j", "k", "third", {"params_key": "k", "process": this_process()})


# -- fingerprints ------------------------------------------------------------

def _stage_code(source: str, tmp_path: Path) -> dict:
    """The code parts of stage ``s`` of a job file with this source, imported fresh."""
    path = tmp_path / f"job_{digest(source, 8)}.py"
    path.write_text(source)
    module = types.ModuleType(path.stem)
    module.__file__ = str(path)
    sys.modules[path.stem] = module
    exec(compile(source, str(path), "exec"), module.__dict__)
    return code_parts(module.s, str(path))


@pytest.mark.parametrize("before, after", [
    ("THRESHOLDS = [1, 2]\ndef s(df):\n    return df.where(df.x > THRESHOLDS[0])\n",
     "THRESHOLDS = [5, 2]\ndef s(df):\n    return df.where(df.x > THRESHOLDS[0])\n"),
    ("CONF = {'a': {'b': 1}}\ndef s(df):\n    return df.limit(CONF['a']['b'])\n",
     "CONF = {'a': {'b': 2}}\ndef s(df):\n    return df.limit(CONF['a']['b'])\n"),
    ("def s(df, n=1):\n    return df.limit(n)\n", "def s(df, n=2):\n    return df.limit(n)\n"),
    ("def make(k):\n    def s(df):\n        return df.limit(k)\n    return s\ns = make(1)\n",
     "def make(k):\n    def s(df):\n        return df.limit(k)\n    return s\ns = make(2)\n"),
    ("from pyspark.sql import functions as F, types as T\n@F.udf(T.LongType())\ndef twice(v):\n    return v * 2\n"
     "def s(df):\n    return df.select(twice('x'))\n",
     "from pyspark.sql import functions as F, types as T\n@F.udf(T.LongType())\ndef twice(v):\n    return v * 3\n"
     "def s(df):\n    return df.select(twice('x'))\n"),
])
def test_fingerprint_sees_constants_defaults_closures_and_udfs(tmp_path, before, after):
    assert _stage_code(before, tmp_path)["code"] != _stage_code(after, tmp_path)["code"]
    assert _stage_code(before, tmp_path) == _stage_code(before, tmp_path)  # and is stable


def test_fingerprint_names_a_changed_sibling_module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    helper = tmp_path / "helpers_fp.py"
    helper.write_text("def scale(df):\n    return df.selectExpr('x * 2 AS x')\n")
    job_src = "import helpers_fp\ndef s(df):\n    return helpers_fp.scale(df)\n"
    first = _stage_code(job_src, tmp_path)
    assert list(first["modules"]) == ["helpers_fp.py"]
    helper.write_text("def scale(df):\n    return df.selectExpr('x * 3 AS x')\n")
    os.utime(helper, (os.stat(helper).st_mtime + 5,) * 2)  # not mistaken for the cached bytecode
    importlib.reload(sys.modules["helpers_fp"])  # the fingerprint hashes what this process runs
    second = _stage_code(job_src, tmp_path)
    assert explain_change(first, second) == "module helpers_fp.py changed"
    sys.modules.pop("helpers_fp", None)


def test_unpinned_spark_reads_warn_at_definition():
    job = Job("warned")
    with pytest.warns(UnpinnedReadWarning, match=r"stage 'raw' reads tables through spark.table.*job.source"):
        @job.stage
        def raw(spark):
            return spark.table("sales.orders")

    with warnings.catch_warnings():
        warnings.simplefilter("error", UnpinnedReadWarning)  # spark.range reads no table: no warning

        @job.stage
        def numbers(spark):
            return spark.range(10).select(F.col("id"))


# -- retention and locations -------------------------------------------------

def test_delta_intervals_and_location_spellings():
    assert interval_days("interval 30 minutes") == pytest.approx(30 / 1440)
    assert interval_days("interval 1 week") == 7
    assert interval_days("interval 2 days 12 hours") == 2.5
    with pytest.raises(ValueError):
        interval_days("interval 3 fortnights")
    assert canonical("file:///tmp/r/x/") == canonical("/tmp/r/x") == canonical(f"file:{os.sep}tmp/r/x")


def _modules() -> list[str]:
    import pkgutil

    import spark_recover

    return [m.name for m in pkgutil.iter_modules(spark_recover.__path__) if m.name != "__main__"]


@pytest.mark.parametrize("module", _modules())  # every module: a rename cannot drop one from the list
def test_docstring_examples_hold(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"spark_recover.{module}"))
    assert result.failed == 0


def test_a_replay_killed_early_passes_its_origins_checkpoints_on():
    from spark_recover.history import RunRecord, StageRecord
    from spark_recover.history import origin_stage

    first = RunRecord("A", "j", stages={"s": StageRecord("s", status="succeeded", version=4),
                                        "t": StageRecord("t", status="failed")})
    # B resumed A and was killed before it logged anything about s; it started t again.
    second = RunRecord("B", "j", origin_run_id="A", stages={"s": StageRecord("s"),
                                                             "t": StageRecord("t", status="running")})
    run, record = origin_stage([second, first], "s")
    assert (run.run_id, record.status, record.version) == ("A", "succeeded", 4)
    run, record = origin_stage([second, first], "t")
    assert (run.run_id, record.status) == ("B", "running")  # B chose to recompute it: no going back


# -- sink transaction retention ------------------------------------------------

def test_a_sink_forgetting_transactions_within_the_recovery_window_is_warned_about():
    from spark_recover.publication import txn_retention_warning

    warning = txn_retention_warning("/w/daily", "interval 36 hours", 7.0)
    assert warning is not None and "(1.5 days), shorter than the recovery window of 7 days" in warning
    assert txn_retention_warning("/w/daily", "interval 2 weeks", 7.0) is None
    assert txn_retention_warning("/w/daily", None, 7.0) is None  # unset: Delta keeps transactions for ever


def test_a_replay_past_the_sinks_transaction_retention_is_refused():
    import datetime as dt

    from spark_recover.history import RunRecord
    from spark_recover.publication import check_txn_retention, writers

    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    check_txn_retention("/w/daily", "interval 2 days", t0, "A", now=t0 + dt.timedelta(days=2))  # within: allowed
    check_txn_retention("/w/daily", None, t0, "A", now=t0 + dt.timedelta(days=900))  # never forgotten
    with pytest.raises(RefusedError, match="spark-recover redo A") as refused:
        check_txn_retention("/w/daily", "interval 2 days", t0, "A", now=t0 + dt.timedelta(days=2, seconds=1))
    assert refused.value.exit_code == 3 and refused.value.fields["published_by"] == "A"
    # Only runs that planned a write of that table, and whose writes no rollback undid, count.
    wrote = RunRecord(run_id="A", job="j", sinks={"/w/daily/": {"txn_app_id": "app", "txn_version": 0}})
    other = RunRecord(run_id="B", job="j", sinks={"/w/other": {"txn_app_id": "app2", "txn_version": 0}})
    assert [r.run_id for r in writers([wrote, other], "/w/daily")] == ["A"]
