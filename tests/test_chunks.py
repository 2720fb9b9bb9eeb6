"""Chunked stages (issue 28): each chunk committed and recorded on its own; a resume recomputes only
the chunks not done; downstream stages read the union; sinks publish once per logical run.

The kill is real: a driver process SIGKILLed in the middle of a chunked stage, then `run --resume`
as a process of its own, compared row by row with a clean run, each sink committed exactly once,
and `plan` said beforehand which chunks the resume reuses.
"""

from __future__ import annotations

import json

import deltalake
import pytest

from spark_recover.drill import sink_commits
from spark_recover.errors import JobDefinitionError, UsageError
from spark_recover.job import Job, check_chunks, load_job
from spark_recover.ledger import Ledger
from spark_recover.storage import Layout
from spark_recover.testing import kill_during, no_jvm_env, run_args, run_cli, runs_of

from conftest import JOBS
from recovery_checks import assert_same_rows

CHUNKED_JOB = str(JOBS / "chunked_job.py")
DAYS = [str(d) for d in range(7)]  # the events' days: one chunk each
SINKS = ["per_day", "totals", "by_store"]


def test_a_chunked_stage_is_declared_plainly():
    job = Job("j")
    job.source("events", path="/e")
    job.source("stores", path="/s")
    with pytest.raises(JobDefinitionError, match="has chunks but no 'chunk' argument"):
        job.stage(name="a", chunks=lambda p: [1])(lambda events: events)
    with pytest.raises(JobDefinitionError, match="takes 'chunk' but declares no chunks"):
        job.stage(name="b")(lambda events, chunk: events)
    with pytest.raises(JobDefinitionError, match="which it does not read"):
        job.stage(name="c", chunks=job.distinct("stores", "id"))(lambda events, chunk: events)
    with pytest.raises(JobDefinitionError, match="unknown source"):
        job.distinct("nope", "id")
    for values, said in [(["a", "a"], "twice"), ([object()], "not a JSON value"), ([], "no chunks"),
                         ("abc", "not a list")]:
        with pytest.raises(UsageError, match=said):
            check_chunks("s", values)


def test_duplicate_chunks_exit_2_and_write_nothing(source_data, recover_root, tmp_path):
    done = run_cli(*run_args(CHUNKED_JOB, recover_root, {"data": str(source_data), "out": str(tmp_path / "out"),
                                                         "stores": "1,2,1"}, []), env=no_jvm_env())
    assert done.returncode == 2 and "lists chunk 1 twice" in done.stderr, done.stderr
    assert not runs_of(recover_root) and not (tmp_path / "out").exists()


def test_a_kill_mid_stage_loses_only_the_chunk_in_flight(spark, source_data, recover_root, tmp_path):
    params = {"data": str(source_data), "out": str(tmp_path / "out"), "chunk_pause": "1.5"}

    def chunks_done(run) -> int:
        return len(run.stages["per_day"].chunks)

    killed = kill_during(CHUNKED_JOB, root=recover_root, params=params, when=lambda r: chunks_done(r) >= 3,
                         delay=0.5)
    assert killed.killed, killed.stderr[-3000:]
    crashed = Ledger(Layout.at(recover_root)).run(killed.run_id)
    done = [c["chunk"] for c in crashed.stages["per_day"].chunks.values()]
    assert 3 <= len(done) < len(DAYS) and crashed.stages["per_day"].status != "succeeded", done

    planned = run_cli("plan", CHUNKED_JOB, "--root", recover_root, *[a for k, v in params.items()
                      for a in ("-p", f"{k}={v}")], "--resume", "--json", env=no_jvm_env())
    assert planned.returncode == 0, planned.stderr[-3000:]
    per_day = next(s for s in json.loads(planned.stdout)["stages"] if s["stage"] == "per_day")
    assert per_day["action"] == "recompute" and per_day["chunks"]["reuse"] == done, per_day

    resumed = run_cli(*run_args(CHUNKED_JOB, recover_root, params, ["--resume"]))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = Ledger(Layout.at(recover_root)).run(resumed.run_id)
    chunks = record.stages["per_day"].output
    assert [c["chunk"] for c in chunks] == DAYS  # every day, in order
    assert [c["chunk"] for c in chunks if c["reused"]] == done  # only the chunk in flight (and later) recomputed
    assert all(c["from_run"] == killed.run_id for c in chunks if c["reused"])
    assert "chunk" in run_cli("show", resumed.run_id, "--root", recover_root).stdout

    # Row for row what a clean run publishes, and each sink committed once by the logical run.
    clean = load_job(CHUNKED_JOB).run({**params, "chunk_pause": "0", "out": str(tmp_path / "clean")},
                                      root=str(tmp_path / "clean-root"), spark=spark, echo=False)
    assert clean.ok, clean.error
    for table in SINKS:
        reference = spark.read.format("delta").load(str(tmp_path / "clean" / table)).collect()
        assert_same_rows(spark, spark.read.format("delta").load(f"{params['out']}/{table}"), reference)
    histories = {f"{params['out']}/{t}": deltalake.DeltaTable(f"{params['out']}/{t}").history() for t in SINKS}
    counts, problems = sink_commits(histories, runs_of(recover_root))
    assert not problems and set(counts.values()) == {1}, (counts, problems)

    # More chunks named by the parameters: the new ones are computed, the others reused.
    more = load_job(CHUNKED_JOB).run({**params, "chunk_pause": "0", "out": str(tmp_path / "more"),
                                      "stores": "0,1,2,3"}, root=str(tmp_path / "clean-root"), spark=spark,
                                     echo=False, resume_from=clean.run_id)
    assert more.ok, more.error
    by_store = more.record.stages["by_store"]
    assert [c["chunk"] for c in by_store.output] == [0, 1, 2, 3]
    assert [c["reused"] for c in by_store.output] == [True, True, True, False]
    assert by_store.reason == "its chunks changed (1 added, 0 gone)"
