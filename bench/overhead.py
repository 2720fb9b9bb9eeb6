"""Per-stage bookkeeping overhead, and the read-only CLI's latency.

Measures, side by side in one process (machines are noisy: compare ratios):

* ledger: one event append (delta-rs commit), the two a computed stage costs;
* fingerprint: planning every stage of the demo job (code hashes, params, pins);
* a checkpoint's own work: ``checkpoint.write`` against ``df.write.parquet``
  and ``checkpoint.read`` against ``spark.read.parquet``, 1k rows, interleaved;
* verify: the JVM-free check of a checkpoint's files before reuse;
* `spark-recover runs` and `show` wall time (new process each, no JVM).

Run: ``make bench`` (or ``.venv/bin/python -m bench.overhead``).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from spark_recover import checkpoint
from spark_recover.config import Settings
from spark_recover.job import load_job
from spark_recover.ledger import Ledger
from spark_recover.plan import plan_run
from spark_recover.storage import Layout
from spark_recover.testing import TEST_SPARK_CONFS

from . import save_results


def timed(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(samples), 4), "min_s": round(min(samples), 4),
            "n": repeat}


def main(argv: list[str] | None = None) -> dict:
    from spark_recover.session import get_spark

    spark = get_spark(Settings(spark=TEST_SPARK_CONFS))
    work = Path(tempfile.mkdtemp(prefix="spark-recover-bench-"))
    layout = Layout.at(str(work / "root"))
    ledger = Ledger(layout)
    results: dict[str, object] = {}

    counter = iter(range(10**6))
    results["ledger_append"] = timed(lambda: ledger.append(f"r{next(counter)}", "bench", "heartbeat"), 30)

    job = load_job(str(Path(__file__).parents[1] / "jobs" / "demo_sales.py"))
    pins = {s.name: {"kind": "delta", "location": f"/x/{s.name}", "version": 3} for s in job.sources}
    results["plan_all_stages"] = timed(lambda: plan_run(job, {"data": "/x"}, pins), 20)
    results["plan_per_stage_s"] = round(results["plan_all_stages"]["median_s"] / len(job.stages), 5)

    # A checkpoint's own work beyond the parquet write and read it replaces (row count on the way, file
    # listing, the delta-rs commit; reading: the version's file list), on 1k rows, interleaved.
    df = spark.range(1000).selectExpr("id", "id % 97 AS k", "cast(id AS string) AS s")
    ways = {
        "checkpoint_write_1k": lambda: checkpoint.write(df, str(work / f"ck-{next(counter)}"), {"run_id": "b"}, layout),
        "parquet_write_1k": lambda: df.write.parquet(str(work / f"pq-{next(counter)}")),
        "checkpoint_read_1k": lambda: checkpoint.read(spark, str(work / "ck-read"), 0, layout),
        "parquet_read_1k": lambda: spark.read.parquet(str(work / "pq-read")),
    }
    checkpoint.write(df, str(work / "ck-read"), {"run_id": "b"}, layout)
    df.write.parquet(str(work / "pq-read"))
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(20):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    for name, values in samples.items():
        results[name] = {"median_s": round(statistics.median(values), 4), "min_s": round(min(values), 4), "n": 20}
    write_extra = max(0.0, results["checkpoint_write_1k"]["median_s"] - results["parquet_write_1k"]["median_s"])
    read_extra = max(0.0, results["checkpoint_read_1k"]["median_s"] - results["parquet_read_1k"]["median_s"])
    results["verify_checkpoint"] = timed(lambda: checkpoint.verify(str(work / "ck-read"), 0, layout), 20)

    # A computed stage: two ledger events, its plan, the checkpoint's extra work; a reused one: one event,
    # its plan, the verification of its files, the extra work of reading it.
    results["bookkeeping_per_computed_stage_s"] = round(
        2 * results["ledger_append"]["median_s"] + results["plan_per_stage_s"] + write_extra, 4)
    results["bookkeeping_per_reused_stage_s"] = round(
        results["ledger_append"]["median_s"] + results["plan_per_stage_s"]
        + results["verify_checkpoint"]["median_s"] + read_extra, 4)

    # The read-only CLI: a fresh process each time, as a user types it.
    for i in range(40):  # a ledger with some history
        ledger.append(f"run{i}", "bench", "run_started", detail={"params": {"i": i}, "stages": []})
        ledger.append(f"run{i}", "bench", "run_finished", status="succeeded", seconds=1.0)
    ledger.compact()
    cli = [sys.executable, "-m", "spark_recover"]
    results["cli_runs"] = timed(lambda: subprocess.run(cli + ["runs", "--root", layout.root],
                                                       check=True, capture_output=True), 5)
    results["cli_show"] = timed(lambda: subprocess.run(cli + ["show", "run7", "--root", layout.root],
                                                       check=True, capture_output=True), 5)
    save_results("overhead", results)
    return results


if __name__ == "__main__":
    main()
