"""A job whose sink write is slow on the server: for a client killed while the server still writes.

Stage ``rows`` makes ``-p rows=N`` rows, published appended to ``{out}/rows``. Stage ``one_file_per_row``
runs after it and, on the run's session, sets one row per file, so the sink write (after every stage)
writes N files: about 1.5 s per 100 rows on a shared two-core machine. With ``$SLOW_SINK_MODE=merge``
the sink is a MERGE on key ``n`` (a Spark Connect run MERGEs in a server session of its own).
"""

import os

from spark_recover import Job

job = Job("slow_sink")


@job.stage
def rows(spark, params):
    return spark.range(int(params["rows"])).withColumnRenamed("id", "n").repartition(1)


@job.stage
def one_file_per_row(rows, spark):
    spark.conf.set("spark.sql.files.maxRecordsPerFile", "1")
    return rows.limit(1)


if os.environ.get("SLOW_SINK_MODE") == "merge":
    job.sink("rows", path="{out}/rows", mode="merge", keys=["n"])
else:
    job.sink("rows", path="{out}/rows", mode="append")


if __name__ == "__main__":
    job.main()
