"""The soak: a long drill of the four-sink test job, every recovery a real `run --resume` process,
every trial's run then rolled back (most rollbacks killed midway and rerun).

    make soak              # 20 kills (what CI runs)
    make soak KILLS=100    # the 100-kill soak

Generates the test job's sources (the same 20,000 events as the suite), then
runs ``spark-recover drill tests/jobs/sink_job.py --kills N --seed S --json``
as a process of its own, with the suite's small Spark confs for every driver.
Prints the drill's text report and keeps the JSON in ``bench/results/soak.json``.
Exit code: the drill's (0 only if no row was lost, duplicated or extra).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from conftest import SINK_JOB, make_sources

    from spark_recover.config import Settings
    from spark_recover.display import drill_text
    from spark_recover.session import get_spark
    from spark_recover.testing import TEST_SPARK_CONFS, job_env

    work = Path(tempfile.mkdtemp(prefix="spark-recover-soak-"))
    spark = get_spark(Settings(spark=TEST_SPARK_CONFS))
    make_sources(spark, work / "sources")
    # The job's tables exist before the drill, as in production: a rollback then restores them
    # to their recovery point (not only removes what the run created).
    from spark_recover.job import load_job

    own = {"data": str(work / "sources"), "out": str(work / "out"), "day": "3"}
    assert load_job(SINK_JOB).run(own, root=str(work / "own-root"), spark=spark, echo=False).ok
    spark.stop()
    command = [sys.executable, "-m", "spark_recover", "drill", SINK_JOB, "-p", f"data={work / 'sources'}",
               "-p", f"out={work / 'out'}", "-p", "day=3", "--kills", str(args.kills), "--seed", str(args.seed), "--with-rollback",
               "--root", str(work / "root"), "--json"]
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, env=job_env())
    seconds = time.monotonic() - started
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
        return proc.returncode or 2
    report["soak_seconds"] = round(seconds, 1)
    print(drill_text(report))
    s = report["summary"]
    print(f"soak: {args.kills} kills in {seconds / 60:.1f} minutes (exit {proc.returncode}); sink data commits "
          f"{s['sink_commits']}, {s['sink_commit_faults']} not exactly one per sink per logical run")
    out = HERE.parent / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=2))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
