"""What of the session changes results: its settings and engine versions are in every fingerprint,
a MERGE's private session keeps the caller's runtime settings, and the JVM's class-data archive is
verified before it is mapped (or skipped when the cache cannot be written)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from conftest import JOBS
from recovery_checks import assert_same_rows

from spark_recover import Job
from spark_recover.compat import spark_line
from spark_recover.fingerprint import explain_change
from spark_recover.session import carried_settings, engine_versions, result_settings
from spark_recover.testing import CHILD_JAVA_OPTIONS, TEST_SPARK_CONFS, crash_at, run_args, run_cli, runs_of

ZONED_JOB = str(JOBS / "zoned_job.py")
TZ = "spark.sql.session.timeZone"


def _conf_with(tmp_path: Path, **spark: str) -> str:
    """A conf file for the job processes: the tests' Spark settings plus ``spark``."""
    confs = {**TEST_SPARK_CONFS, "spark.driver.extraJavaOptions": CHILD_JAVA_OPTIONS, **spark}
    path = tmp_path / f"conf-{len(list(tmp_path.glob('conf-*')))}.toml"
    path.write_text("\n".join(["[spark]"] + [f'"{k}" = "{v}"' for k, v in confs.items()]) + "\n")
    return str(path)


def _local_times(zone: str) -> list[tuple[int, str]]:
    return [(i, dt.datetime.fromtimestamp(i * 3600, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S"))
            for i in range(0, 48, 2)]


def _decisions(run) -> dict[str, str]:
    return {name: ("reused" if s.reused else s.reason) for name, s in run.stages.items()}


def _delta_of(spark) -> str:
    """The Delta release the tests' sessions load for the running Spark line (compat's table)."""
    return spark_line(spark.version).delta


def test_a_resume_in_another_time_zone_recomputes_and_the_same_one_reuses(request, spark, recover_root, tmp_path):
    if request.config.getoption("connect"):
        pytest.skip("through Connect the job processes share one server session: a conf file's [spark] time "
                    "zone does not reach it (the recorded settings are the server's: see the next tests)")
    utc = ["--conf", _conf_with(tmp_path, **{TZ: "UTC"})]
    new_york = ["--conf", _conf_with(tmp_path, **{TZ: "America/New_York"})]
    crashed = crash_at(ZONED_JOB, "report", "before", root=recover_root, args=utc)
    assert crashed.killed, crashed.stderr[-3000:]

    # Resumed from another session (a notebook's in New York): the UTC text must not be reused.
    moved = crash_at(ZONED_JOB, "report", "before", root=recover_root, args=[*new_york, "--resume"])
    assert moved.killed, moved.stderr[-3000:]
    first, second = runs_of(recover_root)
    assert second.origin_run_id == first.run_id
    assert _decisions(second)["stamped"] == f"session setting {TZ} changed (UTC -> America/New_York)"
    assert first.stages["stamped"].parts["session"][TZ] == "UTC"
    assert second.stages["stamped"].parts["engine"] == {"Spark": spark.version, "Delta": _delta_of(spark)}

    # Same settings again: no false positive, the New York checkpoint is reused.
    done = run_cli(*run_args(ZONED_JOB, recover_root, None, [*new_york, "--resume"]))
    assert done.returncode == 0, done.stderr[-3000:]
    third = runs_of(recover_root)[-1]
    assert third.status == "succeeded" and third.origin_run_id == second.run_id
    assert _decisions(third)["stamped"] == "reused"
    report = third.stages["report"]
    assert_same_rows(spark, spark.read.format("delta").option("versionAsOf", report.version).load(report.checkpoint),
                     _local_times("America/New_York"))


def test_session_settings_are_read_by_name_and_never_a_credential(spark):
    spark.conf.set("fs.s3a.secret.key", "do-not-record")
    spark.conf.set("spark.sql.legacy.timeParserPolicy", "LEGACY")
    try:
        settings = result_settings(spark)
    finally:
        spark.conf.unset("fs.s3a.secret.key")
        spark.conf.unset("spark.sql.legacy.timeParserPolicy")
    # The session's own (UTC when spark-recover builds it; a Connect server's JVM default, e.g. Etc/UTC).
    assert settings[TZ] == spark.conf.get(TZ) and settings["spark.sql.legacy.timeParserPolicy"] == "LEGACY"
    assert settings["spark.sql.ansi.enabled"] in ("true", "false")  # a default is recorded too
    assert "do-not-record" not in json.dumps(settings) and not any("s3a" in k for k in settings)
    assert engine_versions(spark) == {"Spark": spark.version, "Delta": _delta_of(spark)}  # Connect: the server's


def test_explain_change_names_the_setting_and_the_engine():
    old = {"session": {TZ: "UTC"}, "engine": {"Spark": "4.2.0", "Delta": "4.4.0"}}
    new = {"session": {TZ: "America/New_York", "spark.sql.legacy.timeParserPolicy": "LEGACY"},
           "engine": {"Spark": "4.1.0", "Delta": "4.4.0"}}
    assert explain_change(old, new) == (
        f"session setting spark.sql.legacy.timeParserPolicy changed (unset -> LEGACY); "
        f"session setting {TZ} changed (UTC -> America/New_York); Spark version changed (4.2.0 -> 4.1.0)")
    assert explain_change({}, {"session": {TZ: "UTC"}}) == "session settings not recorded before"


def test_a_private_session_carries_results_storage_and_delta_but_no_write_identity():
    assert carried_settings({TZ: "UTC", "spark.sql.ansi.enabled": "false", "fs.s3a.access.key": "k",
                             "spark.hadoop.fs.s3a.endpoint": "e", "spark.master": "local[2]",
                             "spark.databricks.delta.schema.autoMerge.enabled": "true",
                             "spark.databricks.delta.write.txnAppId": "a"}) == {
        TZ: "UTC", "spark.sql.ansi.enabled": "false", "fs.s3a.access.key": "k", "spark.hadoop.fs.s3a.endpoint": "e",
        "spark.databricks.delta.schema.autoMerge.enabled": "true"}


def test_a_merge_sink_sees_the_settings_set_at_runtime(spark, recover_root, tmp_path):
    out = str(tmp_path / "merged")
    spark.createDataFrame([(1, "old")], "k long, at string").write.format("delta").save(out)
    job = Job("merge_settings")

    @job.stage
    def changes(spark):  # `at` is an instant here, text in the sink: the MERGE renders it in its time zone
        utc = dt.timezone.utc
        return spark.createDataFrame([(1, dt.datetime(2026, 1, 1, tzinfo=utc), 10),
                                      (2, dt.datetime(2026, 7, 1, 12, tzinfo=utc), 20)],
                                     "k long, at timestamp, extra long")

    job.sink("changes", path=out, mode="merge", keys=["k"])
    runtime = {TZ: "America/New_York", "spark.databricks.delta.schema.autoMerge.enabled": "true"}
    before = {k: spark.conf.get(k, None) for k in runtime}
    for key, value in runtime.items():
        spark.conf.set(key, value)
    try:
        result = job.run({}, spark=spark, echo=False)
    finally:
        for key, value in before.items():
            spark.conf.unset(key) if value is None else spark.conf.set(key, value)
    assert result.status == "succeeded", result.error
    assert_same_rows(spark, spark.read.format("delta").load(out).select("k", "at", "extra"),
                     [(1, "2025-12-31 19:00:00", 10), (2, "2026-07-01 08:00:00", 20)])
