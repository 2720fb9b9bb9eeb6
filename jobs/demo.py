"""The demo (`make demo`): clean run, rollback, crash in a late stage, resume, R, and the report page.

1. Generate the demo sources (2,000,000 orders, fixed seed) as Delta tables,
   once, under ``demo-data/sources``.
2. Run ``jobs/demo_sales.py`` cleanly: its time is T_t. It publishes three
   sink tables under ``demo-data/warehouse``.
3. Roll that run back: every sink table it wrote is restored (here: removed,
   since the run created them), verified, and timed.
4. Run the job again with a crash injected before its sixth stage (the process
   SIGKILLs itself, as a lost driver would).
5. Plan the resume (``spark-recover plan --from RUN``: what it would reuse,
   recompute and publish, without a JVM), then resume the crashed run: it reuses the five finished stages, recomputes the
   rest, publishes the sinks once; its time is T_f, and R = T_f / T_t.
6. Write the report of the crash and its resume (``demo-data/report.html``:
   both attempts' stages on one timeline, the sinks, R and RTO).
7. Check the published tables row by row against the clean run's outputs.

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
from collections import Counter
from pathlib import Path

from spark_recover.config import Settings
from spark_recover.failpoints import ENV as FAILPOINT_ENV
from spark_recover.storage import read_delta
from spark_recover.testing import runs_of

JOB = str(Path(__file__).with_name("demo_sales.py"))
CRASH_AT = "top_customers:before"
COUNTRIES = ["US", "DE", "FR", "GB", "JP", "BR", "IN", "CA", "AU", "ES", "IT", "NL"]


def generate(data: Path, rows: int) -> None:
    """Deterministic sources: orders (``rows``), customers (200k), products (1k)."""
    from pyspark.sql import functions as F

    from spark_recover.session import attached, get_spark

    ours = not attached()  # a session someone else made (a test's) is left running
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
    if ours:
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
    warehouse = Path(args.dir) / "warehouse"
    for folder in (root, warehouse):  # every demo starts from an empty ledger and warehouse
        shutil.rmtree(folder, ignore_errors=True)
    from spark_recover.session import resolve_delta_jars
    resolve_delta_jars()  # the runs below inherit the resolved jars
    run = ["run", JOB, "-p", f"data={data.resolve()}", "-p", f"warehouse={warehouse.resolve()}",
           "--root", str(root)]

    if _cli(*run) != 0:
        return 1
    clean = runs_of(str(root))[-1]
    if _cli("rollback", clean.run_id, "--root", str(root)) != 0:
        return 1
    crashed_code = _cli(*run, env={FAILPOINT_ENV: CRASH_AT})
    print(f"(the run died with exit code {crashed_code}: SIGKILL at {CRASH_AT})")
    crashed = runs_of(str(root))[-1]
    if _cli("plan", JOB, "--from", crashed.run_id, "--root", str(root)) != 0:
        return 1
    if _cli("resume", crashed.run_id, "--root", str(root)) != 0:
        return 1
    runs = runs_of(str(root))
    clean = next(r for r in runs if r.run_id == clean.run_id)  # re-read: now with its rollback
    resumed = next(r for r in runs if r.origin_run_id == crashed.run_id)
    page = Path(args.dir) / "report.html"  # the crash and its resume on one timeline
    if _cli("report", crashed.run_id, "--root", str(root), "--html", str(page)) != 0:
        return 1
    return _report(clean, resumed)


def _rows(uri: str, version: int | None = None) -> Counter:
    table = read_delta(uri, version=version)
    return Counter(tuple(row.values()) for row in table.to_pylist())


def _report(clean, resumed) -> int:
    m = resumed.to_json()["metrics"]
    print("\nper stage of the resume:")
    for s in resumed.stage_list():
        print(f"  {s.name:<16} {'reused' if s.reused else 'recomputed because ' + str(s.reason)}")
    print("\nsink tables after the resume, against the clean run's checkpoints (read with delta-rs):")
    ok = True
    for sink in resumed.to_json()["sinks"]:
        stage = clean.stages[sink["stage"]]
        want, got = _rows(stage.checkpoint, stage.version), _rows(sink["table"])
        duplicates = sum(max(0, n - want[row]) for row, n in got.items() if row in want)
        missing = sum(max(0, n - got[row]) for row, n in want.items())
        extra = sum(n for row, n in got.items() if row not in want)
        ok &= duplicates == missing == extra == 0
        print(f"  {Path(sink['table']).name:<16} {sink['mode']:<9} rows={sum(got.values()):>8,}  "
              f"duplicates={duplicates} missing={missing} extra={extra}")
    print(f"\nclean run      T_t = {clean.total_seconds:.1f}s  ({clean.run_id}, rolled back since)")
    print(f"resume         T_f = {resumed.total_seconds:.1f}s  ({resumed.run_id}, reused "
          f"{sum(s.reused for s in resumed.stage_list())} of {len(resumed.stages)} stages)")
    print(f"recovery ratio R = T_f / T_t = {m['recovery_ratio']}")
    rollback = clean.rollback or {}
    print(json.dumps({"clean_seconds": clean.total_seconds, "resume_seconds": resumed.total_seconds,
                      "recovery_ratio": m["recovery_ratio"], "rollback": rollback.get("metrics")}))
    return 0 if resumed.status == "succeeded" and ok else 1


if __name__ == "__main__":
    sys.exit(main())
