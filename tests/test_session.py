"""The driver JVM starts from a class-data sharing archive; a damaged archive is remade, never used, and a cache
that cannot be written costs only the archive."""

from __future__ import annotations

import hashlib
import json
import shutil

from conftest import SMALL_JOB

from spark_recover.session import _check_java, startup_archive
from spark_recover.testing import run_args, run_cli


def _vm_option(spark, name: str) -> str:
    jvm = spark._jvm
    bean = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean"))
    return bean.getVMOption(name).getValue()


def test_a_local_session_maps_the_class_data_archive(spark):
    archive = startup_archive(*_check_java())
    assert archive is not None and archive.stat().st_size > 10 * 2**20
    assert _vm_option(spark, "SharedArchiveFile") == str(archive)
    assert _vm_option(spark, "UseSharedSpaces") == "true"  # mapped, not just named


def test_a_truncated_archive_is_remade_and_the_run_succeeds(tmp_path, recover_root, source_data):
    archive = startup_archive(*_check_java())
    cache = tmp_path / "cache"
    cache.mkdir()
    damaged = cache / archive.name
    shutil.copy(archive.with_suffix(".sha256"), cache)
    with open(archive, "rb") as whole, open(damaged, "wb") as cut:  # cut short, as a full disk would leave it
        cut.write(whole.read(1 << 20))
    done = run_cli(*run_args(SMALL_JOB, recover_root, {"data": str(source_data)}, []),
                   env={"SPARK_RECOVER_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr[-3000:]  # a JVM mapping the cut archive would have crashed
    assert "making a class-data archive" in done.stderr
    _assert_whole(damaged)


def _assert_whole(archive) -> None:
    marker = json.loads(archive.with_suffix(".sha256").read_text())
    assert archive.stat().st_size > 10 * 2**20
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == marker["sha256"]


def test_a_damaged_archive_of_the_right_size_is_remade(tmp_path, recover_root, source_data):
    archive = startup_archive(*_check_java())
    cache = tmp_path / "cache"
    cache.mkdir()
    damaged = cache / archive.name
    for sidecar in archive.parent.glob(archive.stem + ".*"):  # whatever the cache keeps beside it
        if sidecar.suffix != ".lock":
            shutil.copy(sidecar, cache)
    with open(damaged, "r+b") as fh:  # bytes flipped in place: same size, as a bad disk block would leave it
        fh.seek(archive.stat().st_size // 2)
        fh.write(b"\xff" * 4096)
    assert damaged.stat().st_size == archive.stat().st_size
    done = run_cli(*run_args(SMALL_JOB, recover_root, {"data": str(source_data)}, []),
                   env={"SPARK_RECOVER_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "making a class-data archive" in done.stderr  # checked before mapping, and remade
    _assert_whole(damaged)


def test_an_unwritable_cache_starts_the_session_without_an_archive(tmp_path, recover_root, source_data):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # mkdir under a file fails, even for root (who ignores chmod)
    done = run_cli(*run_args(SMALL_JOB, recover_root, {"data": str(source_data)}, []),
                   env={"SPARK_RECOVER_CACHE": str(blocker / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warning: no class-data archive" in done.stderr and str(blocker / "cache") in done.stderr
