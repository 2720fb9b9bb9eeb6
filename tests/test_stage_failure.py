"""A stage that raises: exit 1, the resume command printed, and the resume works."""

from __future__ import annotations

import json

from spark_recover.job import load_job
from spark_recover.testing import run_cli

from conftest import JOBS

FAILING = str(JOBS / "failing_job.py")


def test_stage_error_exits_1_and_prints_resume_command(recover_root):
    failed = run_cli("run", FAILING, "-p", "fail=yes", "--root", recover_root)
    assert failed.returncode == 1, failed.stderr
    assert "ValueError: bad batch: negative totals" in failed.stdout
    command = f"spark-recover resume {failed.run_id} --root {recover_root}"
    assert f"resume with: {command}" in failed.stdout

    shown = json.loads(run_cli("show", failed.run_id, "--json", "--root", recover_root).stdout)
    assert shown["status"] == "failed"
    assert [(s["name"], s["status"]) for s in shown["stages"]] == [("numbers", "succeeded"),
                                                                  ("checked", "failed")]
    assert "bad batch" in shown["stages"][1]["error"]

    resumed = run_cli(*command.split()[1:], "-p", "fail=no")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "reused" in resumed.stdout.splitlines()[1]
    assert (f"recomputed because it failed in run {failed.run_id}; "
            "since then parameter 'fail' changed ('yes' -> 'no')") in resumed.stdout
    final = json.loads(run_cli("show", resumed.run_id, "--json", "--root", recover_root).stdout)
    assert final["origin_run_id"] == failed.run_id
    assert [s["reused"] for s in final["stages"]] == [True, False]


def test_stage_returning_non_dataframe_fails_clearly(spark, recover_root):
    result = load_job(FAILING).run({"fail": "type"}, root=recover_root, spark=spark, echo=False)
    assert result.status == "failed"
    assert "stage 'checked' returned int; expected a pyspark.sql.DataFrame" in result.error
    checked = [s for s in result.stages if s.name == "checked"][0]
    assert checked.status == "failed" and checked.version is None


def test_fix_the_code_then_run_with_resume(recover_root, tmp_path):
    job_file = tmp_path / "failing_job.py"
    job_file.write_text(open(FAILING).read())
    failed = run_cli("run", str(job_file), "-p", "fail=yes", "--root", recover_root)
    assert failed.returncode == 1
    fixed = open(FAILING).read().replace('raise ValueError("bad batch: negative totals")', "pass")
    job_file.write_text(fixed)
    resumed = run_cli("run", str(job_file), "-p", "fail=yes", "--resume", "--root", recover_root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming failed run {failed.run_id}" in resumed.stdout
    assert (f"recomputed because it failed in run {failed.run_id}; since then code changed"
            in resumed.stdout)
    shown = json.loads(run_cli("show", resumed.run_id, "--json", "--root", recover_root).stdout)
    assert shown["origin_run_id"] == failed.run_id
    assert [s["reused"] for s in shown["stages"]] == [True, False]
