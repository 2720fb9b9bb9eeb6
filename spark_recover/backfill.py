"""Backfills: one logical run per parameter value, resumable as a whole.

``spark-recover backfill JOB_FILE -p day=2026-11-01..2026-11-30 [-p k=v]... [--parallel N]``
runs the job once per value (per combination, when several parameters are
swept). Each value is what ``run --resume`` makes of it: its own logical run,
with its own lease and exactly-once sinks. So running the same backfill again
skips the values that succeeded, resumes those that failed (or whose driver
died), and never runs a value twice at once: a value another process is
running is refused (the lease), and the backfill goes on with the others.

A swept value is written ``a..b`` (every integer, or every day, from ``a`` to
``b`` inclusive) or ``a,b,c`` (those values, in that order); any other value
is fixed. Every value is checked before anything runs (:func:`expand`,
:func:`check_known`, each value's sinks and sources resolved): bad input
writes nothing.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from .config import Settings, load_settings
from .errors import RecoverError, RefusedError, UsageError
from .job import Job
from .ledger import Ledger
from .rerun import check_params, params_key
from .sinks import SinkTarget, placeholders, resolve_sinks
from .storage import Layout, canonical

__all__ = ["MAX_VALUES", "expand_value", "expand", "known_params", "check_known", "overwritten_together", "Outcome",
           "Backfill", "backfill", "backfill_status", "backfill_text", "status_text"]

MAX_VALUES = 10_000  # values in one backfill: a typo in a range must not start a million runs


def expand_value(key: str, value: Any) -> list[Any]:
    """The values one ``-p key=value`` stands for: ``a..b`` a range (integers or ISO days, inclusive),
    ``a,b,c`` a list, anything else itself. From Python, a list, tuple or ``range`` is a list.

    >>> expand_value("day", "2026-11-29..2026-12-01")
    ['2026-11-29', '2026-11-30', '2026-12-01']
    >>> expand_value("n", "1..3"), expand_value("region", "eu,us"), expand_value("x", "7")
    (['1', '2', '3'], ['eu', 'us'], ['7'])
    """
    if isinstance(value, (list, tuple, range)):
        values = list(value)
    elif not isinstance(value, str):
        return [value]
    elif ".." in value:
        values = _range(key, value)
    elif "," in value:
        values = [v.strip() for v in value.split(",")]
        if any(v == "" for v in values):
            raise UsageError(f"malformed list for parameter {key!r}: {value!r}",
                             "expected values separated by commas, none empty (for example -p region=eu,us)",
                             param=key, value=value)
    else:
        return [value]
    if not values:
        raise UsageError(f"parameter {key!r} has no values", "expected at least one value", param=key)
    if len(values) > MAX_VALUES:
        raise _too_many(key, len(values))
    seen: set[str] = set()
    for v in values:
        try:
            marker = json.dumps(v, sort_keys=True)
        except (TypeError, ValueError):
            raise UsageError(f"parameter {key!r} has a value that is not a JSON value: {v!r}",
                             "expected strings, numbers, booleans, lists or dicts", param=key) from None
        if marker in seen:
            raise UsageError(f"parameter {key!r} lists {v!r} twice", "expected each value once: a value is one "
                             "logical run", param=key, value=v)
        seen.add(marker)
    return values


def _too_many(key: str, count: int) -> UsageError:
    return UsageError(f"parameter {key!r} has {count:,} values", f"expected at most {MAX_VALUES:,} in one "
                      "backfill; split it", param=key, values=count)


def _range(key: str, text: str) -> list[str]:
    first, _, last = text.partition("..")
    first, last = first.strip(), last.strip()
    try:
        a, b = int(first), int(last)
        if b < a:
            raise UsageError(f"empty range for parameter {key!r}: {text!r}", f"expected {first} <= {last}",
                             param=key, value=text)
        if b - a >= MAX_VALUES:
            raise _too_many(key, b - a + 1)  # before listing them
        return [str(n) for n in range(a, b + 1)]
    except ValueError:
        pass
    try:
        d0, d1 = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    except ValueError:
        raise UsageError(f"malformed range for parameter {key!r}: {text!r}",
                         "expected FIRST..LAST of two integers (1..10) or two ISO dates (2026-11-01..2026-11-30)",
                         param=key, value=text) from None
    if d1 < d0:
        raise UsageError(f"empty range for parameter {key!r}: {text!r}", f"expected {first} on or before {last}",
                         param=key, value=text)
    days = (d1 - d0).days + 1
    if days > MAX_VALUES:
        raise _too_many(key, days)
    return [(d0 + dt.timedelta(days=n)).isoformat() for n in range(days)]


def expand(params: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The swept keys and every value's parameters (the product of the swept keys' values, in order).

    >>> expand({"day": "1..2", "region": "eu,us", "out": "/w"})[1][:2]
    [{'day': '1', 'region': 'eu', 'out': '/w'}, {'day': '1', 'region': 'us', 'out': '/w'}]
    """
    options = {k: expand_value(k, v) for k, v in params.items()}
    swept = [k for k, v in params.items() if isinstance(v, (list, tuple, range)) or len(options[k]) > 1
             or (isinstance(v, str) and (".." in v or "," in v))]
    if not swept:
        raise UsageError("nothing to backfill", "expected a range or a list in at least one parameter, for example "
                         "-p day=2026-11-01..2026-11-30, -p n=1..10 or -p region=eu,us")
    combos = list(itertools.product(*(options[k] for k in swept)))
    if len(combos) > MAX_VALUES:
        raise UsageError(f"{len(combos):,} values to backfill", f"expected at most {MAX_VALUES:,}; split it",
                         values=len(combos))
    fixed = {k: options[k][0] for k in params if k not in swept}
    out = []
    for combo in combos:
        value = {**fixed, **dict(zip(swept, combo))}
        out.append(check_params({k: value[k] for k in params}))  # the parameters in the order given
    return swept, out


def known_params(job: Job) -> set[str] | None:
    """The parameter names a job reads (placeholders of its paths and predicates, and its stages'
    ``params[...]``), or ``None`` when a stage may read any."""
    names: set[str] = set()
    for stage in job.stages:
        if stage.visible_params is None:
            return None
        names |= stage.visible_params
    templates = [s.path or "" for s in job.sources] + [s.path or "" for s in job.sinks] \
        + [s.predicate or "" for s in job.sinks]
    for template in templates:
        names |= placeholders(template)
    return names


def check_known(job: Job, params: Mapping[str, Any]) -> None:
    """Refuse (exit 2) a parameter the job never reads: a typo would start one useless run per value."""
    known = known_params(job)
    unknown = sorted(set(params) - known) if known is not None else []
    if unknown:
        raise UsageError(f"job {job.name!r} reads no parameter {', '.join(map(repr, unknown))}",
                         f"expected parameters it reads: {', '.join(sorted(known)) or 'none'}",
                         unknown=unknown, known=sorted(known))


@dataclass
class Outcome:
    """What one value of a backfill came to."""

    value: dict[str, Any]  # the swept parameters
    params: dict[str, Any]
    status: str  # succeeded, skipped (already succeeded), failed, refused
    run_id: str | None = None
    origin_run_id: str | None = None  # the failed run it resumed
    seconds: float | None = None
    detail: str | None = None


@dataclass
class Backfill:
    """A backfill's outcomes, one per value, in value order.

    >>> Backfill("j", ["day"], []).exit_code
    0
    """

    job: str
    swept: list[str]
    outcomes: list[Outcome]

    @property
    def exit_code(self) -> int:
        """0: every value succeeded (now or before); 1: some failed; 3: some refused (running elsewhere)."""
        statuses = {o.status for o in self.outcomes}
        return 1 if "failed" in statuses else 3 if "refused" in statuses else 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def to_json(self) -> dict[str, Any]:
        return {"job": self.job, "swept": self.swept, "exit_code": self.exit_code,
                "counts": {s: sum(o.status == s for o in self.outcomes)
                           for s in ("succeeded", "skipped", "failed", "refused")},
                "values": [asdict(o) for o in self.outcomes]}

    def __repr__(self) -> str:
        return backfill_text(self)


def _value_text(value: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in value.items())


def overwritten_together(values: Sequence[Mapping[str, Any]],
                         targets: Sequence[Sequence[SinkTarget]]) -> tuple[SinkTarget, list[Mapping[str, Any]]] | None:
    """A sink that two values overwrite whole, or the same slice of, and those values (``None``: none).

    ``targets`` are each value's sinks, filled. Run at once, such a table ends
    with whichever value commits last. (Overlapping ``replace_where`` slices,
    ``day <= '{day}'``, are the job's to avoid: they cannot be told from text.)

    >>> from spark_recover.job import Sink
    >>> from spark_recover.storage import Target
    >>> def filled(day):
    ...     return [SinkTarget(Sink("s", path="/w/all", mode="overwrite"), Target.parse("/w/all"), None),
    ...             SinkTarget(Sink("s", path="/w", mode="replace_where"), Target.parse("/w/t"), f"day = '{day}'")]
    >>> shared, by = overwritten_together([{"day": 1}, {"day": 2}], [filled(1), filled(2)])
    >>> shared.table, by
    ('/w/all', [{'day': 1}, {'day': 2}])
    >>> overwritten_together([{"day": 1}], [filled(1)]) is None
    True
    """
    for index in range(len(targets[0]) if targets else 0):
        seen: dict[tuple[str, str | None], Mapping[str, Any]] = {}
        for value, filled in zip(values, targets):
            st = filled[index]
            if st.sink.mode not in ("overwrite", "replace_where"):
                break
            where = (canonical(st.table), st.predicate if st.sink.mode == "replace_where" else None)
            if where in seen:
                return st, [seen[where], value]
            seen[where] = value
    return None


def _prepare(job: Job, params: Mapping[str, Any], settings: Settings,
             parallel: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Every value, checked before anything runs: ranges, names, each value's sources and sinks, and
    (values at once) no table two values overwrite."""
    swept, values = expand(params)
    check_known(job, values[0])
    layout = Layout.at(settings.root, settings.storage_options)
    targets = []
    for value in values:
        for source in job.sources:
            source.location(value)
        targets.append(resolve_sinks(job, value, layout, settings.sink_root, created=()))
    shared = overwritten_together(values, targets) if parallel > 1 else None
    if shared is not None:
        st, (one, other) = shared
        raise UsageError(
            f"--parallel {parallel}: values {_value_text({k: one[k] for k in swept})} and "
            f"{_value_text({k: other[k] for k in swept})} both overwrite sink {st.table} "
            f"({st.sink.mode}{f' where {st.predicate}' if st.predicate else ''}, stage {st.sink.stage!r})",
            "expected each value to write a table or slice of its own when values run at once (a swept "
            "parameter in the path, or in the replace_where predicate): the table would end with whichever "
            "value commits last. Run without --parallel (values commit in order, the last value's data stays)",
            sink=st.table, values=[one, other])
    return swept, values


def backfill(job: Job, params: Mapping[str, Any], *, parallel: int = 1, root: str | None = None,
             settings: Settings | None = None, spark=None, echo: bool = True) -> Backfill:
    """Run ``job`` once per value of the swept parameters, as ``run --resume`` would each.

    Values that succeeded before are skipped, failed ones resumed. ``parallel``
    values run at once, in threads sharing one Spark session. A table several
    values write then takes concurrent commits: a write Delta refuses because
    another came first is written again (:func:`spark_recover.sinks.publish`); a
    table two values overwrite whole, or the same slice of, is refused (exit 2),
    since it would end with whichever value commits last.

    >>> job.backfill({"day": "2026-11-01..2026-11-30", "out": "/w"}, parallel=2)   # doctest: +SKIP
    """
    from . import session
    from .runner import replay_choice, run_job

    if not isinstance(parallel, int) or parallel < 1:
        raise UsageError(f"bad --parallel {parallel!r}", "expected a number of values to run at once, >= 1")
    settings = settings or load_settings(root=root, project=job.project)
    swept, values = _prepare(job, params, settings, parallel)
    ledger = Ledger(Layout.at(settings.root, settings.storage_options), settings.dead_after_seconds)
    if spark is None:
        if not (session.attached() or settings.remote):
            session.check_buildable()
        spark = session.get_spark(settings)  # one session for every value
    say = (lambda line: print(line, flush=True)) if echo else (lambda line: None)
    say(f"backfill of job {job.name}: {len(values)} value(s) of {', '.join(swept)}"
        + (f", {parallel} at a time" if parallel > 1 else ""))
    lock, done = threading.Lock(), [0]

    def one(value: dict[str, Any]) -> Outcome:
        shown = {k: value[k] for k in swept}
        started = time.monotonic()
        try:
            origin, why = replay_choice(ledger, job, value)
            if why.startswith("done:"):
                newest = [r for r in ledger.runs(job.name, params_key=params_key(value)) if not r.refused]
                outcome = Outcome(shown, value, "skipped", newest[-1].run_id if newest else None,
                                  detail=why.removeprefix("done: "))
            else:
                result = run_job(job, value, settings=settings, spark=spark, resume_from=origin, echo=False)
                outcome = Outcome(shown, value, "succeeded" if result.ok else "failed", result.run_id,
                                  origin.run_id if origin else None, round(time.monotonic() - started, 3),
                                  result.error)
        except RefusedError as exc:
            outcome = Outcome(shown, value, "refused", detail=f"{exc.headline}: {exc.detail}")
        except RecoverError as exc:
            outcome = Outcome(shown, value, "failed", detail=f"{exc.headline}: {exc.detail}")
        with lock:
            done[0] += 1
            say(f"[{done[0]}/{len(values)}] {_value_text(shown)}: {_outcome_line(outcome)}")
        return outcome

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="backfill") as pool:
        outcomes = list(pool.map(one, values))
    return Backfill(job.name, swept, outcomes)


def _outcome_line(o: Outcome) -> str:
    if o.status == "skipped":
        return f"skipped: {o.detail}"
    if o.status == "refused":
        return f"refused: {o.detail}"
    resumed = f", resuming {o.origin_run_id}" if o.origin_run_id else ""
    if o.status == "succeeded":
        return f"succeeded in {o.seconds:.1f}s (run {o.run_id}{resumed})"
    return f"FAILED (run {o.run_id}{resumed}): {o.detail}"


def _totals(b: Backfill) -> str:
    counts = b.to_json()["counts"]
    return (f"backfill of job {b.job}: {counts['succeeded']} succeeded, {counts['skipped']} skipped (done before), "
            f"{counts['failed']} failed, {counts['refused']} refused (running elsewhere)"
            + ("; run the same backfill again to resume the failed ones" if counts["failed"] else ""))


def backfill_text(b: Backfill) -> str:
    """A backfill's outcomes as a table and its totals."""
    from .display import table

    rows = [[_value_text(o.value), o.status, o.run_id, o.origin_run_id, o.seconds, o.detail or ""]
            for o in b.outcomes]
    return table(["value", "status", "run", "resumed", "seconds", "detail"], rows) + "\n" + _totals(b)


def backfill_status(job: Job, params: Mapping[str, Any], *, root: str | None = None,
                    settings: Settings | None = None) -> list[dict[str, Any]]:
    """Where each value of a backfill stands, from the ledger (no JVM): its newest run's status, run id,
    start, seconds, and how many runs its logical run took.

    >>> job.backfill_status({"day": "2026-11-01..2026-11-30", "out": "/w"})[0]["status"]   # doctest: +SKIP
    'succeeded'
    """
    from .history import iso

    settings = settings or load_settings(root=root, project=job.project)
    swept, values = expand(params)
    check_known(job, values[0])
    ledger = Ledger(Layout.at(settings.root, settings.storage_options), settings.dead_after_seconds)
    out = []
    for value in values:
        runs = [r for r in ledger.runs(job.name, params_key=params_key(value)) if not r.refused]
        newest = runs[-1] if runs else None
        logical = [r for r in runs if newest and r.logical_run_id == newest.logical_run_id]
        out.append({"value": {k: value[k] for k in swept}, "status": newest.status if newest else "not started",
                    "run_id": newest.run_id if newest else None,
                    "logical_run_id": newest.logical_run_id if newest else None,
                    "started_at": iso(newest.started_at) if newest else None,
                    "seconds": newest.total_seconds if newest else None, "attempts": len(logical),
                    "recovered_by": newest.recovered_by if newest else None, "error": newest.error if newest else None})
    return out


def status_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """``backfill show``: a row per value, then the count of each status."""
    from .display import table

    body = table(["value", "status", "run", "started (UTC)", "seconds", "attempts"],
                  [[_value_text(r["value"]), r["status"], r["run_id"], (r["started_at"] or "-")[:19].replace("T", " "),
                   r["seconds"], r["attempts"]]
                   for r in rows])
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return body + "\n" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
