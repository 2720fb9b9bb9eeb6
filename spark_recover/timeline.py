"""The report of one logical run: every attempt's stages on one time axis, its sinks, its recovery figures;
and the page of a drill (:func:`drill_html`): its kills on the clean run's time axis.

It turns run records (:mod:`spark_recover.history`) into text or one
self-contained HTML page (inline CSS, no script, no network), which
``spark-recover report RUN --html FILE`` saves and Jupyter shows; only
:func:`report` reads the ledger (no JVM).

Each stage of each attempt is a bar from its start to its end, coloured by
what happened to it: ``recomputed``, ``reused`` (its checkpoint taken from an
earlier run), ``failed`` (raised, or its driver died during it) or
``running``. A rollback of the logical run is a ``rolled_back`` bar of its own
lane, from its start to its end.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .config import Settings, load_settings
from .display import cell, drill_summary, drill_table, params_text, status_text, table
from .history import RunRecord, iso
from .ledger import Ledger
from .storage import Layout

__all__ = ["Bar", "Report", "bars", "figures", "report", "timeline_text", "timeline_html", "drill_html", "lane_layout",
           "COLOURS"]

#: The colour of each bar status (also the legend's).
COLOURS = {"recomputed": "#1f77b4", "reused": "#2ca02c", "failed": "#d62728", "rolled_back": "#7f7f7f",
           "running": "#ff7f0e"}
_MIN_BAR_PERCENT = 1.5  # a reuse takes no time: still a visible bar


@dataclass(frozen=True)
class Bar:
    """One stage of one attempt (attempt 0: a rollback) on the time axis, in seconds from the logical run's start."""

    attempt: int
    run_id: str
    stage: str
    status: str
    start: float
    seconds: float
    reason: str | None
    rows: int | None
    version: int | None


def _stage_status(status: str, reused: bool) -> str:
    if status in ("failed", "running"):
        return status
    return "reused" if reused else "recomputed"


def _when(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def bars(runs: Sequence[RunRecord]) -> list[Bar]:
    """The bars of a logical run's attempts (oldest first), in attempt and stage order, then its rollbacks
    (attempt 0: the rollback lane).

    >>> bars([])
    []
    """
    starts = [r.started_at for r in runs if r.started_at]
    if not starts:
        return []
    origin = min(starts)
    out, rollbacks = [], []
    for attempt, run in enumerate(runs, 1):
        for st in run.stage_list():
            if st.status == "pending" or st.started_at is None:
                continue
            end = st.ended_at or run.last_seen or st.started_at
            chunks = f"{len(st.chunks)} chunk(s), {sum(c['reused'] for c in st.chunks.values())} reused" \
                if st.chunks else None
            why = "; ".join(filter(None, [st.error or st.reason, chunks])) or None
            out.append(Bar(attempt, run.run_id, st.name, _stage_status(st.status, st.reused),
                           (st.started_at - origin).total_seconds(), max(0.0, (end - st.started_at).total_seconds()),
                           why, st.rows, st.version))
        journal = run.rollback or {}
        began, ended = _when(journal.get("started_at")), _when(journal.get("finished_at"))
        if began is not None:
            tables = (journal.get("metrics") or {}).get("tables")
            rollbacks.append(Bar(0, run.run_id, f"rollback of {run.run_id}", "rolled_back" if ended else "running",
                                 (began - origin).total_seconds(), max(0.0, ((ended or began) - began).total_seconds()),
                                 f"{tables} table(s) restored" if ended else "not finished", None, None))
    return out + rollbacks


def figures(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """The recovery figures: R (resume time over a clean run's), RTO (first failure to recovered), D (rollback)."""
    out: dict[str, Any] = {"attempts": len(runs)}
    failed = next((r for r in runs if r.died or r.final_status == "failed"), None)
    winner = next((r for r in runs[runs.index(failed) + 1:] if r.final_status == "succeeded"), None) if failed else None
    if winner is not None and winner.metrics.get("recovery_ratio") is not None:
        out["R"] = winner.metrics["recovery_ratio"]
        out["recovery_seconds"] = winner.metrics.get("recovery_seconds")
        out["clean_seconds"] = winner.metrics.get("clean_seconds")
    if winner is not None and failed.last_seen and winner.started_at and winner.total_seconds is not None:
        done = winner.started_at + dt.timedelta(seconds=winner.total_seconds)
        out["RTO_seconds"] = round((done - failed.last_seen).total_seconds(), 3)
    rollbacks = [r.rollback for r in runs if r.rollback and r.rollback.get("finished")]
    if rollbacks:
        metrics = rollbacks[-1].get("metrics") or {}
        out["D"] = metrics.get("recovery_rate")
        out["rollback_tables"] = metrics.get("tables")
    return out


def _figures_text(runs: Sequence[RunRecord]) -> str:
    f = figures(runs)
    parts = [f"{f['attempts']} attempt(s)"]
    if "R" in f:
        parts.append(f"R = {f['R']} ({f['recovery_seconds']} s over a clean run's {f['clean_seconds']} s)")
    if "RTO_seconds" in f:
        parts.append(f"RTO = {f['RTO_seconds']:.1f} s")
    if f.get("D") is not None:
        parts.append(f"rollback: {f['rollback_tables']} table(s), D = {f['D']} tables/s")
    return "; ".join(parts)


def _sink_rows(runs: Sequence[RunRecord]) -> list[list[Any]]:
    return [[run.run_id, name, s.get("mode"), s.get("version_before"), s.get("version_after"),
             s.get("skipped_duplicate"), s.get("status")] for run in runs for name, s in run.sinks.items()]


_SINK_HEADER = ["run", "sink table", "mode", "version before", "version after", "skipped duplicate", "status"]


def timeline_text(runs: Sequence[RunRecord]) -> str:
    """The report as the terminal shows it (``spark-recover report RUN``)."""
    if not runs:
        return "no runs"
    first = runs[0]
    rows = [[b.attempt, b.run_id, b.stage, b.status, round(b.start, 2), round(b.seconds, 2), b.rows, b.version,
             b.reason] for b in bars(runs)]
    lines = [f"logical run {first.logical_run_id or first.run_id} of job {first.job} ({params_text(first.params)})",
             *(f"  attempt {n}: {r.run_id} {status_text(r)}" for n, r in enumerate(runs, 1)), "",
             table(["attempt", "run", "stage", "bar", "start (s)", "seconds", "rows", "version", "reason"], rows),
             "", _figures_text(runs)]
    if any(r.sinks for r in runs):
        lines += ["", table(_SINK_HEADER, _sink_rows(runs))]
    return "\n".join(lines)


_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px}
.meta{color:#555;margin-bottom:16px}
.lane{display:flex;align-items:center;margin:6px 0}
.label{width:320px;flex:none;font:12px monospace;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.track{position:relative;flex:1;height:26px;background:#f4f4f4;border-radius:3px}
.bar{position:absolute;top:3px;height:20px;border-radius:3px;color:#fff;font:11px sans-serif;overflow:hidden;
white-space:nowrap;padding:2px 4px;box-sizing:border-box}
.kill{position:absolute;top:0;width:3px;height:26px;background:#d62728;margin-left:-1px}
.verdict{font-weight:600;padding:6px 10px;border-radius:3px;display:inline-block;margin:8px 0}
.pass{background:#e3f4e3;color:#1b5e20}.fail{background:#fde2e2;color:#8b1a1a}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px;border-radius:2px}
table{border-collapse:collapse;margin-top:12px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;font-size:13px}
"""


def lane_layout(bars: Sequence[tuple[float, float]], *, span: float) -> list[tuple[float, float]]:
    """Where a lane's bars go: ``(start, seconds)`` of each, in lane order, to ``(left, width)`` in percent of an
    axis of ``span`` seconds.

    A bar too short to see (a reuse takes no time) is widened to
    ``_MIN_BAR_PERCENT`` (less when a lane has too many bars to fit), a bar that
    would start under the previous one moves right, and bars pushed past the
    axis's end move back left, none under the one before: every bar is inside
    the axis, in lane order, and none overlaps another. The titles keep the true times.

    >>> lane_layout([(0.0, 7.0), (8.0, 0.0), (8.0, 2.0)], span=10.0)  # the reuse widened, the last bar moved back
    [(0.0, 70.0), (78.5, 1.5), (80.0, 20.0)]
    """
    if not bars:
        return []
    least = min(_MIN_BAR_PERCENT, 100 / len(bars))
    widths = [max(least, 100 * seconds / span) for _, seconds in bars]
    total = sum(widths)
    if total > 100:  # the widening cannot fit: every bar gives up its share
        widths = [w * 100 / total for w in widths]
    lefts, cursor = [], 0.0
    for (start, _), width in zip(bars, widths):
        lefts.append(max(100 * start / span, cursor))
        cursor = lefts[-1] + width
    limit = 100.0
    for n in reversed(range(len(lefts))):
        lefts[n] = min(lefts[n], limit - widths[n])
        limit = lefts[n]
    return list(zip(lefts, widths))


def _lane_html(lane: Sequence[Bar], span: float) -> str:
    return "".join(_bar_html(bar, left, width)
                   for bar, (left, width) in zip(lane, lane_layout([(b.start, b.seconds) for b in lane], span=span)))


def _bar_html(bar: Bar, left: float, width: float) -> str:
    title = (f"{bar.stage}: {bar.status}, {bar.seconds:.2f} s"
             + (f", {bar.rows:,} rows" if bar.rows is not None else "")
             + (f", version {bar.version}" if bar.version is not None else "")
             + (f": {bar.reason}" if bar.reason else ""))
    return (f'<div class="bar" data-stage="{html.escape(bar.stage)}" data-status="{bar.status}" '
            f'data-attempt="{bar.attempt}" title="{html.escape(title)}" '
            f'style="left:{left:.3f}%;width:{width:.3f}%;background:{COLOURS[bar.status]}">'
            f'{html.escape(bar.stage)}</div>')


def timeline_html(runs: Sequence[RunRecord]) -> str:
    """The report as one self-contained HTML page: header, legend, timeline, sinks, figures."""
    if not runs:
        return "<!doctype html><html><body><p>no runs</p></body></html>"
    first, all_bars = runs[0], bars(runs)
    span = max([b.start + b.seconds for b in all_bars] + [1e-3])
    labels = {n: (run.run_id, f"attempt {n}: {run.run_id} ({status_text(run)})") for n, run in enumerate(runs, 1)}
    if any(b.attempt == 0 for b in all_bars):
        labels[0] = ("rollback", "rollback")
    lanes = []
    for n, (key, label) in labels.items():
        inner = _lane_html([b for b in all_bars if b.attempt == n], span)
        lanes.append(f'<div class="lane" data-run="{html.escape(key)}"><div class="label" '
                     f'title="{html.escape(label)}">{html.escape(label)}</div><div class="track">{inner}</div></div>')
    legend = "".join(f'<span><i style="background:{c}"></i>{s.replace("_", " ")}</span>' for s, c in COLOURS.items())
    sinks = f"<h2>Sinks</h2>{_table_html(_SINK_HEADER, _sink_rows(runs), 'sinks')}" if any(r.sinks for r in runs) else ""
    return _page(f"Logical run {first.logical_run_id or first.run_id} of job {first.job}",
                 f"<div class='meta'>params {html.escape(params_text(first.params))}; "
                 f"started {html.escape(iso(first.started_at) or '-')}; {span:.1f} s from first start to last end</div>"
                 f"<div class='legend'>{legend}</div><div class='timeline'>{''.join(lanes)}</div>"
                 f"<p class='figures'>{html.escape(_figures_text(runs))}</p>{sinks}")


def _table_html(header: Sequence[str], rows: Sequence[Sequence[Any]], css_class: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table class='{css_class}'><tr>{head}</tr>{body}</table>"


def _page(title: str, body: str) -> str:
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{body}</body></html>")


def drill_html(report: Mapping[str, Any]) -> str:
    """A drill's report (:func:`spark_recover.drill.drill`) as one self-contained page: the clean run's
    stages on the time axis of its driver process, each trial's kill on that axis (a red mark; its title
    says what was hit and how the recovery went), the trials' table, the figures and the verdict."""
    timeline, trials = report.get("clean_timeline") or [], report["trials"]
    span = max([report["clean_seconds"], 1e-3] + [t["kill_at"] for t in trials if t["kill_at"] is not None])
    clean = _lane_html([Bar(0, "clean", stage["stage"], "recomputed", stage["start"], stage["seconds"], None,
                            stage["rows"], None) for stage in timeline], span)
    lanes = [f'<div class="lane" data-run="clean"><div class="label">clean run ({report["clean_seconds"]:.1f} s)'
             f'</div><div class="track">{clean}</div></div>']
    for t in trials:
        ok = t["ok"]  # Trial.ok: the verdict's own rule
        said = (f"trial {t['number']}: " + (f"killed at {t['kill_at']:.2f} s in {t['hit']}" if t["kill_at"] is not None
                                            else t["hit"])
                + f"; {t['resumes']} resume(s), recovered in {t['recovery_seconds']:.1f} s"
                + f"; duplicated {t['duplicates']}, missing {t['missing']}, extra {t['extra']}"
                + ("" if ok else f"; FAILED {t['error'] or ''}"))
        mark = (f'<div class="kill" data-kill="{t["kill_at"]}" title="{html.escape(said)}" '
                f'style="left:{100 * t["kill_at"] / span:.3f}%"></div>') if t["kill_at"] is not None else ""
        lanes.append(f'<div class="lane" data-trial="{t["number"]}" data-ok="{str(ok).lower()}"><div class="label" '
                     f'title="{html.escape(said)}">trial {t["number"]}: {html.escape(t["hit"])}; {"ok" if ok else "FAILED"}, '
                     f'recovered in {t["recovery_seconds"]:.1f} s</div><div class="track">{mark}</div></div>')
    passed = bool(report["ok"])
    figures = "".join(f"<li>{html.escape(line)}</li>" for line in drill_summary(report))
    body = (f"<div class='meta'>params {html.escape(params_text(report['params']))}; seed {report['seed']}; "
            f"sinks redirected under {html.escape(str(report['drill_root']))}/sinks (your tables were not touched); "
            "axis: seconds since the driver process started</div>"
            f"<div class='verdict {'pass' if passed else 'fail'}'>{html.escape(report['verdict'])}</div>"
            f"<div class='timeline'>{''.join(lanes)}</div><ul class='figures'>{figures}</ul>"
            + (_table_html(*drill_table(report), "trials") if trials else ""))
    return _page(f"Drill of job {report['job']}", body)


class Report:
    """The report of one logical run: Jupyter shows the page; ``str()`` is the text; :meth:`save` writes the page."""

    def __init__(self, runs: Sequence[RunRecord]) -> None:
        self.runs = list(runs)

    def _repr_html_(self) -> str:
        return timeline_html(self.runs)

    def __str__(self) -> str:
        return timeline_text(self.runs)

    def save(self, path: str) -> str:
        """Write the self-contained page to ``path``; returns it."""
        with open(path, "w", encoding="utf-8") as out:
            out.write(timeline_html(self.runs))
        return path


def report(run_id: str, *, root: str | None = None, settings: Settings | None = None) -> Report:
    """The report of the logical run that ``run_id`` belongs to (no JVM).

    >>> spark_recover.report("20261129T170802Z-1f2e3d4c5b6a7980")   # doctest: +SKIP
    """
    settings = settings or load_settings(root=root)
    ledger = Ledger(Layout.at(settings.root, settings.storage_options), settings.dead_after_seconds)
    return Report(ledger.logical_run(ledger.run(run_id)))
