"""A job with a chunked stage: one chunk per day of the events (sources from tests/conftest.py).

``-p chunk_pause=N`` holds each chunk N seconds on the driver: a window to kill a run mid-stage.
``-p stores=0,1,2`` chunks the second stage by store (chunks named by the parameters).
"""

import time

from pyspark.sql import functions as F

from spark_recover import Job

job = Job("chunked_sales")
events = job.source("events", path="{data}/events")


@job.stage(chunks=job.distinct("events", "day"))
def per_day(events, chunk, params):
    time.sleep(float(params.get("chunk_pause", "0")))
    return (events.where(F.col("day") == chunk).groupBy("day", "store_id")
            .agg(F.sum("qty").alias("qty"), F.count("*").alias("orders")))


@job.stage(chunks=lambda params: [int(s) for s in params.get("stores", "0,1,2").split(",")])
def by_store(per_day, chunk):
    return per_day.where(F.col("store_id") == chunk).groupBy("store_id").agg(F.sum("qty").alias("qty"))


@job.stage
def totals(per_day):
    return per_day.groupBy("day").agg(F.sum("qty").alias("qty"), F.sum("orders").alias("orders"))


job.sink("per_day", path="{out}/per_day", mode="append")
job.sink("totals", path="{out}/totals", mode="overwrite")
job.sink("by_store", path="{out}/by_store", mode="merge", keys=["store_id"])

if __name__ == "__main__":
    job.main()
