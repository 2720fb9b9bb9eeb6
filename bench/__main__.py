"""`make bench`: every benchmark in one process, then ``bench/results/latest.json`` and ``latest.md``.

    .venv/bin/python -m bench            # the default sizes (about 17 minutes on 2 cores)
    .venv/bin/python -m bench --large    # 10M-row orders for the job, larger tables, 2M-row crash runs

Each part compares its ways side by side, interleaved: in this one warm JVM,
the demo job five ways (``job_modes``), one checkpoint at three sizes
(``checkpoint_cost``), rollback against table size (``rollback``) and the
per-stage bookkeeping (``overhead``); in fresh processes, a resume after a
crash before each stage against a clean run and against its floor
(``crash_stages``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
from pathlib import Path

from . import checkpoint_cost, crash_stages, job_modes, overhead, rollback

RESULTS = Path(__file__).parent / "results"
README = Path(__file__).parents[1] / "README.md"
MARKERS = ("<!-- bench:start -->", "<!-- bench:end -->")


def _machine() -> dict:
    import psutil
    import pyspark

    import deltalake

    return {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version(),
            "pyspark": pyspark.__version__, "deltalake": deltalake.__version__,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _markdown(latest: dict) -> str:
    m = latest["machine"]
    jm, ck, rb, oh = latest["job_modes"], latest["checkpoint_cost"], latest["rollback"], latest["overhead"]
    lines = [f"Measured {m['date']} on {m['cpus']} cores, {m['memory_gib']} GiB ({m['platform']}), "
             f"pyspark {m['pyspark']}, deltalake {m['deltalake']}.", "", *_targets(latest),
             f"**The demo job** ({jm['rows']:,} orders, 7 stages; seconds, median of {jm['plain']['n']} "
             "interleaved runs, min-max):", "",
             "| way | median (s) | min-max (s) |", "|---|---|---|"]
    names = {"plain": "plain Spark, no persistence", "checkpoint": "Spark `DataFrame.checkpoint()` after each stage",
             "parquet": "parquet write + re-read after each stage", "spark_recover": "spark-recover `job.run` (sinks removed)",
             "spark_recover_sinks": "spark-recover with its 3 sinks",
             "plain_delta_sinks": "for scale: the 3 sink outputs written by plain `df.write` to Delta",
             "floor": f"floor: the checkpoints' {jm['checkpoint_bytes'] / 2**20:.0f} MiB written sequentially"}
    for key, label in names.items():
        r = jm[key]
        lines.append(f"| {label} | {r['median_s']:.2f} | {r['min_s']:.2f}-{r['max_s']:.2f} |")
    ratios = jm["ratios"]
    lines += ["", f"spark-recover / parquet: **{ratios['spark_recover_over_parquet']}x**; / `checkpoint()`: "
              f"**{ratios['spark_recover_over_checkpoint']}x**; the sinks add {ratios['sinks_cost_s']:.2f} s, "
              f"{ratios['sinks_cost_over_plain_delta_writes']}x the plain Delta writes of the same data.", "",
              "**One checkpoint** (persist, read back, a downstream aggregate; seconds, median):", "",
              "| rows | spark-recover | parquet | `checkpoint()` | one table per stage (before) | vs parquet |",
              "|---|---|---|---|---|---|"]
    for size, row in ck.items():
        if isinstance(row, dict):
            lines.append(f"| {int(size):,} | {row['spark_recover']['median_s']:.3f} | {row['parquet']['median_s']:.3f} "
                         f"| {row['spark_checkpoint']['median_s']:.3f} | {row['one_table_per_stage']['median_s']:.3f} "
                         f"| {row['spark_recover_over_parquet']}x |")
    lines += ["", "**Rollback of one sink table** (1,000 rows appended, then rolled back; seconds, median):", "",
              "| rows | spark-recover rollback | engine | Spark `RESTORE TABLE` |", "|---|---|---|---|"]
    for size, row in rb.items():
        if isinstance(row, dict):
            lines.append(f"| {int(size):,} | {row['rollback_median_s']:.3f} | {row['engine']} "
                         f"| {row['spark_restore_median_s']:.2f} |")
    cs = latest["crash_stages"]
    lines += ["", f"Rollback, biggest/smallest table: {rb['ratio_biggest_over_smallest']}x.", "",
              f"**Recovery after a crash before each stage** ({cs['rows']:,} orders; every step a fresh process, "
              f"JVM start included; clean run T_t = {cs['clean']['median_s']:.1f} s, median of "
              f"{cs['clean']['n']}):", "",
              "| crash before | T_f: `run --resume` (s) | R = T_f / T_t | floor (s) | R of the floor | T_f - floor (s) |",
              "|---|---|---|---|---|---|"]
    for stage, row in cs["stages"].items():
        lines.append(f"| {row['position']}. {stage} | {row['resume']['median_s']:.1f} "
                     f"({row['resume']['min_s']:.1f}-{row['resume']['max_s']:.1f}) | {row['R']} "
                     f"| {row['floor']['median_s']:.1f} | {row['R_floor']} | {row['over_floor_s']:+.1f} |")
    lines += ["", "The floor: a fresh process that starts the same Spark, reads the outputs the resume reuses, "
              "computes only the remaining stages with plain Spark (parquet between stages) and writes the "
              "three sink outputs with plain `df.write` to new Delta tables.", "",
              "Where a resume's time goes (seconds, median; from each resume's own ledger record):", "",
              "| crash before | Python start and exit | Spark session start | computed stages | sinks, ledger, checks |",
              "|---|---|---|---|---|"]
    for stage, row in cs["stages"].items():
        b = row["breakdown_s"]
        lines.append(f"| {row['position']}. {stage} | {b['python_start_and_exit']:.1f} | {b['spark_session']:.1f} "
                     f"| {b['computed_stages']:.1f} | {b['sinks_and_bookkeeping']:.1f} |")
    lines += ["",
              f"**Bookkeeping**: {oh['bookkeeping_per_computed_stage_s'] * 1000:.0f} ms per computed stage, "
              f"{oh['bookkeeping_per_reused_stage_s'] * 1000:.0f} ms per reused stage. Its parts (median): "
              f"a ledger event {oh['ledger_append']['median_s'] * 1000:.0f} ms (two per computed stage, one per "
              f"reused), planning {oh['plan_per_stage_s'] * 1000:.1f} ms a stage, a checkpoint write of 1k rows "
              f"{oh['checkpoint_write_1k']['median_s'] * 1000:.0f} ms against "
              f"{oh['parquet_write_1k']['median_s'] * 1000:.0f} ms for parquet, its read "
              f"{oh['checkpoint_read_1k']['median_s'] * 1000:.0f} ms against "
              f"{oh['parquet_read_1k']['median_s'] * 1000:.0f} ms, the verification before a reuse "
              f"{oh['verify_checkpoint']['median_s'] * 1000:.0f} ms.", ""]
    return "\n".join(lines)


def _targets(latest: dict) -> list[str]:
    """The targets of the work that made checkpoints cheap, each against what this run measured."""
    jm, ck, rb, oh, cs = (latest[k] for k in ("job_modes", "checkpoint_cost", "rollback", "overhead", "crash_stages"))
    r = jm["ratios"]
    sizes = [s for s, row in ck.items() if isinstance(row, dict)]
    rollbacks = [row["rollback_median_s"] for row in rb.values() if isinstance(row, dict)]
    worst = max(cs["stages"].values(), key=lambda row: row["over_floor_s"])
    rows = [
        ("demo job, spark-recover / parquet", "at most 1.25x", f"{r['spark_recover_over_parquet']}x",
         r["spark_recover_over_parquet"] <= 1.25),
        ("demo job, spark-recover / `checkpoint()`", "at most 1.5x (stretch 1.0x)",
         f"{r['spark_recover_over_checkpoint']}x", r["spark_recover_over_checkpoint"] <= 1.5),
        ("sinks / plain Delta writes of the same data", "at most 1.0x", f"{r['sinks_cost_over_plain_delta_writes']}x",
         r["sinks_cost_over_plain_delta_writes"] <= 1.0),
        ("one checkpoint of 1k rows", "at most 0.35 s", f"{ck[sizes[0]]['spark_recover']['median_s']:.3f} s",
         ck[sizes[0]]["spark_recover"]["median_s"] <= 0.35),
        (f"one checkpoint of {int(sizes[-1]):,} rows / parquet", "at most 1.2x",
         f"{ck[sizes[-1]]['spark_recover_over_parquet']}x", ck[sizes[-1]]["spark_recover_over_parquet"] <= 1.2),
        ("rollback, biggest / smallest table", "at most 1.2x", f"{rb['ratio_biggest_over_smallest']}x",
         rb["ratio_biggest_over_smallest"] <= 1.2),
        ("rollback of one table", "under 0.5 s", f"{max(rollbacks):.3f} s at most", max(rollbacks) < 0.5),
        ("a resume over its floor (worst crash stage)", "at most 2 s",
         f"{worst['over_floor_s']:+.1f} s (crash before stage {worst['position']})", worst["over_floor_s"] <= 2),
        ("bookkeeping per computed stage", "at most 50 ms", f"{oh['bookkeeping_per_computed_stage_s'] * 1000:.0f} ms",
         oh["bookkeeping_per_computed_stage_s"] <= 0.05),
        ("bookkeeping per reused stage", "at most 20 ms", f"{oh['bookkeeping_per_reused_stage_s'] * 1000:.0f} ms",
         oh["bookkeeping_per_reused_stage_s"] <= 0.02),
    ]
    return ["**Targets**, each against this run:", "", "| what | target | measured | met |", "|---|---|---|---|",
            *[f"| {what} | {target} | {got} | {'yes' if ok else '**no**'} |" for what, target, got, ok in rows], ""]


def _charts(latest: dict) -> list[str]:
    """PNG charts next to latest.md: the job five ways, one checkpoint by size, rollback by size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []

    def save(fig, ax, title: str, name: str) -> None:
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(RESULTS / name, dpi=110)
        made.append(name)

    jm = latest["job_modes"]
    ways = ["plain", "checkpoint", "parquet", "spark_recover", "spark_recover_sinks", "plain_delta_sinks", "floor"]
    fig, ax = plt.subplots(figsize=(8, 4))
    medians = [jm[w]["median_s"] for w in ways]
    errors = [[m - jm[w]["min_s"] for w, m in zip(ways, medians)], [jm[w]["max_s"] - m for w, m in zip(ways, medians)]]
    ax.bar(ways, medians, yerr=errors, capsize=4, color=["#999", "#999", "#999", "#2a7", "#2a7", "#ccc", "#ccc"])
    ax.set_ylabel("seconds (median, min-max)")
    ax.tick_params(axis="x", labelrotation=20)
    save(fig, ax, f"Demo job, {jm['rows']:,} orders, 7 stages: wall time per way", "job_modes.png")

    ck = latest["checkpoint_cost"]
    sizes = [s for s, row in ck.items() if isinstance(row, dict)]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.2
    for i, way in enumerate(["spark_recover", "parquet", "spark_checkpoint", "one_table_per_stage"]):
        ax.bar([x + i * width for x in range(len(sizes))], [ck[s][way]["median_s"] for s in sizes], width, label=way)
    ax.set_xticks([x + 1.5 * width for x in range(len(sizes))], [f"{int(s):,} rows" for s in sizes])
    ax.set_ylabel("seconds (median)")
    ax.legend()
    save(fig, ax, "One checkpoint: persist, read back, a downstream aggregate", "checkpoint_cost.png")

    rb = latest["rollback"]
    sizes = [s for s, row in rb.items() if isinstance(row, dict)]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([int(s) for s in sizes], [rb[s]["rollback_median_s"] for s in sizes], "o-", label="spark-recover rollback")
    ax.plot([int(s) for s in sizes], [rb[s]["spark_restore_median_s"] for s in sizes], "s--", label="Spark RESTORE TABLE")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows in the sink table")
    ax.set_ylabel("seconds (median)")
    ax.legend()
    save(fig, ax, "Rollback of one table against its size", "rollback.png")
    cs = latest["crash_stages"]
    stages = list(cs["stages"])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(range(len(stages)), [cs["stages"][k]["R"] for k in stages], "o-", color="#2a7", label="R = T_f / T_t")
    ax.plot(range(len(stages)), [cs["stages"][k]["R_floor"] for k in stages], "s--", color="#999",
            label="floor / T_t")
    ax.set_xticks(range(len(stages)), [f"{cs['stages'][k]['position']}. {k}" for k in stages])
    ax.tick_params(axis="x", labelrotation=20)
    ax.set_ylabel("ratio to a clean run")
    ax.set_ylim(bottom=0)
    ax.legend()
    save(fig, ax, f"Recovery after a crash before each stage ({cs['rows']:,} orders)", "crash_stages.png")
    plt.close("all")
    return made


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--large", action="store_true", help="10M-row job data, bigger tables, 2M-row crash runs (slow)")
    args = parser.parse_args()
    latest = {"machine": _machine()}
    latest["job_modes"] = job_modes.main(["--rows", "10000000"] if args.large else [])
    latest["checkpoint_cost"] = checkpoint_cost.main(["--sizes", "1000,100000,2000000,10000000"] if args.large else [])
    latest["rollback"] = rollback.main(["--sizes", "100000,1000000,10000000,50000000"] if args.large else [])
    latest["overhead"] = overhead.main()
    latest["crash_stages"] = crash_stages.main(["--rows", "2000000"] if args.large else [])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(latest, indent=2))
    charts = _charts(latest)
    text = _markdown(latest) + "\n" + "\n".join(f"![{c[:-4]}]({c})" for c in charts) + "\n"
    (RESULTS / "latest.md").write_text(text)
    _into_readme(text)
    print(text)


def _into_readme(text: str) -> None:
    """Put the results between the README's bench markers, the charts linked from there."""
    readme = README.read_text()
    start, end = readme.index(MARKERS[0]) + len(MARKERS[0]), readme.index(MARKERS[1])
    linked = text.replace("](", "](bench/results/")
    README.write_text(readme[:start] + "\n" + linked + readme[end:])


if __name__ == "__main__":
    main()
