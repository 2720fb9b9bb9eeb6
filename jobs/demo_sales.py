"""Demo job: daily revenue and customer value from 2 million generated orders.

Seven stages: a filter, two joins, two aggregations and two window functions,
over three Delta sources (orders, customers, products) that
``python -m jobs.demo`` generates with a fixed seed. Three stages are published
to sinks under ``{warehouse}``: an append log, a merge (upsert) and an overwrite.

    spark-recover run jobs/demo_sales.py -p data=demo-data/sources -p warehouse=demo-data/warehouse
"""

from pyspark.sql import Window
from pyspark.sql import functions as F

from spark_recover import Job

job = Job("demo_sales")
orders = job.source("orders", path="{data}/orders")
customers = job.source("customers", path="{data}/customers")
products = job.source("products", path="{data}/products")


@job.stage
def valid_orders(orders):
    """Orders that count: not cancelled, positive quantity."""
    return orders.where((F.col("status") != "cancelled") & (F.col("qty") > 0))


@job.stage
def order_lines(valid_orders, products):
    """Price each order line."""
    return (valid_orders.join(products, "product_id")
            .withColumn("amount", F.round(F.col("qty") * F.col("unit_price"), 2))
            .withColumn("day", F.to_date("order_ts")))


@job.stage
def customer_orders(order_lines, customers):
    """Attach the customer's country and segment."""
    return order_lines.join(customers, "customer_id")


@job.stage
def daily_revenue(customer_orders):
    return (customer_orders.groupBy("day", "country", "category")
            .agg(F.sum("amount").alias("revenue"), F.count("*").alias("orders")))


@job.stage
def customer_value(customer_orders):
    return (customer_orders.groupBy("customer_id", "country", "segment")
            .agg(F.sum("amount").alias("total"), F.count("*").alias("orders"),
                 F.min("day").alias("first_day"), F.max("day").alias("last_day")))


@job.stage
def top_customers(customer_value, params):
    """The top N customers of each country by total spend."""
    rank = Window.partitionBy("country").orderBy(F.desc("total"), F.asc("customer_id"))
    return (customer_value.withColumn("rank", F.row_number().over(rank))
            .where(F.col("rank") <= int(params.get("top_n", "10"))))


@job.stage
def country_trend(daily_revenue):
    """Per country and day: revenue, and its 7-day moving average."""
    per_day = daily_revenue.groupBy("country", "day").agg(F.sum("revenue").alias("revenue"))
    week = Window.partitionBy("country").orderBy("day").rowsBetween(-6, 0)
    return per_day.withColumn("revenue_7d_avg", F.round(F.avg("revenue").over(week), 2))


job.sink("daily_revenue", path="{warehouse}/daily_revenue", mode="append")
job.sink("customer_value", path="{warehouse}/customer_value", mode="merge", keys=["customer_id"])
job.sink("top_customers", path="{warehouse}/top_customers", mode="overwrite")

if __name__ == "__main__":
    job.main()
