"""A job with a catalog sink and a path sink (sources from tests/conftest.py).

The catalog table is ``$CATALOG_SINK_TABLE`` (default ``default.spark_recover_regions``): a
table name has no ``{param}`` placeholders, so a test picks its own through the environment.
"""

import os

from pyspark.sql import functions as F

from spark_recover import Job

CATALOG_TABLE = os.environ.get("CATALOG_SINK_TABLE", "default.spark_recover_regions")

job = Job("catalog_sales")
events = job.source("events", path="{data}/events")
stores = job.source("stores", path="{data}/stores")


@job.stage
def region_totals(events, stores):
    return (events.join(stores, "store_id").groupBy("region")
            .agg(F.sum(F.col("qty") * F.col("price")).alias("total"), F.count("*").alias("orders")))


@job.stage
def store_totals(events):
    return events.groupBy("store_id").agg(F.sum("qty").alias("qty"))


job.sink("region_totals", table=CATALOG_TABLE, mode="append")
job.sink("store_totals", path="{out}/store_totals", mode="overwrite")

if __name__ == "__main__":
    job.main()
