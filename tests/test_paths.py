"""Nothing depends on the working directory (issue 24, section 9).

The default root and conf file, and relative source and sink paths, are found
from the job's project (the nearest folder at or above the job file holding
``pyproject.toml``, ``.git`` or ``conf/``), never from the working directory; a
relative ``--root``/``--conf`` (or ``$SPARK_RECOVER_ROOT``/``$SPARK_RECOVER_CONF``)
is made absolute at once. Unit tests need no JVM; one real-process test runs a
job from one folder and resumes it from another, the way a scheduler retry in a
fresh temporary folder does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import deltalake
import pyarrow as pa
import pytest

from spark_recover import Job
from spark_recover.config import load_settings
from spark_recover.project import project_folder
from spark_recover.storage import anchored, read_delta
from spark_recover.testing import job_env, run_cli, runs_of

from conftest import LOCAL_MODE


@pytest.fixture
def no_env_settings(monkeypatch):
    """No root or conf from the environment: the defaults are what is tested."""
    for name in ("SPARK_RECOVER_ROOT", "SPARK_RECOVER_CONF", "SPARK_RECOVER_SINK_ROOT"):
        monkeypatch.delenv(name, raising=False)


def _project(tmp_path: Path, marker: str = "pyproject.toml") -> Path:
    project = tmp_path / "project"
    (project / "jobs" / "daily").mkdir(parents=True)
    if marker == "pyproject.toml":
        (project / marker).write_text("[project]\nname = 'x'\n")
    else:
        (project / marker).mkdir()
    return project


# -- the project folder (no JVM) --------------------------------------------------------------------------------

@pytest.mark.parametrize("marker", ["pyproject.toml", ".git", "conf"])
def test_project_is_the_nearest_folder_with_a_marker(tmp_path, marker):
    project = _project(tmp_path, marker)
    job_file = project / "jobs" / "daily" / "job.py"
    assert project_folder(str(job_file)) == str(project)


def test_project_nearest_marker_wins(tmp_path):
    project = _project(tmp_path)
    (project / "jobs" / "conf").mkdir()
    assert project_folder(str(project / "jobs" / "daily" / "job.py")) == str(project / "jobs")


def test_project_without_a_marker_is_the_job_files_folder(tmp_path):
    (tmp_path / "loose").mkdir()
    assert project_folder(str(tmp_path / "loose" / "job.py")) == str(tmp_path / "loose")


def test_project_of_a_relative_job_file_is_absolute(tmp_path, monkeypatch):
    project = _project(tmp_path)
    monkeypatch.chdir(project)
    assert project_folder("jobs/daily/job.py") == str(project)


def test_project_without_a_job_file_is_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert project_folder(None) == str(tmp_path)


# -- relative paths (no JVM) ------------------------------------------------------------------------------------

def test_anchored_resolves_only_relative_local_paths():
    assert anchored("out/daily", base="/p") == "/p/out/daily"
    assert anchored("./out/../daily", base="/p") == "/p/daily"
    assert anchored("/w/daily", base="/p") == "/w/daily"
    assert anchored("s3a://bucket/daily", base="/p") == "s3a://bucket/daily"
    assert anchored("file:/w/daily", base="/p") == "file:/w/daily"


def test_sink_and_source_paths_resolve_from_the_project(tmp_path, monkeypatch):
    project = _project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    scope = {"__file__": str(project / "jobs" / "daily" / "job.py"), "Job": Job}
    exec("job = Job('paths')", scope)  # a Job defined in a file of that project
    job = scope["job"]
    assert job.project == str(project)
    src = job.source("orders", path="{data}/orders")
    assert src.location({"data": "data"}) == str(project / "data" / "orders")
    assert src.location({"data": "/abs/data"}) == "/abs/data/orders"
    assert src.location({"data": "s3a://b/data"}) == "s3a://b/data/orders"

    @job.stage
    def daily(orders):
        return orders

    assert job.sink("daily", path="out/daily").location({}) == str(project / "out" / "daily")
    assert job.sink("daily", table="sales.daily").location({}) == "sales.daily"  # a catalog name, never a path
    assert job.source("items", table="sales.items").location({}) == "sales.items"


def test_a_notebook_job_keeps_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec("job = Job('nb')", scope := {"Job": Job})  # no __file__: a notebook cell
    job = scope["job"]
    assert job.file is None and job.project == str(tmp_path)
    assert job.source("orders", path="data/orders").location({}) == str(tmp_path / "data" / "orders")


# -- settings (no JVM) ------------------------------------------------------------------------------------------

def test_defaults_come_from_the_project_not_the_working_directory(tmp_path, monkeypatch, no_env_settings):
    project = _project(tmp_path, "conf")
    (project / "conf" / "spark-recover.toml").write_text("[recover]\nheartbeat_seconds = 7\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(project=str(project))
    assert settings.root == str(project / ".spark-recover")
    assert settings.conf_file == str(project / "conf" / "spark-recover.toml")
    assert settings.heartbeat_seconds == 7
    assert settings.spark["spark.sql.warehouse.dir"] == str(project / "spark-warehouse")  # not Spark's ./spark-warehouse


def test_a_relative_root_in_the_conf_file_is_relative_to_its_project(tmp_path, monkeypatch, no_env_settings):
    project = _project(tmp_path, "conf")
    (project / "conf" / "spark-recover.toml").write_text("[recover]\nroot = 'state/recover'\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(project=str(project)).root == str(project / "state" / "recover")


def test_explicit_relative_root_and_conf_are_relative_to_the_working_directory(tmp_path, monkeypatch,
                                                                               no_env_settings):
    project = _project(tmp_path)
    (tmp_path / "mine.toml").write_text("[recover]\nheartbeat_seconds = 3\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(conf_file="mine.toml", root="r", project=str(project))
    assert settings.root == str(tmp_path / "r")
    assert settings.conf_file == str(tmp_path / "mine.toml") and settings.heartbeat_seconds == 3
    assert load_settings(root="s3a://bucket/recover", project=str(project)).root == "s3a://bucket/recover"


def test_environment_root_and_conf_are_made_absolute(tmp_path, monkeypatch, no_env_settings):
    (tmp_path / "mine.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARK_RECOVER_ROOT", "env-root")
    monkeypatch.setenv("SPARK_RECOVER_CONF", "mine.toml")
    settings = load_settings(project=str(_project(tmp_path)))
    assert (settings.root, settings.conf_file) == (str(tmp_path / "env-root"), str(tmp_path / "mine.toml"))


# -- real processes -------------------------------------------------------------------------------------------

JOB = '''
from pyspark.sql import functions as F
from spark_recover import Job

job = Job("paths_job")
events = job.source("events", path="data/events")


@job.stage
def per_store(events):
    return events.groupBy("store_id").agg(F.sum("qty").alias("qty"))


@job.stage
def per_day(events):
    return events.groupBy("day").agg(F.count("*").alias("orders"))


job.sink("per_store", path="out/per_store", mode="append")
job.sink("per_day", path="out/per_day", mode="append")
'''


def _job_project(tmp_path: Path, conf: str) -> tuple[Path, Path]:
    """A project holding the job, its source table and, at ``conf``, the test's Spark settings."""
    project = _project(tmp_path)
    job_file = project / "jobs" / "daily" / "paths_job.py"
    job_file.write_text(JOB)
    ids = list(range(1000))
    deltalake.write_deltalake(str(project / "data" / "events"), pa.table(
        {"store_id": [i % 50 for i in ids], "day": [str(i % 7) for i in ids], "qty": [i % 5 for i in ids]}))
    (project / conf).parent.mkdir(parents=True, exist_ok=True)
    (project / conf).write_text(Path(job_env()["SPARK_RECOVER_CONF"]).read_text())
    return project, job_file


def _check_published_once(project: Path, crashed, retried) -> None:
    root = project / ".spark-recover"
    runs = runs_of(str(root))
    assert [(r.run_id, r.origin_run_id, r.status) for r in runs] == [
        (crashed.run_id, None, "failed"), (retried.run_id, crashed.run_id, "succeeded")]
    assert {r.job_file for r in runs} == {str(project / "jobs" / "daily" / "paths_job.py")}
    started = [json.loads(e["detail"]) for e in read_delta(str(root / "ledger" / "events")).to_pylist()
               if e["event"] == "run_started"]
    sinks = [str(project / "out" / "per_store"), str(project / "out" / "per_day")]
    assert [(d["root"], d["sinks"]) for d in started] == [(str(root), sinks)] * 2
    assert runs[1].sinks[sinks[0]]["skipped_duplicate"] is True
    assert read_delta(sinks[0]).num_rows == 50  # once, not twice
    assert read_delta(sinks[1]).num_rows == 7


#: The defaults: no --root or --conf, none in the environment either.
DEFAULTS = {**LOCAL_MODE, "SPARK_RECOVER_ROOT": None, "SPARK_RECOVER_CONF": None}


def test_a_retry_from_another_folder_resumes_and_publishes_once(tmp_path):
    project, job_file = _job_project(tmp_path, "conf/spark-recover.toml")
    first_dir, retry_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    retry_dir.mkdir()

    crashed = run_cli("run", str(job_file), cwd=str(first_dir),
                      env={**DEFAULTS, "SPARK_RECOVER_FAILPOINT": "per_store:sink_after_commit"})
    assert crashed.killed, crashed.stdout + crashed.stderr
    retried = run_cli("run", str(job_file), "--resume", cwd=str(retry_dir), env=DEFAULTS)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert f"resuming failed run {crashed.run_id}" in retried.stdout

    _check_published_once(project, crashed, retried)
    assert {r.conf_file for r in runs_of(str(project / ".spark-recover"))} == {
        str(project / "conf" / "spark-recover.toml")}  # the project's, found from the job file
    assert os.listdir(first_dir) == [] and os.listdir(retry_dir) == []


def test_resume_of_a_run_id_uses_the_recorded_job_and_conf_file(tmp_path):
    project, job_file = _job_project(tmp_path, "settings/mine.toml")
    elsewhere = tmp_path / "b"
    elsewhere.mkdir()
    crashed = run_cli("run", "jobs/daily/paths_job.py", "--conf", "settings/mine.toml", cwd=str(project),
                      env={**DEFAULTS, "SPARK_RECOVER_FAILPOINT": "per_store:sink_after_commit"})
    assert crashed.killed, crashed.stdout + crashed.stderr
    root = str(project / ".spark-recover")
    retried = run_cli("resume", crashed.run_id, "--root", root, cwd=str(elsewhere), env=DEFAULTS)
    assert retried.returncode == 0, retried.stdout + retried.stderr

    _check_published_once(project, crashed, retried)
    assert {r.conf_file for r in runs_of(root)} == {str(project / "settings" / "mine.toml")}
    assert os.listdir(elsewhere) == []
