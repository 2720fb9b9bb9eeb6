"""Bad input: a clear message, a documented exit code, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_recover.testing import run_cli

from conftest import SMALL_JOB

NO_JAVA = {"JAVA_HOME": "/nonexistent/jdk"}  # a JVM start would fail: these commands must not need one


def _nothing_written(root: str) -> None:
    assert not Path(root).exists(), f"{root} was created"


@pytest.mark.parametrize("args, exit_code, message", [
    (["run", SMALL_JOB, "-p", "no-equals-sign"], 2, "malformed parameter 'no-equals-sign'"),
    (["run", SMALL_JOB, "-p", "=value"], 2, "malformed parameter '=value'"),
    (["run", "jobs/does_not_exist.py"], 2, "job file not found: jobs/does_not_exist.py"),
    (["show", "20990101T000000Z-000000"], 2, "unknown run id '20990101T000000Z-000000'"),
    (["resume", "20990101T000000Z-000000"], 2, "unknown run id '20990101T000000Z-000000'"),
    (["run", SMALL_JOB, "--rerun", "nope"], 2, "unknown stage 'nope'"),
])
def test_bad_input_exits_2_and_writes_nothing(args, exit_code, message, recover_root):
    result = run_cli(*args, "--root", recover_root, env=NO_JAVA)
    assert result.returncode == exit_code, result.stderr
    assert message in result.stderr
    _nothing_written(recover_root)


def test_job_file_without_a_job(tmp_path, recover_root):
    empty = tmp_path / "not_a_job.py"
    empty.write_text("X = 1\n")
    result = run_cli("run", str(empty), "--root", recover_root, env=NO_JAVA)
    assert result.returncode == 2
    assert "defines no Job" in result.stderr and "expected a module-level" in result.stderr
    _nothing_written(recover_root)


def test_job_file_with_a_definition_error(tmp_path, recover_root):
    bad = tmp_path / "bad_job.py"
    bad.write_text("from spark_recover import Job\njob = Job('j')\n"
                   "@job.stage\ndef a(missing):\n    return missing\n")
    result = run_cli("run", str(bad), "--root", recover_root, env=NO_JAVA)
    assert result.returncode == 2
    assert "stage 'a' takes unknown input 'missing'" in result.stderr
    _nothing_written(recover_root)


def test_bad_failpoint_is_refused_before_anything_runs(recover_root):
    result = run_cli("run", SMALL_JOB, "--root", recover_root,
                     env={**NO_JAVA, "SPARK_RECOVER_FAILPOINT": "daily:sometime"})
    assert result.returncode == 2
    assert "bad SPARK_RECOVER_FAILPOINT value 'daily:sometime'" in result.stderr
    _nothing_written(recover_root)


def test_missing_java_is_named(recover_root, source_data):
    result = run_cli("run", SMALL_JOB, "--root", recover_root, "-p", f"data={source_data}",
                     env={**NO_JAVA, "PATH": "/nonexistent"})
    assert result.returncode == 2
    assert "Java not found" in result.stderr and "openjdk-17" in result.stderr


def test_runs_on_an_empty_root_needs_no_jvm(recover_root):
    result = run_cli("runs", "--root", recover_root, env=NO_JAVA)
    assert result.returncode == 0
    assert "no runs recorded yet" in result.stdout
