"""The demo (`make demo`): a clean run, a crash in a late stage, a resume, and R.

1. Generate the demo sources (2,000,000 orders, fixed seed) as Delta tables,
   once, under ``demo-data/sources``.
2. Run ``jobs/demo_sales.py`` cleanly: its time is T_t.
3. Run it again with a crash injected before its sixth stage (the process
   SIGKILLs itself, as a lost driver would).
4. Resume the crashed run: the resume reuses the five finished stages and
   recomputes the rest; its time is T_f, and R = T_f / T_t.

Every step goes through the ``spark-recover`` CLI, in its own process, as a
user would run it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from spark_recover.config import Settings
from spark_recover.failpoints import ENV as FAILPOINT_ENV
from spark_recover.testing import runs_of

JOB = str(Path(__file__).with_name("demo_sales.py"))
CRASH_AT = "top_customers:before"
COUNTRIES = ["US", "DE", "FR", "GB", "JP", "BR", "IN", "CA", "AU", "ES", "IT", "NL"]


def generate(data: Path, rows: int) -> None:
    """Deterministic sources: orders (``rows``), customers (200k), products (1k)."""
    from pyspark.sql import functions as F

    from spark_recover.session import get_spark

    spark = get_spark(Settings(spark={"spark.master": "local[2]", "spark.sql.shuffle.partitions": "4",
                                      "spark.driver.memory": "2g"}))

    def h(col: str, seed: int, mod: int):
        return F.pmod(F.xxhash64(F.col(col), F.lit(seed)), F.lit(mod))

    countries = F.array(*[F.lit(c) for c in COUNTRIES])
    (spark.range(rows).select(
        F.col("id").alias("order_id"), h("id", 1, 200_000).alias("customer_id"),
        h("id", 2, 1_000).alias("product_id"), h("id", 3, 5).cast("int").alias("qty"),
        F.when(h("id", 4, 20) == 0, "cancelled").otherwise("complete").alias("status"),
        (F.lit("2026-01-01").cast("timestamp") + F.make_interval(secs=h("id", 5, 180 * 86400)))
        .alias("order_ts"))
     .write.format("delta").mode("overwrite").save(str(data / "orders")))
    (spark.range(200_000).select(
        F.col("id").alias("customer_id"),
        F.element_at(countries, (h("id", 6, len(COUNTRIES)) + 1).cast("int")).alias("country"),
        F.element_at(F.array(F.lit("consumer"), F.lit("business"), F.lit("public")),
                     (h("id", 7, 3) + 1).cast("int")).alias("segment"))
     .write.format("delta").mode("overwrite").save(str(data / "customers")))
    (spark.range(1_000).select(
        F.col("id").alias("product_id"),
        F.concat(F.lit("category-"), h("id", 8, 8).cast("string")).alias("category"),
        F.round(1 + h("id", 9, 10_000) / 100.0, 2).alias("unit_price"))
     .write.format("delta").mode("overwrite").save(str(data / "products")))
    spark.stop()
    (data / "ROWS").write_text(str(rows))


def _cli(*args: str, env: dict[str, str] | None = None) -> int:
    print(f"\n$ spark-recover {' '.join(args)}" + (f"   # with {env}" if env else ""), flush=True)
    return subprocess.run([sys.executable, "-m", "spark_recover", *args],
                          env={**os.environ, **(env or {})}).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dir", default="demo-data")
    args = parser.parse_args(argv)
    data, root = Path(args.dir) / "sources", Path(args.dir) / "recover"
    marker = data / "ROWS"
    if not marker.is_file() or marker.read_text() != str(args.rows):
        print(f"generating {args.rows:,} orders under {data} ...", flush=True)
        shutil.rmtree(data, ignore_errors=True)
        generate(data, args.rows)
    shutil.rmtree(root, ignore_errors=True)  # every demo starts from an empty ledger
    from spark_recover.session import resolve_delta_jars
    resolve_delta_jars()  # the three runs below inherit the resolved jars
    run = ["run", JOB, "-p", f"data={data.resolve()}", "--root", str(root)]

    if _cli(*run) != 0:
        return 1
    crashed_code = _cli(*run, env={FAILPOINT_ENV: CRASH_AT})
    print(f"(the run died with exit code {crashed_code}: SIGKILL at {CRASH_AT})")
    clean, crashed = runs_of(str(root))[-2:]
    if _cli("resume", crashed.run_id, "--root", str(root)) != 0:
        return 1
    resumed = runs_of(str(root))[-1]
    m = resumed.to_json()["metrics"]
    reused = [s.name for s in resumed.stage_list() if s.reused]
    print("\nper stage:")
    for s in resumed.stage_list():
        print(f"  {s.name:<16} {'reused' if s.reused else 'recomputed because ' + str(s.reason)}")
    print(f"\nclean run      T_t = {clean.total_seconds:.1f}s  ({clean.run_id})")
    print(f"resume         T_f = {resumed.total_seconds:.1f}s  ({resumed.run_id}, reused {len(reused)} "
          f"of {len(resumed.stages)} stages)")
    print(f"recovery ratio R = T_f / T_t = {m['recovery_ratio']}")
    print(json.dumps({"clean_seconds": clean.total_seconds, "resume_seconds": resumed.total_seconds,
                      "recovery_ratio": m["recovery_ratio"]}))
    return 0 if resumed.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
