"""The benchmark's chunked job (bench/chunks.py): one heavy stage over ``{data}/events``, one chunk per bucket.

``-p chunks=N``: N buckets (default 10). bench/chunks.py runs the same work as one stage beside it.
"""

from pyspark.sql import functions as F

from spark_recover import Job

job = Job("bench_chunked")
job.source("events", path="{data}/events")


def work(events):
    """Per key: sums, counts and a distinct count, and a digest of the row (a shuffle and a hash)."""
    agg = (events.groupBy("bucket", "key")
           .agg(F.sum("amount").alias("amount"), F.count("*").alias("n"),
                F.countDistinct("item").alias("items"), F.max("amount").alias("top")))
    return agg.withColumn("digest", F.sha2(F.concat_ws("|", "key", "amount", "n", "items"), 256))


@job.stage(chunks=lambda params: list(range(int(params.get("chunks", "10")))))
def heavy(events, chunk):
    return work(events.where(F.col("bucket") == chunk))


job.sink("heavy", path="{out}/heavy", mode="overwrite")

if __name__ == "__main__":
    job.main()
