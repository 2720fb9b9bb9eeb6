"""The supported Spark lines: the Delta table, and the engine a session really runs (`make test-compat`
runs this file on each tested line, see tests/compat.py; `make test` on the development line)."""

from __future__ import annotations

import json

import pytest

from spark_recover import compat
from spark_recover.errors import SessionError
from spark_recover.job import load_job
from spark_recover.session import engine_versions, is_connect
from spark_recover.testing import assert_recovers, run_args, run_cli

from conftest import LOCAL_MODE, SINK_JOB, SMALL_JOB


def test_one_delta_release_per_supported_spark_line():
    assert list(compat.SPARK_LINES) == ["3.5", "4.0", "4.1", "4.2"]
    assert compat.delta_coordinate("3.5.6") == "io.delta:delta-spark_2.12:3.3.2"  # Scala 2.12, as pyspark 3.5
    assert compat.delta_coordinate("4.0.1") == "io.delta:delta-spark_2.13:4.0.1"
    assert compat.delta_coordinate("4.1.3") == "io.delta:delta-spark_4.1_2.13:4.4.0"
    assert compat.delta_coordinate("4.2.1") == "io.delta:delta-spark_4.2_2.13:4.4.0"  # a patch release too


@pytest.mark.parametrize("version", ["4.3.0", "3.4.4", "5.0.0"])
def test_a_spark_line_without_a_delta_release_is_refused_naming_the_supported_ones(version):
    with pytest.raises(SessionError) as caught:
        compat.delta_coordinate(version)
    assert caught.value.exit_code == 2
    assert f"found {version}" in str(caught.value) and "3.5, 4.0, 4.1, 4.2" in str(caught.value)


def test_the_session_runs_the_tables_delta_for_its_spark_line_and_the_fingerprint_says_so(spark, source_data,
                                                                                          recover_root):
    """A session spark-recover built got the table's Delta for the installed Spark line; through Connect the
    server's versions are the ones recorded (the tests' server is built the same way)."""
    versions = engine_versions(spark)
    line = compat.spark_line(versions["Spark"])
    assert versions["Delta"] == line.delta, versions
    if not is_connect(spark):
        import pyspark

        assert versions["Spark"] == pyspark.__version__
    run = load_job(SMALL_JOB).run({"data": str(source_data)}, root=recover_root, spark=spark, echo=False)
    assert run.ok, run.error
    for stage in run.record.stages.values():  # what the fingerprint of every stage holds
        assert json.dumps(versions, sort_keys=True) in json.dumps(stage.parts, sort_keys=True), stage.parts
    print(f"\nSpark {versions['Spark']} with Delta {versions['Delta']} ({'Connect' if is_connect(spark) else 'local'})")


@pytest.mark.compat  # `make test` drills the development line at length (test_drill.py)
def test_a_two_kill_drill_of_every_sink_mode(spark, source_data, recover_root, tmp_path):
    """Two SIGKILLs at random moments, `run --resume` until it succeeds, a scheduler retry after that: every sink
    mode (append, replace_where, merge, overwrite) holds the clean run's rows once and exactly one commit."""
    params = {"data": str(source_data), "out": str(tmp_path / "out"), "day": "3"}
    report = assert_recovers(SINK_JOB, params, kills=2, seed=35, spark=spark)
    s = report["summary"]
    assert s["trials"] == 2 and (s["duplicated_rows"], s["missing_rows"], s["extra_rows"]) == (0, 0, 0)
    assert s["sink_commits"] == 4 * 2 and s["sink_commit_faults"] == 0, report["trials"]


@pytest.mark.skipif(compat.has_local_spark(), reason="for an environment with only the Spark Connect client")
def test_a_client_only_environment_without_a_server_is_a_clear_error(source_data, tmp_path):
    root = tmp_path / "root"
    done = run_cli(*run_args(SMALL_JOB, str(root), {"data": str(source_data)}, []), env=LOCAL_MODE)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "only the Spark Connect client" in done.stderr and "--remote sc://HOST:PORT" in done.stderr
    assert "Traceback" not in done.stderr
    assert not root.exists() or not any(root.rglob("*.json"))  # refused before anything was written
