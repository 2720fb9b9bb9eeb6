"""What recoverability costs on a clean run: the demo job five ways, side by side.

One warm JVM (local[2]), the demo's generated sources (``--rows`` orders,
2,000,000 by default, made once under ``demo-data/sources``), and the seven
stages of ``jobs/demo_sales.py`` with each stage's output materialised:

* ``plain``: no persistence; each stage's output is computed (a ``noop``
  write), so a stage recomputes its whole upstream lineage;
* ``checkpoint``: Spark's own ``DataFrame.checkpoint()`` after each stage;
* ``parquet``: each stage written as parquet and read back for its downstream;
* ``spark_recover``: ``job.run`` with the sinks removed (checkpoints, ledger,
  fingerprints, verification);
* ``spark_recover_sinks``: ``job.run`` as the job is, three sinks included;
* ``plain_delta_sinks``: for scale, the three sink stages' outputs written as
  new Delta tables with plain ``df.write`` (what the sinks cost without
  spark-recover's exactly-once bookkeeping);
* ``floor``: the bytes the checkpoints hold, written sequentially to a file
  and fsynced (the physical cost of persisting them at all).

Repeated ``--repeat`` times (default 3), interleaved so a noisy neighbour hits
every mode alike; reports median, min and max seconds and the ratios.

Run: ``make bench`` (or ``.venv/bin/python -m bench.job_modes``).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from spark_recover.config import Settings
from spark_recover.job import load_job
from spark_recover.testing import TEST_SPARK_CONFS

from . import save_results

ROOT = Path(__file__).parents[1]


def _stage_frames(job, spark, data: str, keep):
    """Run the job's stages in order with plain Spark; ``keep(name, df)`` materialises each output."""
    frames = {s.name: spark.read.format("delta").load(f"{data}/{s.name}") for s in job.sources}
    for stage in job.stages:
        frames[stage.name] = keep(stage.name, stage.call(frames.__getitem__, {}, spark))


def _table_bytes(location: str) -> int:
    import deltalake
    import pyarrow as pa

    adds = pa.table(deltalake.DeltaTable(location).get_add_actions(flatten=True))
    return sum(adds.column("size_bytes").to_pylist())


def _floor(size: int, work: Path) -> None:
    chunk = os.urandom(1 << 20)
    with open(work / "floor.bin", "wb") as out:
        for _ in range(max(1, size >> 20)):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    from jobs.demo import generate
    from spark_recover.session import get_spark

    data = ROOT / "demo-data" / ("sources" if args.rows == 2_000_000 else f"sources-{args.rows}")
    if not (data / "orders" / "_delta_log").is_dir():
        generate(data, args.rows)
    spark = get_spark(Settings(spark={**TEST_SPARK_CONFS, "spark.sql.shuffle.partitions": "4",
                                      "spark.driver.memory": "2g"}))
    work = Path(tempfile.mkdtemp(prefix="spark-recover-bench-modes-"))
    spark.sparkContext.setCheckpointDir(str(work / "spark-checkpoints"))
    job = load_job(str(ROOT / "jobs" / "demo_sales.py"))
    bare = copy.copy(job)
    bare._sinks = []  # the same stages, no sink
    params = {"data": str(data)}
    counter = iter(range(10**6))

    def plain() -> None:
        _stage_frames(job, spark, str(data), lambda n, df: (df.write.format("noop").mode("overwrite").save(), df)[1])

    def checkpointed() -> None:
        _stage_frames(job, spark, str(data), lambda n, df: df.checkpoint(eager=True))

    def parquet() -> None:
        run = work / f"pq-{next(counter)}"

        def keep(name, df):
            df.write.parquet(str(run / name))
            return spark.read.parquet(str(run / name))
        _stage_frames(job, spark, str(data), keep)

    checkpoint_bytes = []
    outputs = {}

    def recover(with_sinks: bool) -> None:
        n = next(counter)
        target = job if with_sinks else bare
        result = target.run({**params, "warehouse": str(work / f"wh-{n}")} if with_sinks else params,
                            root=str(work / f"root-{n}"), spark=spark, echo=False)
        assert result.ok, result.error
        if not with_sinks:
            checkpoint_bytes.append(sum(_table_bytes(s.checkpoint) for s in result.record.stages.values()))
            outputs.update({s.stage: result.output(s.stage) for s in job.sinks})

    def plain_delta_sinks() -> None:
        n = next(counter)
        for stage, df in outputs.items():
            df.write.format("delta").save(str(work / f"plain-sinks-{n}" / stage))

    modes = {"plain": plain, "checkpoint": checkpointed, "parquet": parquet,
             "spark_recover": lambda: recover(False), "spark_recover_sinks": lambda: recover(True),
             "plain_delta_sinks": plain_delta_sinks}
    plain()  # warm-up: JIT, caches, the first reads of the sources
    samples: dict[str, list[float]] = {m: [] for m in [*modes, "floor"]}
    for _ in range(args.repeat):
        for name, fn in modes.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _floor(checkpoint_bytes[-1], work)
        samples["floor"].append(time.perf_counter() - t0)
    results = {m: {"median_s": round(statistics.median(v), 3), "min_s": round(min(v), 3),
                   "max_s": round(max(v), 3), "n": len(v)} for m, v in samples.items()}
    med = {m: r["median_s"] for m, r in results.items()}
    results["checkpoint_bytes"] = checkpoint_bytes[-1]
    results["ratios"] = {
        "spark_recover_over_parquet": round(med["spark_recover"] / med["parquet"], 2),
        "spark_recover_over_checkpoint": round(med["spark_recover"] / med["checkpoint"], 2),
        "spark_recover_over_plain": round(med["spark_recover"] / med["plain"], 2),
        "sinks_cost_s": round(med["spark_recover_sinks"] - med["spark_recover"], 3),
        "sinks_cost_over_plain_delta_writes": round((med["spark_recover_sinks"] - med["spark_recover"])
                                                    / med["plain_delta_sinks"], 2),
    }
    results["rows"] = args.rows
    save_results("job_modes", results)
    shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
