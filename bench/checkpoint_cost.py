"""The cost of one checkpoint, against parquet and Spark's ``checkpoint()``.

One "checkpoint" here is what a stage boundary costs: persist a DataFrame,
read it back, and run a downstream aggregate on what was read. Side by side
in one warm JVM, for 1k, 100k and 2M rows (``--sizes``), interleaved, the
median of ``--repeat`` (default 5) with min and max:

* ``spark_recover``: ``checkpoint.write`` (a new Delta table, one commit,
  read back by delta-rs) then ``checkpoint.read`` at the pinned version;
* ``parquet``: ``df.write.parquet`` then ``spark.read.parquet``;
* ``spark_checkpoint``: ``df.checkpoint(eager=True)``;
* ``one_table_per_stage``: the earlier layout, for comparison (overwrite one
  Delta table per stage, read it back by Delta with ``versionAsOf``).

Run: ``.venv/bin/python -m bench.checkpoint_cost`` (also part of ``make bench``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import deltalake
from pyspark.sql import functions as F

from spark_recover import checkpoint
from spark_recover.config import Settings
from spark_recover.storage import Layout
from spark_recover.testing import TEST_SPARK_CONFS

from . import save_results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,100000,2000000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    from spark_recover.session import get_spark

    spark = get_spark(Settings(spark={**TEST_SPARK_CONFS, "spark.driver.memory": "2g"}))
    work = Path(tempfile.mkdtemp(prefix="spark-recover-bench-ckpt-"))
    spark.sparkContext.setCheckpointDir(str(work / "spark-checkpoints"))
    layout = Layout.at(str(work / "root"))
    counter = iter(range(10**6))

    def frame(n: int):
        return spark.range(n).select(F.col("id"), (F.col("id") % 97).alias("k"),
                                     F.sha2(F.col("id").cast("string"), 256).alias("s"),
                                     (F.col("id") / 7.0).alias("x"))

    def downstream(df) -> None:
        df.groupBy("k").agg(F.sum("x")).collect()

    def ours(n: int) -> None:
        location = layout.checkpoint("bench", "k", f"s{n}", f"r{next(counter)}")
        written = checkpoint.write(frame(n), location, {"run_id": "bench", "stage": "s"}, layout)
        downstream(checkpoint.read(spark, location, written.version, layout))

    def parquet(n: int) -> None:
        path = str(work / f"pq-{next(counter)}")
        frame(n).write.parquet(path)
        downstream(spark.read.parquet(path))

    def spark_checkpoint(n: int) -> None:
        downstream(frame(n).checkpoint(eager=True))

    def one_table_per_stage(n: int) -> None:  # the layout before: overwrite, then read versionAsOf
        location = str(work / f"table-{n}")
        frame(n).write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(location)
        version = deltalake.DeltaTable(location).version()
        downstream(spark.read.format("delta").option("versionAsOf", version).load(location))

    ways = {"spark_recover": ours, "parquet": parquet, "spark_checkpoint": spark_checkpoint,
            "one_table_per_stage": one_table_per_stage}
    sizes = [int(s) for s in args.sizes.split(",")]
    for fn in ways.values():  # warm-up
        fn(sizes[0])
    samples = {(w, n): [] for w in ways for n in sizes}
    for _ in range(args.repeat):
        for n in sizes:
            for w, fn in ways.items():
                t0 = time.perf_counter()
                fn(n)
                samples[(w, n)].append(time.perf_counter() - t0)
    result: dict = {}
    for n in sizes:
        row = {w: {"median_s": round(statistics.median(samples[(w, n)]), 3),
                   "min_s": round(min(samples[(w, n)]), 3), "max_s": round(max(samples[(w, n)]), 3)}
               for w in ways}
        row["spark_recover_over_parquet"] = round(row["spark_recover"]["median_s"] / row["parquet"]["median_s"], 2)
        row["spark_recover_over_checkpoint"] = round(row["spark_recover"]["median_s"]
                                                     / row["spark_checkpoint"]["median_s"], 2)
        result[str(n)] = row
    result["repeat"] = args.repeat
    save_results("checkpoint_cost", result)
    return result


if __name__ == "__main__":
    main()
