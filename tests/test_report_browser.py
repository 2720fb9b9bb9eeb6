"""The report of a logical run, rendered in a real headless Chromium (``make test-browser``).

A real crash, ``run --resume`` and rollback of the four-sink job; the report
page is opened in Debian's Chromium through its ChromeDriver, and the test
reads the rendered DOM: the lanes and bars, their order on the time axis,
their computed colours by status, the reasons in their titles, and a
screenshot that is not blank.
"""

from __future__ import annotations

import io
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
    assert all(a["x"] <= b["x"] for a, b in zip(second, second[1:]))  # in stage order on the time axis
    assert second[1]["x"] < second[2]["x"] < second[3]["x"]  # the reuses take no time; computing does
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
    assert undone["x"] > second[-1]["x"] and "4 table(s) restored" in undone["title"]
