"""Commits on S3 (issue 24 §7): the store's conditional put is probed once per root, and
Delta-Spark writers of one S3 sink table are serialised by the table's lease.

Against moto's S3 server (a real S3 REST API, honours ``If-None-Match``), and,
for a store without conditional puts, the same server behind a plain HTTP
forwarder that drops that header on the way (what an S3-compatible store that
ignores it does). No Spark here except where a test says so.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from spark_recover import lease, storage
from spark_recover.errors import RefusedError, UsageError
from spark_recover.ledger import Ledger
from spark_recover.liveness import this_process
from spark_recover.storage import Layout
from spark_recover.testing import job_env, run_cli



class NoConditionalPuts:
    """An S3 endpoint that forwards every request to ``upstream`` without its ``If-None-Match`` header."""

    def __init__(self, upstream: str) -> None:
        class Forward(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                request = urllib.request.Request(upstream + self.path, data=body, method=self.command)
                for key, value in self.headers.items():
                    if key.lower() not in ("if-none-match", "host", "content-length", "transfer-encoding"):
                        request.add_header(key, value)
                if body is not None and not request.has_header("Content-type"):
                    request.add_header("Content-type", "application/octet-stream")  # not urllib's form type
                try:
                    response = urllib.request.urlopen(request)
                except urllib.error.HTTPError as exc:
                    response = exc
                data = response.read()
                self.send_response(response.status)
                head = self.command == "HEAD"  # its Content-Length is the object's size: passed on
                for key, value in response.headers.items():
                    passed_on = head or key.lower() != "content-length"
                    if key.lower() not in ("transfer-encoding", "connection") and passed_on:
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def unsafe(s3):
    proxy = NoConditionalPuts(s3.options["AWS_ENDPOINT_URL"])
    yield proxy
    proxy.stop()


@pytest.fixture(autouse=True)
def fresh_process_cache(monkeypatch):
    monkeypatch.setattr(storage, "_verified_roots", set(), raising=False)  # each test probes as a new process would


def _objects(s3, options, prefix: str) -> list[str]:
    return Layout.at(s3.uri("x"), options).files(s3.uri(prefix))


def test_probe_verifies_a_store_with_conditional_puts_once_per_root(s3, options, unsafe):
    root = s3.uri("good/recover")
    storage.require_conditional_put(Layout.at(root, options))
    assert _objects(s3, options, "good/recover") == ["probes/conditional-put-verified"]  # scratch tables removed
    # The verdict is kept in the root: the same root reached through the header-dropping endpoint is not
    # probed again (a probe there would refuse), also in a new process.
    storage._verified_roots.clear()
    storage.require_conditional_put(Layout.at(root, {**options, "AWS_ENDPOINT_URL": unsafe.endpoint}))


def test_probe_refuses_a_store_without_conditional_puts(s3, options, unsafe):
    layout = Layout.at(s3.uri("bad/recover"), {**options, "AWS_ENDPOINT_URL": unsafe.endpoint})
    with pytest.raises(UsageError) as err:
        storage.require_conditional_put(layout)
    assert err.value.exit_code == 2
    assert unsafe.endpoint in str(err.value) and "If-None-Match" in err.value.detail
    assert err.value.fields["winners"] > 1
    assert _objects(s3, options, "bad/recover") == []  # no verdict kept, no scratch left


def test_run_on_a_root_without_conditional_puts_exits_2_and_writes_nothing(s3, options, unsafe, tmp_path: Path):
    job_file = tmp_path / "tiny_job.py"
    job_file.write_text(textwrap.dedent("""
        from spark_recover import Job

        job = Job("tiny")


        @job.stage
        def numbers(spark):
            return spark.range(3)


        if __name__ == "__main__":
            job.main()
    """))
    done = run_cli("run", str(job_file), "--root", s3.uri("cli/recover"),
                   env={**options, "AWS_ENDPOINT_URL": unsafe.endpoint})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "does not honour conditional writes" in done.stderr and unsafe.endpoint in done.stderr
    assert _objects(s3, options, "cli/recover") == []  # no ledger, no lease, no verdict


# -- the table lease (a real ledger; the table is only a name here) -------------

TABLE = "s3a://warehouse/daily"


def _writing(ledger: Ledger, run_id: str, process: dict, table: str = TABLE) -> None:
    """A run that planned a write of ``table`` (holds its lease) and has not finished it."""
    ledger.append(run_id, "backfill", "run_started", detail={"params": {}, "params_key": run_id, "stages": [],
                                                               "process": process})
    ledger.append(run_id, "backfill", "sink_planned", stage="s", detail={"table": table})


def _plan(ledger: Ledger, run_id: str, table: str = "s3://warehouse/daily/"):  # the same table, spelt otherwise
    return lambda at: ledger.append(run_id, "backfill", "sink_planned", stage="s", only_at=at,
                                    detail={"table": table})


def _version_of(ledger: Ledger, run_id: str, event: str) -> int:
    return next(ev["ledger_version"] for ev in ledger.events(run_id) if ev["event"] == event)


def test_a_live_writer_of_an_s3_table_makes_another_wait_then_refuses(tmp_path):
    ledger = Ledger(Layout.at(str(tmp_path / "root")))
    _writing(ledger, "day1", this_process())
    said: list[str] = []
    with pytest.raises(RefusedError) as err:
        lease.take_table(ledger, "day2", TABLE, _plan(ledger, "day2"), wait_seconds=2, on_wait=said.append)
    assert err.value.exit_code == 3 and err.value.fields["holder"] == "day1"
    assert "still being written by run day1" in str(err.value) and "S3DynamoDBLogStore" in err.value.detail
    assert len(said) == 1 and "waiting for run day1" in said[0]
    assert [ev["event"] for ev in ledger.events("day2")] == []  # it planned nothing


def test_the_table_lease_passes_when_the_writer_finishes_or_is_dead(tmp_path):
    ledger = Ledger(Layout.at(str(tmp_path / "root")))
    _writing(ledger, "day1", this_process())
    threading.Timer(1.5, lambda: ledger.append("day1", "backfill", "sink_written", stage="s",
                                               detail={"table": TABLE})).start()
    lease.take_table(ledger, "day2", TABLE, _plan(ledger, "day2"), wait_seconds=60)
    assert _version_of(ledger, "day2", "sink_planned") > _version_of(ledger, "day1", "sink_written")

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _writing(ledger, "day3", {**this_process(), "pid": int(gone.stdout)}, table="s3a://warehouse/other")
    # A dead writer's lease expired: taken without waiting at all.
    lease.take_table(ledger, "day4", "s3a://warehouse/other", _plan(ledger, "day4", "s3a://warehouse/other"),
                     wait_seconds=0)
    # A run that ended (failed) with its write still planned holds nothing, whatever its process.
    _writing(ledger, "day5", this_process(), table="s3a://warehouse/fifth")
    ledger.append("day5", "backfill", "run_finished", status="failed", error="boom")
    lease.take_table(ledger, "day6", "s3a://warehouse/fifth", _plan(ledger, "day6", "s3a://warehouse/fifth"),
                     wait_seconds=0)
    # Another table, or a write this run planned itself, does not block.
    lease.take_table(ledger, "day2", "s3a://warehouse/third", _plan(ledger, "day2", "s3a://warehouse/third"),
                     wait_seconds=0)


def test_the_table_lease_reads_only_runs_with_a_write_in_flight(tmp_path):
    ledger = Ledger(Layout.at(str(tmp_path / "root")))
    for run_id, *after in [("wrote", "sink_written"), ("failed", "sink_failed"), ("ended", "run_finished"),
                           ("open", "sink_written", "sink_planned")]:
        _writing(ledger, run_id, this_process())
        for n, event in enumerate(after):  # "open" wrote the daily table, then planned a second one
            ledger.append(run_id, "backfill", event, stage="s", status="failed" if event == "run_finished" else None,
                          detail={"table": f"{TABLE}{n or ''}"})
    assert [r.run_id for r in ledger.sink_writers()] == ["open"]
    assert lease.table_writer(ledger.sink_writers(), f"{TABLE}1", "me").run_id == "open"


# -- two runs of a per-day backfill writing one S3 sink table, in one local-mode session ------------

_BACKFILL_JOB = """
from pyspark.sql import functions as F
from spark_recover import Job

job = Job("backfill")


@job.stage
def day_rows(spark, params):
    return spark.range(int(params["rows"])).withColumn("day", F.lit(params["day"]))


job.sink("day_rows", path="{out}/events", mode="append")
"""

_TWO_WRITERS = """
import importlib.util, json, sys, threading
from spark_recover import session
from spark_recover.config import load_settings

job_file, root, out, rows = sys.argv[1:5]
spec = importlib.util.spec_from_file_location("backfill_job", job_file)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
settings = load_settings(root=root, project=None)
spark = session.get_spark(settings)
statuses = []

def days(first):
    for day in range(first, 7, 2):  # 1, 3, 5 and 2, 4, 6: parallel runs with different parameters
        result = module.job.run(params={"day": str(day), "out": out, "rows": rows}, settings=settings,
                                spark=spark, echo=False)
        statuses.append(result.status)
        if result.error:
            print(result.error, file=sys.stderr)

writers = [threading.Thread(target=days, args=(first,)) for first in (1, 2)]
for w in writers:
    w.start()
for w in writers:
    w.join()
print(json.dumps(statuses))
"""


@pytest.mark.cluster
def test_parallel_runs_writing_one_s3_table_are_serialised(s3, options, tmp_path: Path):
    job_file = tmp_path / "backfill_job.py"
    job_file.write_text(_BACKFILL_JOB)
    root, out = s3.uri("backfill/recover"), s3.uri("backfill/warehouse")
    done = subprocess.run([sys.executable, "-c", _TWO_WRITERS, str(job_file), root, out, "50"], capture_output=True,
                          text=True, env=job_env(dict(options)), timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["succeeded"] * 6, done.stderr[-3000:]
    # Each commit landed: six appends of 50 rows, one per day.
    table = storage.read_delta(f"{out}/events", storage_options=options).to_pylist()
    assert sorted({r["day"] for r in table}) == [str(d) for d in range(1, 7)] and len(table) == 300
    assert len(storage.open_delta(f"{out}/events", storage_options=options).history()) == 6
    # One writer at a time: in ledger commit order, no run planned its write while another's was unfinished.
    ledger = Ledger(Layout.at(root, options))
    spans = sorted((_version_of(ledger, r.run_id, "sink_planned"), _version_of(ledger, r.run_id, "sink_written"))
                   for r in ledger.runs("backfill"))
    assert len(spans) == 6
    assert all(written < next_planned for (_, written), (next_planned, _) in zip(spans, spans[1:])), spans
