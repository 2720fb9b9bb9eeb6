"""Simultaneous starts: two driver processes of one job and parameters, started together.

Each trial starts two ``spark-recover run`` processes of ``tests/jobs/failing_job.py``
at once on a shared root and counts the outcomes: exactly one exit 0 and one
exit 3 is right; both refused (nothing ran) or both run (two holders) is wrong.

Run: ``.venv/bin/python -m bench.lease_race --trials 20``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from spark_recover.testing import job_env, run_args

from . import save_results

JOB = str(Path(__file__).parents[1] / "tests" / "jobs" / "failing_job.py")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="lease-race-")
    command = [sys.executable, "-m", "spark_recover", *run_args(JOB, root, {"fail": "no"}, [])]
    env = job_env()
    outcomes: Counter[str] = Counter()
    seconds = []
    for trial in range(args.trials):
        t0 = time.monotonic()
        procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
        codes = sorted(p.wait() for p in procs)
        seconds.append(round(time.monotonic() - t0, 2))
        outcome = {(0, 3): "one winner, one refused", (3, 3): "both refused", (0, 0): "both ran"}.get(
            tuple(codes), f"other {codes}")
        outcomes[outcome] += 1
        print(f"trial {trial + 1}: exit codes {codes}: {outcome}", flush=True)
    save_results("lease_race", {"trials": args.trials, "outcomes": dict(outcomes), "seconds_per_trial": seconds})


if __name__ == "__main__":
    main()
