"""A job whose last stage fails while parameter fail=yes, or returns a non-DataFrame."""

from spark_recover import Job

job = Job("failing")


@job.stage
def numbers(spark):
    return spark.range(100)


@job.stage
def checked(numbers, params):
    if params.get("fail") == "yes":
        raise ValueError("bad batch: negative totals")
    if params.get("fail") == "type":
        return 42
    return numbers.selectExpr("id * 2 AS doubled")


if __name__ == "__main__":
    job.main()
