"""A Spark standalone cluster and an S3 server on localhost, for the cluster tests (`make test-cluster`).

- :class:`S3Server`: moto in server mode, a real S3 REST API over HTTP: the
  same bytes-on-the-wire protocol S3A (AWS SDK v2), delta-rs (object_store) and
  pyarrow speak to AWS, including conditional writes (``If-None-Match``). It is
  a pip install, starts in about a second, and needs no container runtime.
- :class:`Standalone`: a master and two one-core workers started from the
  pyspark wheel (``spark-class ...Master`` / ``...Worker``), as a user would.
  :meth:`Standalone.submit` runs a job file with ``spark-submit --master spark://...``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import psutil

from spark_recover.testing import free_port, run_cli, stop_group, wait_until

BIN = Path(sys.executable).parent
EXTENSIONS = {"spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
              "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog"}


class S3Server:
    """moto's S3 on 127.0.0.1, with one bucket; :attr:`options` are the storage options that reach it."""

    def __init__(self, workdir: Path, bucket: str = "recover-ci") -> None:
        self.port, self.bucket = free_port(), bucket
        self.log = workdir / "moto.log"
        self.proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        self.options = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}", "AWS_REGION": "us-east-1",
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        wait_until("moto_server", lambda: urllib.request.urlopen(self.options["AWS_ENDPOINT_URL"], timeout=2).status == 200,
                   self.proc, self.log, timeout=120)
        import boto3

        boto3.client("s3", endpoint_url=self.options["AWS_ENDPOINT_URL"], region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=bucket)

    def uri(self, path: str) -> str:
        """An ``s3a://`` location in the bucket."""
        return f"s3a://{self.bucket}/{path}"

    def stop(self) -> None:
        stop_group(self.proc, timeout=20)


@dataclass
class Submitted:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class Standalone:
    """A standalone master and two workers (1 core, 1 GiB executors each) on 127.0.0.1."""

    def __init__(self, workdir: Path, workers: int = 2) -> None:
        self.workdir = workdir
        self.port, self.ui = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        env = {**os.environ, "SPARK_DAEMON_MEMORY": "256m", "SPARK_LOCAL_IP": "127.0.0.1",
               "PYSPARK_PYTHON": sys.executable}
        self.procs = [self._daemon("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                              "--port", str(self.port), "--webui-port", str(self.ui)], env)]
        wait_until("the standalone master", lambda: self._state() is not None, self.procs[0], workdir / "master.log",
                   timeout=120)
        for i in range(workers):
            self.procs.append(self._daemon(f"worker{i}", [
                "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1", "--cores", "1",
                "--memory", "1536m", "--webui-port", str(free_port()), "--work-dir", str(workdir / f"work{i}")], env))
        wait_until(f"{workers} workers", lambda: self._state()["aliveworkers"] == workers, self.procs[-1],
                   workdir / f"worker{workers - 1}.log", timeout=120)
        listed = run_cli("jars", "--s3a")  # as the README tells users: --jars "$(spark-recover jars --s3a)"
        assert listed.returncode == 0, listed.stderr
        self.jars = listed.stdout.strip()

    def _daemon(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen:
        log = (self.workdir / f"{name}.log").open("wb")
        return subprocess.Popen([str(BIN / "spark-class"), *args], stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)

    def _state(self) -> dict | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui}/json/", timeout=2) as resp:
            return json.loads(resp.read())

    def submit_command(self, job_file: str, args: Sequence[str]) -> list[str]:
        """The spark-submit command line of a job file on this cluster (what the README shows)."""
        confs = {**EXTENSIONS, "spark.executor.memory": "1g", "spark.driver.memory": "1g",
                 "spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false",
                 "spark.ui.showConsoleProgress": "false", "spark.pyspark.python": sys.executable,
                 "spark.driver.host": "127.0.0.1"}
        return [str(BIN / "spark-submit"), "--master", self.url, "--jars", self.jars,
                *[a for k, v in confs.items() for a in ("--conf", f"{k}={v}")], job_file, *args]

    def submit(self, job_file: str, args: Sequence[str], env: Mapping[str, str],
               on_line: Callable[[str, subprocess.Popen], None] | None = None, timeout: float = 600) -> Submitted:
        """Run a job file with spark-submit; ``on_line(line, proc)`` sees each stdout line as it comes."""
        started = time.monotonic()
        proc = subprocess.Popen(self.submit_command(job_file, args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True,
                                env={**os.environ, **env, "PYSPARK_PYTHON": sys.executable})
        err: list[str] = []
        reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
        reader.start()
        out = []
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            for line in proc.stdout:
                out.append(line)
                if on_line is not None:
                    on_line(line, proc)
            proc.wait()
        finally:
            timer.cancel()
        reader.join(timeout=10)
        return Submitted(proc.returncode, "".join(out), "".join(err), time.monotonic() - started)

    def executors(self) -> list[psutil.Process]:
        """The executor JVMs the workers run now."""
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            if any("CoarseGrainedExecutorBackend" in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        return found

    def stop(self) -> None:
        for proc in self.procs[::-1]:
            stop_group(proc, timeout=20)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a spark-submit driver: the launcher, its JVM and the Python driver, all at once."""
    os.killpg(proc.pid, signal.SIGKILL)
