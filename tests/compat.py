"""The compatibility matrix (`make test-compat`): spark-recover installed into the Spark users already have.

    make test-compat                       # every cell
    python tests/compat.py --cells 3.5     # one cell (names: 3.5, 4.0, 4.2, 4.3, connect)

Each cell is a virtual environment of its own under ``.compat/`` that first holds
what a user already has (pyspark, and delta-spark where platforms ship it),
pinned by ``constraints/<cell>.txt``; then ``pip install -e ".[test]"`` adds
spark-recover, which must leave that pyspark exactly as it was. Then:

- a Spark line (3.5, 4.0): the core set on a local session spark-recover
  builds with the Delta jar of ``compat.SPARK_LINES``: the engine's versions
  and the fingerprint, crash and resume with reuse, every sink mode exactly
  once across crashes, rollback checked by delta-rs, and a 2-kill drill (with
  a scheduler retry after each recovery). 4.2, the development line that
  `make test` covers whole: the engine's versions and the drill, in an
  environment that held pyspark 4.2.1 alone;
- ``4.3``: a line with no Delta release: ``run`` is refused with exit 2 naming
  the supported lines, before anything is written;
- ``connect``: the thin client alone (``pyspark-client``, no JVM), against a
  Spark Connect server this script starts from its own (development)
  environment: every command through the server.

Environments are kept between runs (rebuilt when their constraints change).
Prints the matrix (each cell's result and time) and keeps it in
``bench/results/compat.md``. Exit code 0 only if every cell passed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent
VENVS = REPO / ".compat"
CORE = ("tests/test_compat.py", "tests/test_recovery.py::test_failpoint_in_middle_stage_then_resume",
        "tests/test_sinks.py::test_sink_crash_then_resume_is_exactly_once",
        "tests/test_sinks.py::test_rollback_restores_every_table_and_is_idempotent")
# The oldest line also runs what touches APIs that differ by line (types, settings, Connect attach) and the
# scheduler's retries after a recovery over all four sink modes.
OLDEST = (*CORE, "tests/test_checkpoint.py", "tests/test_session_settings.py", "tests/test_connect_takeover.py",
          "tests/test_replay.py::test_scheduler_retries_after_a_recovery_publish_nothing")
CLIENT = ("tests/test_compat.py", "tests/test_connect.py::test_merge_identifiers_stay_in_their_own_server_session",
          "tests/test_connect.py::test_rollback_interrupts_the_killed_clients_sink_write[merge]")


@dataclass(frozen=True)
class Cell:
    name: str
    constraints: str
    user: tuple[str, ...]  # what the user's environment holds before spark-recover is installed
    extras: str  # spark-recover's extras installed into it
    tests: tuple[str, ...] = ()


CELLS = {c.name: c for c in (
    Cell("3.5", "spark-3.5", ("pyspark", "delta-spark"), "test", OLDEST),
    Cell("4.0", "spark-4.0", ("pyspark", "delta-spark"), "test", CORE),
    # `make test` runs everything on the development line, 4.2.1 too: here the environment of pyspark alone.
    Cell("4.2", "spark-4.2", ("pyspark",), "test", ("tests/test_compat.py",)),
    Cell("4.3", "spark-4.3", ("pyspark",), "test"),
    Cell("connect", "connect-4.2", ("pyspark-client",), "test", CLIENT),
)}


def _venv(cell: Cell) -> Path:
    """The cell's environment: the user's packages, then spark-recover; refuses a replaced pyspark."""
    constraints = REPO / "constraints" / f"{cell.constraints}.txt"
    stamp_text = hashlib.sha256(constraints.read_bytes() + (REPO / "pyproject.toml").read_bytes()).hexdigest()
    venv = VENVS / cell.name
    stamp = venv / ".installed"
    if stamp.is_file() and stamp.read_text() == stamp_text:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "-c", str(constraints)]
    subprocess.run(pip + list(cell.user), check=True)
    before = _spark_packages(venv)
    subprocess.run(pip + ["-e", f"{REPO}[{cell.extras}]"], check=True, cwd=REPO)
    after = _spark_packages(venv)
    if after != before:
        raise SystemExit(f"cell {cell.name}: installing spark-recover changed the user's Spark packages: "
                         f"{before} -> {after}")
    stamp.write_text(stamp_text)
    return venv


def _spark_packages(venv: Path) -> dict[str, str]:
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("==", 1) for line in out.splitlines()
                if line.split("==")[0].lower() in ("pyspark", "pyspark-client", "delta-spark"))


def _env() -> dict[str, str]:
    """This process's environment without jar paths resolved for another Spark line (the server's)."""
    return {k: v for k, v in os.environ.items() if k not in ("SPARK_RECOVER_JARS", "SPARK_RECOVER_S3A_JARS")}


def _pytest(venv: Path, tests: tuple[str, ...], extra: list[str]) -> int:
    return subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-m", "not soak and not cluster", *extra, *tests], cwd=REPO, env=_env()).returncode


def _refused_line(venv: Path) -> int:
    """A Spark line without Delta: `run` exits 2 naming the supported lines, and writes nothing."""
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"spark-recover-compat-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "spark_recover", "run",
                           str(HERE / "jobs" / "small_job.py"), "-p", f"data={work / 'none'}", "--root", str(root)],
                          capture_output=True, text=True, cwd=REPO, env={**_env(), "SPARK_REMOTE": ""})
    print(done.stdout + done.stderr, end="")
    ok = (done.returncode == 2 and "3.5, 4.0, 4.1, 4.2" in done.stderr and "Traceback" not in done.stderr
          and not (root.exists() and any(root.rglob("*.json"))))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def _run_cell(cell: Cell) -> tuple[int, dict[str, str]]:
    venv = _venv(cell)
    versions = _spark_packages(venv)
    if cell.name == "4.3":
        return _refused_line(venv), versions
    if cell.name != "connect":
        return _pytest(venv, cell.tests, []), versions
    sys.path.insert(0, str(REPO))
    from spark_recover.testing import ConnectServer  # the server: this (development) environment's Spark

    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"spark-recover-compat-connect-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    server = ConnectServer.start(work)
    try:
        return _pytest(venv, cell.tests, ["--connect", "--connect-url", server.url]), versions
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", default=",".join(CELLS), help=f"comma-separated, of {', '.join(CELLS)}")
    args = parser.parse_args()
    rows = []
    for name in args.cells.split(","):
        cell = CELLS[name]
        print(f"\n=== compat cell {name} ===", flush=True)
        started = time.monotonic()
        code, versions = _run_cell(cell)
        seconds = time.monotonic() - started
        rows.append((name, ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
                     "pass" if code == 0 else f"FAIL ({code})", f"{seconds:.0f}"))
    table = ["| cell | user's environment (unchanged by the install) | result | seconds |", "|---|---|---|---|"]
    table += [f"| {' | '.join(r)} |" for r in rows]
    text = "\n".join(table)
    print("\n" + text)
    out = REPO / "bench" / "results" / "compat.md"
    out.write_text("# make test-compat\n\n" + text + "\n")
    return 0 if all(r[2] == "pass" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
