"""Recovery drills: rehearse recovery on your own job, with real kills, checked row by row.

A drill runs the job once cleanly, then, trial after trial, starts it as a
driver process and ``SIGKILL``s the whole process group (Python driver and
JVM) at a random moment, seeded and uniform over the clean run's duration,
sink writes included. It recovers as an operator would (``run --resume``,
repeated until it succeeds; in some trials the first recovery is killed too),
retries once more after success as a scheduler would, and compares every sink
table with the clean run's, row for row (a multiset: duplicated, missing and
extra rows).

Nothing touches the user's tables: every path sink is redirected under the
drill's own folder (``<root>/drills/<id>/sinks``), which starts each trial as
a copy of the sink tables' current state. Each trial has its own root.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

from .config import Settings, load_settings
from .errors import UsageError
from .failpoints import ENV as FAILPOINT_ENV
from .job import Job, load_job
from .ledger import Ledger, RunRecord
from .publication import redirected, resolve_sinks
from .storage import Layout, read_delta

__all__ = ["Trial", "drill", "drill_text", "SECOND_KILL_SHARE"]

SECOND_KILL_SHARE = 0.3  # the share of trials whose first recovery is killed too
_MAX_RECOVERIES = 6


@dataclass
class Trial:
    """One kill, its recovery, and what the sink tables hold afterwards."""

    number: int
    seed: int
    kill_at: float | None  # seconds after the driver started; None: it finished before
    hit: str  # what the driver was doing when it died
    resumes: int
    second_kill: bool
    recovery_seconds: float
    recovery_ratio: float | None
    duplicates: int = 0
    missing: int = 0
    extra: int = 0
    retry_wrote: bool = False  # the scheduler's retry after success changed a sink
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not (self.duplicates or self.missing or self.extra or self.retry_wrote)


def _freeze(value: Any) -> Any:
    """A hashable row value. Doubles keep 12 significant digits: a sum of doubles recomputed
    with its rows in another order differs in its last bits, and that is not a lost row."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _hit(record: RunRecord | None, names: Mapping[str, str]) -> str:
    """What a killed run was doing, from its ledger record (sinks by the user's table names)."""
    if record is None:
        return "start-up (no run recorded yet)"
    planned = [t for t, s in record.sinks.items() if s.get("status") == "planned"]
    if planned:
        return f"sink {names.get(planned[-1], planned[-1]).rstrip('/').rsplit('/', 1)[-1]}"
    running = [s.name for s in record.stages.values() if s.status == "running"]
    if running:
        return f"stage {running[0]}"
    if record.finished:
        return "after the run finished"
    done = [s.name for s in record.stages.values() if s.status == "succeeded"]
    if record.sinks:
        return "between sinks"
    return f"after stage {done[-1]}" if done else "start-up (before the first stage)"


class _Drill:
    """The scratch area, the driver processes, and the comparisons of one drill."""

    def __init__(self, job_file: str, job: Job, params: Mapping[str, str], settings: Settings,
                 env: Mapping[str, str] | None, say: Callable[[str], None]) -> None:
        from .session import resolve_delta_jars

        self.job_file, self.job, self.params, self.settings, self.say = job_file, job, dict(params), settings, say
        stamp = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{os.getpid()}"
        user = Layout.at(settings.root, settings.storage_options)
        self.base = f"{user.root}/drills/{stamp}"
        self.store = Layout.at(self.base, settings.storage_options)
        self.sink_root = f"{self.base}/sinks"
        self.tables = {t.table: redirected(self.sink_root, t.table) for t in resolve_sinks(job, params, user)}
        resolve_delta_jars()  # once: every driver process inherits the jars
        self.env = {**os.environ, **(env or {}), "SPARK_RECOVER_SINK_ROOT": self.sink_root}
        self.env.pop(FAILPOINT_ENV, None)
        self.initial = {}
        for table, scratch in self.tables.items():  # the sink tables' current state, copied once
            if self.store.is_delta(table):
                self.initial[scratch] = f"{self.base}/initial/{scratch.rsplit('/', 1)[-1]}"
                self.store.copy_tree(table, self.initial[scratch])

    def reset(self) -> None:
        """Every scratch sink table back to the copy of the real one."""
        if self.store.entries(self.sink_root) is not None:
            self.store.delete_tree(self.sink_root)
        for scratch, copy in self.initial.items():
            self.store.copy_tree(copy, scratch)

    def start(self, root: str, resume: bool) -> subprocess.Popen:
        command = [sys.executable, "-m", "spark_recover", "run", self.job_file, "--root", root]
        for key, value in self.params.items():
            command += ["-p", f"{key}={value}"]
        if self.settings.conf_file:
            command += ["--conf", self.settings.conf_file]
        command += ["--resume"] if resume else []
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env, start_new_session=True)

    @staticmethod
    def finish(proc: subprocess.Popen, kill_at: float | None = None, started: float = 0.0) -> tuple[int, str, bool]:
        """Wait for a driver, SIGKILLing its process group at ``kill_at`` seconds; (code, stderr, killed)."""
        killed = False
        if kill_at is not None:
            try:
                proc.wait(timeout=max(0.0, started + kill_at - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
        _, err = proc.communicate()
        return proc.returncode, err, killed

    def contents(self) -> dict[str, Counter]:
        out = {}
        for table, scratch in self.tables.items():
            rows = read_delta(scratch, storage_options=self.settings.storage_options).to_pylist() \
                if self.store.is_delta(scratch) else []
            out[table] = Counter(_freeze(r) for r in rows)
        return out

    def runs(self, root: str) -> list[RunRecord]:
        return Ledger(Layout.at(root, self.settings.storage_options)).runs(self.job.name)


def _difference(got: Mapping[str, Counter], want: Mapping[str, Counter]) -> tuple[int, int, int]:
    dup = miss = extra = 0
    for table, rows in want.items():
        have = got.get(table, Counter())
        dup += sum(n - rows[r] for r, n in have.items() if r in rows and n > rows[r])
        miss += sum(n - have.get(r, 0) for r, n in rows.items() if n > have.get(r, 0))
        extra += sum(n for r, n in have.items() if r not in rows)
    return dup, miss, extra


def drill(job_file: str, params: Mapping[str, str] | None = None, *, kills: int = 10, seed: int | None = None,
          root: str | None = None, settings: Settings | None = None,
          recover: Callable[[Settings], int] | None = None, env: Mapping[str, str] | None = None,
          echo: bool = True) -> dict[str, Any]:
    """Rehearse recovery of ``job_file``: ``kills`` random SIGKILLs, recovery, a row-by-row check.

    ``recover(settings)`` replaces the ``run --resume`` driver process of a
    recovery that is not killed (the pytest helper recovers in its own warm
    session to keep trials short): it gets the trial's settings (root, sink
    root) and returns the exit code. ``env`` is added to the driver processes'
    environment. Returns the report
    (see :func:`drill_text`); ``report["ok"]`` is the verdict.

    >>> report = drill("jobs/demo_sales.py", {"data": "demo-data/sources"}, kills=3, seed=7)  # doctest: +SKIP
    >>> report["ok"], report["summary"]["max_recovery_seconds"]   # doctest: +SKIP
    (True, 21.4)
    """
    say = (lambda line: print(line, flush=True)) if echo else (lambda line: None)
    if kills < 1:
        raise UsageError("bad --kills", f"expected a number of kills >= 1, found {kills}")
    settings = settings or load_settings(root=root)
    seed = _random_seed() if seed is None else int(seed)
    job = load_job(job_file)
    params = dict(params or {})
    area = _Drill(job_file, job, params, settings, env, say)
    say(f"drill of job {job.name} ({kills} kills, seed {seed}); sinks redirected to {area.sink_root}")

    area.reset()
    started = time.monotonic()
    code, err, _ = area.finish(area.start(f"{area.base}/clean", resume=False))
    clean_seconds = time.monotonic() - started
    if code != 0:
        raise UsageError("the clean run of the drill failed", f"exit code {code}: {err.strip()[-1500:]}",
                         exit_code=code)
    reference = area.contents()
    [clean_run] = area.runs(f"{area.base}/clean")
    computed = {s.name: s.seconds or 0.0 for s in clean_run.stages.values()}
    worst = max(computed, key=computed.get)
    say(f"clean run: {clean_seconds:.1f}s as a fresh driver process; "
        f"{sum(len(c) for c in reference.values()):,} sink rows in {len(reference)} table(s)")

    trials = []
    for number in range(1, kills + 1):
        trials.append(_trial(area, number, seed + number - 1, clean_seconds, reference, recover))
        t = trials[-1]
        say(f"  trial {number}: kill at {_num(t.kill_at)}s in {t.hit}; {t.resumes} resume(s), "
            f"{t.recovery_seconds:.1f}s; duplicates {t.duplicates}, missing {t.missing}, extra {t.extra}"
            + (f"; {t.error}" if t.error else "") + ("" if t.ok else "  <- FAILED"))
    recovery = [t.recovery_seconds for t in trials]
    failing = [t for t in trials if not t.ok]
    summary = {
        "trials": len(trials), "kills": sum(t.kill_at is not None for t in trials),
        "second_kills": sum(t.second_kill for t in trials), "resumes": sum(t.resumes for t in trials),
        "duplicated_rows": sum(t.duplicates for t in trials), "missing_rows": sum(t.missing for t in trials),
        "extra_rows": sum(t.extra for t in trials),
        "median_recovery_seconds": round(statistics.median(recovery), 3),
        "max_recovery_seconds": round(max(recovery), 3),
        "rpo_seconds": round(computed[worst], 3), "rpo_stage": worst,
    }
    verdict = ("PASS: every trial recovered with no row lost, duplicated or extra" if not failing else
               f"FAIL: trial {failing[0].number} (reproduce with --seed {failing[0].seed} --kills 1)")
    report = {"job": job.name, "job_file": job_file, "params": params, "seed": seed, "ok": not failing,
              "verdict": verdict, "failing_seed": failing[0].seed if failing else None,
              "clean_seconds": round(clean_seconds, 3), "drill_root": area.base,
              "sinks_redirected": area.tables, "summary": summary, "trials": [asdict(t) for t in trials]}
    return report


def _random_seed() -> int:
    import secrets

    return secrets.randbelow(2**31)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _trial(area: _Drill, number: int, seed: int, clean_seconds: float, reference: Mapping[str, Counter],
           recover: Callable[[Settings], int] | None) -> Trial:
    rng = random.Random(seed)
    root = f"{area.base}/trial-{number}"
    area.reset()
    kill_at = rng.uniform(0.0, clean_seconds)
    second = rng.random() < SECOND_KILL_SHARE
    started = time.monotonic()
    code, err, killed = area.finish(area.start(root, resume=False), kill_at, started)
    runs = area.runs(root)
    names = {scratch: table for table, scratch in area.tables.items()}
    trial = Trial(number, seed, kill_at if killed else None, _hit(runs[-1] if runs else None, names) if killed
                  else "nothing: the run finished first", 0, False, 0.0, None)
    if not killed and code != 0:
        trial.error = f"the run exited {code} without being killed: {err.strip()[-300:]}"
        return trial
    while True:  # recover as an operator would: run --resume until it succeeds
        trial.resumes += 1
        if trial.resumes > _MAX_RECOVERIES:
            trial.error = f"not recovered after {_MAX_RECOVERIES} resumes"
            return trial
        t0 = time.monotonic()
        if second and trial.resumes == 1:
            trial.second_kill = True
            code, err, _ = area.finish(area.start(root, resume=True), rng.uniform(0.0, clean_seconds), t0)
        elif recover is not None:
            code, err = recover(area.settings.replace(root=root, sink_root=area.sink_root)), ""
        else:
            code, err, _ = area.finish(area.start(root, resume=True))
        trial.recovery_seconds += time.monotonic() - t0
        if code == 0:
            break
        if code != -signal.SIGKILL:
            trial.error = f"a resume exited {code}: {err.strip()[-300:]}"
            return trial
    trial.recovery_seconds = round(trial.recovery_seconds, 3)
    trial.recovery_ratio = round(trial.recovery_seconds / clean_seconds, 4)
    before = area.contents()
    code, err, _ = area.finish(area.start(root, resume=True))  # the scheduler retries once more
    after = area.contents()
    trial.retry_wrote = after != before
    if code != 0:
        trial.error = f"the retry after success exited {code}: {err.strip()[-300:]}"
    trial.duplicates, trial.missing, trial.extra = _difference(after, reference)
    return trial


def drill_text(report: Mapping[str, Any]) -> str:
    """The drill report as the terminal shows it."""
    from .report import table

    rows = [[t["number"], t["seed"], _num(t["kill_at"]), t["hit"], t["resumes"], t["recovery_seconds"],
             t["recovery_ratio"], t["duplicates"], t["missing"], t["extra"],
             "ok" if not (t["error"] or t["duplicates"] or t["missing"] or t["extra"] or t["retry_wrote"])
             else t["error"] or "FAILED"] for t in report["trials"]]
    s = report["summary"]
    lines = [
        f"drill of job {report['job']} (seed {report['seed']}): sinks redirected under {report['drill_root']}/sinks,"
        " your tables were not touched",
        "",
        table(["trial", "seed", "kill at (s)", "hit", "resumes", "recovery (s)", "R", "duplicated", "missing",
               "extra", "outcome"], rows),
        "",
        f"trials {s['trials']}, kills {s['kills']} (+{s['second_kills']} during a recovery), resumes {s['resumes']}",
        f"rows duplicated {s['duplicated_rows']}, missing {s['missing_rows']}, extra {s['extra_rows']}",
        f"recovery time (RTO): median {s['median_recovery_seconds']:.1f}s, max {s['max_recovery_seconds']:.1f}s "
        f"(clean run {report['clean_seconds']:.1f}s)",
        f"worst-case recompute after a kill (RPO): {s['rpo_seconds']:.1f}s of compute (stage {s['rpo_stage']})",
        report["verdict"],
    ]
    return "\n".join(lines)
