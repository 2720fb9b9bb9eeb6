"""Rollback time against table size: RESTORE should be metadata-only.

For each size (100 thousand, 1 million and 10 million rows), side by side in one process, each size with
a ledger of its own (the same history, only the size differs):
write the table, take a named recovery point, append a batch as a run would,
then time ``spark_recover.rollback(point=...)`` (a delta-rs restore + verification
+ ledger journal), and, for comparison, Spark's ``RESTORE TABLE`` of the same
change. Repeated ``--repeat`` times; reports medians and the biggest/smallest ratio.

Run: ``.venv/bin/python -m bench.rollback``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import deltalake

import spark_recover
from spark_recover.config import Settings
from spark_recover.testing import TEST_SPARK_CONFS

from . import save_results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    from spark_recover.session import get_spark

    spark = get_spark(Settings(spark={**TEST_SPARK_CONFS, "spark.driver.memory": "4g"}))
    work = Path(tempfile.mkdtemp(prefix="spark-recover-bench-rollback-"))
    sizes = [int(s) for s in args.sizes.split(",")]
    tables = {}
    for n in sizes:
        path = str(work / f"t{n}")
        spark.range(n).selectExpr("id", "id % 1000 AS k", "cast(id * 7 AS string) AS s") \
            .repartition(8).write.format("delta").save(path)
        tables[n] = path
    samples: dict[int, list[float]] = {n: [] for n in sizes}
    spark_restore: dict[int, list[float]] = {n: [] for n in sizes}
    engine: dict[int, str] = {}

    def append(n: int) -> int:
        spark.range(1000).selectExpr("id", "id % 1000 AS k", "'new' AS s") \
            .write.format("delta").mode("append").save(tables[n])
        return deltalake.DeltaTable(tables[n]).version()

    for i in range(args.repeat):
        for n in sizes:  # interleaved: every size sees the same machine noise
            name = f"p{n}-{i}"
            root = str(work / f"root-{n}")  # a ledger per size: each sees the same history, only the size differs
            spark_recover.create_point(name, [tables[n]], root=root)
            append(n)
            t0 = time.perf_counter()
            journal = spark_recover.rollback(point=name, root=root, spark=spark, echo=False)
            samples[n].append(time.perf_counter() - t0)
            engine[n] = journal["restored"][0].get("engine", "?")
            # For comparison, the same restore by Spark's RESTORE TABLE (no journal, no verification).
            before = append(n) - 1
            t0 = time.perf_counter()
            spark.sql(f"RESTORE TABLE delta.`{tables[n]}` TO VERSION AS OF {before}").collect()
            spark_restore[n].append(time.perf_counter() - t0)
    result: dict = {str(n): {"rollback_median_s": round(statistics.median(s), 4),
                             "rollback_samples_s": [round(x, 4) for x in s], "engine": engine[n],
                             "spark_restore_median_s": round(statistics.median(spark_restore[n]), 3),
                             "spark_restore_over_rollback": round(statistics.median(spark_restore[n])
                                                                  / statistics.median(s), 1)}
                    for n, s in samples.items()}
    result["ratio_biggest_over_smallest"] = round(statistics.median(samples[sizes[-1]])
                                                  / statistics.median(samples[sizes[0]]), 2)
    save_results("rollback", result)
    return result


if __name__ == "__main__":
    main()
