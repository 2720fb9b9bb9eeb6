"""R per crash stage: what a resume costs after a crash before each stage, against its floor.

For the demo job (``--rows`` generated orders, 200,000 by default), every step
a fresh process as a user runs it (``spark-recover run ... [--resume]``):

* ``T_t``: a clean run, start to exit;
* for each crash stage k (``--stages``, all seven by default): the driver
  SIGKILLs itself before stage k (a failpoint), once; that crashed state is
  copied aside and put back before each repetition; then
  * ``T_f``: ``run --resume``, start to exit: it reuses stages 1..k-1 and
    computes the rest, with checkpoints and the three sinks;
  * the floor: a process that starts the same Spark, reads the outputs the
    resume reuses, computes only stages k..n with plain Spark (each stage
    written as parquet and read back) and writes the three sink stages'
    outputs to new Delta tables with plain ``df.write`` (no ledger, no
    exactly-once bookkeeping).

Each resume's time is also split, from its own ledger record: Python start
and exit, the Spark session's start, the stages it computed, and the rest
(sinks, ledger, verification).

R = T_f / T_t (the same figure the run reports, here measured from outside,
JVM start included). Repetitions are interleaved (clean, then each k's resume
and floor); reports median, min and max.

Run: ``.venv/bin/python -m bench.crash_stages`` (also part of ``make bench``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spark_recover.failpoints import ENV as FAILPOINT_ENV

from . import save_results

ROOT = Path(__file__).parents[1]
JOB = str(ROOT / "jobs" / "demo_sales.py")


def _stats(samples: list[float]) -> dict:
    return {"median_s": round(statistics.median(samples), 3), "min_s": round(min(samples), 3),
            "max_s": round(max(samples), 3), "n": len(samples)}


def _timed(command: list[str], env: dict | None = None, expect: int = 0) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}, expected {expect}:\n{done.stderr[-3000:]}")
    return seconds


def _run(data: Path, root: Path, warehouse: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "spark_recover", "run", JOB, "-p", f"data={data}", "-p", f"warehouse={warehouse}",
            "--root", str(root), *extra]


def _breakdown(run, wall: float) -> dict[str, float]:
    """Where a resume process's time went, from its own ledger record and the wall clock."""
    session = run.metrics.get("session_seconds") or 0.0
    stages = sum(s.seconds or 0.0 for s in run.stages.values() if not s.reused)
    return {"python_start_and_exit": wall - session - run.total_seconds, "spark_session": session,
            "computed_stages": stages, "sinks_and_bookkeeping": run.total_seconds - stages}


def floor(root: str, first: str, data: str) -> None:
    """The floor process: read what the resume reuses, compute stages ``first``..n and write the sinks, plainly."""
    from spark_recover import checkpoint
    from spark_recover.config import load_settings
    from spark_recover.job import load_job
    from spark_recover.session import get_spark
    from spark_recover.storage import Layout
    from spark_recover.testing import runs_of

    spark = get_spark(load_settings(root=root))
    layout = Layout.at(root)
    job = load_job(JOB)
    crashed = runs_of(root)[-1]
    names = [s.name for s in job.stages]
    frames = {s.name: spark.read.format("delta").load(f"{data}/{s.name}") for s in job.sources}
    for name in names[:names.index(first)]:
        rec = crashed.stages[name]
        frames[name] = checkpoint.read(spark, rec.checkpoint, rec.version, layout)
    out = Path(tempfile.mkdtemp(prefix="spark-recover-floor-"))
    for stage in job.stages[names.index(first):]:
        stage.call(frames.__getitem__, {}, spark).write.parquet(str(out / stage.name))
        frames[stage.name] = spark.read.parquet(str(out / stage.name))
    for sink in job.sinks:  # the job's outputs, written as a job without spark-recover would: plain Delta writes
        frames[sink.stage].write.format("delta").save(str(out / "sinks" / sink.stage))
    shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stages", default="", help="comma-separated crash stages (default: every stage)")
    args = parser.parse_args(argv)
    from jobs.demo import generate
    from spark_recover.job import load_job
    from spark_recover.session import resolve_delta_jars
    from spark_recover.testing import runs_of

    resolve_delta_jars()  # once; every process below inherits the resolved jars
    data = ROOT / "demo-data" / ("sources" if args.rows == 2_000_000 else f"sources-{args.rows}")
    if not (data / "orders" / "_delta_log").is_dir():
        generate(data, args.rows)
    names = [s.name for s in load_job(JOB).stages]
    crash = [s for s in args.stages.split(",") if s] or names
    work = Path(tempfile.mkdtemp(prefix="spark-recover-bench-crash-"))

    # One crashed state per stage, kept aside.
    for k in crash:
        _timed(_run(data, work / k / "root", work / k / "warehouse"), {FAILPOINT_ENV: f"{k}:before"}, expect=-9)
        shutil.copytree(work / k, work / f"{k}.crashed")

    clean: list[float] = []
    resumed: dict[str, list[float]] = {k: [] for k in crash}
    parts: dict[str, list[dict[str, float]]] = {k: [] for k in crash}
    floors: dict[str, list[float]] = {k: [] for k in crash}
    for i in range(args.repeat):
        clean.append(_timed(_run(data, work / f"clean-{i}" / "root", work / f"clean-{i}" / "warehouse")))
        for k in crash:
            shutil.rmtree(work / k)
            shutil.copytree(work / f"{k}.crashed", work / k)
            resumed[k].append(_timed(_run(data, work / k / "root", work / k / "warehouse", "--resume")))
            parts[k].append(_breakdown(runs_of(str(work / k / "root"))[-1], resumed[k][-1]))
            floors[k].append(_timed([sys.executable, "-m", "bench.crash_stages", "--floor", str(work / k / "root"),
                                     k, str(data)]))
    t_t = statistics.median(clean)
    result: dict = {"rows": args.rows, "clean": _stats(clean), "stages": {}}
    for k in crash:
        t_f, t_floor = statistics.median(resumed[k]), statistics.median(floors[k])
        result["stages"][k] = {"position": names.index(k) + 1, "resume": _stats(resumed[k]),
                               "floor": _stats(floors[k]), "R": round(t_f / t_t, 3),
                               "R_floor": round(t_floor / t_t, 3), "over_floor_s": round(t_f - t_floor, 2),
                               "breakdown_s": {part: round(statistics.median(p[part] for p in parts[k]), 2)
                                               for part in parts[k][0]}}
    save_results("crash_stages", result)
    shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--floor":
        floor(*sys.argv[2:])
    else:
        main()
