"""Commits on S3 (issue 24 §7): the store's conditional put is probed once per root.

Against moto's S3 server (a real S3 REST API, honours ``If-None-Match``), and,
for a store without conditional puts, the same server behind a plain HTTP
forwarder that drops that header on the way (what an S3-compatible store that
ignores it does). No Spark here except where a test says so.
"""

from __future__ import annotations

import http.server
import textwrap
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from spark_recover import storage
from spark_recover.errors import UsageError
from spark_recover.storage import Layout, with_s3_defaults
from spark_recover.testing import run_cli

from clusterkit import S3Server


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
                    if key.lower() not in ("transfer-encoding", "connection") and (head or key.lower() != "content-length"):
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
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def options(s3):
    return with_s3_defaults(s3.options, {})


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
