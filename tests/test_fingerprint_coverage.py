"""The fingerprint covers what a stage really runs (issue 24, section 1), in real processes.

A four-stage job dies at its last stage; then a helper constant imported inside a
stage body, a job-file function reached only through a class method, a dict
constant holding a callable and a schema constant change. Each edit must make
the stage that runs it recompute (with a reason), and the resumed sink must hold
what a clean run of the new code gives. A helper shipped in a zip is read through
its loader, and a process still running old code never records the new file's
fingerprint.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from spark_recover.failpoints import ENV as FAILPOINT_ENV
from spark_recover.job import load_job
from spark_recover.testing import job_env, no_jvm_env, run_args, run_cli, runs_of

from recovery_checks import assert_same_rows

STAGES = ["kept", "bucketed", "limited", "final"]

JOB = '''
from pyspark.sql import functions as F, types as T
from spark_recover import Job

job = Job("fp_coverage")

LIMITS = {"min_id": 10, "fmt": str.upper}
SCHEMA = T.StructType([T.StructField("v", T.IntegerType())])


def bucket(c):
    return c % 3


class Rules:
    def apply(self, df):
        return df.withColumn("bucket", bucket(F.col("id")))


@job.stage
def kept(spark):
    from fp_helpers import THRESHOLD, at_least
    return spark.range(100).where(at_least(F.col("id"), THRESHOLD))


@job.stage
def bucketed(kept):
    return Rules().apply(kept)


@job.stage
def limited(bucketed):
    payload = F.to_json(F.struct((F.col("id") * 100000000).alias("v")))
    return (bucketed.where(F.col("id") >= LIMITS["min_id"]).withColumn("tag", F.lit(LIMITS["fmt"]("x")))
            .withColumn("doc", F.from_json(payload, SCHEMA)).select("id", "bucket", "tag", "doc.v"))


@job.stage
def final(limited):
    return limited


job.sink("final", path="{out}/result", mode="overwrite")
'''

HELPERS = "THRESHOLD = 10\n\n\ndef at_least(c, n):\n    return c >= n\n"

# (file, old text, new text, the stage that runs it, the reason it must give)
EDITS = [
    ("fp_helpers.py", "THRESHOLD = 10", "THRESHOLD = 50", "kept", "module fp_helpers.py changed"),
    ("job.py", "return c % 3", "return c % 7", "bucketed", "code changed"),
    ("job.py", '"min_id": 10', '"min_id": 60', "limited", "code changed"),
    ("job.py", 'T.StructField("v", T.IntegerType())', 'T.StructField("v", T.LongType())', "limited",
     "code changed"),
]

def _job_folder(path: Path) -> Path:
    path.mkdir()
    (path / "job.py").write_text(JOB)
    (path / "fp_helpers.py").write_text(HELPERS)
    return path


def _env(*paths: Path) -> dict[str, str]:
    # No .pyc: an edit of the same size within a second must never load stale bytecode.
    return {"PYTHONPATH": ":".join(map(str, paths)), "PYTHONDONTWRITEBYTECODE": "1"}


def _python(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          env=job_env(env), timeout=300)


def _plan(job_file: Path, root: str, run_id: str, env: dict[str, str]) -> dict[str, str]:
    """What `spark-recover plan --from RUN` says of each stage (a process where no JVM can start)."""
    done = run_cli("plan", str(job_file), "--root", root, "--from", run_id, "--json", env={**env, **no_jvm_env()})
    assert done.returncode == 0, done.stderr[-3000:]
    return {s["stage"]: "reused" if s["action"] == "reuse" else s["reason"] for s in json.loads(done.stdout)["stages"]}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_each_edit_recomputes_the_stage_that_runs_it(spark, recover_root, tmp_path, monkeypatch):
    folder = _job_folder(tmp_path / "job")
    job_file, env = folder / "job.py", _env(folder)
    params = {"out": str(tmp_path / "out")}
    crashed = run_cli(*run_args(str(job_file), recover_root, params, []),
                      env={**env, FAILPOINT_ENV: "final:before"})
    assert crashed.killed, crashed.stderr[-3000:]

    for name, old, new, stage, reason in EDITS:  # one edit at a time: each alone must be seen
        _edit(folder / name, old, new)
        decisions = _plan(job_file, recover_root, crashed.run_id, env)
        _edit(folder / name, new, old)
        at = STAGES.index(stage)
        assert [decisions[s] for s in STAGES[:at]] == ["reused"] * at, (name, new, decisions)
        assert decisions[stage] == reason, (name, new, decisions)

    for name, old, new, _, _ in EDITS:
        _edit(folder / name, old, new)
    planned = _plan(job_file, recover_root, crashed.run_id, env)
    resumed = run_cli(*run_args(str(job_file), recover_root, params, ["--resume"]), env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = runs_of(recover_root)[-1]
    assert record.origin_run_id == crashed.run_id and record.status == "succeeded"
    assert record.stages["kept"].reason == "module fp_helpers.py changed"
    assert not any(s.reused for s in record.stages.values()), {s.name: s.reason for s in record.stages.values()}
    assert {s.name: s.reason for s in record.stages.values()} == planned  # the plan said what the resume did

    # The reference: a clean run of the new code, in this process.
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "fp_helpers", raising=False)
    clean = load_job(str(job_file)).run({"out": str(tmp_path / "clean")}, root=str(tmp_path / "clean-root"),
                                        spark=spark, echo=False)
    assert clean.status == "succeeded", clean.error
    sys.modules.pop("fp_helpers", None)
    clean_rows = spark.read.format("delta").load(str(tmp_path / "clean" / "result")).collect()
    assert len(clean_rows) == 40 and {r["bucket"] for r in clean_rows} == set(range(7))
    assert all(r["v"] == r["id"] * 100000000 for r in clean_rows)  # LongType: no null field
    assert_same_rows(spark, spark.read.format("delta").load(str(tmp_path / "out" / "result")), clean_rows)


ZIP_JOB = '''
import fp_zipped
from pyspark.sql import functions as F
from spark_recover import Job

job = Job("fp_zip")


@job.stage
def scaled(spark):
    return spark.range(5).select((F.col("id") * fp_zipped.FACTOR).alias("v"))


@job.stage
def total(scaled):
    return scaled.agg(F.sum("v").alias("s"))
'''


def _zip(path: Path, factor: int) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fp_zipped.py", f"FACTOR = {factor}\n")


def test_a_helper_in_a_zip_is_read_through_its_loader(recover_root, tmp_path):
    (tmp_path / "job.py").write_text(ZIP_JOB)
    deps = tmp_path / "deps.zip"
    _zip(deps, 2)
    env = _env(deps)  # as `--py-files deps.zip` puts it on the path
    crashed = run_cli(*run_args(str(tmp_path / "job.py"), recover_root, None, []),
                      env={**env, FAILPOINT_ENV: "total:before"})
    assert crashed.killed, crashed.stderr[-3000:]  # fingerprinting did not crash
    record = runs_of(recover_root)[-1]
    assert list(record.stages["scaled"].parts["modules"]) == ["deps.zip/fp_zipped.py"]

    _zip(deps, 3)
    decisions = _plan(tmp_path / "job.py", recover_root, crashed.run_id, env)
    assert decisions["scaled"] == "module deps.zip/fp_zipped.py changed"


# A long-lived process (a notebook kernel) loads the job, then the user edits the files under it.
STALE = """
import json, sys
from spark_recover.errors import RefusedError
from spark_recover.job import load_job
from spark_recover.plan import plan_run

def codes():
    return {p.name: p.parts["code"] for p in plan_run(job, {}, {})}

def edit(path, old, new):
    text = open(path).read()
    assert old in text
    open(path, "w").write(text.replace(old, new))

job_file, helpers = sys.argv[1], sys.argv[2]
job = load_job(job_file)
out = {"first": codes()}
if sys.argv[3] == "stale":
    edit(job_file, 'F.col("id") >= LIMITS', 'F.col("id") > LIMITS')
    edit(helpers, "THRESHOLD = 10", "THRESHOLD = 50")
    out["stale"] = codes()
    edit(helpers, "return c >= n", "return c > n")
    try:
        codes()
    except RefusedError as exc:
        out["refused"], out["exit"], out["module"] = str(exc), exc.exit_code, exc.fields.get("module")
print(json.dumps(out))
"""


def test_a_process_running_old_code_never_records_the_edited_files(tmp_path):
    folder = _job_folder(tmp_path / "job")
    job_file, helpers, env = str(folder / "job.py"), str(folder / "fp_helpers.py"), _env(folder)
    kernel = _python(STALE, job_file, helpers, "stale", env=env)
    assert kernel.returncode == 0, kernel.stderr[-3000:]
    kernel = json.loads(kernel.stdout.strip().splitlines()[-1])
    _edit(folder / "fp_helpers.py", "return c > n", "return c >= n")
    fresh = _python(STALE, job_file, helpers, "fresh", env=env)  # a later process, loading the edited files
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    fresh = json.loads(fresh.stdout.strip().splitlines()[-1])["first"]

    # The kernel still runs `>=` and THRESHOLD = 10: it records that, never the edited files...
    assert kernel["stale"]["limited"] == kernel["first"]["limited"] != fresh["limited"]
    # ...so a fresh process, running the new code, cannot reuse what the kernel computed.
    assert kernel["stale"]["kept"] != fresh["kept"]
    # A helper module counts by its source, which no longer holds the function the kernel runs: refused.
    assert kernel.get("refused") and "restart the process" in kernel["refused"], kernel
    assert kernel["module"] == "fp_helpers" and kernel["exit"] == 3 and "function at_least" in kernel["refused"]
