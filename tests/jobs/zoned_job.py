"""A job whose first stage's output depends on the session time zone: instants rendered as local text."""

from pyspark.sql import functions as F

from spark_recover import Job

job = Job("zoned")


@job.stage
def stamped(spark):
    return spark.range(48).select("id", F.from_unixtime(F.col("id") * 3600).alias("local_time"))


@job.stage
def report(stamped):
    return stamped.where(F.col("id") % 2 == 0)


if __name__ == "__main__":
    job.main()
