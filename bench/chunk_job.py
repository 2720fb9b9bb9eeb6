"""The benchmark's chunked job (bench/chunks.py): one heavy stage over ``{data}/events``, one chunk per bucket.

``-p chunks=N``: N buckets (default 10); ``-p rounds=R``: the work per row. bench/chunks.py runs the same
work as one stage beside it.
"""

from pyspark.sql import functions as F

from spark_recover import Job

job = Job("bench_chunked")
job.source("events", path="{data}/events")


def work(events, rounds: int):
    """CPU-bound work per row (``rounds`` chained SHA-256 of it), then per key: counts, sums, the top digest."""
    digest = F.concat_ws("|", "key", "item", "amount")
    for _ in range(rounds):
        digest = F.sha2(digest, 256)
    return (events.withColumn("digest", digest).groupBy("bucket", "key")
            .agg(F.count("*").alias("n"), F.sum("amount").alias("amount"), F.max("digest").alias("digest")))


@job.stage(chunks=lambda params: list(range(int(params.get("chunks", "10")))))
def heavy(events, chunk, params):
    return work(events.where(F.col("bucket") == chunk), int(params.get("rounds", "64")))


job.sink("heavy", path="{out}/heavy", mode="overwrite")

if __name__ == "__main__":
    job.main()
