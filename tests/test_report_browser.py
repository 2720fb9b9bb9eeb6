"""The report of a logical run and the page of a drill, rendered in a real headless Chromium (``make test-browser``).

A real crash, ``run --resume`` and rollback of the four-sink job; the report
page is opened in Debian's Chromium through its ChromeDriver, and the test
reads the rendered DOM: the lanes and bars, their order on the time axis,
their computed colours by status, the reasons in their titles, and a
screenshot that is not blank.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from conftest import SINK_JOB
from spark_recover.testing import crash_at, run_args, run_cli
from spark_recover.timeline import COLOURS

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    assert not missing, f"the browser tests need Debian's chromium and chromium-driver: {missing} missing"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,900", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _rgba(colour: str) -> str:
    return "rgba({}, {}, {}, 1)".format(*_rgb(colour))


def _rendered(browser, page: Path) -> dict[str, list[dict]]:
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    lanes = {}
    for lane in browser.find_elements(By.CSS_SELECTOR, ".lane"):
        lanes[lane.get_attribute("data-run")] = [
            {"stage": bar.get_attribute("data-stage"), "status": bar.get_attribute("data-status"),
             "colour": bar.value_of_css_property("background-color"), "x": bar.rect["x"],
             "width": bar.rect["width"], "title": bar.get_attribute("title")}
            for bar in lane.find_elements(By.CSS_SELECTOR, ".bar")]
    return lanes


def _report(root: str, run_id: str, page: Path) -> Path:
    made = run_cli("report", run_id, "--root", root, "--html", str(page))
    assert made.returncode == 0, made.stderr
    return page


def test_the_report_of_a_crash_resume_and_rollback_renders_in_chromium(browser, spark, source_data, recover_root,
                                                                        tmp_path):
    from PIL import Image

    params = {"data": str(source_data), "out": str(tmp_path / "out"), "day": "3"}
    crashed = crash_at(SINK_JOB, "store_totals", "before", root=recover_root, params=params)
    assert crashed.killed, crashed.stderr[-2000:]
    resumed = run_cli(*run_args(SINK_JOB, recover_root, params, ["--resume"]))
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    lanes = _rendered(browser, _report(recover_root, crashed.run_id, tmp_path / "report.html"))
    assert list(lanes) == [crashed.run_id, resumed.run_id]
    first, second = lanes.values()
    assert [(b["stage"], b["status"]) for b in first] == [
        ("daily", "recomputed"), ("day_slice", "recomputed"), ("store_totals", "failed")]
    assert [(b["stage"], b["status"]) for b in second] == [
        ("daily", "reused"), ("day_slice", "reused"), ("store_totals", "recomputed"), ("region_totals", "recomputed")]
    for bar in first + second:
        assert bar["colour"] == _rgba(COLOURS[bar["status"]]), bar
        assert bar["width"] > 0
    for lane in (first, second):  # in stage order on the time axis, none drawn under another (1 px of rounding)
        assert all(a["x"] < b["x"] and a["x"] + a["width"] <= b["x"] + 1 for a, b in zip(lane, lane[1:])), lane
    assert second[2]["width"] > 2 * second[1]["width"]  # the reuses take no time (widened to be seen); computing does
    assert first[-1]["x"] < second[0]["x"]  # the resume after the crash
    assert "died during this stage" in first[-1]["title"]
    assert "reused" in second[0]["title"] and "rows" in second[0]["title"]

    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    colours = {c for _, c in shot.getcolors(maxcolors=1 << 20)}
    assert len(colours) > 20 and {_rgb(COLOURS[s]) for s in ("recomputed", "reused", "failed")} <= colours

    rolled = run_cli("rollback", resumed.run_id, "--root", recover_root)
    assert rolled.returncode == 0, rolled.stderr[-2000:]
    after = _rendered(browser, _report(recover_root, crashed.run_id, tmp_path / "after.html"))
    assert list(after) == [crashed.run_id, resumed.run_id, "rollback"]
    assert [b["status"] for b in after[resumed.run_id]] == [b["status"] for b in second]  # what ran, ran
    [undone] = after["rollback"]
    assert undone["status"] == "rolled_back" and undone["colour"] == _rgba(COLOURS["rolled_back"])
    # On the same page's axis (before the rollback, the resume's last bar was the axis's end, and a bar too
    # short to see is widened and kept inside the axis: it sat at the right edge, where the rollback now is).
    assert undone["x"] > after[resumed.run_id][-1]["x"] and "4 table(s) restored" in undone["title"]


def test_the_page_of_a_drill_renders_in_chromium(browser, source_data, recover_root, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    page = tmp_path / "drill.html"
    params = ["-p", f"data={source_data}", "-p", f"out={tmp_path / 'out'}", "-p", "day=3"]
    drilled = run_cli("drill", SINK_JOB, *params, "--kills", "2", "--seed", "5", "--root", recover_root,
                      "--json", "--html", str(page))
    assert drilled.returncode == 0, drilled.stderr[-3000:]
    report = json.loads(drilled.stdout)
    browser.get(page.as_uri())

    [clean] = browser.find_elements(By.CSS_SELECTOR, ".lane[data-run='clean']")
    stages = clean.find_elements(By.CSS_SELECTOR, ".bar")
    assert [b.get_attribute("data-stage") for b in stages] == ["daily", "day_slice", "store_totals", "region_totals"]
    assert all(a.rect["x"] < b.rect["x"] for a, b in zip(stages, stages[1:]))  # in order on the time axis
    track = clean.find_element(By.CSS_SELECTOR, ".track").rect
    span = max([report["clean_seconds"]] + [t["kill_at"] for t in report["trials"] if t["kill_at"] is not None])
    trials = browser.find_elements(By.CSS_SELECTOR, ".lane[data-trial]")
    assert len(trials) == 2 and all(t.get_attribute("data-ok") == "true" for t in trials)
    for lane, trial in zip(trials, report["trials"]):
        marks = lane.find_elements(By.CSS_SELECTOR, ".kill")
        if trial["kill_at"] is None:
            assert not marks
            continue
        [mark] = marks  # where the kill landed on the clean run's axis, and what it hit
        assert abs(mark.rect["x"] - (track["x"] + track["width"] * trial["kill_at"] / span)) < 4
        assert mark.value_of_css_property("background-color") == _rgba(COLOURS["failed"])
        assert trial["hit"] in mark.get_attribute("title")
    verdict = browser.find_element(By.CSS_SELECTOR, ".verdict")
    assert verdict.text.startswith("PASS") and "pass" in verdict.get_attribute("class")
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.trials tr")) == 3
    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    assert len({c for _, c in shot.getcolors(maxcolors=1 << 20)}) > 20
