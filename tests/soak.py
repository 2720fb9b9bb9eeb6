"""The soak: a long drill of the four-sink test job, every recovery a real `run --resume` process,
every trial's run then rolled back (most rollbacks killed midway and rerun).

    make soak              # 20 kills (what CI runs)
    make soak KILLS=100    # the 100-kill soak

Generates the test job's sources (the same 20,000 events as the suite), then
runs ``spark-recover drill tests/jobs/sink_job.py --kills N --seed S --json``
as a process of its own, with the suite's small Spark confs for every driver.
Prints the drill's text report and keeps the JSON in ``bench/results/soak.json``.
Then checks what the drill's verdict does not: the kills and rollbacks really
happened (most trials killed, not all in start-up, every run rolled back, some
rollbacks killed midway), the user's own tables were never written, and the
drill's page (``--html``) shows the clean run's four stages in order on the
driver's time axis, a kill mark per kill and every trial ok.
Exit code: the drill's (0 only if no row was lost, duplicated or extra), else 1
if a check above failed.
"""

from __future__ import annotations

import argparse
import html.parser
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from conftest import SINK_JOB, make_sources

    from spark_recover.config import Settings
    from spark_recover.display import drill_text
    from spark_recover.session import get_spark
    from spark_recover.testing import TEST_SPARK_CONFS, job_env

    work = Path(tempfile.mkdtemp(prefix="spark-recover-soak-"))
    spark = get_spark(Settings(spark=TEST_SPARK_CONFS))
    make_sources(spark, work / "sources")
    # The job's tables exist before the drill, as in production: a rollback then restores them
    # to their recovery point (not only removes what the run created).
    from spark_recover.job import load_job

    own = {"data": str(work / "sources"), "out": str(work / "out"), "day": "3"}
    assert load_job(SINK_JOB).run(own, root=str(work / "own-root"), spark=spark, echo=False).ok
    spark.stop()
    versions = _versions(work / "out")
    command = [sys.executable, "-m", "spark_recover", "drill", SINK_JOB, "-p", f"data={work / 'sources'}",
               "-p", f"out={work / 'out'}", "-p", "day=3", "--kills", str(args.kills), "--seed", str(args.seed), "--with-rollback",
               "--root", str(work / "root"), "--html", str(work / "drill.html"), "--json"]
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, env=job_env())
    seconds = time.monotonic() - started
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
        return proc.returncode or 2
    report["soak_seconds"] = round(seconds, 1)
    print(drill_text(report))
    s = report["summary"]
    print(f"soak: {args.kills} kills in {seconds / 60:.1f} minutes (exit {proc.returncode}); sink data commits "
          f"{s['sink_commits']}, {s['sink_commit_faults']} not exactly one per sink per logical run")
    out = HERE.parent / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=2))
    problems = ([] if _versions(work / "out") == versions else ["the drill wrote the user's own tables"]) \
        + _drill_problems(report) + _page_problems(report, (work / "drill.html").read_text())
    for problem in problems:
        print(f"soak: FAILED: {problem}", file=sys.stderr)
    return proc.returncode or (1 if problems else 0)


def _versions(out: Path) -> dict[str, int]:
    import deltalake
    from conftest import TABLES

    return {t: deltalake.DeltaTable(str(out / t)).version() for t in TABLES}


class _Elements(html.parser.HTMLParser):
    """Every element's attributes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.found.append(dict(attrs))


def _drill_problems(report: dict) -> list[str]:
    """What the verdict does not check: that the kills and rollbacks the soak is for really happened."""
    s, trials = report["summary"], report["trials"]
    hit = {t["hit"].split()[0] for t in trials if t["kill_at"] is not None}
    checks = {
        f"only {s['kills']} of {s['trials']} trials killed (a kill may miss a run that ended early)":
            s["kills"] >= s["trials"] // 2,
        "every kill landed in start-up": len(trials) < 5 or bool(hit - {"start-up"}),
        f"{s.get('rollbacks')} rollbacks for {s['trials']} trials": s.get("rollbacks") == s["trials"],
        f"{s.get('rollback_kills')} rollbacks killed midway": s.get("rollback_kills", 0) >= s["trials"] // 5,
        "a rollback took other than one attempt, plus one if it was killed": all(
            t["rollback_attempts"] == 1 + (t["rollback_kill_at"] is not None) for t in trials),
    }
    return [f"drill: {said}" for said, ok in checks.items() if not ok]


def _page_problems(report: dict, text: str) -> list[str]:
    """What is wrong with the drill's page: its stage bars, kill marks and trials against the report."""
    page = _Elements()
    page.feed(text)
    stages = [e["data-stage"] for e in page.found if e.get("class") == "bar"]
    kills = [float(e["data-kill"]) for e in page.found if e.get("class") == "kill"]
    oks = [e["data-ok"] for e in page.found if "data-trial" in e]
    timeline = report["clean_timeline"]
    checks = {
        f"stage bars {stages}": stages == ["daily", "day_slice", "store_totals", "region_totals"],
        "kill marks differ from the trials' kills": kills == [t["kill_at"] for t in report["trials"]
                                                              if t["kill_at"] is not None],
        f"trials marked {oks}": oks == ["true"] * len(report["trials"]),
        "the clean run's stages overlap or start at 0 (the JVM's start-up comes first)": bool(timeline)
        and timeline[0]["start"] > 0 and all(a["start"] + a["seconds"] <= b["start"] + 1e-3 for a, b in zip(timeline, timeline[1:])),
    }
    return [f"drill page: {said}" for said, ok in checks.items() if not ok]


if __name__ == "__main__":
    sys.exit(main())
