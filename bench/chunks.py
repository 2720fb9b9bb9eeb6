"""Chunked stages: what chunking costs on a clean run, and what a kill during the last chunk costs a resume.

    .venv/bin/python -m bench.chunks                     # 2M and 4M events, 10 chunks
    .venv/bin/python -m bench.chunks --rows 1000000 --reps 1

1. **Clean runs**, in one warm JVM, interleaved: the heavy stage of ``bench/chunk_job.py``
   as one stage (``whole``) and as 10 chunks (``chunked``); the stage's seconds from each
   run's record (its compute, checkpoint writes and bookkeeping), median of ``--reps``.
2. **A kill during the last chunk**, real processes: ``spark-recover run`` of the chunked
   job is SIGKILLed half a chunk into its last chunk, then ``run --resume`` runs as a
   process of its own. Its stage seconds (reusing 9 chunks, computing 1) against one
   chunk's compute, and against the whole stage (what a resume recomputes without chunks).

Results: ``bench/results/chunks.json``, ``chunks.md`` and the README's section on chunked stages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from pyspark.sql import functions as F

RESULTS = Path(__file__).parent / "results"
README = Path(__file__).parents[1] / "README.md"
MARKERS = ("<!-- chunks:start -->", "<!-- chunks:end -->")
JOB_FILE = str(Path(__file__).with_name("chunk_job.py"))
CHUNKS = 10


def make_events(spark, data: Path, rows: int) -> None:
    """``rows`` events in 10 buckets, 50,000 keys, 1,000 items (deterministic), partitioned by bucket: a
    chunk reads its own files, as a stage chunked by day reads a table laid out by day."""
    (spark.range(rows).select((F.col("id") % CHUNKS).alias("bucket"), (F.col("id") * 7919 % 50_000).alias("key"),
                              (F.col("id") * 104_729 % 1_000).alias("item"), (F.col("id") % 997 / 10.0).alias("amount"))
     .write.format("delta").partitionBy("bucket").mode("overwrite").save(str(data / "events")))


def _whole_job():
    """The same work as one stage (the chunked job's ``work`` over every bucket at once)."""
    from spark_recover import Job
    from spark_recover.job import load_job

    chunked = load_job(JOB_FILE)
    work = chunked.stages[0].func.__globals__["work"]
    whole = Job("bench_whole")
    whole.source("events", path="{data}/events")

    @whole.stage
    def heavy(events, params):
        return work(events, int(params.get("rounds", "64")))

    whole.sink("heavy", path="{out}/heavy", mode="overwrite")
    return whole, chunked


def clean_runs(spark, data: Path, work: Path, reps: int, rounds: int) -> dict:
    whole, chunked = _whole_job()
    jobs = {"whole": whole, "chunked": chunked}
    seconds: dict[str, list[float]] = {k: [] for k in jobs}
    chunk_seconds: list[float] = []
    for rep in range(reps):
        for name, job in jobs.items():  # interleaved: drift hits both alike
            result = job.run({"data": str(data), "out": str(work / f"out-{name}-{rep}"), "rounds": str(rounds)},
                             root=str(work / f"root-{name}-{rep}"), spark=spark, echo=False)
            assert result.ok, result.error
            stage = result.record.stages["heavy"]
            seconds[name].append(stage.seconds)
            if name == "chunked":
                chunk_seconds += [c["seconds"] for c in stage.output]
    med = {k: statistics.median(v) for k, v in seconds.items()}
    return {"whole_s": round(med["whole"], 3), "chunked_s": round(med["chunked"], 3),
            "chunk_s": round(statistics.median(chunk_seconds), 3),
            "chunked_over_whole": round(med["chunked"] / med["whole"], 3), "reps": reps,
            "all_s": {k: [round(x, 3) for x in v] for k, v in seconds.items()}}


def kill_in_last_chunk(data: Path, work: Path, chunk_s: float, whole_s: float, rounds: int) -> dict:
    from spark_recover.ledger import Ledger
    from spark_recover.storage import Layout
    from spark_recover.testing import kill_during, run_args, run_cli

    root = str(work / "kill-root")
    params = {"data": str(data), "out": str(work / "kill-out"), "rounds": str(rounds)}
    killed = kill_during(JOB_FILE, root=root, params=params, delay=chunk_s / 2,
                         when=lambda run: len(run.stages["heavy"].chunks) >= CHUNKS - 1)
    assert killed.killed, killed.stderr[-2000:]
    started = time.monotonic()
    resumed = run_cli(*run_args(JOB_FILE, root, params, ["--resume"]))
    process_s = time.monotonic() - started
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ledger = Ledger(Layout.at(root))
    stage = ledger.run(resumed.run_id).stages["heavy"]
    reused = sum(c["reused"] for c in stage.output)
    computed = [c["seconds"] for c in stage.output if not c["reused"]]
    # The killed driver's chunks, in a fresh JVM as the resume's: its first is the cold one, as the resume's is.
    before = [c["seconds"] for c in ledger.run(killed.run_id).stages["heavy"].chunks.values()]
    return {"chunks_reused": reused, "chunks_computed": len(computed), "resume_stage_s": stage.seconds,
            "resume_compute_s": round(sum(computed), 3), "resume_process_s": round(process_s, 3),
            "first_chunk_fresh_process_s": before[0], "chunk_fresh_process_s": round(statistics.median(before), 3),
            "resume_compute_over_first_chunk": round(sum(computed) / before[0], 3),
            "resume_stage_over_whole_stage": round(stage.seconds / whole_s, 3),
            "fixed_s": round(stage.seconds - sum(computed), 3)}


def targets(results: dict) -> list[str]:
    """Issue 28's targets, each against this run (the largest size)."""
    c, k = results["sizes"][-1]["clean"], results["sizes"][-1]["kill"]
    rows = [("chunking, clean run: 10 chunks / one stage", "at most 1.2x", f"{c['chunked_over_whole']}x",
             c["chunked_over_whole"] <= 1.2),
            ("a kill in the last chunk: the resume's compute / one chunk's (each the first in a fresh driver)",
             f"at most 1.3x, plus the fixed cost ({k['fixed_s']:.2f} s to check and reuse the 9 chunks)",
             f"{k['resume_compute_over_first_chunk']}x", k["resume_compute_over_first_chunk"] <= 1.3),
            ("for scale: the resumed stage / the whole unchunked stage in a warm driver", "none (without chunks a "
             "resume recomputes all of it, cold)", f"{k['resume_stage_over_whole_stage']}x", None)]
    met = {True: "yes", False: "**no**", None: "-"}
    return ["| what | target | measured | met |", "|---|---|---|---|",
            *[f"| {what} | {target} | {got} | {met[ok]} |" for what, target, got, ok in rows]]


def markdown(results: dict) -> str:
    lines = [f"Measured {results['date']} on this machine (2 cores) by `python -m bench.chunks`: the heavy stage "
             f"of `bench/chunk_job.py` ({results['rounds']} chained SHA-256 per row, then a group-by), seconds from "
             f"each run's record, median of {results['sizes'][0]['clean']['reps']} interleaved clean runs per way.", "",
             *targets(results), "",
             "| events | one stage | 10 chunks | chunked / one stage | one chunk (warm) | resume after a kill in the "
             "last chunk: its stage | its compute | first chunk of a fresh driver | vs the whole stage |",
             "|---|---|---|---|---|---|---|---|---|"]
    for size in results["sizes"]:
        c, k = size["clean"], size["kill"]
        lines.append(f"| {size['rows']:,} | {c['whole_s']:.2f} | {c['chunked_s']:.2f} | {c['chunked_over_whole']}x "
                     f"| {c['chunk_s']:.2f} | {k['resume_stage_s']:.2f} ({k['chunks_reused']} reused, "
                     f"{k['chunks_computed']} computed) | {k['resume_compute_s']:.2f} | "
                     f"{k['first_chunk_fresh_process_s']:.2f} | {k['resume_stage_over_whole_stage']}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[2_000_000, 4_000_000])
    parser.add_argument("--rounds", type=int, default=64, help="chained SHA-256 per row: the work per row")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args(argv)
    from spark_recover.config import Settings
    from spark_recover.session import get_spark
    from spark_recover.testing import TEST_SPARK_CONFS

    import datetime as dt

    confs = {**TEST_SPARK_CONFS, "spark.driver.memory": "4g"}
    # The driver processes of the kill get the same confs, and the JVM's full JIT (the tests' conf file
    # stops at C1, which starts a short job faster but runs this CPU-bound work several times slower).
    conf_file = Path(tempfile.mkdtemp(prefix="bench-chunks-conf-")) / "spark-recover.toml"
    conf_file.write_text("[spark]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in confs.items()))
    os.environ["SPARK_RECOVER_CONF"] = str(conf_file)
    spark = get_spark(Settings(spark=confs))
    sizes = []
    for rows in args.rows:
        work = Path(tempfile.mkdtemp(prefix=f"bench-chunks-{rows}-"))
        make_events(spark, work / "data", rows)
        clean = clean_runs(spark, work / "data", work, args.reps, args.rounds)
        print(f"{rows:,} events, clean: {json.dumps(clean)}", flush=True)
        kill = kill_in_last_chunk(work / "data", work, clean["chunk_s"], clean["whole_s"], args.rounds)
        print(f"{rows:,} events, kill in the last chunk: {json.dumps(kill)}", flush=True)
        sizes.append({"rows": rows, "clean": clean, "kill": kill})
    results = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "rounds": args.rounds,
               "sizes": sizes}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "chunks.json").write_text(json.dumps(results, indent=2))
    (RESULTS / "chunks.md").write_text(markdown(results) + "\n")
    write_readme(results)
    print(markdown(results))
    return 0


def write_readme(results: dict) -> None:
    """The README's figures of chunked stages: this run's."""
    readme = README.read_text()
    if all(m in readme for m in MARKERS):
        head, rest = readme.split(MARKERS[0], 1)
        README.write_text(f"{head}{MARKERS[0]}\n{markdown(results)}\n{MARKERS[1]}{rest.split(MARKERS[1], 1)[1]}")


if __name__ == "__main__":
    raise SystemExit(main())
