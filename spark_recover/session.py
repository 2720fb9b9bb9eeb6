"""The SparkSession spark-recover runs in.

An active session (spark-submit, a notebook, a test fixture) is reused as it
is, after checking that Delta Lake is enabled in it. Otherwise a local session
is built from settings, with the Delta jars resolved once from Maven Central by
Spark's own resolver and cached: later sessions, and child processes (which
inherit ``$SPARK_RECOVER_JARS``), start without running Ivy again.

A Spark Connect session (``sc://host:port``: passed in, active, or named by
``--remote`` / ``$SPARK_REMOTE``) is used the same way: nothing spark-recover
does with a session needs a JVM in this process.

A locally built session also starts from a class-data sharing archive of the
driver JVM (Java's AppCDS): the classes Spark loads for a Delta job, made once
per machine, Java and pyspark (about 30 s, ~190 MB in the cache folder), then
mapped by every driver. It saves ~4 s of each process's start and first query
(15 s to 11 s for a small job here), which is most of a small resume.
``SPARK_RECOVER_JVM_ARCHIVE=off`` turns it off.

What of a session changes results is this module's to say too: the settings
every stage's fingerprint records (:data:`RESULT_SETTINGS`), the Spark and
Delta versions actually running (the server's under Spark Connect), and the
settings a MERGE's private session must carry over (:func:`carried_settings`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from . import compat
from .config import Settings
from .errors import RefusedError, SessionError
from .storage import hadoop_confs, is_s3

__all__ = ["get_spark", "resolve_delta_jars", "resolve_s3a_jars", "s3a_coordinates", "delta_coordinate", "local_confs",
           "startup_archive", "master", "describe", "attached", "is_connect", "RESULT_SETTINGS", "RESULT_PREFIXES",
           "explicit_settings", "result_settings", "engine_versions", "fingerprint_parts", "carried_settings",
           "check_buildable", "connect_identity", "tag_operations", "untag_operations",
           "stop_dead_operations", "dead_operations_text", "DEAD_OPERATIONS_WAIT_SECONDS"]

_DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
_DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
_QUIET_LOG4J = Path(__file__).with_name("log4j2-quiet.properties")
JARS_ENV = "SPARK_RECOVER_JARS"
S3A_JARS_ENV = "SPARK_RECOVER_S3A_JARS"
# The AWS SDK v2 release Hadoop's S3A connector is built with (hadoop-aws's Ivy descriptor).
# S3A needs only a few of its modules: 52 artifacts, 19 MB (37 jars, 13 MB, once Spark's own are
# dropped), where the SDK's `bundle` jar alone is 686 MB.
_AWS_SDK_OF_HADOOP = {"3.5.0": "2.35.4"}
_S3A_SDK_MODULES = ("s3", "s3-transfer-manager", "sts")
# What pyspark already ships: the SDK modules' copies would only shadow or clash.
_PROVIDED_BY_SPARK = ("io.netty_", "org.slf4j_", "org.apache.httpcomponents_", "commons-codec_", "commons-logging_")
ARCHIVE_ENV = "SPARK_RECOVER_JVM_ARCHIVE"

#: The session settings that change what a query returns, recorded by name and effective value in every
#: stage's fingerprint. An allow-list, so nothing else (no credential) is ever recorded. Besides the ones
#: issue 24 names: the timestamp type of literals and casts, map key dedup, decimal precision loss, Impala
#: int96 conversion, and skipping corrupt or missing files (rows silently dropped).
RESULT_SETTINGS = (
    "spark.sql.session.timeZone", "spark.sql.ansi.enabled", "spark.sql.storeAssignmentPolicy",
    "spark.sql.caseSensitive", "spark.sql.timestampType", "spark.sql.mapKeyDedupPolicy",
    "spark.sql.decimalOperations.allowPrecisionLoss",
    "spark.sql.parquet.datetimeRebaseModeInRead", "spark.sql.parquet.datetimeRebaseModeInWrite",
    "spark.sql.parquet.int96RebaseModeInRead", "spark.sql.parquet.int96RebaseModeInWrite",
    "spark.sql.avro.datetimeRebaseModeInRead", "spark.sql.avro.datetimeRebaseModeInWrite",
    "spark.sql.parquet.int96TimestampConversion",
    "spark.sql.files.ignoreCorruptFiles", "spark.sql.files.ignoreMissingFiles",
)
#: Families of result-affecting settings recorded when set (their defaults come with the Spark version).
RESULT_PREFIXES = ("spark.sql.legacy.",)
# Carried into a MERGE's private session besides the result settings: storage (S3A keys set at runtime)
# and Delta's behaviour (schema auto-merge, table property defaults)...
_CARRIED_PREFIXES = ("fs.", "spark.hadoop.", "spark.databricks.delta.")
# ... but never the per-write identifiers a private session exists to keep apart.
_PER_WRITE = ("spark.databricks.delta.write.txnAppId", "spark.databricks.delta.write.txnVersion",
              "spark.databricks.delta.commitInfo.userMetadata")
# The Spark and Delta versions of the engine a session runs on, found once per session.
_ENGINES: "weakref.WeakKeyDictionary[Any, dict[str, str]]" = weakref.WeakKeyDictionary()


def delta_coordinate(spark_version: str | None = None) -> str:
    """The Maven coordinate of the Delta jar for ``spark_version`` (default: the installed pyspark's).

    From the one table of supported lines (:data:`spark_recover.compat.SPARK_LINES`); an unsupported
    line is refused (:class:`SessionError`, exit 2) naming the supported ones.
    """
    return compat.delta_coordinate(spark_version or compat.pyspark_version())


def _cache_dir() -> Path:
    base = os.environ.get("SPARK_RECOVER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "spark-recover")
    return Path(base)


def _existing(paths: list[str]) -> bool:
    return bool(paths) and all(os.path.isfile(re.sub(r"^file:(//)?", "", p)) for p in paths)


def resolve_delta_jars() -> list[str]:
    """Local paths of the Delta jars (and their dependencies) for this pyspark.

    Resolution runs Spark's resolver once, in a child process whose Ivy output
    is captured, under a file lock (parallel resolutions can corrupt the Ivy
    cache). The result is cached per pyspark/delta-spark version and exported
    in ``$SPARK_RECOVER_JARS`` for child processes.

    >>> jars = resolve_delta_jars()   # doctest: +SKIP
    >>> any("delta-spark" in j for j in jars)   # doctest: +SKIP
    True
    """
    check_buildable()  # a Connect-only client has no Spark to resolve for
    coordinate = delta_coordinate()
    return _resolved(JARS_ENV, f"jars-spark{compat.pyspark_version()}-{coordinate.replace(':', '-')}.json",
                     "--resolve", coordinate)


def _hadoop_version() -> str:
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    found = sorted(jars.glob("hadoop-client-api-*.jar"))
    if not found:
        raise SessionError("cannot tell which Hadoop pyspark bundles",
                           f"expected a hadoop-client-api-<version>.jar in {jars}")
    return found[-1].name[len("hadoop-client-api-"):-len(".jar")]


def s3a_coordinates() -> tuple[list[str], list[str]]:
    """Maven coordinates of Hadoop's S3A connector for this pyspark, and the ones to exclude.

    ``hadoop-aws`` at the version of the Hadoop pyspark bundles, with the AWS
    SDK modules S3A uses instead of the SDK's 686 MB ``bundle`` jar (for a
    Hadoop release not in our table: the bundle, which always works).

    >>> s3a_coordinates()   # doctest: +SKIP
    (['org.apache.hadoop:hadoop-aws:3.5.0', 'software.amazon.awssdk:s3:2.35.4', ...], ['software.amazon.awssdk:bundle'])
    """
    hadoop = _hadoop_version()
    sdk = _AWS_SDK_OF_HADOOP.get(hadoop)
    if sdk is None:
        return [f"org.apache.hadoop:hadoop-aws:{hadoop}"], []
    return ([f"org.apache.hadoop:hadoop-aws:{hadoop}"] + [f"software.amazon.awssdk:{m}:{sdk}" for m in _S3A_SDK_MODULES],
            ["software.amazon.awssdk:bundle"])


def resolve_s3a_jars() -> list[str]:
    """Local paths of the S3A connector's jars (see :func:`s3a_coordinates`), resolved once and cached.

    Like :func:`resolve_delta_jars`: Spark's resolver in a child, under the
    same lock; exported in ``$SPARK_RECOVER_S3A_JARS`` for child processes.

    >>> any("hadoop-aws" in j for j in resolve_s3a_jars())   # doctest: +SKIP
    True
    """
    packages, _ = s3a_coordinates()
    jars = _resolved(S3A_JARS_ENV, f"jars-{packages[0].split(':', 1)[1].replace(':', '-')}.json", "--resolve-s3a",
                     packages[0])
    return [j for j in jars if not os.path.basename(j).startswith(_PROVIDED_BY_SPARK)]


def _resolved(env: str, listing_name: str, flag: str, coordinate: str) -> list[str]:
    from_env = [p for p in os.environ.get(env, "").split(",") if p]
    if _existing(from_env):
        return from_env
    listing = _cache_dir() / listing_name
    listing.parent.mkdir(parents=True, exist_ok=True)
    with open(_cache_dir() / "jars.lock", "w") as lock:  # one Ivy resolution at a time, whatever it resolves
        fcntl.flock(lock, fcntl.LOCK_EX)
        jars = json.loads(listing.read_text()) if listing.is_file() else []
        if not _existing(jars):
            jars = _resolve_in_child(env, flag, coordinate)
            tmp = listing.with_suffix(".tmp")
            tmp.write_text(json.dumps(jars))
            tmp.replace(listing)
    os.environ[env] = ",".join(jars)
    return jars


def _resolve_in_child(env: str, flag: str, coordinate: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "spark_recover.session", flag],
                          capture_output=True, text=True, env={**os.environ, env: ""})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("JARS=")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SessionError(
            f"could not resolve the jars of {coordinate}",
            f"expected Spark's resolver to fetch {coordinate} from Maven Central "
            f"(cached in ~/.ivy2.5.2); it failed:\n{tail}\n"
            f"Check network access to Maven Central, or set {env} to a comma-separated "
            "list of the jars.", coordinate=coordinate)
    return [p for p in lines[-1][len("JARS="):].split(",") if p]


def _check_java() -> tuple[str, str]:
    """The ``java`` Spark will start, and what its ``-version`` says; refuse Java older than 17."""
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise SessionError(
            "Java not found",
            "Spark needs Java 17 or newer: found no `java` on PATH"
            + (f" and none at JAVA_HOME={java_home}" if java_home else " and JAVA_HOME is unset")
            + ". Install OpenJDK 17 (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) "
            "or set JAVA_HOME.")
    out = subprocess.run([java, "-version"], capture_output=True, text=True)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):
        major = int(match.group(2))
    if major < 17:
        raise SessionError("Java is too old",
                           f"Spark 4 needs Java 17 or newer, found {java} reporting "
                           f"version {major or 'unknown'}. Install OpenJDK 17 or set JAVA_HOME.",
                           java=java, major=major)
    return java, out.stderr + out.stdout


def local_confs(settings: Settings, jars: list[str], archive: Path | None = None) -> dict[str, str]:
    """Spark confs of a locally built session: Delta on, UI off, quiet, small shuffles.

    ``archive``: a class-data sharing archive for the driver JVM (see :func:`startup_archive`).
    """
    confs = {
        "spark.master": "local[*]",
        "spark.app.name": "spark-recover",
        "spark.jars": ",".join(jars),
        "spark.sql.extensions": _DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": _DELTA_CATALOG,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "true" if settings.verbose else "false",
        "spark.sql.shuffle.partitions": "8",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.session.timeZone": "UTC",
    }
    confs.update({f"spark.hadoop.{k}": v for k, v in hadoop_confs(settings.storage_options).items()})
    confs.update(settings.spark)
    java_options = confs.get("spark.driver.extraJavaOptions", "")
    extra = []  # added to any JVM options the settings give
    if not settings.verbose and "log4j2.configurationFile" not in java_options:
        extra.append(f"-Dlog4j2.configurationFile=file:{_QUIET_LOG4J}")  # quiet unless asked
    if archive is not None and "SharedArchiveFile" not in java_options and "-Xshare" not in java_options:
        extra += [f"-XX:SharedArchiveFile={archive}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
    if extra:
        confs["spark.driver.extraJavaOptions"] = " ".join([java_options, *extra]).strip()
    return confs


def _archive_path(java: str, version_text: str) -> Path:
    import pyspark

    # "cds2": archives checked by their digest (an older spark-recover's, checked by size, is another file).
    key = "|".join(["cds2", os.path.realpath(java), version_text, pyspark.__version__,
                    os.path.dirname(pyspark.__file__)])
    return _cache_dir() / f"jvm-classes-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsa"


def _file_digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _stat_key(path: Path) -> list[int]:
    # Any write to the file changes its ctime, which nothing can set back.
    st = path.stat()
    return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def _write_marker(archive: Path, sha256: str) -> None:
    """Record the archive's digest, and the file state it was checked in, beside it (atomically)."""
    marker = archive.with_suffix(".sha256")
    tmp = marker.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"sha256": sha256, "checked": _stat_key(archive)}))
    tmp.replace(marker)


def _intact(archive: Path) -> bool:
    """The archive is the one that was made and checked: a damaged one would crash the JVM, or worse.

    Its SHA-256, written after a successful dump, is compared with the file's;
    hashing 190 MB costs ~0.3 s, so it is done only when the file changed since
    the last check (size, inode, mtime or ctime differ). A cache that cannot be
    written keeps the archive in use, checked each time.
    """
    try:
        marker = json.loads(archive.with_suffix(".sha256").read_text())
        if _stat_key(archive) == marker["checked"]:
            return True
        if _file_digest(archive) != marker["sha256"]:
            return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    with contextlib.suppress(OSError):
        _write_marker(archive, marker["sha256"])
    return True


def startup_archive(java: str, version_text: str) -> Path | None:
    """The driver JVM's class-data sharing archive for this Java and pyspark, made once; ``None`` if off or failed.

    It is made in a child process that runs a small Delta workload and exits
    normally (the JVM writes the archive at exit), under a file lock, then
    checked by starting a JVM on it, and only then put in place, with its
    digest beside it (see :func:`_intact`). A failure, or a cache folder that
    cannot be written, costs nothing but the speed-up (with a warning).

    >>> startup_archive("/usr/bin/java", 'openjdk version "17.0.15"')   # doctest: +SKIP
    PosixPath('/root/.cache/spark-recover/jvm-classes-3f1c0e9a2b7d4e11.jsa')
    """
    if os.environ.get(ARCHIVE_ENV, "").lower() in ("off", "0", "false", "no"):
        return None
    archive = _archive_path(java, version_text)
    if _intact(archive):
        return archive
    try:
        archive.parent.mkdir(parents=True, exist_ok=True)
        with open(archive.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _intact(archive):
                _make_archive(java, archive)
    except OSError as exc:
        print(f"spark-recover: warning: no class-data archive for the Spark driver JVM (it starts ~4 s slower): "
              f"cannot write the cache folder {archive.parent}: {exc}. Set SPARK_RECOVER_CACHE to a writable "
              f"folder, or {ARCHIVE_ENV}=off", file=sys.stderr, flush=True)
        return None
    return archive if _intact(archive) else None


def _make_archive(java: str, archive: Path) -> None:
    tmp = archive.with_suffix(f".tmp-{os.getpid()}")
    print(f"spark-recover: making a class-data archive of the Spark driver JVM, once (about 30 s): "
          f"{archive}", file=sys.stderr, flush=True)
    try:
        made = subprocess.run([sys.executable, "-m", "spark_recover.session", "--archive", str(tmp)],
                              capture_output=True, timeout=300).returncode == 0
        made = made and tmp.is_file() and subprocess.run(
            [java, f"-XX:SharedArchiveFile={tmp}", "-version"], capture_output=True).returncode == 0
        if made:
            sha256 = _file_digest(tmp)
            archive.with_suffix(".sha256").unlink(missing_ok=True)  # no moment where a marker vouches for another file
            tmp.replace(archive)
            _write_marker(archive, sha256)
    except subprocess.SubprocessError:
        pass  # no archive: the session starts without one
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _jvm_output_to(path: Path | None) -> Iterator[None]:
    """Send the JVM's stdout/stderr to ``path`` (it inherits fds 1 and 2 at launch)."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def is_connect(spark) -> bool:
    """True for a Spark Connect session (``sc://...``): no JVM in this process, everything over gRPC."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def _check_delta_enabled(spark) -> None:
    extensions = spark.conf.get("spark.sql.extensions", None) or ""
    if _DELTA_EXTENSION in extensions:
        return
    confs = (f"--conf spark.sql.extensions={_DELTA_EXTENSION} "
             f"--conf spark.sql.catalog.spark_catalog={_DELTA_CATALOG}")
    if is_connect(spark):
        raise SessionError(
            f"the Spark Connect server at {spark.client.host} has no Delta Lake",
            f"expected its spark.sql.extensions to include {_DELTA_EXTENSION}, found {extensions or 'nothing'}. "
            "Start the server with Delta: spark-submit --class "
            "org.apache.spark.sql.connect.service.SparkConnectServer "
            f"--packages {delta_coordinate(spark.version)} {confs} spark-internal",
            host=spark.client.host)
    raise SessionError(
        "the active SparkSession has no Delta Lake",
        f"expected spark.sql.extensions to include {_DELTA_EXTENSION}, found "
        f"{extensions or 'nothing'}. With spark-submit pass --packages {delta_coordinate(spark.version)} {confs}")


def _needs_s3a(settings: Settings) -> bool:
    return is_s3(settings.root) or bool(hadoop_confs(settings.storage_options))


def _set_storage_confs(spark, settings: Settings) -> None:
    """Give a session we did not build the S3A settings of the root's storage options it lacks.

    Session confs reach every Hadoop configuration Spark SQL and Delta make, on
    the driver and in tasks; what the user set (``--conf spark.hadoop.fs.s3a.*``) wins.
    """
    for key, value in hadoop_confs(settings.storage_options).items():
        if spark.conf.get(f"spark.hadoop.{key}", None) is None and spark.conf.get(key, None) is None:
            spark.conf.set(key, value)


def attached() -> bool:
    """True when a session already exists for this process (spark-submit, a notebook, a test fixture)."""
    from pyspark.sql import SparkSession

    return (SparkSession.getActiveSession() is not None or bool(os.environ.get("PYSPARK_GATEWAY_PORT"))
            or (compat.has_local_spark() and _active_context()))


def describe(spark) -> str:
    """Where a session runs, for the ledger: its master, and the Spark Connect server if any.

    >>> describe(spark)   # doctest: +SKIP
    'Spark Connect at 127.0.0.1 (local[2])'
    """
    url = spark.conf.get("spark.master", None) or "local[*]"
    return f"Spark Connect at {spark.client.host} ({url})" if is_connect(spark) else url


def master(spark) -> str:
    """The session's master URL (``local[*]``, ``spark://...``, ``yarn``...).

    A Spark Connect server on another host counts as a cluster whatever its
    master: its local disk is not ours.
    """
    url = spark.conf.get("spark.master", None) or "local[*]"
    if is_connect(spark) and spark.client.host.strip("[]") not in ("localhost", "127.0.0.1", "::1"):
        return f"{url} of the Spark Connect server at {spark.client.host}"
    return url


#: The server's answers for a session it closed (released, or idle past its timeout): nothing of it runs.
_SESSION_OVER = ("INVALID_HANDLE.SESSION_CLOSED", "INVALID_HANDLE.SESSION_NOT_FOUND")
#: How long a takeover or rollback waits for a dead client's interrupted operations to end on the server.
DEAD_OPERATIONS_WAIT_SECONDS = 300.0


def connect_identity(spark, run_id: str) -> dict[str, Any] | None:
    """What a later client needs to reach run ``run_id``'s operations; ``None`` for a classic session.

    The server's address, the client session id and user id (a server keeps a
    session per user and session id) and the run's operation tag, for the
    ledger. A Connect server keeps a killed client's operations running, and a
    tag interrupt reaches only the operations of the session it is sent in, so
    a takeover or rollback sends it from a client attached to the dead session
    (:func:`stop_dead_operations`). Credentials in the connection string are
    not recorded.
    """
    if not is_connect(spark):
        return None
    return {"server": spark.client._builder.endpoint, "session_id": spark.session_id,
            "user_id": spark.client._user_id, "tag": f"spark-recover-run-{run_id}"}


def tag_operations(spark, identity: Mapping[str, Any] | None) -> None:
    """Tag every operation this thread sends through ``spark`` with the run's tag (tags are per thread)."""
    if identity is not None:
        spark.addTag(identity["tag"])


def untag_operations(spark, identity: Mapping[str, Any] | None) -> None:
    """Stop tagging this thread's operations for the run (a notebook's session outlives its runs)."""
    if identity is not None:
        spark.removeTag(identity["tag"])


def _channel_builder():
    """Spark Connect's channel builder class: ``DefaultChannelBuilder`` since 4.0, ``ChannelBuilder`` in 3.5."""
    from pyspark.sql.connect import client

    return getattr(client, "DefaultChannelBuilder", None) or client.ChannelBuilder


def _attach_url(identity: Mapping[str, Any], spark=None, remote: str | None = None) -> str:
    """A connection string to the dead run's server session; the channel settings (TLS, token) of the
    current Connect session or of ``remote`` (``--remote``, ``$SPARK_REMOTE``) when they lead to the same server."""
    builder_class = _channel_builder()
    builder = spark.client._builder if spark is not None and is_connect(spark) else None
    if builder is None and remote:
        builder = builder_class(remote)
    same = builder is not None and builder.endpoint == identity["server"]
    given = (getattr(builder, "_params", None) or getattr(builder, "params", {})) if same else {}
    params = {k: v for k, v in given.items() if k not in (builder_class.PARAM_SESSION_ID, builder_class.PARAM_USER_ID)}
    params[builder_class.PARAM_SESSION_ID] = identity["session_id"]
    if identity.get("user_id"):
        params[builder_class.PARAM_USER_ID] = identity["user_id"]
    return f"sc://{identity['server']}/;" + ";".join(f"{k}={v}" for k, v in params.items())


def stop_dead_operations(identity: Mapping[str, Any], *, sessions: Sequence[str] = (), spark=None,
                         remote: str | None = None,
                         wait_seconds: float = DEAD_OPERATIONS_WAIT_SECONDS) -> dict[str, Any]:
    """Interrupt a dead client's operations on its Connect server and wait until each has ended.

    Attaches a client to the dead session (``identity`` from :func:`connect_identity`)
    and interrupts by the run's tag; then to each of ``sessions`` (server
    sessions of the run's own, a MERGE's: ``RunRecord.merge_sessions``),
    interrupts everything there and releases it. It reattaches to each
    interrupted operation and reads its response stream to its end: the stream
    ends (canceled, or not found) only once the server's execution thread is
    done, so nothing it would commit can land afterwards. Returns ``operations``
    (ids interrupted), ``seconds`` waited and ``unreachable`` (why the server
    cannot be reached from here: nothing could be stopped). An operation still
    running after ``wait_seconds`` is refused (exit 3): continuing could let it
    commit later.
    """
    started = time.monotonic()
    stopped: list[str] = []
    unreachable = None
    for session_id in [identity["session_id"], *sessions]:
        own = session_id != identity["session_id"]
        operations, unreachable = _stop_session_operations(
            {**identity, "session_id": session_id}, None if own else identity["tag"], spark=spark, remote=remote,
            deadline=started + wait_seconds, wait_seconds=wait_seconds, release=own)
        stopped += operations
        if unreachable:
            break
    return {"operations": stopped, "seconds": round(time.monotonic() - started, 3), "unreachable": unreachable}


def _stop_session_operations(identity: Mapping[str, Any], tag: str | None, *, spark, remote: str | None,
                             deadline: float, wait_seconds: float, release: bool) -> tuple[list[str], str | None]:
    """Interrupt the operations of one server session (``tag``'s, else all) and wait each out:
    (operation ids, why the server cannot be reached or ``None``)."""
    import grpc
    from pyspark.sql.connect import proto
    from pyspark.sql.connect.client import SparkConnectClient

    # A server that is gone: say so now rather than retry for minutes (Spark 3.5 takes a retry dict).
    policies = hasattr(SparkConnectClient, "set_retry_policies")
    client = SparkConnectClient(connection=_attach_url(identity, spark, remote), use_reattachable_execute=False,
                                **({} if policies else {"retry_policy": {"max_retries": 0}}))
    if policies:
        client.set_retry_policies([])
    try:
        try:
            operations = (client.interrupt_tag(tag) if tag else client.interrupt_all()) or []
        except Exception as exc:  # gone (its operations with it) or out of reach: the caller warns
            if any(code in str(exc) for code in _SESSION_OVER):
                return [], None
            found = re.search(r'details = "([^"]*)"', str(exc))  # pyspark wraps gRPC's error in its text
            return [], (found.group(1) if found else str(exc).splitlines()[0])[:300]
        for operation in operations:
            request = proto.ReattachExecuteRequest(session_id=identity["session_id"], operation_id=operation,
                                                   client_type="spark-recover")
            if identity.get("user_id"):
                request.user_context.user_id = identity["user_id"]
            try:
                for _ in client._stub.ReattachExecute(request, metadata=client._builder.metadata(),
                                                      timeout=max(1.0, deadline - time.monotonic())):
                    pass
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise RefusedError(
                        f"operation {operation} (tag {identity['tag']}) of a dead run is still running on the "
                        f"Spark Connect server at {identity['server']}",
                        f"expected it to end within {wait_seconds:.0f}s of its interrupt; it could still commit. "
                        "Retry once it has ended", operation=operation) from exc
                # canceled, not found, abandoned: the execution is over
        if release:  # the run's own session (a MERGE's): nothing else will ever use it (3.5 cannot release)
            with contextlib.suppress(Exception):
                client.release_session()
        return operations, None
    finally:
        client.close()


def dead_operations_text(run_id: str, outcome: Mapping[str, Any]) -> str:
    """What a takeover or rollback says it did about a dead Connect run's operations."""
    if outcome["unreachable"]:
        return (f"warning: dead run {run_id}: its Spark Connect server cannot be reached ({outcome['unreachable']}); "
                "an operation of it still running there could commit later")
    n = len(outcome["operations"])
    if not n:
        return f"dead run {run_id}: no operation of it was still running on the Spark Connect server"
    return (f"interrupted {n} operation{'s' if n > 1 else ''} of dead run {run_id} on the Spark Connect server "
            f"and waited {outcome['seconds']:.1f}s for {'them' if n > 1 else 'it'} to end")


def explicit_settings(spark) -> dict[str, str]:
    """The settings set in a session (at start or at runtime), in one round trip, classic or Connect.

    For this process only (copying, picking out families): it holds credentials, so it is never recorded.
    """
    listed = getattr(spark.conf, "getAll", None)  # a property since Spark 4.0
    if isinstance(listed, Mapping):
        return dict(listed)
    # Spark 3.5: SET lists the names (it masks secrets' values), the values come one by one.
    return {row[0]: spark.conf.get(row[0], None) for row in spark.sql("SET").collect()}


def result_settings(spark) -> dict[str, str | None]:
    """The settings of ``spark`` that change results, by name and effective value.

    Each of :data:`RESULT_SETTINGS` (its default too: a session's time zone
    defaults to the JVM's), and every :data:`RESULT_PREFIXES` setting that is set.

    >>> result_settings(spark)["spark.sql.session.timeZone"]   # doctest: +SKIP
    'UTC'
    """
    out = {k: v for k, v in explicit_settings(spark).items() if k.startswith(RESULT_PREFIXES)}
    # A setting this Spark line does not define has no value to record (its version is recorded).
    out.update({k: v for k, v in _effective(spark, RESULT_SETTINGS).items() if v is not None})
    return dict(sorted(out.items()))


def _effective(spark, keys: tuple[str, ...]) -> dict[str, str | None]:
    """The effective values (defaults included) of ``keys``, ``None`` where undefined: one round trip under Connect."""
    if is_connect(spark):  # the public conf.get is one request per key; the protocol takes them all at once
        from pyspark.sql.connect import proto

        operation = proto.ConfigRequest.Operation(get_option=proto.ConfigRequest.GetOption(keys=list(keys)))
        return dict(spark.client.config(operation).pairs)
    try:
        from pyspark.errors import SparkNoSuchElementException as missing
    except ImportError:  # Spark 3.5: an unset key without a default raises a plain Py4J error
        missing = Exception

    out: dict[str, str | None] = {}
    for key in keys:  # in-process calls, microseconds each
        try:
            out[key] = spark.conf.get(key)
        except missing:
            out[key] = None
    return out


def engine_versions(spark) -> dict[str, str]:
    """The Spark and Delta versions the session's engine runs: the server's under Spark Connect.

    Asked once per session (the client's pip packages say nothing about a
    Connect server): Spark's ``spark.version``; Delta's from the Delta jar the
    engine was given (``spark.jars``/``spark.jars.packages``), else, when Delta
    came some other way (a jar in Spark's own folder), from ``io.delta.VERSION``
    read by ``reflect`` in the engine's JVM (one query, ~1 s in a new JVM).

    >>> engine_versions(spark)   # doctest: +SKIP
    {'Spark': '4.2.0', 'Delta': '4.4.0'}
    """
    known = _ENGINES.get(spark)
    if known is None:
        known = _ENGINES[spark] = {"Spark": spark.version, "Delta": _delta_version(spark)}
    return dict(known)


def _delta_version(spark) -> str:
    from pyspark.errors import PySparkException

    jars = ",".join(spark.conf.get(k, None) or "" for k in ("spark.jars", "spark.jars.packages"))
    found = re.search(r"delta[-_](?:spark|core)[\w.]*?[-_:](\d+\.\d+\.\d+[\w.-]*?)(?:\.jar)?(?:,|$)", jars)
    if found:
        return found.group(1)
    try:
        return spark.sql("SELECT reflect('io.delta.package', 'VERSION') AS v").first()["v"]
    except PySparkException as exc:  # reflect not allowed here: say so rather than guess
        return f"unknown ({type(exc).__name__})"


def fingerprint_parts(spark) -> dict[str, Any]:
    """What of a session goes into every stage's fingerprint: its result settings and engine versions."""
    return {"session": result_settings(spark), "engine": engine_versions(spark)}


def carried_settings(settings: Mapping[str, str]) -> dict[str, str]:
    """Of a session's set settings, those a private session of it must keep: results, storage, Delta.

    >>> carried_settings({"spark.sql.ansi.enabled": "false", "fs.s3a.endpoint": "http://s3",
    ...                   "spark.app.name": "x", "spark.databricks.delta.write.txnVersion": "3"})
    {'spark.sql.ansi.enabled': 'false', 'fs.s3a.endpoint': 'http://s3'}
    """
    return {k: v for k, v in settings.items()
            if (k in RESULT_SETTINGS or k.startswith(RESULT_PREFIXES + _CARRIED_PREFIXES)) and k not in _PER_WRITE}


def check_buildable() -> None:
    """Refuse (:class:`SessionError`, exit 2) to build a local session where none can be: only the thin
    Connect client is installed, or the Spark line has no Delta release (naming the supported lines)."""
    if not compat.has_local_spark():
        raise SessionError(
            "this environment has only the Spark Connect client (no Spark to start locally)",
            "expected a Spark Connect server to run on: pass --remote sc://HOST:PORT (Python: "
            "Settings(remote=...)) or set SPARK_REMOTE; or install pyspark for local mode "
            "(pip install \"spark-recover[local]\")")
    delta_coordinate()


def get_spark(settings: Settings):
    """Return the active SparkSession (checked for Delta), or build a local one.

    >>> from spark_recover.config import Settings
    >>> spark = get_spark(Settings())   # doctest: +SKIP
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is None and settings.remote:
        try:
            active = SparkSession.builder.remote(settings.remote).getOrCreate()
        except Exception as exc:
            raise SessionError(f"could not connect to the Spark Connect server at {settings.remote}",
                               f"expected a server listening there: {str(exc).splitlines()[0]}",
                               remote=settings.remote) from exc
    if active is None and compat.has_local_spark() and (_active_context() or os.environ.get("PYSPARK_GATEWAY_PORT")):
        # A context exists (another thread made it) or spark-submit launched us:
        # its configuration is the user's, we only attach to it.
        active = SparkSession.builder.getOrCreate()
    if active is not None:
        _check_delta_enabled(active)
        _set_storage_confs(active, settings)
        return active
    check_buildable()
    java, version_text = _check_java()
    jars = resolve_delta_jars() + (resolve_s3a_jars() if _needs_s3a(settings) else [])
    builder = SparkSession.builder
    for key, value in local_confs(settings, jars, startup_archive(java, version_text)).items():
        builder = builder.config(key, value)
    log = None if settings.verbose else Path(tempfile.gettempdir()) / "spark-recover" / f"driver-{os.getpid()}.log"
    try:
        with _jvm_output_to(log):
            return builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: say where its output went
        raise SessionError("could not start a local SparkSession",
                           f"{exc}" + (f"\nThe JVM's output is in {log}" if log else "")) from exc


def _active_context() -> bool:
    from pyspark import SparkContext  # not in the thin Connect client

    return SparkContext._active_spark_context is not None


def _resolve_main(s3a: bool) -> None:
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master("local[1]").appName("spark-recover-resolve")
               .config("spark.ui.enabled", "false"))
    if s3a:
        packages, excludes = s3a_coordinates()
        builder = builder.config("spark.jars.packages", ",".join(packages))
        if excludes:
            builder = builder.config("spark.jars.excludes", ",".join(excludes))
    else:
        builder = builder.config("spark.jars.packages", delta_coordinate())
    spark = builder.getOrCreate()
    jars = spark.sparkContext.getConf().get("spark.jars", "")
    spark.stop()
    print("JARS=" + jars, flush=True)


def _archive_main(path: str) -> None:
    """Run the classes a Delta job loads through a driver JVM that writes them to ``path`` at exit."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    confs = local_confs(Settings(), resolve_delta_jars())
    confs["spark.driver.extraJavaOptions"] += f" -XX:ArchiveClassesAtExit={path}"
    builder = SparkSession.builder
    for key, value in confs.items():
        builder = builder.config(key, value)
    with _jvm_output_to(Path(os.devnull)):
        spark = builder.getOrCreate()
    work = tempfile.mkdtemp(prefix="spark-recover-archive-")
    df = spark.range(1000).select("id", (F.col("id") % 7).alias("k"), F.col("id").cast("string").alias("s"))
    df.write.format("delta").save(f"{work}/t")
    df.write.parquet(f"{work}/p")
    spark.sql(f"MERGE INTO delta.`{work}/t` t USING (SELECT * FROM parquet.`{work}/p`) u ON t.id = u.id "
              "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")
    spark.read.format("delta").load(f"{work}/t").groupBy("k").agg(F.sum("id")).join(df, "k").count()
    spark.sql(f"RESTORE TABLE delta.`{work}/t` TO VERSION AS OF 0")
    proc = SparkContext._gateway.proc  # the JVM: it writes the archive as it exits
    spark.stop()
    proc.stdin.close()
    proc.wait(timeout=120)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__" and sys.argv[1:2] in (["--resolve"], ["--resolve-s3a"]):
    _resolve_main(sys.argv[1] == "--resolve-s3a")
elif __name__ == "__main__" and sys.argv[1:2] == ["--archive"]:
    _archive_main(sys.argv[2])
