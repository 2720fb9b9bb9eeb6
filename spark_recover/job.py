"""Job definitions: sources and stages, validated the moment they are declared.

>>> from spark_recover import Job
>>> job = Job("daily_sales")
>>> orders = job.source("orders", path="{data}/orders")
>>> @job.stage
... def cleaned(orders):
...     return orders.where("amount > 0")
>>> [s.name for s in job.stages]
['cleaned']
"""

from __future__ import annotations

import datetime as dt
import decimal
import inspect
import json
import keyword
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, TypeVar, overload

from .errors import JobDefinitionError
from .fingerprint import unpinned_reads, visible_params
from .project import project_folder
from .storage import anchored

if TYPE_CHECKING:  # pragma: no cover
    from .config import Settings
    from .runner import RunResult
    from .backfill import Backfill
    from .preview import Preview

__all__ = ["Job", "Source", "Stage", "Sink", "Chunks", "chunk_key", "check_chunks", "SINK_MODES", "INJECTABLE",
           "UnpinnedReadWarning", "load_job"]

INJECTABLE = ("params", "spark", "chunk")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_JOB_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
F = TypeVar("F", bound=Callable[..., Any])


class UnpinnedReadWarning(UserWarning):
    """A stage reads tables through the injected ``spark``: no pin covers those reads."""


@dataclass(frozen=True)
class Source:
    """An input table. A Delta source is pinned to its version at run start.

    ``path`` may hold ``{param}`` placeholders, filled from the run parameters;
    a relative path is under the job's ``project`` folder. Non-Delta sources
    (``format="parquet"``, ...) are fingerprinted by their file listing.
    """

    name: str
    path: str | None = None
    table: str | None = None
    format: str = "delta"
    options: Mapping[str, str] = field(default_factory=dict)
    project: str = ""  # the folder a relative path is under (the job's project)

    def location(self, params: Mapping[str, Any]) -> str:
        """The absolute path (placeholders filled) or catalog table name this source reads."""
        if self.table is not None:
            return self.table
        return _fill_path(f"source {self.name!r}", self.path or "", params, self.project)


@dataclass(frozen=True)
class Stage:
    """A function from input DataFrames to one output DataFrame."""

    name: str
    func: Callable[..., Any]
    inputs: tuple[str, ...]
    wants_params: bool
    wants_spark: bool
    visible_params: frozenset[str] | None
    chunks: "Chunks | None" = None  # a chunked stage: run once per chunk, each chunk recorded on its own

    def call(self, frame: Callable[[str], Any], params: Mapping[str, Any], spark: Any, chunk: Any = None) -> Any:
        """Run the stage: each input by name from ``frame``, plus ``params`` and ``spark`` if it asks.

        >>> stage.call({"orders": orders_df}.__getitem__, {}, spark)   # doctest: +SKIP
        """
        kwargs = {name: frame(name) for name in self.inputs}
        if self.wants_params:
            kwargs["params"] = params
        if self.wants_spark:
            kwargs["spark"] = spark
        if self.chunks is not None:
            kwargs["chunk"] = chunk
        return self.func(**kwargs)

    def chunk_values(self, params: Mapping[str, Any], frame: Callable[[str], Any] | None = None) -> list[Any]:
        """The chunks of this stage for ``params`` (a source column's distinct values need ``frame``)."""
        spec = self.chunks
        assert spec is not None
        if spec.of_params is not None:
            return check_chunks(self.name, spec.of_params(MappingProxyType(dict(params))))
        assert frame is not None
        rows = frame(spec.source).select(spec.column).distinct().collect()
        return check_chunks(self.name, sorted((_plain(r[0]) for r in rows), key=chunk_key))


@dataclass(frozen=True)
class Chunks:
    """How a chunked stage is split: the values a function of the parameters returns
    (``chunks=lambda params: [...]``), or the distinct values of a column of one of its
    source inputs (``chunks=job.distinct("events", "day")``), read at the pinned version."""

    of_params: Callable[[Mapping[str, Any]], Sequence[Any]] | None = None
    source: str | None = None
    column: str | None = None

    def __str__(self) -> str:
        return f"distinct {self.source}.{self.column}" if self.source else \
            f"{getattr(self.of_params, '__name__', 'function')}(params)"


def chunk_key(value: Any) -> str:
    """A chunk value's key: its JSON text (one key for one value, whatever the order of a dict's keys).

    >>> chunk_key("2026-11-01"), chunk_key({"b": 1, "a": 2})
    ('"2026-11-01"', '{"a": 2, "b": 1}')
    """
    return json.dumps(value, sort_keys=True)


def check_chunks(stage: str, values: Any) -> list[Any]:
    """A chunked stage's values, checked: a non-empty list of unique JSON values (:class:`UsageError`, exit 2).

    >>> check_chunks("daily", ["a", "b"])
    ['a', 'b']
    """
    from .errors import UsageError

    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise UsageError(f"the chunks of stage {stage!r} are not a list",
                         f"expected a list of JSON values (strings, numbers, ...), found {type(values).__name__}",
                         stage=stage)
    values = list(values)
    if not values:
        raise UsageError(f"stage {stage!r} has no chunks", "expected at least one chunk value", stage=stage)
    keys: dict[str, Any] = {}
    for value in values:
        try:
            key = chunk_key(value)
        except (TypeError, ValueError):
            raise UsageError(f"chunk {value!r} of stage {stage!r} is not a JSON value",
                             "expected strings, numbers, booleans, lists or dicts (a chunk is recorded in the "
                             "ledger)", stage=stage, chunk=repr(value)) from None
        if key in keys:
            raise UsageError(f"stage {stage!r} lists chunk {value!r} twice",
                             "expected each chunk once: a chunk is computed and recorded once", stage=stage,
                             chunk=value)
        keys[key] = value
    return values


SINK_MODES = ("append", "overwrite", "replace_where", "merge")


@dataclass(frozen=True)
class Sink:
    """An output table a stage's result is published to, exactly once per run.

    Modes: ``append``; ``overwrite``; ``replace_where`` (overwrite the rows
    matching ``predicate``, whose ``{param}`` placeholders are filled with
    safely quoted literals); ``merge`` (upsert on ``keys``). A relative
    ``path`` is under the job's ``project`` folder.
    """

    stage: str
    path: str | None = None
    table: str | None = None
    mode: str = "append"
    predicate: str | None = None
    keys: tuple[str, ...] = ()
    project: str = ""  # the folder a relative path is under (the job's project)

    def location(self, params: Mapping[str, Any]) -> str:
        """The absolute path (placeholders filled) or catalog table name written to."""
        if self.table is not None:
            return self.table
        return _fill_path(f"sink of stage {self.stage!r}", self.path or "", params, self.project)


def _plain(value: Any) -> Any:
    """A column value as a chunk: dates and times as ISO text, decimals as text."""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def _fill_path(what: str, template: str, params: Mapping[str, Any], project: str) -> str:
    """The path with its placeholders filled, then anchored under ``project`` if relative.

    Filled first: a parameter may hold an absolute path or a URI (``path="{data}/orders"``).
    """
    try:
        return anchored(template.format_map(dict(params)), base=project)
    except KeyError as exc:
        from .errors import UsageError
        raise UsageError(f"{what} needs parameter {exc.args[0]!r}",
                         f"its path is {template!r}; given parameters: {sorted(params) or 'none'}",
                         missing=exc.args[0]) from None


def _check_name(kind: str, name: Any, pattern: re.Pattern[str] = _NAME) -> None:
    if not isinstance(name, str) or not pattern.match(name) or keyword.iskeyword(name):
        raise JobDefinitionError(
            f"bad {kind} name {name!r}",
            f"expected letters, digits and underscores, starting with a letter or underscore"
            f"{' (dots and dashes allowed)' if pattern is _JOB_NAME else ''}, at most 64 characters",
            kind=kind, name=name)


class Job:
    """A named pipeline of stages over sources.

    Stages are declared in dependency order: a stage's parameters name sources
    or earlier stages (plus the injectables ``params`` and ``spark``), so a
    misspelled input or a cycle fails when the job file is imported.

    >>> job = Job("example")
    >>> job.name
    'example'
    """

    def __init__(self, name: str) -> None:
        _check_name("job", name, _JOB_NAME)
        self.name = name
        caller = sys._getframe(1).f_globals
        file = caller.get("__file__")
        self.file: str | None = os.path.abspath(file) if file else None
        #: Where the default root and conf file and relative paths are found: never the working
        #: directory, except for a job defined in a notebook (no file).
        self.project: str = project_folder(self.file)
        self._sources: dict[str, Source] = {}
        self._stages: dict[str, Stage] = {}
        self._sinks: list[Sink] = []

    def __repr__(self) -> str:
        return f"Job({self.name!r}, sources={list(self._sources)}, stages={list(self._stages)})"

    @property
    def sources(self) -> list[Source]:
        return list(self._sources.values())

    @property
    def stages(self) -> list[Stage]:
        """Stages in declaration order, which is a topological order."""
        return list(self._stages.values())

    @property
    def sinks(self) -> list[Sink]:
        return list(self._sinks)

    def sink(self, stage: str, *, path: str | None = None, table: str | None = None,
             mode: str = "append", predicate: str | None = None,
             keys: Sequence[str] | None = None) -> Sink:
        """Publish a stage's output to a Delta table, exactly once per run.

        Sinks are written after every stage has succeeded, in declaration order,
        each as an idempotent Delta write.

        >>> job = Job("j")
        >>> _ = job.source("orders", path="data/orders")
        >>> @job.stage
        ... def daily(orders):
        ...     return orders
        >>> job.sink("daily", path="out/daily", mode="replace_where", predicate="day = '{day}'").mode
        'replace_where'
        """
        if stage not in self._stages:
            raise JobDefinitionError(f"sink of unknown stage {stage!r}",
                                     f"expected a stage of job {self.name!r}: {list(self._stages)}",
                                     stage=stage)
        if (path is None) == (table is None):
            raise JobDefinitionError(f"sink of stage {stage!r} needs exactly one location",
                                     f"expected path=... or table=..., found path={path!r}, "
                                     f"table={table!r}", stage=stage)
        if mode not in SINK_MODES:
            raise JobDefinitionError(f"unknown sink mode {mode!r}", f"expected one of {list(SINK_MODES)}",
                                     stage=stage, mode=mode)
        if (mode == "replace_where") != (predicate is not None):
            raise JobDefinitionError(f"sink of stage {stage!r}: predicate= goes with mode='replace_where'",
                                     f"found mode={mode!r}, predicate={predicate!r}", stage=stage)
        if (mode == "merge") != bool(keys):
            raise JobDefinitionError(f"sink of stage {stage!r}: keys= goes with mode='merge'",
                                     f"found mode={mode!r}, keys={keys!r}", stage=stage)
        target = Sink(stage=stage, path=path, table=table, mode=mode, predicate=predicate,
                      keys=tuple(keys or ()), project=self.project)
        if any((s.path, s.table) == (path, table) for s in self._sinks):
            raise JobDefinitionError("two sinks write the same table",
                                     f"{path or table!r} is already a sink of this job", stage=stage)
        self._sinks.append(target)
        return target

    def _check_new(self, kind: str, name: str) -> None:
        _check_name(kind, name)
        if name in INJECTABLE:
            raise JobDefinitionError(f"{kind} name {name!r} is reserved",
                                     f"{INJECTABLE} are injected into stages; choose another name",
                                     kind=kind, name=name)
        if name in self._sources or name in self._stages:
            what = "source" if name in self._sources else "stage"
            raise JobDefinitionError(f"duplicate name {name!r} in job {self.name!r}",
                                     f"a {what} named {name!r} is already defined; "
                                     "every source and stage needs its own name",
                                     kind=kind, name=name)

    def source(self, name: str, *, path: str | None = None, table: str | None = None,
               format: str = "delta", options: Mapping[str, str] | None = None) -> Source:
        """Declare an input table read by path or by catalog table name.

        >>> job = Job("j")
        >>> job.source("orders", path="data/orders").format
        'delta'
        """
        self._check_new("source", name)
        if (path is None) == (table is None):
            raise JobDefinitionError(f"source {name!r} needs exactly one location",
                                     f"expected path=... or table=..., found "
                                     f"path={path!r}, table={table!r}", name=name)
        if table is not None and format != "delta":
            raise JobDefinitionError(f"source {name!r}: a catalog table must be Delta",
                                     f"found format={format!r}; read other formats by path",
                                     name=name)
        src = Source(name=name, path=path, table=table, format=format, options=dict(options or {}),
                     project=self.project)
        self._sources[name] = src
        return src

    @overload
    def stage(self, func: F) -> F: ...
    @overload
    def stage(self, func: None = None, *, name: str | None = None, chunks: Any = None) -> Callable[[F], F]: ...

    def stage(self, func: Callable[..., Any] | None = None, *, name: str | None = None, chunks: Any = None) -> Any:
        """Register a stage; works as ``@job.stage`` and ``@job.stage(name=..., chunks=...)``.

        ``chunks``: run the stage once per chunk, each chunk's output committed and
        recorded on its own (a resume recomputes only the chunks not done), and
        downstream stages read their union. A function of the parameters returning
        the chunk values, or :meth:`distinct` (a source column's values). The stage
        takes the chunk value as its ``chunk`` argument. The function is returned
        unchanged, so it stays testable on its own.

        >>> @job.stage(chunks=lambda params: params["days"].split(","))   # doctest: +SKIP
        ... def daily(events, chunk):
        ...     return events.where(events.day == chunk)
        """
        def register(fn: F) -> F:
            self._add_stage(fn, name or getattr(fn, "__name__", None), chunks)
            return fn
        return register(func) if func is not None else register

    def distinct(self, source: str, column: str) -> Chunks:
        """Chunks over the distinct values of ``column`` of ``source``, read at the version the run pinned.

        >>> job.distinct("events", "day")   # doctest: +SKIP
        """
        if source not in self._sources:
            raise JobDefinitionError(f"chunks over unknown source {source!r}",
                                     f"expected a source of job {self.name!r}: {', '.join(self._sources) or 'none'}",
                                     source=source)
        return Chunks(source=source, column=column)

    def _add_stage(self, fn: Callable[..., Any], name: Any, chunks: Any = None) -> None:
        if not callable(fn):
            raise JobDefinitionError("a stage must be a function",
                                     f"found {type(fn).__name__}", found=type(fn).__name__)
        self._check_new("stage", name)
        inputs: list[str] = []
        for pname, param in inspect.signature(fn).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
                raise JobDefinitionError(
                    f"stage {name!r} has an unsupported parameter {pname!r}",
                    "expected plain named parameters (inputs by name, plus params/spark); "
                    "found *args, **kwargs or a positional-only parameter", stage=name, param=pname)
            if pname in INJECTABLE:
                continue
            if pname == name:
                raise JobDefinitionError(f"stage {name!r} reads itself",
                                         "a stage cannot take its own output as input (a cycle)",
                                         stage=name, input=pname)
            if pname not in self._sources and pname not in self._stages:
                known = sorted(self._sources) + sorted(self._stages)
                raise JobDefinitionError(
                    f"stage {name!r} takes unknown input {pname!r}",
                    f"expected a source or an earlier stage of job {self.name!r}: "
                    f"{', '.join(known) or 'none defined yet'}. Declare a stage before the "
                    "stages that read it.", stage=name, input=pname, known=known)
            inputs.append(pname)
        params = inspect.signature(fn).parameters
        spec = Chunks(of_params=chunks) if callable(chunks) and not isinstance(chunks, Chunks) else chunks
        if spec is not None and not isinstance(spec, Chunks):
            raise JobDefinitionError(f"bad chunks for stage {name!r}", "expected a function of the parameters "
                                     "returning the chunk values, or job.distinct(source, column)", stage=name)
        if (spec is not None) != ("chunk" in params):
            raise JobDefinitionError(f"stage {name!r} " + ("has chunks but no 'chunk' argument" if spec else
                                                           "takes 'chunk' but declares no chunks"),
                                     "a chunked stage is declared @job.stage(chunks=...) and takes the chunk value "
                                     "as its 'chunk' argument", stage=name)
        if spec is not None and spec.source is not None and spec.source not in inputs:
            raise JobDefinitionError(f"stage {name!r} is chunked over source {spec.source!r}, which it does not read",
                                     f"expected {spec.source!r} among its inputs", stage=name, source=spec.source)
        reads = unpinned_reads(fn) if "spark" in params else []
        if reads:
            warnings.warn(UnpinnedReadWarning(
                f"stage {name!r} reads tables through {', '.join(reads)}: those reads are not pinned, so a "
                "resume may reuse its checkpoint after the table changed. Declare the table with "
                f"job.source(...) and take it as an input of {name!r} to pin it"), stacklevel=3)
        self._stages[name] = Stage(
            name=name, func=fn, inputs=tuple(inputs), wants_params="params" in params,
            wants_spark="spark" in params, visible_params=visible_params(fn), chunks=spec)

    def downstream(self, names: Sequence[str]) -> set[str]:
        """The named stages and every stage that depends on them."""
        unknown = [n for n in names if n not in self._stages]
        if unknown:
            raise JobDefinitionError(f"unknown stage {unknown[0]!r} in job {self.name!r}",
                                     f"expected one of {list(self._stages)}", stage=unknown[0])
        out = set(names)
        for stage in self.stages:
            if any(i in out for i in stage.inputs):
                out.add(stage.name)
        return out

    # Running is delegated to the runner; these are the notebook/test front door.
    def run(self, params: Mapping[str, Any] | None = None, *, root: str | None = None,
            settings: "Settings | None" = None, spark: Any = None, resume_from: str | None = None,
            rerun: Sequence[str] = (), refresh_sources: bool = False, new_run: bool = False,
            echo: bool = True) -> "RunResult":
        """Run the job; ``resume_from=RUN_ID`` replays that run instead.

        ``spark``: the session to run in (default: the active one, else a
        Spark Connect session named by ``$SPARK_REMOTE`` or the conf file, else
        a local one built from the conf file). ``root``/``settings``: where the
        ledger and checkpoints live. ``rerun``: stages to recompute with their
        downstream. ``refresh_sources``: re-pin Delta sources on a replay.
        ``new_run``: start a new logical run even though the newest run with
        these parameters failed after publishing a sink (refused otherwise).
        ``echo``: print progress lines.

        >>> result = job.run(params={"day": "2026-11-23"})   # doctest: +SKIP
        >>> result.status   # doctest: +SKIP
        'succeeded'
        """
        from .runner import run_job
        return run_job(self, params or {}, root=root, settings=settings, spark=spark, resume_from=resume_from,
                       rerun=rerun, refresh_sources=refresh_sources, new_run=new_run, echo=echo)

    def plan(self, params: Mapping[str, Any] | None = None, *, resume: bool = False, from_run: str | None = None,
             rerun: Sequence[str] = (), refresh_sources: bool = False, new_run: bool = False,
             root: str | None = None, settings: "Settings | None" = None) -> "Preview":
        """What :meth:`run` (``resume=True``: ``run --resume``; ``from_run=``: :meth:`resume`) would do, without
        running it or starting a JVM: per stage reuse or recompute and why, the source pins, per sink write,
        skip or refuse, a live lease holder. ``plan.refused``: the command would be refused.

        >>> print(job.plan({"day": "2026-11-23"}, resume=True))   # doctest: +SKIP
        """
        from .preview import preview
        return preview(self, params or {}, resume=resume, from_run=from_run, rerun=rerun,
                       refresh_sources=refresh_sources, new_run=new_run, root=root, settings=settings)

    def resume(self, run_id: str, *, params: Mapping[str, Any] | None = None, root: str | None = None,
               settings: "Settings | None" = None, spark: Any = None, rerun: Sequence[str] = (),
               refresh_sources: bool = False, echo: bool = True) -> "RunResult":
        """Replay run ``run_id`` as a new run, reusing what is still valid.

        ``params`` overrides some of the run's parameters; the other options
        are those of :meth:`run`.

        >>> job.resume("20261125T101500Z-1a2b3c4d5e6f7a8b")   # doctest: +SKIP
        """
        from .runner import resume_job
        return resume_job(self, run_id, params=params, root=root, settings=settings, spark=spark, rerun=rerun,
                          refresh_sources=refresh_sources, echo=echo)

    def redo(self, run_id: str, *, from_stage: str | None = None, force: bool = False, root: str | None = None,
             settings: "Settings | None" = None, spark: Any = None, echo: bool = True) -> "RunResult":
        """Roll back run ``run_id``'s sinks, then replay it (``from_stage=`` to force a stage).

        ``force``: roll back even over other writers' commits.

        >>> job.redo("20261125T101500Z-1a2b3c4d5e6f7a8b", from_stage="daily")   # doctest: +SKIP
        """
        from .recovery import redo
        return redo(self, run_id, from_stage=from_stage, force=force, root=root, settings=settings, spark=spark,
                    echo=echo)

    def drill(self, params: Mapping[str, Any] | None = None, *, kills: int = 10, seed: int | None = None,
              with_rollback: bool = False, damage: bool = False, root: str | None = None,
              settings: "Settings | None" = None, echo: bool = True) -> dict[str, Any]:
        """Rehearse recovery of this job: random SIGKILLs of real driver processes, then a row-by-row check.

        Returns the report; ``report["ok"]`` is the verdict.

        >>> job.drill({"day": "2026-11-23"}, kills=5, seed=7)["ok"]   # doctest: +SKIP
        True
        """
        from .drill import drill
        from .errors import UsageError

        if not self.file:
            raise UsageError(f"job {self.name!r} has no job file", "a drill starts the job file as a driver "
                             "process: define the job in a .py file (or load it with load_job)")
        return drill(self.file, {k: str(v) for k, v in (params or {}).items()}, kills=kills, seed=seed,
                     with_rollback=with_rollback, damage=damage, root=root, settings=settings, echo=echo)

    def backfill(self, params: Mapping[str, Any], *, parallel: int = 1, root: str | None = None,
                 settings: "Settings | None" = None, spark: Any = None, echo: bool = True) -> "Backfill":
        """Run the job once per value of the swept parameters (``"a..b"``, ``"a,b"``, a list or ``range``),
        each as its own logical run, as ``run --resume`` would: values done before are skipped, failed ones
        resumed. Returns each value's outcome (``.ok``, ``.exit_code``, ``.to_json()``).

        >>> job.backfill({"day": "2026-11-01..2026-11-30", "out": "/w"})   # doctest: +SKIP
        """
        from .backfill import backfill
        return backfill(self, params, parallel=parallel, root=root, settings=settings, spark=spark, echo=echo)

    def backfill_status(self, params: Mapping[str, Any], *, root: str | None = None,
                        settings: "Settings | None" = None) -> list[dict[str, Any]]:
        """Where each value of a backfill stands (no JVM): its newest run's status, run id, start, seconds.

        >>> job.backfill_status({"day": "2026-11-01..2026-11-30", "out": "/w"})[0]["status"]   # doctest: +SKIP
        'succeeded'
        """
        from .backfill import backfill_status
        return backfill_status(self, params, root=root, settings=settings)

    def main(self, argv: Sequence[str] | None = None) -> None:
        """The ``spark-recover run`` CLI for this job file (works under spark-submit)."""
        from .cli import job_main
        raise SystemExit(job_main(self, list(sys.argv[1:] if argv is None else argv)))


def load_job(path: str, name: str | None = None) -> Job:
    """Import a job file (not as ``__main__``) and return the Job it defines.

    >>> job = load_job("jobs/demo_sales.py")   # doctest: +SKIP
    """
    import importlib.util

    from .errors import JobFileError

    if not os.path.isfile(path):
        raise JobFileError(f"job file not found: {path}",
                           "expected a Python file that defines a spark_recover.Job", path=path)
    path = os.path.abspath(path)
    module_name = "spark_recover_job_" + re.sub(r"\W", "_", path) + f"_{os.stat(path).st_mtime_ns}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise JobFileError(f"cannot import {path}", "expected a .py file", path=path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(path))
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except JobDefinitionError:
        raise
    except Exception as exc:
        raise JobFileError(f"job file {path} failed to import",
                           f"{type(exc).__name__}: {exc}", path=path) from exc
    finally:
        sys.path.remove(os.path.dirname(path))
    jobs = {v.name: v for v in vars(module).values() if isinstance(v, Job)}
    if not jobs:
        raise JobFileError(f"job file {path} defines no Job",
                           "expected a module-level `job = Job(\"name\")` with stages", path=path)
    if name is None and len(jobs) > 1:
        raise JobFileError(f"job file {path} defines several jobs",
                           f"found {sorted(jobs)}; choose one with --job NAME", path=path)
    if name is not None and name not in jobs:
        raise JobFileError(f"job file {path} has no job {name!r}", f"found {sorted(jobs)}", path=path)
    job = jobs[name] if name else next(iter(jobs.values()))
    job.file = path
    return job
