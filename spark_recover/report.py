"""How runs show themselves: text tables for the terminal, HTML for Jupyter."""

from __future__ import annotations

import html
from typing import Any, Sequence

from .ledger import RunRecord

__all__ = ["table", "run_text", "run_html", "runs_text", "params_text"]


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(params.items())) or "-"


def _cell(value: Any) -> str:
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
    cells = [list(header)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


_STAGE_COLUMNS = ["stage", "status", "reused", "version", "rows", "seconds", "reason"]


def _stage_rows(record: RunRecord) -> list[list[Any]]:
    return [[s.name, s.status, s.reused, s.version, s.rows, s.seconds, s.error or s.reason]
            for s in record.stage_list()]


def _summary(record: RunRecord) -> list[tuple[str, str]]:
    data = record.to_json()
    lines = [("run", f"{record.run_id}  (job {record.job})"), ("status", data["status"]),
             ("params", params_text(record.params))]
    if record.origin_run_id:
        lines.append(("origin", record.origin_run_id))
    if data["error"]:
        lines.append(("error", data["error"]))
    metrics = {k: v for k, v in data["metrics"].items() if v is not None}
    if metrics:
        lines.append(("metrics", ", ".join(f"{k}={_cell(v)}" for k, v in sorted(metrics.items())
                                           if not isinstance(v, dict))))
    return lines


def run_text(record: RunRecord) -> str:
    """A run as the terminal shows it (``spark-recover show``)."""
    head = "\n".join(f"{k:<8} {v}" for k, v in _summary(record))
    return head + "\n\n" + table(_STAGE_COLUMNS, _stage_rows(record))


def run_html(record: RunRecord) -> str:
    """A run as Jupyter shows it."""
    head = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                   f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in _summary(record))
    th = "".join(f"<th>{c}</th>" for c in _STAGE_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in _stage_rows(record))
    return f"<table>{head}</table><table><tr>{th}</tr>{body}</table>"


def runs_text(records: Sequence[RunRecord]) -> str:
    """The ``spark-recover runs`` listing, newest first."""
    rows = [[r.run_id, r.job, r.status, r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r.started_at else None,
             r.total_seconds, r.origin_run_id, params_text(r.params)] for r in reversed(records)]
    return table(["run_id", "job", "status", "started (UTC)", "seconds", "origin", "params"], rows)
