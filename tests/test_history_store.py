"""The ledger as an event store at scale: keyed reads, the page, compaction, and migrating an older ledger.

No JVM: real Delta tables written by delta-rs. ``tests/data/ledger-0.1`` is a ledger written by the
release before events carried their run's key (by its own ``Ledger.append``), with the records that
release folded from it in ``ledger-0.1-expected.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import threading
from pathlib import Path

import deltalake

from spark_recover.ledger import Ledger
from spark_recover.storage import Layout

DATA = Path(__file__).parent / "data"
EXPECTED = json.loads((DATA / "ledger-0.1-expected.json").read_text())
_ELSEWHERE = {"host": "another-host", "pid": 1, "boot": "b", "start": 1.0}


def _old_ledger(tmp_path: Path) -> Ledger:
    shutil.copytree(DATA / "ledger-0.1", tmp_path / "root")
    return Ledger(Layout.at(str(tmp_path / "root")))


def _columns(ledger: Ledger) -> set[str]:
    return {f.name for f in deltalake.DeltaTable(ledger.uri).schema().fields}


def test_a_ledger_of_the_previous_release_is_read_in_place_as_it_was(tmp_path):
    ledger = _old_ledger(tmp_path)
    assert {r.run_id: r.to_json() for r in ledger.runs()} == EXPECTED["runs"]
    assert {r.run_id for r in ledger.runs("daily", params_key="k1")} >= {"A", "B", "E"}
    assert ledger.run("D").to_json() == EXPECTED["runs"]["D"]  # its logical run (C's, rolled back) comes along
    assert ledger.points() == EXPECTED["points"] and ledger.journal("lease:daily:k2") == EXPECTED["hold"]
    assert "logical_run_id" not in _columns(ledger)  # reading changes nothing


def test_the_first_write_migrates_it_once_and_concurrent_writers_lose_nothing(tmp_path):
    ledger = _old_ledger(tmp_path)
    before = len(deltalake.DeltaTable(ledger.uri).to_pyarrow_table())
    errors: list[BaseException] = []

    def writer(n: int) -> None:  # each its own Ledger, as separate runs' drivers
        try:
            own = Ledger(Layout.at(str(tmp_path / "root")))
            own.append(f"new{n}", "daily", "run_started", detail={
                "params": {"n": n}, "params_key": f"key{n}", "stages": [], "process": _ELSEWHERE})
            for _ in range(4):
                own.append(f"new{n}", "daily", "heartbeat")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    table = deltalake.DeltaTable(ledger.uri)
    rows = table.to_pyarrow_table()
    assert len(rows) == before + 20  # every old event and every new one, once
    assert rows.column("params_key").null_count == 0 and rows.column("logical_run_id").null_count == 0
    overwrites = [h for h in table.history() if h.get("operation") == "WRITE"
                  and "Overwrite" in json.dumps(h.get("operationParameters", {}))]
    assert len(overwrites) == 1, overwrites  # migrated once
    fresh = Ledger(Layout.at(str(tmp_path / "root")))
    runs = {r.run_id: r.to_json() for r in fresh.runs()}
    assert {k: v for k, v in runs.items() if k in EXPECTED["runs"]} == EXPECTED["runs"]
    assert sorted(k for k in runs if k.startswith("new")) == ["new0", "new1", "new2", "new3"]
    by_key = {r["run_id"]: (r["params_key"], r["logical_run_id"]) for r in rows.to_pylist()}
    assert by_key["D"] == ("k3", "C") and by_key["B"] == ("k1", "A") and by_key["new2"] == ("key2", "new2")
    for run_id, record in EXPECTED["runs"].items():  # a keyed read gives what the whole read gives
        assert fresh.run(run_id).to_json() == record
    assert fresh.points() == EXPECTED["points"] and fresh.journal("lease:daily:k2") == EXPECTED["hold"]


def test_keyed_reads_skip_other_keys_files_after_compaction(tmp_path, monkeypatch):
    monkeypatch.setattr("spark_recover.ledger._COMPACT_ABOVE_FILES", 5)
    monkeypatch.setattr("spark_recover.ledger._SORT_ABOVE_BYTES", 0)  # every compaction sorts
    ledger = Ledger(Layout.at(str(tmp_path)))
    for n in range(12):
        ledger.append(f"r{n:02d}", "j", "run_started", detail={
            "params": {"n": n % 4}, "params_key": f"k{n % 4}", "stages": [], "process": _ELSEWHERE,
            "origin_run_id": f"r{n - 4:02d}" if n >= 4 else None})
        ledger.append(f"r{n:02d}", "j", "run_finished", status="failed")
    ledger.compact()
    table = deltalake.DeltaTable(ledger.uri)
    rows = table.to_pyarrow_table()
    assert len(rows) == 24 and rows.column("params_key").to_pylist() == sorted(rows.column("params_key").to_pylist())
    everything = {r.run_id: r.to_json() for r in Ledger(Layout.at(str(tmp_path))).runs()}
    keyed = Ledger(Layout.at(str(tmp_path))).runs("j", params_key="k1")
    assert [r.run_id for r in keyed] == ["r01", "r05", "r09"]
    assert all(r.to_json() == everything[r.run_id] for r in keyed)
    assert [r.logical_run_id for r in keyed] == ["r01"] * 3 and keyed[0].recovered_by is None


def test_the_runs_page_is_newest_first_and_filtered(tmp_path):
    ledger = Ledger(Layout.at(str(tmp_path)))
    for n in range(7):
        ledger.append(f"r{n}", "j" if n % 2 else "other", "run_started", detail={
            "params": {}, "params_key": f"k{n}", "stages": [], "process": _ELSEWHERE})
        ledger.append(f"r{n}", "j" if n % 2 else "other", "run_finished", status="succeeded" if n < 5 else "failed")
    assert [r.run_id for r in ledger.page(limit=3)] == ["r6", "r5", "r4"]
    assert [r.run_id for r in ledger.page(limit=None, job="j")] == ["r5", "r3", "r1"]
    assert [r.run_id for r in ledger.page(limit=10, status="failed")] == ["r6", "r5"]
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    assert ledger.page(since=later) == []


def test_expired_log_files_are_deleted_at_each_checkpoint(tmp_path, monkeypatch):
    from spark_recover import ledger as store

    monkeypatch.setattr(store, "_TABLE_CONF", {**store._TABLE_CONF, "delta.logRetentionDuration": "interval 0 minutes"})
    ledger = Ledger(Layout.at(str(tmp_path)))
    log = Path(ledger.uri) / "_delta_log"
    for n in range(50):
        ledger.append("r", "j", "heartbeat" if n else "run_started", detail=None if n else {
            "params": {}, "params_key": "k", "stages": [], "process": _ELSEWHERE})
        assert len(list(log.glob("*.json"))) <= 21  # the commits since the newest checkpoint (every 20)
    ledger.compact()
    assert len(list(log.glob("*.json"))) <= 21
    assert [ev["event"] for ev in Ledger(Layout.at(str(tmp_path))).events("r")] == ["run_started"] + ["heartbeat"] * 49


def test_the_runs_command_pages_and_refuses_bad_filters(tmp_path):
    from spark_recover.testing import run_cli

    ledger = Ledger(Layout.at(str(tmp_path)))
    for n in range(4):
        ledger.append(f"r{n}", "j", "run_started", detail={"params": {"n": n}, "params_key": f"k{n}", "stages": [],
                                                           "process": _ELSEWHERE})
        ledger.append(f"r{n}", "j", "run_finished", status="succeeded" if n % 2 else "failed")
    listed = run_cli("runs", "--root", str(tmp_path), "--limit", "2", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == ["r3", "r2"]
    text = run_cli("runs", "--root", str(tmp_path), "--limit", "2", "--status", "failed")
    assert "r2" in text.stdout and "r0" in text.stdout and "r3" not in text.stdout
    assert "the 2 newest shown" in text.stdout
    for bad, named in ((["--since", "yesterday"], "bad --since 'yesterday'"), (["--limit", "-1"], "bad --limit -1")):
        refused = run_cli("runs", "--root", str(tmp_path), *bad)
        assert refused.returncode == 2 and named in refused.stderr, refused.stderr
