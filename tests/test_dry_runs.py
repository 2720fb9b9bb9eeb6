"""``rollback --dry-run`` and ``redo --dry-run``: what would happen, with nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import deltalake
import pyarrow as pa

from conftest import SINK_JOB
from spark_recover.ledger import Ledger
from spark_recover.storage import Layout
from spark_recover.testing import run_cli

NO_JAVA = {"JAVA_HOME": "/nonexistent/jdk"}  # a dry run of path tables needs no JVM


def _state(out: Path, root: str) -> dict:
    versions = {t.name: deltalake.DeltaTable(str(t)).version() for t in out.iterdir()}
    return {"tables": versions, "ledger": Ledger(Layout.at(root)).head()}


def test_dry_runs_say_what_a_rollback_and_a_redo_would_do_and_change_nothing(spark, sink_job, source_data,
                                                                                recover_root, tmp_path):
    out = tmp_path / "out"
    params = {"data": str(source_data), "out": str(out), "day": "3"}
    seeded = spark.createDataFrame([("9", "9", 1.0, 1)], "region string, day string, total double, orders long")
    seeded.write.format("delta").save(str(out / "daily_log"))  # existed before the run: restored, not removed
    run = sink_job.run(params, root=recover_root, spark=spark, echo=False)
    before = _state(out, recover_root)

    planned = run_cli("rollback", run.run_id, "--root", recover_root, "--dry-run", "--json", env=NO_JAVA)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    by_table = {Path(t["table"]).name: t for t in plan["tables"]}
    assert by_table["daily_log"]["action"] == "restore" and by_table["daily_log"]["to_version"] == 0
    assert by_table["daily_log"]["version_now"] == 1 and by_table["daily_log"]["files_leaving"] >= 1
    assert {by_table[t]["action"] for t in ("by_day", "store_totals", "region_totals")} == {"remove"}
    assert plan["refused"] == [] and _state(out, recover_root) == before

    # Another writer commits to a sink: the dry run names the commit and says the rollback would be refused.
    deltalake.write_deltalake(str(out / "daily_log"), pa.table({
        "region": ["x"], "day": ["x"], "total": [2.0], "orders": pa.array([1], pa.int64())}), mode="append")
    before = _state(out, recover_root)
    refused = run_cli("rollback", run.run_id, "--root", recover_root, "--dry-run", env=NO_JAVA)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "discards another writer's commit: version 2" in refused.stdout
    assert "refused: other writers committed after the run" in refused.stdout
    redo = run_cli("redo", run.run_id, "--root", recover_root, "--job-file", SINK_JOB, "--dry-run",
                   "--from", "store_totals", env=NO_JAVA)
    assert redo.returncode == 3 and "then: replay run" in redo.stdout and "'store_totals'" in redo.stdout, redo.stderr
    forced = run_cli("rollback", run.run_id, "--root", recover_root, "--dry-run", "--force", env=NO_JAVA)
    assert forced.returncode == 0 and "it would proceed" in forced.stdout, forced.stdout + forced.stderr
    assert _state(out, recover_root) == before  # nothing changed, ledger included
    bad = run_cli("redo", run.run_id, "--root", recover_root, "--job-file", SINK_JOB, "--dry-run", "--from", "nope",
                  env=NO_JAVA)
    assert bad.returncode == 2 and "nope" in bad.stderr
