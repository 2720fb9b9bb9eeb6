"""Who a new run is: its parameters' key, its id, and whether a plain rerun may start.

Pure policy over run records (no JVM, no storage), used by the runner before it
takes the lease.

* The **parameters' key** names "this job with these parameters" for the lease
  and the sinks' ``txnAppId``. It is the same for the same values whatever
  their Python type: the API's ``{"n": 5}`` and the CLI's ``-p n=5`` are one key
  (the fingerprint still sees the typed values).
* A **run id** carries 64 random bits after its start second, so two runs
  started in the same second never share a record.
* A **plain rerun** (``run`` without ``--resume``) over a failed run that
  already published a sink would publish that data again as a new logical
  run: it is refused, naming ``--resume``, ``redo`` and ``--new-run``.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any, Mapping, Sequence

from .errors import RefusedError, UsageError
from .fingerprint import digest
from .history import RunRecord

__all__ = ["check_params", "replay_params", "params_key", "new_run_id", "published_tables", "plain_rerun_refusal"]


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A run's parameters as given, checked: names are non-empty strings, values JSON (:class:`UsageError`).

    >>> check_params({"day": "2026-11-23", "n": 5})
    {'day': '2026-11-23', 'n': 5}
    """
    out = dict(params)
    bad = [k for k in out if not isinstance(k, str) or not k]
    if bad:
        raise UsageError("bad parameter name", f"expected non-empty strings, found {bad!r}")
    try:
        json.dumps(out, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise UsageError("parameters must be JSON values",
                         f"expected strings, numbers, booleans, lists or dicts: {exc}") from None
    return out


def replay_params(origin: RunRecord, job: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters of a replay of ``origin`` by job ``job``: the run's own, with ``overrides``.

    A run of another job is refused (:class:`UsageError`): its job file defines other stages.
    """
    if origin.job != job:
        raise UsageError(f"run {origin.run_id} is of job {origin.job!r}, not {job!r}",
                         f"replay it with the job file that defines {origin.job!r}"
                         + (f" ({origin.job_file})" if origin.job_file else ""), run_id=origin.run_id)
    return {**origin.params, **(overrides or {})}


def _key_form(value: Any) -> Any:
    """A parameter value as a key sees it: scalars by their text, containers element by element."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return {str(k): _key_form(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_key_form(v) for v in value]
    return str(value)


def params_key(params: Mapping[str, Any]) -> str:
    """The key of a job's parameters: one key for the same values, typed or as text.

    String-only parameters (every CLI run) keep the key they always had.

    >>> params_key({"n": 5, "day": "2026-11-23"}) == params_key({"n": "5", "day": "2026-11-23"})
    True
    """
    return digest(_key_form(dict(params)), 16)


def new_run_id(now: dt.datetime | None = None) -> str:
    """A run id: the start second (UTC), then 64 random bits.

    >>> len(new_run_id().split("-")[1])
    16
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(8)}"


def published_tables(record: RunRecord) -> list[str]:
    """The sink tables a run planned or committed a write to (a planned write may have committed)."""
    return sorted(t for t, s in record.sinks.items() if s.get("status") in ("planned", "written"))


def plain_rerun_refusal(runs: Sequence[RunRecord], key: str, job_file: str | None) -> RefusedError | None:
    """Why a plain ``run`` of these parameters must not start, or ``None``.

    ``runs`` are the job's runs, oldest first. The newest non-refused run with
    this key decides: if it failed (not recovered, not rolled back) and its
    logical run published a sink, a new logical run would publish that data
    again.

    >>> plain_rerun_refusal([], "k", None) is None
    True
    """
    mine = [r for r in runs if r.params_key == key and not r.refused]
    if not mine:
        return None
    newest = mine[-1]
    if newest.status != "failed" or newest.recovered_by:
        return None
    # What its logical run published: a resume that failed before its sinks still owes the first run's.
    logical = newest.logical_run_id or newest.run_id
    tables = sorted({t for r in runs if (r.logical_run_id or r.run_id) == logical and not r.rolled_back
                     for t in published_tables(r)})
    if not tables:
        return None
    target = job_file or "JOB_FILE"
    return RefusedError(
        f"run {newest.run_id} with these parameters failed after publishing to {', '.join(tables)}",
        "a plain run would start a new logical run and publish that data again. Expected one of: "
        f"`spark-recover run {target} --resume` (finish it, each sink exactly once), "
        f"`spark-recover redo {newest.run_id}` (roll its sinks back, then replay it), or "
        f"`spark-recover run {target} --new-run` (a new logical run that publishes again, on purpose)",
        run_id=newest.run_id, tables=tables)
