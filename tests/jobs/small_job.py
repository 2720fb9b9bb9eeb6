"""A small five-stage job used by the test suite (sources made by tests/conftest.py).

``-p pause_seconds=N`` holds stage ``daily`` N seconds on the driver: a window for a test to kill the run mid-way;
with ``-p hold=FILE`` it holds only while ``FILE`` exists (at most N seconds), so the window does not depend on
the machine's speed.
"""

import os
import time

from pyspark.sql import Window
from pyspark.sql import functions as F

from spark_recover import Job

MIN_QTY = 1

job = Job("small_sales")
events = job.source("events", path="{data}/events")
stores = job.source("stores", path="{data}/stores")


@job.stage
def cleaned(events):
    return events.where(F.col("qty") >= MIN_QTY).withColumn("amount", F.col("qty") * F.col("price"))


@job.stage
def enriched(cleaned, stores):
    return cleaned.join(stores, "store_id", "left")


@job.stage
def daily(enriched, params):
    threshold = float(params.get("threshold", "0"))
    until = time.monotonic() + float(params.get("pause_seconds", "0"))
    while time.monotonic() < until and (not params.get("hold") or os.path.exists(params["hold"])):
        time.sleep(0.1)
    return (enriched.where(F.col("amount") >= threshold)
            .groupBy("region", "store_id", "day").agg(F.sum("amount").alias("total"),
                                                      F.count("*").alias("orders")))


@job.stage
def ranked(daily):
    w = Window.partitionBy("region", "day").orderBy(F.desc("total"), F.asc("store_id"))
    return daily.withColumn("rank", F.row_number().over(w))


@job.stage
def summary(ranked):
    return ranked.groupBy("region").agg(F.sum("total").alias("total"), F.max("rank").alias("stores"))


if __name__ == "__main__":
    job.main()
