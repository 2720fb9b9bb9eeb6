"""pytest plugin: a fast local Delta session, a fresh root, and crash helpers.

Installing spark-recover registers it (the ``pytest11`` entry point), so a
user's tests can say::

    from spark_recover.testing import crash_at

    def test_my_job_recovers(spark, recover_root):
        crashed = crash_at("jobs/my_job.py", "enrich", "after_write", root=recover_root)
        assert crashed.killed
        result = load_job("jobs/my_job.py").resume(crashed.run_id, root=recover_root)
        assert result.status == "succeeded"

Child processes inherit the Delta jars this process resolved
(``$SPARK_RECOVER_JARS``), so no child runs Maven resolution again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import pytest

from .config import Settings
from .failpoints import ENV as FAILPOINT_ENV
from .ledger import Ledger
from .history import RunRecord
from .storage import Layout

__all__ = ["spark", "spark_connect_server", "ConnectServer", "free_port", "wait_until", "stop_group", "recover_root", "assert_recovers", "TEST_SPARK_CONFS", "CHILD_JAVA_OPTIONS", "ProcessResult", "run_cli",
           "run_args", "job_env", "no_jvm_env", "crash_at", "kill_during", "runs_of"]

#: Spark confs of the test session and of the job processes the helpers start.
TEST_SPARK_CONFS = {
    "spark.master": "local[2]",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.databricks.delta.snapshotPartitions": "1",
    "spark.sql.adaptive.coalescePartitions.initialPartitionNum": "2",
    "spark.driver.memory": "1g",
    # Listing a table for VACUUM is one task per this many paths (default 10,000 tasks).
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--connect", action="store_true",
                     help="spark-recover: the `spark` fixture, and the job processes the helpers start, use a "
                     "Spark Connect server started once for the test session (fixture `spark_connect_server`)")
    parser.addoption("--connect-url", default=None,
                     help="spark-recover: with --connect, use the Spark Connect server already listening at this "
                     "sc:// URL instead of starting one (a client-only environment, `make test-compat`)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(what: str, ready: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Poll ``ready()`` until it holds; fail with the end of ``log`` if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.5)
    stop_group(proc)
    raise RuntimeError(f"{what} not ready after {timeout}s: {log.read_text()[-3000:]}")


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a server started with ``start_new_session=True``, and everything it started: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class ConnectServer:
    """A Spark Connect server with Delta Lake on 127.0.0.1, started from the pyspark wheel.

    >>> server = ConnectServer.start(Path("/tmp/connect"))   # doctest: +SKIP
    >>> server.url   # doctest: +SKIP
    'sc://127.0.0.1:41235'
    """

    def __init__(self, proc: subprocess.Popen, url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    @classmethod
    def start(cls, workdir: Path, delta: bool = True, confs: Mapping[str, str] | None = None,
              timeout: float = 180) -> "ConnectServer":
        """Start a server and wait until it accepts connections.

        ``delta=False``: a server without Delta Lake. ``confs``: its Spark settings
        (default: the tests' :data:`TEST_SPARK_CONFS`).
        """
        import socket

        from .session import _DELTA_CATALOG, _DELTA_EXTENSION, _QUIET_LOG4J, resolve_delta_jars

        port = free_port()
        settings = {**(TEST_SPARK_CONFS if confs is None else {}), "spark.driver.memory": "2g", "spark.ui.enabled": "false",
                    "spark.connect.grpc.binding.address": "127.0.0.1",
                    "spark.connect.grpc.binding.port": str(port),
                    "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{_QUIET_LOG4J}",
                    **(confs or {})}
        args = []
        if delta:
            settings.update({"spark.sql.extensions": _DELTA_EXTENSION, "spark.sql.catalog.spark_catalog": _DELTA_CATALOG})
            args = ["--jars", ",".join(resolve_delta_jars())]
        log = workdir / f"connect-server-{port}.log"
        command = [str(Path(sys.executable).with_name("spark-submit")), "--class",
                   "org.apache.spark.sql.connect.service.SparkConnectServer", *args,
                   *[a for k, v in settings.items() for a in ("--conf", f"{k}={v}")], "spark-internal"]
        env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED")}
        proc = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
                                env={**env, "PYSPARK_PYTHON": sys.executable})
        def listening() -> bool:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True

        wait_until("the Spark Connect server", listening, proc, log, timeout)
        return cls(proc, f"sc://127.0.0.1:{port}", log)

    def stop(self) -> None:
        stop_group(self.proc)


@pytest.fixture(scope="session")
def spark_connect_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The ``sc://`` URL of a Spark Connect server with Delta, started once for the test session
    (``--connect-url``: one already listening)."""
    given = request.config.getoption("connect_url")
    if given:
        yield given
        return
    server = ConnectServer.start(tmp_path_factory.mktemp("spark-connect"))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def spark(request: pytest.FixtureRequest):
    """A local SparkSession with Delta Lake, UI off, two shuffle partitions.

    With ``pytest --connect``: a Spark Connect session to :func:`spark_connect_server`,
    whose URL is also ``$SPARK_REMOTE`` for the job processes the helpers start.
    """
    from .session import get_spark

    if request.config.getoption("connect"):
        url = request.getfixturevalue("spark_connect_server")
        os.environ["SPARK_REMOTE"] = url
        session = get_spark(Settings(remote=url))
    else:
        session = get_spark(Settings(spark=TEST_SPARK_CONFS))
    yield session
    session.stop()


@pytest.fixture
def recover_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty root for checkpoints and the ledger, used by every run of the test.

    It is also ``$SPARK_RECOVER_ROOT`` for the test's duration, so ``job.run()``,
    resumes, rollbacks and child processes called without ``root=`` write there,
    never into the working directory's ``.spark-recover``.
    """
    root = str(tmp_path / "recover-root")
    monkeypatch.setenv("SPARK_RECOVER_ROOT", root)
    return root


@dataclass
class ProcessResult:
    """What a job process did: its exit code, output, and the run it started."""

    returncode: int
    stdout: str
    stderr: str
    run_id: str | None

    @property
    def killed(self) -> bool:
        """True when the process died by SIGKILL (a failpoint or :func:`kill_during`)."""
        return self.returncode == -signal.SIGKILL


#: JVM options of the short-lived job processes the helpers start: the C1 compiler alone and the
#: serial collector start a driver faster (11 s against 14 s for a two-stage job on 2 cores).
CHILD_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def _conf_file() -> str:
    path = Path(tempfile.gettempdir()) / f"spark-recover-test-{os.getpid()}.toml"
    confs = {**TEST_SPARK_CONFS, "spark.driver.extraJavaOptions": CHILD_JAVA_OPTIONS}
    text = "\n".join(["[spark]"] + [f'"{k}" = "{v}"' for k, v in confs.items()]) + "\n"
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: threads starting children at once never read half a file
    return str(path)


def job_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a job process: the resolved Delta jars, the test confs, no stray failpoint.

    ``extra`` adds variables; one mapped to ``None`` is removed (``{"SPARK_REMOTE": None}``: a local session).
    """
    from .compat import has_local_spark
    from .session import resolve_delta_jars

    if has_local_spark():  # once, here; children inherit $SPARK_RECOVER_JARS (a Connect-only client has no JVM)
        resolve_delta_jars()
    env = {**os.environ, "SPARK_RECOVER_CONF": os.environ.get("SPARK_RECOVER_CONF") or _conf_file()}
    env.pop(FAILPOINT_ENV, None)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def no_jvm_env() -> dict[str, str]:
    """Environment variables under which no JVM can start (no ``java`` on ``PATH``, no ``JAVA_HOME``):
    a command run so proves it needs none."""
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if not os.path.exists(os.path.join(d, "java"))]
    return {"JAVA_HOME": "/nonexistent-java", "PATH": os.pathsep.join(path), "SPARK_HOME": "/nonexistent-spark"}


def _run_id(stdout: str) -> str | None:
    for line in stdout.splitlines():
        if line.startswith("run ") and " of job " in line:
            return line.split()[1]
    return None


def run_cli(*args: str, env: Mapping[str, str | None] | None = None, timeout: float = 900,
            cwd: str | None = None) -> ProcessResult:
    """Run ``spark-recover ARGS...`` in a child process and wait for it.

    ``cwd`` runs it in another working directory; the child still imports this
    process's ``spark_recover`` (its folder goes first on ``PYTHONPATH``).
    """
    child_env = job_env(env)
    if cwd is not None:
        package_home = str(Path(__file__).resolve().parent.parent)
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_home, child_env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "spark_recover", *args], capture_output=True,
                          text=True, env=child_env, timeout=timeout, cwd=cwd)
    return ProcessResult(proc.returncode, proc.stdout, proc.stderr, _run_id(proc.stdout))


def run_args(job_file: str, root: str, params: Mapping[str, str] | None, args: Sequence[str]) -> list[str]:
    """The ``spark-recover run`` arguments for a job file, root and parameters.

    >>> run_args("jobs/j.py", "/tmp/r", {"day": "1"}, ["--resume"])
    ['run', 'jobs/j.py', '--root', '/tmp/r', '-p', 'day=1', '--resume']
    """
    out = ["run", str(job_file), "--root", root]
    for key, value in (params or {}).items():
        out += ["-p", f"{key}={value}"]
    return out + list(args)


def crash_at(job_file: str, stage: str, point: str, *, root: str,
             params: Mapping[str, str] | None = None, args: Sequence[str] = ()) -> ProcessResult:
    """Run a job in a child process that kills itself at ``stage:point``."""
    return run_cli(*run_args(job_file, root, params, args), env={FAILPOINT_ENV: f"{stage}:{point}"})


def runs_of(root: str) -> list[RunRecord]:
    """Every run in the ledger under ``root``, oldest first (JVM-free)."""
    return Ledger(Layout.at(root)).runs()


def kill_during(job_file: str, *, root: str, params: Mapping[str, str] | None = None,
                when: Callable[[RunRecord], bool] = lambda run: True, delay: float = 0.0,
                while_running: Callable[[RunRecord], None] | None = None,
                timeout: float = 600) -> ProcessResult:
    """Start a job process and SIGKILL it (driver and JVM) mid-run.

    The kill lands ``delay`` seconds after the ledger first shows a run of this
    process for which ``when(run)`` holds. ``while_running(run)`` is called just
    before the kill, to inspect the live run.
    """
    known = {r.run_id for r in runs_of(root)}
    proc = subprocess.Popen([sys.executable, "-m", "spark_recover", *run_args(job_file, root, params, ())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=job_env(None), start_new_session=True)
    deadline = time.monotonic() + timeout
    run = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            fresh = [r for r in runs_of(root) if r.run_id not in known]
            if fresh and when(fresh[-1]):
                run = fresh[-1]
                break
            time.sleep(0.2)
        if run is not None and proc.poll() is None:
            time.sleep(delay)
            if while_running is not None:
                while_running(Ledger(Layout.at(root)).run(run.run_id))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return ProcessResult(proc.returncode, out, err, run.run_id if run else _run_id(out))




def assert_recovers(job_file: str, params: Mapping[str, str] | None = None, *, kills: int = 3, seed: int = 0,
                    with_rollback: bool = False, root: str | None = None, spark=None) -> dict:
    """Drill ``job_file`` from a test: ``kills`` random SIGKILLs, recovery, every sink row by row.

    Each kill hits a real driver process; the recoveries run in this test's
    session (``spark``, else the active one), so a trial costs seconds. Fails
    the test with the drill's report unless no row was lost, duplicated or
    extra (and, ``with_rollback``, unless every rollback, killed midway or not,
    put the tables back to their recovery point). Returns the report.

    >>> assert_recovers("jobs/my_job.py", {"day": "2026-11-23"}, kills=3, seed=1)   # doctest: +SKIP
    """
    from .config import load_settings
    from .display import drill_text
    from .drill import drill
    from .errors import RecoverError
    from .job import load_job
    from .runner import replay_choice, run_job

    job = load_job(str(job_file))
    values = {k: str(v) for k, v in (params or {}).items()}

    def recover(settings) -> int:  # `spark-recover run JOB --resume`, in this process
        try:
            origin, why = replay_choice(Ledger(Layout.at(settings.root, settings.storage_options)), job, values)
            if why.startswith("done:"):
                return 0
            result = run_job(job, values, settings=settings, resume_from=origin, spark=spark, echo=False)
            return 0 if result.ok else 1
        except RecoverError as exc:
            return exc.exit_code

    report = drill(str(job_file), values, kills=kills, seed=seed, with_rollback=with_rollback,
                   settings=load_settings(root=root), recover=recover, env=job_env(), echo=False)
    assert report["ok"], "\n" + drill_text(report)
    return report
