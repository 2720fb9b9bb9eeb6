"""A job that publishes to four sinks, one per mode (sources from tests/conftest.py)."""

from pyspark.sql import functions as F

from spark_recover import Job

job = Job("sink_sales")
events = job.source("events", path="{data}/events")
stores = job.source("stores", path="{data}/stores")


@job.stage
def daily(events, stores):
    return (events.join(stores, "store_id").groupBy("region", "day")
            .agg(F.sum(F.col("qty") * F.col("price")).alias("total"), F.count("*").alias("orders")))


@job.stage
def day_slice(daily, params):
    return daily.where(F.col("day") == params["day"])


@job.stage
def store_totals(events):
    return events.groupBy("store_id").agg(F.sum("qty").alias("qty"))


@job.stage
def region_totals(daily):
    return daily.groupBy("region").agg(F.sum("total").alias("total"))


job.sink("daily", path="{out}/daily_log", mode="append")
job.sink("day_slice", path="{out}/by_day", mode="replace_where", predicate="day = '{day}'")
job.sink("store_totals", path="{out}/store_totals", mode="merge", keys=["store_id"])
job.sink("region_totals", path="{out}/region_totals", mode="overwrite")

SINK_TABLES = ["daily_log", "by_day", "store_totals", "region_totals"]

if __name__ == "__main__":
    job.main()
