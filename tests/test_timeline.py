"""The report of a logical run, without a JVM: bars, figures, text and the self-contained page."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

from spark_recover.history import fold
from spark_recover.ledger import Ledger
from spark_recover.storage import Layout
from spark_recover.testing import run_cli
from spark_recover.timeline import COLOURS, bars, figures, lane_layout, timeline_html, timeline_text

DATA = Path(__file__).parent / "data"
_T0 = dt.datetime(2026, 11, 1, 6, 0, tzinfo=dt.timezone.utc)
_GONE = {"host": "gone", "pid": 1, "boot": "b", "start": 1.0}


def _ev(run: str, event: str, at: float, **values) -> dict:
    detail = values.pop("detail", None)
    return {"run_id": run, "job": "j", "event": event, "ts": _T0 + dt.timedelta(seconds=at), "ledger_version": None,
            "detail": json.dumps(detail) if detail else None, **values}


def _crash_and_resume() -> list:
    events = [
        _ev("a", "run_started", 0, detail={"params": {"day": "1"}, "params_key": "k", "stages": ["s1", "s2"],
                                           "process": _GONE}),
        _ev("a", "stage_started", 1, stage="s1"), _ev("a", "stage_succeeded", 5, stage="s1", rows=10, version=0),
        _ev("a", "stage_started", 6, stage="s2"),  # killed here
        _ev("b", "run_started", 20, detail={"params": {"day": "1"}, "params_key": "k", "stages": ["s1", "s2"],
                                            "process": _GONE, "origin_run_id": "a"}),
        _ev("b", "stage_reused", 21, stage="s1", reason="reused", rows=10, version=0),
        _ev("b", "stage_started", 22, stage="s2", reason="no checkpoint"),
        _ev("b", "stage_succeeded", 26, stage="s2", rows=3, version=0),
        _ev("b", "run_finished", 27, status="succeeded", seconds=7.0,
            detail={"metrics": {"recovery_ratio": 0.5, "recovery_seconds": 7.0, "clean_seconds": 14.0}}),
    ]
    for n, ev in enumerate(events):
        ev["ledger_version"] = n + 1
    runs = fold(events)
    return [runs["a"], runs["b"]]


def test_bars_put_every_attempts_stages_on_one_axis():
    got = [(b.attempt, b.stage, b.status, b.start, b.seconds) for b in bars(_crash_and_resume())]
    assert got == [(1, "s1", "recomputed", 1.0, 4.0), (1, "s2", "failed", 6.0, 0.0),
                   (2, "s1", "reused", 21.0, 0.0), (2, "s2", "recomputed", 22.0, 4.0)]
    failed = bars(_crash_and_resume())[1]
    assert failed.reason == "the run's process died during this stage"


def test_a_rollback_is_a_bar_of_its_own_lane_and_stages_keep_their_colour():
    runs = _crash_and_resume()
    runs[1].rollback = {"started_at": "2026-11-01T06:00:30Z", "finished_at": "2026-11-01T06:00:31.5Z",
                        "finished": True, "metrics": {"tables": 2, "recovery_rate": 4.0}}
    got = bars(runs)
    assert [b.status for b in got] == ["recomputed", "failed", "reused", "recomputed", "rolled_back"]
    assert (got[-1].attempt, got[-1].start, got[-1].seconds, got[-1].reason) == (0, 30.0, 1.5, "2 table(s) restored")
    assert figures(runs)["D"] == 4.0 and 'data-run="rollback"' in timeline_html(runs)


def test_figures_give_r_and_rto():
    assert figures(_crash_and_resume()) == {"attempts": 2, "R": 0.5, "recovery_seconds": 7.0, "clean_seconds": 14.0,
                                            "RTO_seconds": 21.0}  # last seen 6 s, recovered at 20 + 7 s


def test_the_page_is_self_contained_and_names_each_bar():
    page = timeline_html(_crash_and_resume())
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page
    assert page.count('class="bar"') == 4 and page.count('class="lane"') == 2
    assert 'data-status="reused" data-attempt="2"' in page and COLOURS["reused"] in page
    assert "R = 0.5" in page and "RTO = 21.0 s" in page
    text = timeline_text(_crash_and_resume())
    assert "attempt 2: b succeeded" in text and "failed, recovered by b" in text


def test_the_report_command_reads_a_logical_run_from_any_of_its_runs(tmp_path):
    shutil.copytree(DATA / "ledger-0.1", tmp_path / "root")
    root = str(tmp_path / "root")
    ledger = Ledger(Layout.at(root))
    assert [b.run_id for b in bars(ledger.logical_run(ledger.run("B")))] == ["A", "B", "B"]
    page = tmp_path / "report.html"
    made = run_cli("report", "D", "--root", root, "--html", str(page))
    assert made.returncode == 0 and str(page) in made.stdout, made.stderr
    assert 'data-run="C"' in page.read_text() and 'data-run="D"' in page.read_text()
    refused = run_cli("report", "D", "--root", root, "--html", str(tmp_path))
    assert refused.returncode == 2 and "is a folder" in refused.stderr
    unknown = run_cli("report", "nope", "--root", root)
    assert unknown.returncode != 0 and "unknown run id 'nope'" in unknown.stderr


def test_a_lanes_bars_stay_in_order_inside_the_axis_and_never_overlap():
    # Seen in CI: a resume's two reuses (widened) pushed past the start of its long last-but-one stage, which was then
    # clamped back under them to fit the axis: two bars at the same x. Here, the figures of such a resume.
    resume = [(28.3, 0.0), (28.31, 0.0), (28.4, 10.4), (38.9, 0.7)]
    lanes = [resume, [(0.0, 0.0)] * 80, [(0.0, 10.0), (10.0, 30.0)], [(5.0, 0.0), (39.6, 0.0)]]
    for lane in lanes:
        placed = lane_layout(lane, span=39.6)
        assert len(placed) == len(lane)
        assert all(w > 0 and 0 <= left and left + w <= 100 + 1e-9 for left, w in placed), placed
        assert all(a[0] + a[1] <= b[0] + 1e-9 for a, b in zip(placed, placed[1:])), placed  # in order, no overlap
    long_stage = lane_layout(resume, span=39.6)[2]
    assert abs(long_stage[1] - 100 * 10.4 / 39.6) < 1e-9  # a stage that took time keeps its true width
    assert lane_layout([(0.0, 10.0), (10.0, 30.0)], span=40.0) == [(0.0, 25.0), (25.0, 75.0)]  # nothing to adjust
