"""A job file runs under spark-submit through job.main(), in the session spark-submit made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from spark_recover.session import resolve_delta_jars
from spark_recover.testing import run_cli

from conftest import SMALL_JOB


def test_job_main_under_spark_submit(source_data, recover_root):
    spark_submit = Path(sys.executable).with_name("spark-submit")
    jars = ",".join(resolve_delta_jars())
    proc = subprocess.run(
        [str(spark_submit), "--master", "local[2]", "--jars", jars,
         "--conf", "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
         "--conf", "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
         "--conf", "spark.sql.shuffle.partitions=2", "--conf", "spark.ui.enabled=false",
         "--conf", "spark.ui.showConsoleProgress=false",
         SMALL_JOB, "-p", f"data={source_data}", "--root", recover_root],
        capture_output=True, text=True, env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "succeeded" in proc.stdout.splitlines()[-1]
    runs = json.loads(run_cli("runs", "--json", "--root", recover_root).stdout)
    assert [(r["job"], r["status"]) for r in runs] == [("small_sales", "succeeded")]
