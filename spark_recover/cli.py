"""The ``spark-recover`` command line.

Exit codes (DESIGN.md): 0 success; 1 the job failed (a stage raised), or a
drill found lost, duplicated or extra rows; 2 bad usage or bad input; 3
refused (lease held, conflict; ``plan``: the command it previews would be).
The read-only commands (``runs``, ``show``, ``report``, ``plan``) read the
ledger with delta-rs and never start a JVM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import Any, Sequence

from .config import Settings, load_settings
from .errors import RecoverError, UsageError
from .project import project_folder

RUNS_PAGE = 50  # runs `spark-recover runs` lists unless told (--limit)

__all__ = ["main", "job_main", "parse_params"]


def parse_params(items: Sequence[str] | None) -> dict[str, str]:
    """``["day=2026-11-23", "n=5"]`` → ``{"day": "2026-11-23", "n": "5"}``.

    >>> parse_params(["day=2026-11-23"])
    {'day': '2026-11-23'}
    """
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"malformed parameter {item!r}",
                             "expected -p key=value (for example -p day=2026-11-23)", arg=item)
        if key.strip() in out:
            raise UsageError(f"parameter {key.strip()!r} given twice", "give each -p key once", arg=item)
        out[key.strip()] = value
    return out


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help="where checkpoints and the ledger live (default: $SPARK_RECOVER_ROOT, "
                        "the conf file, or .spark-recover in the job's project folder)")
    parser.add_argument("--conf", help="a TOML settings file (default: conf/spark-recover.toml in the job's "
                        "project folder, if present)")
    parser.add_argument("--verbose", action="store_true", help="show Spark's own logging and progress")
    parser.add_argument("--remote", metavar="sc://HOST:PORT",
                        help="run on this Spark Connect server (default: $SPARK_REMOTE, the conf file)")


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="a run parameter")
    parser.add_argument("--resume", action="store_true",
                        help="resume the newest failed run with the same parameters; do nothing if the "
                        "newest one succeeded (or was recovered); else start a new run")
    parser.add_argument("--new-run", action="store_true",
                        help="start a new logical run even though the newest run with these parameters failed "
                        "after publishing a sink (it publishes again); without it such a run is refused")
    parser.add_argument("--rerun", action="append", metavar="STAGE", default=[],
                        help="recompute STAGE and everything downstream of it")
    parser.add_argument("--refresh-sources", action="store_true",
                        help="on a resume, re-pin Delta sources at their current versions")
    parser.add_argument("--job", help="which Job, when the file defines several")
    _common(parser)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spark-recover",
                                     description="Recoverable multi-stage batch jobs on Spark and Delta Lake.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job file")
    run.add_argument("job_file")
    _run_options(run)
    plan = sub.add_parser("plan", help="say what a run or resume would do (reuse, recompute, sinks), without "
                          "running it or starting a JVM (exit 3: it would be refused)")
    plan.add_argument("job_file")
    plan.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                      help="a run parameter (with --from: an override of the run's)")
    plan.add_argument("--resume", action="store_true", help="plan `run --resume`")
    plan.add_argument("--from", dest="from_run", metavar="RUN", help="plan `resume RUN`")
    plan.add_argument("--rerun", action="append", metavar="STAGE", default=[])
    plan.add_argument("--refresh-sources", action="store_true")
    plan.add_argument("--new-run", action="store_true")
    plan.add_argument("--job", help="which Job, when the file defines several")
    plan.add_argument("--json", action="store_true")
    _common(plan)
    resume = sub.add_parser("resume", help="replay a failed run from its last good stage")
    resume.add_argument("run_id")
    resume.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                        help="override a parameter of the original run")
    resume.add_argument("--rerun", action="append", metavar="STAGE", default=[])
    resume.add_argument("--refresh-sources", action="store_true")
    resume.add_argument("--job-file", help="the job file (default: the one the run recorded)")
    _common(resume)
    redo = sub.add_parser("redo", help="roll back a run's sinks, then replay it")
    redo.add_argument("run_id")
    redo.add_argument("--from", dest="from_stage", metavar="STAGE",
                      help="replay from STAGE (default: from the first invalid stage)")
    redo.add_argument("--force", action="store_true", help="roll back even over other writers' commits")
    redo.add_argument("--job-file", help="the job file (default: the one the run recorded)")
    redo.add_argument("--dry-run", action="store_true",
                      help="say what its rollback would do and where the replay starts, change nothing")
    _common(redo)
    rollback = sub.add_parser("rollback", help="restore the tables a run wrote, or a named point")
    rollback.add_argument("run_id", nargs="?")
    rollback.add_argument("--point", help="restore the tables of this named recovery point")
    rollback.add_argument("--force", action="store_true", help="restore even over other writers' commits")
    rollback.add_argument("--dry-run", action="store_true",
                          help="say what would be restored or removed, change nothing (exit 3: it would be refused)")
    rollback.add_argument("--json", action="store_true")
    _common(rollback)
    point = sub.add_parser("point", help="named recovery points")
    point_sub = point.add_subparsers(dest="point_command", required=True)
    create = point_sub.add_parser("create", help="record the current version of tables")
    create.add_argument("name")
    create.add_argument("--table", action="extend", nargs="+", required=True, metavar="TABLE",
                        help="Delta table paths or catalog names (--table a b, or --table a --table b)")
    _common(create)
    plist = point_sub.add_parser("list", help="list named recovery points")
    plist.add_argument("--json", action="store_true")
    _common(plist)
    gc = sub.add_parser("gc", help="remove checkpoints no resumable run needs")
    gc.add_argument("--keep-days", type=float, default=7.0,
                    help="recovery window: keep every run younger than this (default 7)")
    gc.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    gc.add_argument("--json", action="store_true")
    _common(gc)
    drill = sub.add_parser("drill", help="rehearse recovery: random kills, resumes, a row-by-row check of every sink")
    drill.add_argument("job_file")
    drill.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="a run parameter")
    drill.add_argument("--kills", type=int, default=10, help="how many trials, each with a random SIGKILL (default 10)")
    drill.add_argument("--seed", type=int, help="seed of the kill moments (a failing trial prints its own)")
    drill.add_argument("--with-rollback", action="store_true",
                       help="then roll each trial's run back, killing most rollbacks midway and rerunning them")
    drill.add_argument("--damage", action="store_true",
                       help="also damage state (checkpoint files and logs, the ledger, a vacuumed recovery "
                       "point) and check each is recomputed or refused plainly (--kills 0: only this)")
    drill.add_argument("--json", action="store_true")
    drill.add_argument("--html", metavar="FILE", help="also write the drill as one self-contained HTML page: each "
                       "trial's kill on the clean run's timeline, recovery times, rows checked, the verdict")
    _common(drill)
    backfill = sub.add_parser("backfill", help="one logical run per value of a range or list parameter; "
                              "`backfill show JOB_FILE -p ...`: where each value stands")
    backfill.add_argument("target", nargs="+", metavar="[show] JOB_FILE")
    backfill.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                          help="a parameter: FIRST..LAST (integers or ISO days, inclusive) or A,B,C sweeps it")
    backfill.add_argument("--parallel", type=int, default=1, metavar="N", help="values run at once (default 1)")
    backfill.add_argument("--job", help="which Job, when the file defines several")
    backfill.add_argument("--json", action="store_true")
    _common(backfill)
    runs = sub.add_parser("runs", help="list runs")
    runs.add_argument("--job", help="only runs of this job")
    runs.add_argument("--status", choices=("running", "succeeded", "failed", "rolled_back"),
                      help="only runs with this status")
    runs.add_argument("--since", metavar="WHEN", help="only runs started at or after WHEN (UTC: 2026-11-29 or "
                      "2026-11-29T08:00)")
    runs.add_argument("--limit", type=int, default=RUNS_PAGE, metavar="N",
                      help=f"the N newest runs (default {RUNS_PAGE}; 0: all)")
    runs.add_argument("--json", action="store_true")
    _common(runs)
    show = sub.add_parser("show", help="show one run, stage by stage")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    _common(show)
    report = sub.add_parser("report", help="one logical run: every attempt's stages on a timeline, sinks, R/D/RTO")
    report.add_argument("run_id", help="any run of the logical run")
    report.add_argument("--html", metavar="FILE", help="write the report as one self-contained HTML page")
    _common(report)
    jars = sub.add_parser("jars", help="print the local paths of the jars spark-submit needs (resolved once, cached)")
    jars.add_argument("--s3a", action="store_true", help="also Hadoop's S3A connector and the AWS SDK modules it uses")
    _common(jars)
    return parser


def _settings(args: argparse.Namespace, project: str | None = None) -> Settings:
    """The command's settings: the default root and conf file are in ``project`` (else the working directory)."""
    return load_settings(conf_file=args.conf, root=args.root, verbose=args.verbose, remote=args.remote,
                         project=project)


def _ledger(settings: Settings):
    from .ledger import Ledger
    from .storage import Layout

    return Ledger(Layout.at(settings.root, settings.storage_options), settings.dead_after_seconds)


def _finish(result) -> int:
    return 0 if result.status == "succeeded" else 1


def _cmd_run(args: argparse.Namespace, job=None) -> int:
    from .job import load_job
    from .runner import replay_choice, run_job

    job = job or load_job(args.job_file, args.job)
    settings = _settings(args, job.project)
    params = parse_params(args.param)
    origin = None
    if args.resume and args.new_run:
        raise UsageError("--resume and --new-run together", "expected one of them: --resume replays the newest "
                         "failed run, --new-run starts a new logical run")
    if args.resume:
        origin, why = replay_choice(_ledger(settings), job, params)
        print(why.removeprefix("done: "), flush=True)
        if why.startswith("done:"):
            return 0  # a scheduler's retry after success: nothing to run, nothing written
    result = run_job(job, params, settings=settings, resume_from=origin, rerun=args.rerun,
                     refresh_sources=args.refresh_sources, new_run=args.new_run)
    return _finish(result)


def _cmd_plan(args: argparse.Namespace) -> int:
    from .job import load_job
    from .preview import preview, preview_text

    job = load_job(args.job_file, args.job)
    settings = _settings(args, job.project)
    if args.from_run:  # what `resume RUN` runs with
        settings = _recorded_settings(args, _ledger(settings).run(args.from_run), settings.root, job.project)
    plan = preview(job, parse_params(args.param), resume=args.resume, from_run=args.from_run, rerun=args.rerun,
                   refresh_sources=args.refresh_sources, new_run=args.new_run, settings=settings)
    print(json.dumps(plan.to_json(), indent=2, default=str) if args.json else preview_text(plan))
    return 3 if plan.refused else 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from .runner import resume_job

    job, settings = _replay_of(args)
    overrides = parse_params(args.param)
    result = resume_job(job, args.run_id, settings=settings, params=overrides, rerun=args.rerun,
                        refresh_sources=args.refresh_sources)
    return _finish(result)


def _replay_of(args: argparse.Namespace) -> tuple[Any, Settings]:
    """The job and settings a resume or redo of ``args.run_id`` runs with.

    What the run recorded, unless the command says otherwise: its job file
    (else ``--job-file``) and its conf file (:func:`_recorded_settings`), so a
    replay started from any folder runs the same job with the same settings.
    """
    from .job import load_job

    settings = _settings(args, project_folder(args.job_file))
    origin = _ledger(settings).run(args.run_id)
    path = args.job_file or origin.job_file
    if not path:
        raise UsageError(f"run {args.run_id} recorded no job file", "pass --job-file PATH")
    job = load_job(path, origin.job)
    return job, _recorded_settings(args, origin, settings.root, job.project)


def _recorded_settings(args: argparse.Namespace, origin, root: str, project: str | None) -> Settings:
    """The settings a replay of ``origin`` runs with: its recorded conf file (else ``--conf``/``$SPARK_RECOVER_CONF``).

    The job's project, never the working directory, gives the defaults the recorded run lacks.
    """
    recorded = None if args.conf or os.environ.get("SPARK_RECOVER_CONF") else origin.conf_file
    if recorded and not os.path.isfile(recorded):
        raise UsageError(f"run {origin.run_id} ran with conf file {recorded}, which is gone",
                         "expected that file to resume with the same settings; pass --conf FILE to "
                         "resume with other settings", conf_file=recorded)
    return load_settings(conf_file=recorded or args.conf, root=root, verbose=args.verbose,
                         remote=args.remote, project=project)


def _cmd_redo(args: argparse.Namespace) -> int:
    from .recovery import redo, rollback, rollback_plan_text

    job, settings = _replay_of(args)
    if args.dry_run:
        if args.from_stage is not None:
            job.downstream([args.from_stage])  # the real redo validates it first
        plan = rollback(args.run_id, force=args.force, settings=settings, dry_run=True)
        print(rollback_plan_text(plan))
        print(f"then: replay run {args.run_id} " + (f"from stage {args.from_stage!r}" if args.from_stage
                                                     else "from its first stage that is not valid any more"))
        return 3 if plan["refused"] else 0
    return _finish(redo(job, args.run_id, from_stage=args.from_stage, settings=settings, force=args.force))


def _cmd_rollback(args: argparse.Namespace) -> int:
    from .recovery import rollback, rollback_plan_text

    result = rollback(args.run_id, point=args.point, force=args.force, settings=_settings(args),
                      echo=not args.json, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif args.dry_run:
        print(rollback_plan_text(result))
    return 3 if args.dry_run and result["refused"] else 0


def _cmd_point(args: argparse.Namespace) -> int:
    from .recovery import create_point, list_points

    settings = _settings(args)
    if args.point_command == "create":
        point = create_point(args.name, args.table, settings=settings)
        print(f"recovery point {args.name!r}: " + ", ".join(
            f"{t} at version {s['version']}" for t, s in point["tables"].items()))
        return 0
    points = list_points(settings=settings)
    if args.json:
        print(json.dumps(points, indent=2))
    else:
        from .display import table
        print(table(["point", "created (UTC)", "tables"],
                    [[p["name"], p["created_at"], ", ".join(f"{t}@{s['version']}" for t, s in p["tables"].items())]
                     for p in points]) if points else "no recovery points")
    return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    from .retention import gc

    if args.keep_days < 0:
        raise UsageError("bad --keep-days", f"expected a number of days >= 0, found {args.keep_days}")
    report = gc(args.keep_days, settings=_settings(args), dry_run=args.dry_run, echo=not args.json)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def _cmd_drill(args: argparse.Namespace) -> int:
    from .display import drill_text
    from .drill import drill

    settings = _settings(args, project_folder(args.job_file))
    page = _html_target(args.html) if args.html else None  # checked before hours of drilling, not after
    report = drill(args.job_file, parse_params(args.param), kills=args.kills, seed=args.seed,
                   with_rollback=args.with_rollback, damage=args.damage, settings=settings, echo=not args.json)
    print(json.dumps(report, indent=2) if args.json else "\n" + drill_text(report))
    if page is not None:
        from .timeline import drill_html

        _write(page, drill_html(report))
        print(f"drill page: {page}", file=sys.stderr if args.json else sys.stdout)
    return 0 if report["ok"] else 1


def _html_target(path: str) -> str:
    """The absolute path of an ``--html FILE`` to write (:class:`UsageError` if it cannot be one)."""
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise UsageError(f"--html {path} is a folder", "expected the path of the HTML file to write")
    if not os.path.isdir(os.path.dirname(target)):
        raise UsageError(f"--html {path}: no folder {os.path.dirname(target)}",
                         "expected the path of an HTML file in an existing folder")
    return target


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)


def _cmd_backfill(args: argparse.Namespace) -> int:
    from .backfill import backfill, backfill_status, backfill_text, status_text
    from .job import load_job

    show = args.target[0] == "show"
    if len(args.target) != 1 + show:
        raise UsageError(f"bad arguments {' '.join(args.target)!r}",
                         "expected `backfill JOB_FILE -p ...` or `backfill show JOB_FILE -p ...`")
    job = load_job(args.target[-1], args.job)
    settings = _settings(args, job.project)
    params = parse_params(args.param)
    if show:
        rows = backfill_status(job, params, settings=settings)
        print(json.dumps(rows, indent=2, default=str) if args.json else status_text(rows))
        return 0
    result = backfill(job, params, parallel=args.parallel, settings=settings, echo=not args.json)
    print(json.dumps(result.to_json(), indent=2, default=str) if args.json else "\n" + backfill_text(result))
    return result.exit_code


def _cmd_runs(args: argparse.Namespace) -> int:
    from .display import runs_text

    if args.limit < 0:
        raise UsageError(f"bad --limit {args.limit}", "expected 0 (all runs) or a positive number of runs")
    newest = _ledger(_settings(args)).page(limit=args.limit or None, job=args.job, status=args.status,
                                           since=_since(args.since))
    if args.json:
        print(json.dumps([_summary_json(r) for r in newest], indent=2))
    elif not newest:
        print("no runs recorded yet" if not (args.job or args.status or args.since) else "no runs match")
    else:
        print(runs_text(list(reversed(newest))))
        if len(newest) == args.limit:
            print(f"(the {args.limit} newest shown: --limit N for more, --limit 0 for all)")
    return 0


def _since(text: str | None) -> dt.datetime | None:
    """``--since``: an ISO date or date and time, in UTC unless it names its offset."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"bad --since {text!r}", "expected an ISO date or date and time in UTC, "
                         "e.g. 2026-11-29 or 2026-11-29T08:00") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _summary_json(record) -> dict[str, Any]:
    data = record.to_json()
    return {k: data[k] for k in ("run_id", "job", "status", "params", "origin_run_id", "logical_run_id",
                                 "recovered_by", "started_at", "error", "metrics")}


def _cmd_show(args: argparse.Namespace) -> int:
    from .display import run_text

    record = _ledger(_settings(args)).run(args.run_id)
    print(json.dumps(record.to_json(), indent=2) if args.json else run_text(record))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .timeline import timeline_html, timeline_text

    ledger = _ledger(_settings(args))
    runs = ledger.logical_run(ledger.run(args.run_id))
    if args.html:
        target = _html_target(args.html)
        _write(target, timeline_html(runs))
        print(f"report of logical run {runs[0].logical_run_id or runs[0].run_id} ({len(runs)} attempt(s)): {target}")
    else:
        print(timeline_text(runs))
    return 0


def _cmd_jars(args: argparse.Namespace) -> int:
    from .session import resolve_delta_jars, resolve_s3a_jars

    print(",".join(resolve_delta_jars() + (resolve_s3a_jars() if args.s3a else [])))
    return 0


_COMMANDS = {"jars": _cmd_jars, "run": _cmd_run, "plan": _cmd_plan, "resume": _cmd_resume, "redo": _cmd_redo,
             "rollback": _cmd_rollback, "point": _cmd_point, "gc": _cmd_gc, "drill": _cmd_drill,
             "backfill": _cmd_backfill, "runs": _cmd_runs, "show": _cmd_show, "report": _cmd_report}


def _guarded(call, *args: Any) -> int:
    try:
        return call(*args)
    except RecoverError as exc:
        print(f"spark-recover: error: {exc.headline}", file=sys.stderr)
        if exc.detail:
            print(f"  {exc.detail}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("spark-recover: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spark-recover`` console script."""
    args = _parser().parse_args(argv)
    return _guarded(_COMMANDS[args.command], args)


def job_main(job, argv: Sequence[str]) -> int:
    """``job.main()``: ``python jobs/x.py -p k=v`` (or under spark-submit) runs that job."""
    parser = argparse.ArgumentParser(prog=job.file or job.name,
                                     description=f"Run job {job.name!r} with spark-recover.")
    _run_options(parser)
    args = parser.parse_args(argv)
    return _guarded(_cmd_run, args, job)


if __name__ == "__main__":
    sys.exit(main())
