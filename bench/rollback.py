"""Rollback time against table size: RESTORE should be metadata-only.

For each size (100 thousand and 10 million rows), side by side in one process:
write the table, take a named recovery point, append a batch as a run would,
then time ``spark_recover.rollback(point=...)`` (RESTORE + verification + ledger
journal). Repeated ``--repeat`` times; reports medians and the 10M/100k ratio.

Run: ``.venv/bin/python -m bench.rollback``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import spark_recover
from spark_recover.config import Settings
from spark_recover.testing import TEST_SPARK_CONFS

from . import save_results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,10000000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from spark_recover.session import get_spark

    spark = get_spark(Settings(spark={**TEST_SPARK_CONFS, "spark.driver.memory": "4g"}))
    work = Path(tempfile.mkdtemp(prefix="spark-recover-bench-rollback-"))
    root = str(work / "root")
    sizes = [int(s) for s in args.sizes.split(",")]
    tables = {}
    for n in sizes:
        path = str(work / f"t{n}")
        spark.range(n).selectExpr("id", "id % 1000 AS k", "cast(id * 7 AS string) AS s") \
            .repartition(8).write.format("delta").save(path)
        tables[n] = path
    samples: dict[int, list[float]] = {n: [] for n in sizes}
    files: dict[int, int] = {}
    for i in range(args.repeat):
        for n in sizes:  # interleaved: both sizes see the same machine noise
            name = f"p{n}-{i}"
            spark_recover.create_point(name, [tables[n]], root=root)
            spark.range(1000).selectExpr("id", "id % 1000 AS k", "'new' AS s") \
                .write.format("delta").mode("append").save(tables[n])
            t0 = time.perf_counter()
            journal = spark_recover.rollback(point=name, root=root, spark=spark, echo=False)
            samples[n].append(time.perf_counter() - t0)
            files[n] = journal["restored"][0]["restore_metrics"].get("num_of_files_after_restore")
    result = {str(n): {"median_s": round(statistics.median(s), 3), "samples_s": [round(x, 3) for x in s],
                       "files_in_table": files[n]} for n, s in samples.items()}
    if len(sizes) == 2:
        small, big = sizes
        result["ratio_big_over_small"] = round(statistics.median(samples[big]) / statistics.median(samples[small]), 2)
    save_results("rollback", result)


if __name__ == "__main__":
    main()
