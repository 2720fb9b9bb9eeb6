"""The driver JVM starts from a class-data sharing archive, and a damaged archive is remade, never used."""

from __future__ import annotations

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
    shutil.copy(archive.with_suffix(".size"), cache)
    with open(archive, "rb") as whole, open(damaged, "wb") as cut:  # cut short, as a full disk would leave it
        cut.write(whole.read(1 << 20))
    done = run_cli(*run_args(SMALL_JOB, recover_root, {"data": str(source_data)}, []),
                   env={"SPARK_RECOVER_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr[-3000:]  # a JVM mapping the cut archive would have crashed
    assert "making a class-data archive" in done.stderr
    assert damaged.stat().st_size == int(damaged.with_suffix(".size").read_text()) > 10 * 2**20
