"""Recovery drills: rehearse recovery on your own job, with real kills, checked row by row.

A drill runs the job once cleanly, then, trial after trial, starts it as a
driver process and ``SIGKILL``s the whole process group (Python driver and
JVM) at a random moment, seeded and uniform over the clean run's duration,
sink writes included. It recovers as an operator would (``run --resume``,
repeated until it succeeds; in some trials the first recovery is killed too),
retries once more after success as a scheduler would, and compares every sink
table with the clean run's, row for row (a multiset: duplicated, missing and
extra rows). Equal rows do not prove one publication (an overwrite, merge or
replace_where sink written twice ends with the same rows), so each sink
table's Delta history must also hold exactly one data commit by the trial's
logical run. Every other recovery process, and the scheduler's retry, runs
from a fresh working directory.

Nothing touches the user's tables: every path sink is redirected under the
drill's own folder (``<root>/drills/<id>/sinks``), which starts each trial as
a copy of the sink tables' current state. Each trial has its own root.

A catalog sink (``table="db.daily"``) is redirected to a catalog table of the
drill's own, ``[catalog.]spark_recover_drill_<digest>.daily_<digest>``
(:func:`spark_recover.sinks.redirected_table`), so the drivers still write
through the catalog. Each trial registers it on a copy of the real table's
files (or leaves it absent, as the real one was); the rows and the history are
read from where the catalog says its files are; the scratch schema is dropped
at the end. The catalog must be one the drill and every driver process share
and that outlives them: a Spark Connect server's (``--remote``), or a Hive
metastore server (``spark.sql.catalogImplementation=hive`` in the conf file's
``[spark]`` section); Spark's default in-memory catalog, and an embedded Derby
metastore (one process at a time), are refused (exit 2):
:func:`spark_recover.publication.catalog_problem`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import signal
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .config import Settings, load_settings
from .display import seconds_text
from .errors import RecoverError, RefusedError, StageError, UsageError
from .failpoints import ENV as FAILPOINT_ENV
from .job import Job, load_job
from .ledger import Ledger
from .history import RunRecord
from .publication import require_lasting_catalog
from .sinks import commit_tag, fill_predicate, physical_uri, resolve_sinks
from .storage import Layout, canonical, read_delta, spark_uri

__all__ = ["Trial", "drill", "clean_timeline", "clean_run_error", "sink_commits", "SECOND_KILL_SHARE"]

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
    rollback_kill_at: float | None = None  # --with-rollback: when the first rollback was killed
    rollback_hit: str | None = None  # what the killed rollback's journal held
    rollback_attempts: int = 0
    rollback_seconds: float | None = None
    rollback_wrong_rows: int = 0  # rows that differ from the recovery point after the rollback
    commits: dict[str, int] = field(default_factory=dict)  # each sink's data commits by the logical run
    commit_problems: list[str] = field(default_factory=list)  # not exactly one commit per sink
    moved_recoveries: int = 0  # recoveries run from a working directory of their own
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not (self.duplicates or self.missing or self.extra or self.retry_wrote
                                           or self.rollback_wrong_rows or self.commit_problems)


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


class Scratch:
    """The scratch area, the driver processes, and the comparisons of one drill."""

    def __init__(self, job_file: str, job: Job, params: Mapping[str, str], settings: Settings,
                 env: Mapping[str, str] | None, say: Callable[[str], None]) -> None:
        from .session import resolve_delta_jars

        # Absolute: some recoveries run from another working directory.
        self.job_file, self.job, self.params, self.settings, self.say = (os.path.abspath(job_file), job, dict(params),
                                                                         settings, say)
        stamp = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{os.getpid()}"
        user = Layout.at(settings.root, settings.storage_options)
        self.base = f"{user.root}/drills/{stamp}"
        self.store = Layout.at(self.base, settings.storage_options)
        self.sink_root = f"{self.base}/sinks"
        real, scratch = (resolve_sinks(job, params, user, root) for root in (None, self.sink_root))
        self.tables = {r.table: s.table for r, s in zip(real, scratch)}  # each sink table: its scratch copy
        self.targets = {s.table: s.target for s in scratch}
        self.spark = self._catalog_session([r.table for r in real if r.target.catalog])
        self.local_dirs: str | None = None
        if settings.remote:  # the driver processes are Connect clients of the same server: no JVM, no jars
            env = {**(env or {}), "SPARK_REMOTE": settings.remote}
        else:
            resolve_delta_jars()  # once: every driver process inherits the jars
            # A SIGKILLed driver leaves its Spark scratch (spark-*/userFiles-*: ~90 MB of jars each, shuffle
            # files) in the temp folder for ever: the drivers get a folder of the drill's own, emptied after each.
            parent = (os.environ.get("SPARK_LOCAL_DIRS") or "").split(",")[0] or None
            self.local_dirs = tempfile.mkdtemp(prefix="spark-recover-drill-local-", dir=parent)
            env = {**(env or {}), "SPARK_LOCAL_DIRS": self.local_dirs}
        self.env = {**os.environ, **(env or {}), "SPARK_RECOVER_SINK_ROOT": self.sink_root}
        source_tree = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if not source_tree.endswith("-packages"):  # run from a checkout: its drivers import this copy in any cwd
            self.env["PYTHONPATH"] = os.pathsep.join(p for p in (source_tree, self.env.get("PYTHONPATH")) if p)
        self.env.pop(FAILPOINT_ENV, None)
        self.initial = {}
        self.initial_state: tuple[dict[str, Counter], dict[str, bool]] = ({}, {})  # set after the first reset
        for r, s in zip(real, scratch):  # the sink tables' current state, copied once
            location = physical_uri(self.spark, r.target)  # a catalog table's from the catalog (None: absent)
            if location is not None and self.store.is_delta(location):
                self.initial[s.table] = f"{self.base}/initial/{self.folder(s.table).rsplit('/', 1)[-1]}"
                self.store.copy_tree(location, self.initial[s.table])

    def _catalog_session(self, tables: list[str]):
        """A session on the catalog the driver processes write (``None``: no catalog sink), with the
        drill's scratch schemas created; managed scratch tables of the session catalog go under the
        sink root, so each trial's reset removes them whole."""
        if not tables:
            return None
        from .session import get_spark

        if not self.settings.remote:  # the drivers build their own sessions: the catalog must outlive them
            require_lasting_catalog(tables, self.settings.spark, shared=True)
        spark = get_spark(self.settings)
        for schema in self.schemas():
            session_catalog = "." not in schema or schema.startswith("spark_catalog.")
            where = fill_predicate(" LOCATION '{uri}'", {"uri": spark_uri(f"{self.sink_root}/catalog")})
            spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema}{where if session_catalog else ''}")
        return spark

    def schemas(self) -> list[str]:
        """The scratch schemas (``[catalog.]schema``) of the catalog sinks."""
        return sorted({name.rsplit(".", 1)[0] for name, target in self.targets.items() if target.catalog})

    def folder(self, scratch: str) -> str:
        """Where a scratch table's files start a trial: the path itself, or a catalog table's own folder."""
        return f"{self.sink_root}/tables/{scratch.rsplit('.', 1)[-1]}" if self.targets[scratch].catalog else scratch

    def location(self, scratch: str) -> str | None:
        """Where a scratch table's files are now (``None``: a catalog table that does not exist)."""
        return physical_uri(self.spark, self.targets[scratch])

    def close(self) -> None:
        """Drop the scratch schemas with their tables (the files stay in the drill's folder), and the
        drivers' Spark scratch folder."""
        for schema in self.schemas():
            self.spark.sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        if self.local_dirs is not None:
            shutil.rmtree(self.local_dirs, ignore_errors=True)

    def sweep(self) -> None:
        """Empty the drivers' Spark scratch folder (drivers run one at a time: none is running now)."""
        if self.local_dirs is not None:
            for entry in os.scandir(self.local_dirs):
                shutil.rmtree(entry.path, ignore_errors=True)

    def exists(self) -> dict[str, bool]:
        return {table: self._delta_at(scratch) is not None for table, scratch in self.tables.items()}

    def _delta_at(self, scratch: str) -> str | None:
        location = self.location(scratch)
        return location if location is not None and self.store.is_delta(location) else None

    def reset(self) -> None:
        """Every scratch sink table back to the copy of the real one (a catalog table registered at its copy)."""
        for scratch, target in self.targets.items():
            if target.catalog:  # its files go with the folder below
                self.spark.sql(f"DROP TABLE IF EXISTS {scratch}")
        if self.store.entries(self.sink_root) is not None:
            self.store.delete_tree(self.sink_root)
        for scratch, copy in self.initial.items():
            self.store.copy_tree(copy, self.folder(scratch))
            if self.targets[scratch].catalog:
                self.spark.sql(fill_predicate(f"CREATE TABLE {scratch} USING DELTA LOCATION '{{uri}}'",
                                              {"uri": spark_uri(self.folder(scratch))}))

    def start(self, root: str, resume: bool, env: Mapping[str, str] | None = None,
              cwd: str | None = None) -> subprocess.Popen:
        """``spark-recover run JOB --root ROOT [--resume]`` as a driver process of its own (in ``cwd``)."""
        args = ["run", self.job_file, "--root", root]
        for key, value in self.params.items():
            args += ["-p", f"{key}={value}"]
        return self.start_command(args + (["--resume"] if resume else []), env, cwd)

    def start_command(self, args: list[str], env: Mapping[str, str] | None = None,
                      cwd: str | None = None) -> subprocess.Popen:
        """A ``spark-recover`` command as a process group of its own (so a kill takes its JVM too)."""
        command = [sys.executable, "-m", "spark_recover", *args]
        if self.settings.conf_file:
            command += ["--conf", os.path.abspath(self.settings.conf_file)]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**self.env, **(env or {})}, start_new_session=True, cwd=cwd)

    def finish(self, proc: subprocess.Popen, kill_at: float | None = None,
               started: float = 0.0) -> tuple[int, str, bool]:
        """Wait for a driver, SIGKILLing its process group at ``kill_at`` seconds; (code, stderr, killed)."""
        killed = False
        if kill_at is not None:
            try:
                proc.wait(timeout=max(0.0, started + kill_at - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
        _, err = proc.communicate()
        self.sweep()
        return proc.returncode, err, killed

    def contents(self) -> dict[str, Counter]:
        out = {}
        for table, scratch in self.tables.items():
            location = self._delta_at(scratch)
            rows = read_delta(location, storage_options=self.settings.storage_options).to_pylist() \
                if location is not None else []
            out[table] = Counter(_freeze(r) for r in rows)
        return out

    def histories(self) -> dict[str, list[dict[str, Any]]]:
        """Each scratch sink table's Delta history (empty: no table)."""
        return {scratch: self.store.delta(location).history() if (location := self._delta_at(scratch)) else []
                for scratch in self.tables.values()}

    def runs(self, root: str) -> list[RunRecord]:
        return Ledger(Layout.at(root, self.settings.storage_options)).runs(self.job.name)


def sink_commits(histories: Mapping[str, Sequence[Mapping[str, Any]]], runs: Sequence[RunRecord],
                 names: Mapping[str, str] | None = None) -> tuple[dict[str, int], list[str]]:
    """Count each sink's data commits by one logical run (``runs``), from each table's Delta history.

    A sink publishes once per logical run: exactly one commit whose ``userMetadata``
    names a run of it (a rollback's restore is not a publication), made by a run the
    ledger says wrote it; a run the ledger says skipped a duplicate made none.
    ``histories`` maps each sink table to its commits; ``names`` gives the table
    names to report. Returns the counts and what is wrong (empty: nothing).

    >>> import json
    >>> w = lambda run: {"userMetadata": json.dumps({"run_id": run, "sink": "/t"})}
    >>> sink_commits({"/t": [w("A"), w("B")]}, [RunRecord(run_id="A", job="j"), RunRecord(run_id="B", job="j")])
    ({'/t': 2}, ['sink /t: 2 data commits in one logical run (runs A, B), expected exactly 1'])
    """
    names = names or {}
    ids = {r.run_id for r in runs}
    counts: dict[str, int] = {}
    problems: list[str] = []
    for table, history in histories.items():
        name = names.get(table, table)
        tags = [commit_tag(c) for c in history]
        by = [t["run_id"] for t in tags if t.get("run_id") in ids and "sink" in t]
        counts[name] = len(by)
        if len(by) != 1:
            problems.append(f"sink {name}: {len(by)} data commits in one logical run"
                            + (f" (runs {', '.join(sorted(by))})" if by else "") + ", expected exactly 1")
        for run in runs:
            entry = next((e for t, e in run.sinks.items() if canonical(t) == canonical(table)), None)
            if entry is None or entry.get("status") != "written":
                continue
            made = by.count(run.run_id)
            if entry.get("skipped_duplicate") and made:
                problems.append(f"sink {name}: run {run.run_id} recorded a skip but committed {made} time(s)")
            elif not entry.get("skipped_duplicate") and made != 1:
                problems.append(f"sink {name}: run {run.run_id} recorded a write but made {made} commits")
    return counts, problems


def difference(got: Mapping[str, Counter], want: Mapping[str, Counter]) -> tuple[int, int, int]:
    dup = miss = extra = 0
    for table, rows in want.items():
        have = got.get(table, Counter())
        dup += sum(n - rows[r] for r, n in have.items() if r in rows and n > rows[r])
        miss += sum(n - have.get(r, 0) for r, n in rows.items() if n > have.get(r, 0))
        extra += sum(n for r, n in have.items() if r not in rows)
    return dup, miss, extra


def drill(job_file: str, params: Mapping[str, str] | None = None, *, kills: int = 10, seed: int | None = None,
          with_rollback: bool = False, damage: bool = False, root: str | None = None,
          settings: Settings | None = None, recover: Callable[[Settings], int] | None = None,
          env: Mapping[str, str] | None = None, echo: bool = True) -> dict[str, Any]:
    """Rehearse recovery of ``job_file``: ``kills`` random SIGKILLs, recovery, a row-by-row check.

    ``with_rollback``: each trial then rolls its run back (the first rollback
    is timed; later ones are killed at a random moment within that time in
    most trials and finished by running ``rollback`` again) and checks every
    sink table equals the recovery point. ``damage``: the damaged-state cases
    of :mod:`spark_recover.damage` run after the clean run (``kills`` may then
    be 0).

    ``recover(settings)`` replaces the ``run --resume`` driver process of a
    recovery that is not killed (the pytest helper recovers in its own warm
    session to keep trials short): it gets the trial's settings (root, sink
    root) and returns the exit code. ``env`` is added to the driver processes'
    environment. Returns the report
    (see :func:`~spark_recover.display.drill_text`); ``report["ok"]`` is the verdict.

    >>> report = drill("jobs/demo_sales.py", {"data": "demo-data/sources"}, kills=3, seed=7)  # doctest: +SKIP
    >>> report["ok"], report["summary"]["max_recovery_seconds"]   # doctest: +SKIP
    (True, 21.4)
    """
    say = (lambda line: print(line, flush=True)) if echo else (lambda line: None)
    if kills < (0 if damage else 1):
        raise UsageError("bad --kills", f"expected a number of kills >= 1 (or 0 with --damage), found {kills}")
    if with_rollback and kills < 1:
        raise UsageError("bad --kills", "--with-rollback rolls back the trials' runs: expected --kills >= 1")
    seed = _random_seed() if seed is None else int(seed)
    job = load_job(job_file)
    settings = settings or load_settings(root=root, project=job.project)
    params = dict(params or {})
    area = Scratch(job_file, job, params, settings, env, say)
    try:
        say(f"drill of job {job.name} ({kills} kills, seed {seed}); sinks redirected to {area.sink_root}"
            + "".join(f", catalog sinks to schema {schema}" for schema in area.schemas()))

        area.reset()
        area.initial_state = (area.contents(), area.exists())
        started = time.monotonic()
        clean = area.start(f"{area.base}/clean", resume=False)
        out, err = clean.communicate()
        area.sweep()
        clean_seconds = time.monotonic() - started
        if clean.returncode != 0:  # a failed run says why on stdout, a crash on stderr
            raise clean_run_error(clean.returncode, err if err.strip() else out)
        reference = area.contents()
        [clean_run] = area.runs(f"{area.base}/clean")
        timeline = clean_timeline(clean_run, clean_seconds)
        # What a kill at the worst moment throws away: a stage's compute, or a chunked stage's slowest chunk.
        computed = {s.name: max((c["seconds"] or 0.0 for c in s.chunks.values()), default=0.0) if s.chunks
                    else s.seconds or 0.0 for s in clean_run.stages.values()}
        worst = max(computed, key=computed.get)
        say(f"clean run: {clean_seconds:.1f}s as a fresh driver process; "
            f"{sum(len(c) for c in reference.values()):,} sink rows in {len(reference)} table(s)")

        cases = []
        if damage:
            from .damage import run_cases

            say("damaged state: each case on a copy of a crashed run's state, then the operator's next command")
            cases = run_cases(area, list(clean_run.stages), reference, say)

        trials: list[Trial] = []
        rollback_budget = None  # seconds: the first rollback is timed, later ones killed within that time
        for number in range(1, kills + 1):
            t = _trial(area, number, seed + number - 1, clean_seconds, reference, recover)
            if with_rollback and t.error is None:
                _rollback(area, t, rollback_budget)
                rollback_budget = rollback_budget or t.rollback_seconds
            trials.append(t)
            say(f"  trial {number}: kill at {seconds_text(t.kill_at)}s in {t.hit}; {t.resumes} resume(s), "
                f"{t.recovery_seconds:.1f}s; duplicates {t.duplicates}, missing {t.missing}, extra {t.extra}"
                + ("; rollback" + (f" killed at {seconds_text(t.rollback_kill_at)}s ({t.rollback_hit})"
                                    if t.rollback_kill_at is not None else "") +
                   f", {t.rollback_attempts} attempt(s), {t.rollback_wrong_rows} row(s) off the recovery point"
                   if t.rollback_attempts else "")
                + (f"; {t.error}" if t.error else "") + ("" if t.ok else "  <- FAILED"))
        failing = [t for t in trials if not t.ok]
        broken = [c for c in cases if not c.ok]
        summary = _summary(trials, computed, worst)
        if damage:
            summary["damage_cases"] = len(cases)
            summary["damage_failed"] = len(broken)
        if failing:
            verdict = f"FAIL: trial {failing[0].number} (reproduce with --seed {failing[0].seed} --kills 1)"
        elif broken:
            verdict = f"FAIL: damaged state {broken[0].name}: {broken[0].error}"
        else:
            verdict = "PASS: " + ", ".join(
                (["every trial recovered with no row lost, duplicated or extra, and every sink committed once"]
                 if trials else [])
                + (["every rollback matched its recovery point"] if with_rollback else [])
                + (["every damaged state was recomputed or refused plainly"] if damage else []))
        report = {"job": job.name, "job_file": job_file, "params": params, "seed": seed,
                  "ok": not failing and not broken, "verdict": verdict,
                  "failing_seed": failing[0].seed if failing else None,
                  "clean_seconds": round(clean_seconds, 3), "clean_timeline": timeline, "drill_root": area.base,
                  "sinks_redirected": area.tables, "summary": summary,
                  "trials": [{**asdict(t), "ok": t.ok} for t in trials],
                  "damage": [{**asdict(c), "ok": c.ok} for c in cases]}
        return report
    finally:
        area.close()  # the scratch schemas, if any


def clean_timeline(run: RunRecord, process_seconds: float) -> list[dict[str, Any]]:
    """The clean run's stages on the axis the kills are drawn on: seconds since its driver process started.

    The process's start is the one the run recorded (``proc_start``); without it, the
    run's own start stands for it, ``process_seconds`` minus the record's span later.
    """
    stages = [s for s in run.stage_list() if s.started_at and s.ended_at]
    if run.started_at is None or not stages:
        return []
    began = run.process.get("proc_start")
    if began is None:
        end = max([s.ended_at for s in stages] + ([run.last_seen] if run.last_seen else []))
        began = run.started_at.timestamp() - max(0.0, process_seconds - (end - run.started_at).total_seconds())
    return [{"stage": s.name, "start": round(max(0.0, s.started_at.timestamp() - float(began)), 3),
             "seconds": round((s.ended_at - s.started_at).total_seconds(), 3), "rows": s.rows} for s in stages]


def clean_run_error(code: int, output: str) -> RecoverError:
    """The error of a drill whose clean run exited ``code``: of the type whose exit code is that run's.

    The CLI's exit code comes from the error's type, so the run's own verdict (1 the job
    failed, 2 bad input, 3 refused) reaches the drill's process; a run killed by a signal
    (a negative code) failed, like a job that failed.

    >>> clean_run_error(3, "lease held").exit_code, clean_run_error(-9, "").exit_code
    (3, 1)
    """
    kind = {2: UsageError, 3: RefusedError}.get(code, StageError)
    return kind("the clean run of the drill failed", f"exit code {code}: {output.strip()[-1500:]}", exit_code=code)


def _summary(trials: list[Trial], computed: Mapping[str, float], worst: str) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "trials": len(trials), "kills": sum(t.kill_at is not None for t in trials),
        "second_kills": sum(t.second_kill for t in trials), "resumes": sum(t.resumes for t in trials),
        "duplicated_rows": sum(t.duplicates for t in trials), "missing_rows": sum(t.missing for t in trials),
        "extra_rows": sum(t.extra for t in trials),
        # each sink's data commits per logical run (one a trial): exactly one each, else a fault
        "sink_commits": sum(sum(t.commits.values()) for t in trials),
        "sink_commit_faults": sum(len(t.commit_problems) for t in trials),
        "moved_recoveries": sum(t.moved_recoveries for t in trials),
        "rpo_seconds": round(computed[worst], 3), "rpo_stage": worst,
    }
    recovery = [t.recovery_seconds for t in trials]
    if recovery:
        summary["median_recovery_seconds"] = round(statistics.median(recovery), 3)
        summary["max_recovery_seconds"] = round(max(recovery), 3)
    rollbacks = [t for t in trials if t.rollback_attempts]
    if rollbacks:
        seconds = [t.rollback_seconds or 0.0 for t in rollbacks]
        summary.update(rollbacks=len(rollbacks), rollback_kills=sum(t.rollback_kill_at is not None for t in rollbacks),
                       rollback_wrong_rows=sum(t.rollback_wrong_rows for t in rollbacks),
                       median_rollback_seconds=round(statistics.median(seconds), 3),
                       max_rollback_seconds=round(max(seconds), 3))
    return summary


def _random_seed() -> int:
    import secrets

    return secrets.randbelow(2**31)


def _elsewhere(moved: bool) -> Any:
    """A fresh working directory for a driver process, removed after it (or ``None``: the drill's own)."""
    return tempfile.TemporaryDirectory(prefix="spark-recover-drill-cwd-") if moved else contextlib.nullcontext()


def _trial(area: Scratch, number: int, seed: int, clean_seconds: float, reference: Mapping[str, Counter],
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
        # Every other recovery process runs from a fresh working directory: nothing may depend on it.
        with _elsewhere((trial.number + trial.resumes) % 2 == 0) as cwd:
            if second and trial.resumes == 1:
                trial.second_kill = True
                trial.moved_recoveries += cwd is not None
                code, err, _ = area.finish(area.start(root, resume=True, cwd=cwd), rng.uniform(0.0, clean_seconds), t0)
            elif recover is not None:
                code, err = recover(area.settings.replace(root=root, sink_root=area.sink_root)), ""
            else:
                trial.moved_recoveries += cwd is not None
                code, err, _ = area.finish(area.start(root, resume=True, cwd=cwd))
        trial.recovery_seconds += time.monotonic() - t0
        if code == 0:
            break
        if code != -signal.SIGKILL:
            trial.error = f"a resume exited {code}: {err.strip()[-300:]}"
            return trial
    trial.recovery_seconds = round(trial.recovery_seconds, 3)
    trial.recovery_ratio = round(trial.recovery_seconds / clean_seconds, 4)
    before = area.contents()
    with _elsewhere(True) as cwd:  # the scheduler retries once more, from a working directory of its own
        code, err, _ = area.finish(area.start(root, resume=True, cwd=cwd))
    trial.moved_recoveries += 1
    after = area.contents()
    trial.retry_wrote = after != before
    trial.commits, trial.commit_problems = sink_commits(area.histories(), area.runs(root), names)
    if code != 0:
        trial.error = f"the retry after success exited {code}: {err.strip()[-300:]}"
    trial.duplicates, trial.missing, trial.extra = difference(after, reference)
    return trial


ROLLBACK_KILL_SHARE = 0.7  # --with-rollback: the share of rollbacks (after the timed first) killed midway


def _rollback(area: Scratch, trial: Trial, budget: float | None) -> None:
    """Roll the trial's logical run back, killed midway in most trials; rerun it until it finishes."""
    rng = random.Random(trial.seed * 7919 + 1)
    root = f"{area.base}/trial-{trial.number}"
    run_id = area.runs(root)[-1].run_id
    kill = budget is not None and rng.random() < ROLLBACK_KILL_SHARE
    seconds = 0.0
    while True:
        trial.rollback_attempts += 1
        if trial.rollback_attempts > _MAX_RECOVERIES:
            trial.error = f"rollback not finished after {_MAX_RECOVERIES} attempts"
            return
        kill_at = rng.uniform(0.0, budget) if kill and trial.rollback_attempts == 1 else None
        t0 = time.monotonic()
        code, err, killed = area.finish(area.start_command(["rollback", run_id, "--root", root]), kill_at, t0)
        seconds += time.monotonic() - t0
        if killed:
            trial.rollback_kill_at = round(kill_at, 3)
            journal = next(r for r in area.runs(root) if r.run_id == run_id).rollback
            trial.rollback_hit = ("before its journal started" if journal is None else
                                  "after it finished" if journal.get("finished") else
                                  f"{len(journal['restored'])} of {len(journal['targets'])} table(s) restored")
            continue
        if code != 0:
            trial.error = f"rollback exited {code}: {err.strip()[-300:]}"
            return
        break
    trial.rollback_seconds = round(seconds, 3)
    rows, exists = area.initial_state
    trial.rollback_wrong_rows = sum(difference(area.contents(), rows))
    wrong = sorted(t for t, e in area.exists().items() if e != exists[t])
    if wrong:
        trial.error = f"after the rollback, table(s) {wrong} exist where the recovery point had them absent, or back"
