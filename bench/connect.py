"""The demo job over Spark Connect against local mode, side by side.

Each round runs ``jobs/demo_sales.py`` on the demo data twice, as a user would
with the CLI: once in local mode (the process starts its own driver JVM), once
as a Connect client of a server started beforehand with the same Spark
settings (the client starts no JVM). The order alternates between rounds.
Then each Connect run's sinks are rolled back through the Connect session.

Run: ``.venv/bin/python -m bench.connect --rounds 2`` (after ``make demo``, which makes the data).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spark_recover.config import load_settings
from spark_recover.ledger import Ledger
from spark_recover.session import local_confs
from spark_recover.storage import Layout
from spark_recover.testing import ConnectServer

from . import save_results

JOB = str(Path(__file__).parents[1] / "jobs" / "demo_sales.py")


def _cli(*args: str) -> float:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "spark_recover", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"spark-recover {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return round(time.monotonic() - t0, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", default="demo-data/sources")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-connect-"))
    # The server gets the very settings a local run builds its session with (conf/spark-recover.toml).
    confs = {k: v for k, v in local_confs(load_settings(), []).items()
             if k not in ("spark.jars", "spark.driver.extraJavaOptions", "spark.app.name")}
    started = time.monotonic()
    server = ConnectServer.start(work, confs=confs)
    server_seconds = round(time.monotonic() - started, 1)
    rows = []
    try:
        for i in range(args.rounds):
            modes = ["local", "connect"] if i % 2 == 0 else ["connect", "local"]
            for mode in modes:
                root = str(work / f"{mode}-{i}")
                remote = ["--remote", server.url] if mode == "connect" else []
                wall = _cli("run", JOB, "-p", f"data={args.data}", "-p", f"warehouse={root}/warehouse",
                            "--root", root, *remote)
                run = Ledger(Layout.at(root)).runs()[-1]
                row = {"round": i + 1, "mode": mode, "process_seconds": wall, "run_seconds": run.total_seconds}
                if mode == "connect":
                    row["rollback_seconds"] = _cli("rollback", run.run_id, "--root", root, *remote)
                rows.append(row)
                print(row, flush=True)
    finally:
        server.stop()

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["mode"] == mode)

    save_results("connect", {
        "job": "jobs/demo_sales.py", "data": args.data, "rounds": args.rounds, "server_start_seconds": server_seconds,
        "runs": rows,
        "median_process_seconds": {m: median(m, "process_seconds") for m in ("local", "connect")},
        "median_run_seconds": {m: median(m, "run_seconds") for m in ("local", "connect")},
        "connect_over_local_process": round(median("connect", "process_seconds") / median("local", "process_seconds"), 2),
        "connect_over_local_run": round(median("connect", "run_seconds") / median("local", "run_seconds"), 2)})


if __name__ == "__main__":
    main()
