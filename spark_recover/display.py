"""How runs show themselves in the terminal: text tables (the HTML page of a logical run: :mod:`~spark_recover.timeline`)."""

from __future__ import annotations

from typing import Any, Sequence

from .history import RunRecord

__all__ = ["cell", "table", "run_text", "runs_text", "params_text", "status_text"]


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(params.items())) or "-"


def cell(value: Any) -> str:
    """A value as a table cell shows it (``-`` for none, ``yes``/``no``, thousands separated)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table.

    >>> print(table(["a", "b"], [[1, "x"]]))
    a  b
    1  x
    """
    cells = [list(header)] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


_STAGE_COLUMNS = ["stage", "status", "reused", "version", "rows", "seconds", "reason"]


def _stage_rows(record: RunRecord) -> list[list[Any]]:
    """A row per stage; under a chunked stage, a row per chunk done (``chunk 'x'``, reused or computed)."""
    rows = []
    for s in record.stage_list():
        rows.append([s.name, s.status, s.reused, s.version, s.rows, s.seconds, s.error or s.reason])
        rows += [[f"  chunk {c['chunk']!r}", "reused" if c["reused"] else "done", c["reused"], c["version"],
                  c["rows"], c["seconds"], f"from run {c['from_run']}" if c["reused"] else None]
                 for c in s.chunk_list]
    return rows


_SINK_COLUMNS = ["sink table", "mode", "version before", "version after", "skipped duplicate", "txn", "status"]


def _sink_rows(record: RunRecord) -> list[list[Any]]:
    return [[table, s.get("mode"), s.get("version_before"), s.get("version_after"), s.get("skipped_duplicate"),
             s.get("txn_version"), s.get("status")] for table, s in record.sinks.items()]


def _rollback_text(record: RunRecord) -> str | None:
    journal = record.rollback
    if not journal:
        return None
    if journal.get("finished"):
        m = journal.get("metrics") or {}
        return (f"finished {journal.get('finished_at')}: {m.get('tables')} table(s) restored in "
                f"{cell(m.get('seconds'))}s")
    return (f"started {journal.get('started_at')}, not finished: run "
            f"`spark-recover rollback {record.run_id}` again to finish it")


def status_text(record: RunRecord) -> str:
    """The status as people read it: a failed run that a later run recovered says so.

    >>> status_text(RunRecord("a", "j", finished=True, final_status="failed", recovered_by="b"))
    'failed, recovered by b'
    """
    status = record.status
    if status == "failed" and record.recovered_by:
        return f"failed, recovered by {record.recovered_by}"
    if status == "rolled_back" and record.undone_by:
        return f"rolled_back (by the rollback of {record.undone_by})"
    return status


def _summary(record: RunRecord) -> list[tuple[str, str]]:
    data = record.to_json()
    lines = [("run", f"{record.run_id}  (job {record.job})"), ("status", status_text(record)),
             ("params", params_text(record.params))]
    if record.origin_run_id:
        lines.append(("origin", record.origin_run_id))
    if data["error"]:
        lines.append(("error", data["error"]))
    rollback = _rollback_text(record)
    if rollback:
        lines.append(("rollback", rollback))
    metrics = {k: v for k, v in data["metrics"].items() if v is not None}
    if metrics:
        lines.append(("metrics", ", ".join(f"{k}={cell(v)}" for k, v in sorted(metrics.items())
                                           if not isinstance(v, dict))))
    return lines


def run_text(record: RunRecord) -> str:
    """A run as the terminal shows it (``spark-recover show``)."""
    head = "\n".join(f"{k:<8} {v}" for k, v in _summary(record))
    sinks = "\n\n" + table(_SINK_COLUMNS, _sink_rows(record)) if record.sinks else ""
    return head + "\n\n" + table(_STAGE_COLUMNS, _stage_rows(record)) + sinks


def runs_text(records: Sequence[RunRecord]) -> str:
    """The ``spark-recover runs`` listing, newest first."""
    rows = [[r.run_id, r.job, status_text(r), r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r.started_at else None,
             r.total_seconds, r.origin_run_id, params_text(r.params)] for r in reversed(records)]
    return table(["run_id", "job", "status", "started (UTC)", "seconds", "origin", "params"], rows)
