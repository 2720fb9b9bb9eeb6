"""History at scale: what a run's bookkeeping, ``show``, ``runs`` and one append cost as the ledger grows.

    .venv/bin/python -m bench.history                  # 10, 1k, 10k and 100k runs
    .venv/bin/python -m bench.history --sizes 10 10000 --e2e

A real tiny two-stage job runs once (``spark-recover run``, a real JVM); its
events are the template. Each size's ledger holds that many finished runs of
the job with other parameters, built from the template in bulk (as the
ledger's own compaction leaves it: rewritten in key order), then 200
single-event commits (what heartbeats and runs write). Measured, JVM-free, in
this process (median of 9):

- run-start bookkeeping: what ``run`` does before its session starts (the
  replay choice, the rerun guard, the lease claim, reading its own record) and
  the lease check before a sink, on a new ``Ledger`` as a new process would;
- an S3 sink's table lease (who else writes the table, then its commit);
- ``show`` (one run and its logical run), ``runs`` (the default page), one append;
- ``spark-recover show RUN`` and ``spark-recover runs`` as commands (a process each, median of 3);
- the ``_delta_log`` file count;
- ``gc --dry-run`` over a checkpoint table per stage of each run (up to 10k runs).

``--e2e`` also runs the real job end to end on a fresh root and on the 10k root,
side by side. Results: ``bench/results/history.json``, ``history.md`` and ``history.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import deltalake
import pyarrow as pa

from spark_recover import lease
from spark_recover.job import Job
from spark_recover.ledger import SCHEMA, Ledger
from spark_recover.display import run_text
from spark_recover.rerun import params_key, plain_rerun_refusal
from spark_recover.retention import RECOVERY_WINDOW_DAYS, gc
from spark_recover.runner import replay_choice
from spark_recover.storage import Layout

RESULTS = Path(__file__).parent / "results"
JOB = '''from spark_recover import Job

job = Job("tiny")


@job.stage
def numbers(spark, params):
    return spark.range(int(params.get("n", "100"))).selectExpr("id", "id % 7 AS k")


@job.stage
def totals(numbers):
    return numbers.groupBy("k").count()
'''
SINGLE_COMMITS = 200
GC_UP_TO = 10_000  # gc is measured up to this many runs (a table per stage of each)


def _cli(*args: str, env: dict | None = None) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "spark_recover.cli", *args], check=True, capture_output=True,
                   env={**os.environ, **(env or {})})
    return time.monotonic() - started


def _template(work: Path) -> list[dict]:
    job_file = work / "tiny.py"
    job_file.write_text(JOB)
    _cli("run", str(job_file), "--root", str(work / "seed"), "--param", "day=seed")
    return Ledger(Layout.at(str(work / "seed"))).events(Ledger(Layout.at(str(work / "seed"))).runs()[0].run_id)


def build(root: Path, template: list[dict], runs: int) -> Ledger:
    """A ledger of ``runs`` finished runs of the template's job with other parameters, in bulk."""
    ledger = Ledger(Layout.at(str(root)))
    ledger.append("bench-create", "bench", "point_created", detail={"name": "bench", "tables": {}})
    columns = {name: [] for name in SCHEMA.names}
    version = 1
    for n in range(runs):
        run_id = f"20260101T000000Z-{n:016x}"
        key = params_key({"day": f"d{n}"})
        for ev in template:
            row = {**ev, "run_id": run_id, "params_key": key, "logical_run_id": run_id, "ledger_version": version}
            if ev["event"] == "run_started":
                detail = json.loads(ev["detail"])
                row["detail"] = json.dumps({**detail, "params": {"day": f"d{n}"}, "params_key": key})
            for name in SCHEMA.names:
                columns[name].append(row.get(name))
            version += 1
    table = pa.table(columns, schema=SCHEMA)
    deltalake.write_deltalake(ledger.uri, table, mode="append")
    ledger._rewrite(ledger.layout.delta(ledger.uri), attempts=1)  # as compaction leaves a grown ledger
    for n in range(SINGLE_COMMITS):
        ledger.append(f"20260101T000000Z-{n % max(runs, 1):016x}", "tiny", "heartbeat")
    ledger.compact()  # what the next run's end does
    return ledger


def _median(call, times: int = 9) -> float:
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def _run_start(root: Path, n: int) -> None:
    """What ``run`` reads and writes before its session starts, then its lease check before a sink."""
    ledger = Ledger(Layout.at(str(root)))
    params = {"day": f"bench-{n}-{time.monotonic_ns()}"}
    key = params_key(params)
    replay_choice(ledger, Job("tiny"), params)
    plain_rerun_refusal(ledger.runs("tiny", params_key=key), key, None)
    run_id = f"20261129T000000Z-{time.monotonic_ns() % 2**64:016x}"
    claim = lease.claim(ledger, "tiny", key, run_id, {"params": params, "params_key": key, "stages": [],
                                                      "process": {"host": "bench", "pid": 1}})
    ledger.run(run_id)
    claim.check()
    ledger.append(run_id, "tiny", "run_finished", status="succeeded", seconds=0.1)


def _sink_lease(root: Path, n: int) -> None:
    """An S3 sink's table lease (``lease.take_table``): who else writes the table, then the ``sink_planned`` commit."""
    ledger, table = Ledger(Layout.at(str(root))), "s3a://bench/daily"
    run_id = f"20261129T000001Z-{n:016x}"
    lease.take_table(ledger, run_id, table, lambda at: ledger.append(
        run_id, "tiny", "sink_planned", stage="totals", only_at=at, detail={"table": table}), wait_seconds=0)
    ledger.append(run_id, "tiny", "run_finished", status="succeeded", seconds=0.1)


def measure(ledger: Ledger, root: Path, runs: int) -> dict:
    shown = f"20260101T000000Z-{(runs // 2):016x}"
    counter = iter(range(10**6))
    out = {
        "run_start_s": _median(lambda: _run_start(root, next(counter))),
        "show_s": _median(lambda: run_text(Ledger(Layout.at(str(root))).run(shown))),
        "runs_page_s": _median(lambda: Ledger(Layout.at(str(root))).page(limit=50)),
        "append_s": _median(lambda: ledger.append(shown, "tiny", "heartbeat")),
        "sink_lease_s": _median(lambda: _sink_lease(root, next(counter))),
        # The commands as a user types them (what the issue measured): a process each, imports included.
        "show_cli_s": _median(lambda: _cli("show", shown, "--root", str(root)), 3),
        "runs_cli_s": _median(lambda: _cli("runs", "--root", str(root)), 3),
    }
    out["delta_log_files"] = len(os.listdir(Path(ledger.uri) / "_delta_log"))
    out["data_files"] = len(ledger.layout.delta(ledger.uri).file_uris())
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def measure_gc(root: Path, runs: int, seed: Path) -> dict:
    """``gc --dry-run`` over a checkpoint table per stage of each run (copies of the template's tables)."""
    template = next((seed / "checkpoints").glob("*/*/*"))  # <job>/<key>/<run id>: its stages' tables
    started = time.monotonic()
    for n in range(runs):
        shutil.copytree(template, root / "checkpoints" / "tiny" / params_key({"day": f"d{n}"}) / f"run{n}")
    copied = time.monotonic() - started
    tables = runs * len(list(template.iterdir()))
    report = {}
    seconds = _median(lambda: report.update(gc(RECOVERY_WINDOW_DAYS, root=str(root), dry_run=True, echo=False)), 3)
    assert len(report["deleted_tables"]) == tables, (len(report["deleted_tables"]), tables)
    return {"gc_tables": tables, "gc_dry_run_s": round(seconds, 3), "gc_setup_s": round(copied, 1)}


def _e2e(work: Path, grown: Path) -> dict:
    fresh, times = work / "fresh", {"fresh": [], "grown": []}
    for n in range(3):  # side by side, interleaved
        times["fresh"].append(_cli("run", str(work / "tiny.py"), "--root", str(fresh), "--param", f"day=e{n}"))
        times["grown"].append(_cli("run", str(work / "tiny.py"), "--root", str(grown), "--param", f"day=e{n}"))
    med = {k: round(statistics.median(v), 2) for k, v in times.items()}
    return {**med, "extra_s": round(med["grown"] - med["fresh"], 2)}


def markdown(results: dict) -> str:
    lines = ["| runs in the ledger | run-start bookkeeping (s) | `show` (s) | `runs` page (s) | one append (s) "
             "| S3 sink lease (s) | command `show` (s) | command `runs` (s) | `_delta_log` files | data files |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for size, r in results["sizes"].items():
        lines.append(f"| {int(size):,} | {r['run_start_s']:.3f} | {r['show_s']:.3f} | {r['runs_page_s']:.3f} "
                     f"| {r['append_s']:.3f} | {r['sink_lease_s']:.3f} | {r['show_cli_s']:.2f} | {r['runs_cli_s']:.2f} "
                     f"| {r['delta_log_files']} | {r['data_files']} |")
    gcs = {size: r for size, r in results["sizes"].items() if "gc_dry_run_s" in r}
    if gcs:
        lines += ["", "`gc --dry-run` over a checkpoint table per stage of every run: " + "; ".join(
            f"{r['gc_tables']:,} tables in {r['gc_dry_run_s']:.2f} s" for r in gcs.values()) + "."]
    sizes = list(results["sizes"])
    for size in sizes[1:]:
        first, this = results["sizes"][sizes[0]], results["sizes"][size]
        lines += ["", f"At {int(size):,} runs against {int(sizes[0]):,}: run start "
                  f"{this['run_start_s'] / first['run_start_s']:.2f}x, show {this['show_s'] / first['show_s']:.2f}x, "
                  f"append {this['append_s'] / first['append_s']:.2f}x, runs page "
                  f"{this['runs_page_s'] / first['runs_page_s']:.2f}x, S3 sink lease "
                  f"{this['sink_lease_s'] / first['sink_lease_s']:.2f}x; the commands: show "
                  f"{this['show_cli_s'] / first['show_cli_s']:.2f}x, runs {this['runs_cli_s'] / first['runs_cli_s']:.2f}x."]
    if "e2e" in results:
        e = results["e2e"]
        lines += ["", f"End to end, the tiny job's `spark-recover run` (median of 3, interleaved): {e['fresh']} s on a "
                  f"fresh root, {e['grown']} s on the root with {e['runs']:,} runs: {e['extra_s']:+.2f} s."]
    return "\n".join(lines) + "\n"


def chart(results: dict) -> None:
    """``history.png``: each measure against the runs in the ledger (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(size) for size in results["sizes"]]
    fig, ax = plt.subplots(figsize=(8, 4))
    for key, label in (("run_start_s", "run-start bookkeeping"), ("show_s", "show"), ("runs_page_s", "runs (page)"),
                       ("append_s", "one append"), ("sink_lease_s", "S3 sink lease")):
        ax.plot(sizes, [r[key] for r in results["sizes"].values()], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("runs in the ledger")
    ax.set_ylabel("seconds (median of 9)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("Ledger cost against history")
    fig.tight_layout()
    fig.savefig(RESULTS / "history.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10_000, 100_000])
    parser.add_argument("--e2e", action="store_true", help="also time the real job on a fresh and a 10k root")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-history-"))
    try:
        template = _template(work)
        results: dict = {"template_events": len(template), "single_commits": SINGLE_COMMITS, "sizes": {}}
        for size in args.sizes:
            root = work / f"root-{size}"
            started = time.monotonic()
            ledger = build(root, template, size)
            results["sizes"][str(size)] = {**measure(ledger, root, size),
                                           "build_s": round(time.monotonic() - started, 1)}
            if size <= GC_UP_TO:
                results["sizes"][str(size)].update(measure_gc(root, size, work / "seed"))
            print(size, results["sizes"][str(size)], flush=True)
            if args.e2e and size == 10_000:
                results["e2e"] = {**_e2e(work, root), "runs": size}
                print("e2e", results["e2e"], flush=True)
            if size != 10_000:
                shutil.rmtree(root)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "history.json").write_text(json.dumps(results, indent=2))
        (RESULTS / "history.md").write_text(markdown(results))
        chart(results)
        print(markdown(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
