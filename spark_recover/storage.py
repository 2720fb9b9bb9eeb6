"""Every storage location spark-recover uses is derived here, from one root.

The root is a local folder (tests, notebooks) or any Hadoop URI
(``hdfs://``, ``s3a://``, ``abfss://``, ``gs://``). Nothing else in the package
joins paths: it asks a :class:`Layout`. Spark (and so Delta's JVM writer) gets
Hadoop URIs; delta-rs and pyarrow, which read the ledger and verify
checkpoints without a JVM, get the same location in their own spelling, and
always the root's storage options: every JVM-free access goes through a
:class:`Layout` or a :class:`Target`, which carry them.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Mapping

from .errors import UsageError

__all__ = ["Layout", "Target", "Storage", "spark_uri", "native_uri", "canonical", "interval_days", "is_local", "is_s3",
           "anchored", "filesystem", "open_delta", "read_delta", "delete_tree", "hadoop_confs", "with_s3_defaults",
           "require_conditional_put"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# Hadoop scheme -> the scheme delta-rs / pyarrow use for the same store.
_NATIVE_SCHEMES = {"s3a": "s3", "s3n": "s3", "gs": "gs", "abfss": "abfss", "abfs": "abfs",
                   "hdfs": "hdfs", "viewfs": "viewfs"}


def is_local(location: str) -> bool:
    """True for a plain path or a ``file:`` URI."""
    return not _SCHEME.match(location) or location.startswith("file:")


def is_s3(location: str) -> bool:
    """True for an S3 location in Hadoop's or delta-rs's spelling (``s3a://``, ``s3://``)."""
    return location.lower().startswith(("s3a://", "s3://", "s3n://"))


def _local_path(location: str) -> str:
    if location.startswith("file:"):
        location = re.sub(r"^file:(//)?", "", location)
        if not location.startswith("/"):
            location = "/" + location
    return os.path.abspath(os.path.expanduser(location))


def anchored(location: str, *, base: str) -> str:
    """``location`` with a relative local path made absolute under ``base``; URIs and absolute paths as given.

    Resolving against a chosen folder, never the working directory, is what lets
    a retry started in another folder find the same tables.

    >>> anchored("out/daily", base="/project"), anchored("/w/daily", base="/project")
    ('/project/out/daily', '/w/daily')
    >>> anchored("s3a://bucket/daily", base="/project")
    's3a://bucket/daily'
    """
    if not is_local(location) or location.startswith("file:"):
        return location
    return os.path.normpath(os.path.join(base, os.path.expanduser(location)))


def spark_uri(location: str) -> str:
    """The location as Spark and Delta should see it.

    A local path becomes an explicit ``file:`` URI, so a cluster whose default
    file system is HDFS still writes where the user asked.

    >>> spark_uri("/tmp/x")
    'file:/tmp/x'
    >>> spark_uri("s3a://bucket/root")
    's3a://bucket/root'
    """
    return "file:" + _local_path(location) if is_local(location) else location


def native_uri(location: str) -> str:
    """The location as delta-rs and pyarrow should see it.

    >>> native_uri("file:/tmp/x")
    '/tmp/x'
    >>> native_uri("s3a://bucket/root")
    's3://bucket/root'
    """
    if is_local(location):
        return _local_path(location)
    scheme, rest = location.split(":", 1)
    return _NATIVE_SCHEMES.get(scheme.lower(), scheme) + ":" + rest


def canonical(location: str) -> str:
    """One spelling per location, for comparing locations recorded at different times.

    >>> canonical("file:///tmp/x/") == canonical("/tmp/x") == canonical("file:/tmp/x")
    True
    >>> canonical("s3a://bucket/a/") == canonical("s3://bucket/a")
    True
    """
    return urllib.parse.unquote(native_uri(location)).rstrip("/") or "/"


_TABLE_ENTRY = re.compile(r"^(_delta_log|_change_data|_SUCCESS|.*\.parquet|\..*\.crc|deletion_vector_.*\.bin"
                          r"|[^=/]+=.*)$")

_S3_OPTIONS = {  # delta-rs storage option -> pyarrow S3FileSystem argument
    "aws_access_key_id": "access_key", "aws_secret_access_key": "secret_key",
    "aws_session_token": "session_token", "aws_region": "region", "aws_endpoint_url": "endpoint_override",
    "aws_endpoint": "endpoint_override"}


_S3A_CONFS = {  # delta-rs storage option -> the Hadoop S3A setting Spark needs for the same store
    "aws_access_key_id": "fs.s3a.access.key", "aws_secret_access_key": "fs.s3a.secret.key",
    "aws_session_token": "fs.s3a.session.token", "aws_region": "fs.s3a.endpoint.region",
    "aws_endpoint_url": "fs.s3a.endpoint", "aws_endpoint": "fs.s3a.endpoint"}
# What the environment may give, as delta-rs and the AWS SDKs name it.
_S3_ENV = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
           "AWS_ALLOW_HTTP")


def with_s3_defaults(storage_options: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The root's storage options, completed for S3 from the environment and made safe for commits.

    Keys the options do not set are taken from ``AWS_*`` variables of ``environ``;
    an ``http://`` endpoint allows plain HTTP; and commits are made with S3
    conditional writes (``If-None-Match``, delta-rs ``aws_conditional_put=etag``),
    which is what makes concurrent commits to the ledger safe on S3.

    >>> with_s3_defaults({"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"}, {"AWS_REGION": "eu-west-1"})["AWS_ALLOW_HTTP"]
    'true'
    """
    opts = dict(storage_options)
    given = {k.lower() for k in opts}
    opts.update({k: environ[k] for k in _S3_ENV if environ.get(k) and k.lower() not in given})
    lower = {k.lower(): v for k, v in opts.items()}
    endpoint = lower.get("aws_endpoint_url") or lower.get("aws_endpoint") or ""
    if endpoint.startswith("http://") and "aws_allow_http" not in lower:
        opts["AWS_ALLOW_HTTP"] = "true"
    if "aws_conditional_put" not in lower and "conditional_put" not in lower:
        opts["aws_conditional_put"] = "etag"
    return opts


def hadoop_confs(storage_options: Mapping[str, str] | None) -> dict[str, str]:
    """The Hadoop S3A settings that reach the same store as delta-rs's ``storage_options``.

    An explicit endpoint gets path-style access (what S3-compatible servers
    expect, and delta-rs's default) unless virtual-hosted style is asked for.

    >>> hadoop_confs({"AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "AWS_REGION": "us-east-1"})
    {'fs.s3a.endpoint.region': 'us-east-1', 'fs.s3a.endpoint': 'http://127.0.0.1:5000', 'fs.s3a.path.style.access': 'true'}
    """
    opts = {k.lower(): v for k, v in (storage_options or {}).items()}
    confs = {conf: opts[key] for key, conf in _S3A_CONFS.items() if key in opts}
    if "fs.s3a.session.token" in confs:
        confs["fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
    if "fs.s3a.endpoint" in confs and opts.get("aws_virtual_hosted_style_request", "false").lower() != "true":
        confs["fs.s3a.path.style.access"] = "true"
    return confs


def filesystem(location: str, storage_options: Mapping[str, str] | None = None):
    """A pyarrow file system and path for ``location`` (JVM-free listing and stat).

    An S3 location gets the endpoint, region and credentials of ``storage_options``
    (delta-rs spelling: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).
    """
    import pyarrow.fs as pafs

    uri = native_uri(location)
    if "://" not in uri:
        return pafs.LocalFileSystem(), uri
    opts = {k.lower(): v for k, v in (storage_options or {}).items()}
    if uri.startswith("s3://") and opts:
        kwargs = {arg: opts[key] for key, arg in _S3_OPTIONS.items() if key in opts}
        endpoint = kwargs.get("endpoint_override", "")
        if endpoint.startswith("http://") or opts.get("aws_allow_http") == "true":
            kwargs["scheme"] = "http"
        kwargs["endpoint_override"] = re.sub(r"^https?://", "", endpoint) or None
        return pafs.S3FileSystem(**kwargs), uri[len("s3://"):]
    return pafs.FileSystem.from_uri(uri)


def open_delta(location: str, version: int | None = None, storage_options: Mapping[str, str] | None = None):
    """A delta-rs ``DeltaTable`` (at ``version``) with the given storage options."""
    import deltalake

    return deltalake.DeltaTable(native_uri(location), version=version,
                                storage_options=dict(storage_options or {}) or None)


def read_delta(location: str, version: int | None = None, filter=None,
               storage_options: Mapping[str, str] | None = None):
    """Read a Delta table (at ``version``) into a pyarrow Table, without a JVM.

    The data files are read through pyarrow's own file system: scanning through
    delta-rs's Python file-system handler with Arrow's thread pool can abort
    the interpreter at exit ("terminate called without an active exception").

    >>> read_delta("/tmp/recover/ledger/events").num_rows   # doctest: +SKIP
    """
    return scan_delta(open_delta(location, version, storage_options), location, filter, storage_options=storage_options)


def scan_delta(table, location: str, filter=None, columns: list[str] | None = None,
               storage_options: Mapping[str, str] | None = None):
    """Scan an open delta-rs ``table`` into a pyarrow Table, skipping files and row groups by ``filter``."""
    import pyarrow.fs as pafs

    fs, base = filesystem(location, storage_options)
    dataset = table.to_pyarrow_dataset(filesystem=pafs.SubTreeFileSystem(base, fs))
    return dataset.to_table(filter=filter, columns=columns)


def delete_tree(location: str, storage_options: Mapping[str, str] | None = None) -> None:
    """Delete a folder and everything under it (no JVM: works from any session kind)."""
    fs, base = filesystem(location, storage_options)
    fs.delete_dir(base)


@dataclass(frozen=True)
class Storage:
    """JVM-free access to storage, always with the root's storage options."""

    storage_options: Mapping[str, str] | None

    def delta(self, location: str, version: int | None = None):
        """A delta-rs table at ``location`` (and ``version``)."""
        return open_delta(location, version, self.storage_options)

    def is_delta(self, location: str) -> bool:
        import deltalake

        return deltalake.DeltaTable.is_deltatable(native_uri(location), dict(self.storage_options or {}) or None)

    def filesystem(self, location: str):
        return filesystem(location, self.storage_options)

    def read_delta(self, location: str, version: int | None = None, filter=None):
        return read_delta(location, version, filter, self.storage_options)

    def scan_delta(self, table, location: str, filter=None, columns: list[str] | None = None):
        return scan_delta(table, location, filter, columns, self.storage_options)

    def delete_tree(self, location: str) -> None:
        delete_tree(location, self.storage_options)

    def copy_tree(self, source: str, destination: str) -> None:
        """Copy a folder (a Delta table, whole) to ``destination``."""
        import pyarrow.fs as pafs

        fs, src = self.filesystem(source)
        _, dst = self.filesystem(destination)
        fs.create_dir(dst, recursive=True)
        pafs.copy_files(src, dst, source_filesystem=fs, destination_filesystem=fs)

    def strangers(self, location: str) -> list[str]:
        """What a folder holds that is not a Delta table's, before a run writes a table there.

        A folder with a ``_delta_log`` is a table: names no table writes at its top
        (a ``README.txt``) are strangers. A folder without one holds no table, so
        every file under it is (a plain parquet dataset, its ``_SUCCESS``, its
        ``year=2024/`` folders), as relative paths. An empty or missing folder
        holds none.
        """
        entries = self.entries(location) or []
        if "_delta_log" in entries and self.is_delta(location):
            return sorted(e for e in entries if not _TABLE_ENTRY.match(e))
        return self.files(location)

    def entries(self, location: str) -> list[str] | None:
        """Names directly under a folder, or ``None`` when nothing is there."""
        import pyarrow.fs as pafs

        fs, base = self.filesystem(location)
        info = fs.get_file_info(base)
        if info.type == pafs.FileType.NotFound:
            return None
        if info.type == pafs.FileType.File:
            return [base.rsplit("/", 1)[-1]]
        return [i.base_name for i in fs.get_file_info(pafs.FileSelector(base))]

    def files(self, location: str) -> list[str]:
        """Every file under a folder (not its folders), as sorted paths relative to it."""
        import pyarrow.fs as pafs

        fs, base = self.filesystem(location)
        kind = fs.get_file_info(base).type
        if kind != pafs.FileType.Directory:
            return [base.rsplit("/", 1)[-1]] if kind == pafs.FileType.File else []
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
        return sorted(i.path[len(base.rstrip("/")) + 1:] for i in infos if i.type == pafs.FileType.File)


@dataclass(frozen=True)
class Layout(Storage):
    """Derives checkpoint and ledger locations from the root, and reads them with its options.

    >>> lay = Layout.at("/tmp/recover")
    >>> lay.checkpoint("daily_sales", "3f2a", "cleaned", "20261125T101500Z-ab12cd")
    '/tmp/recover/checkpoints/daily_sales/3f2a/20261125T101500Z-ab12cd/cleaned'
    >>> lay.ledger
    '/tmp/recover/ledger/events'
    """

    root: str = ""

    @classmethod
    def at(cls, root: str, storage_options: Mapping[str, str] | None = None) -> "Layout":
        root = _local_path(root) if is_local(root) else root.rstrip("/")
        return cls(root=root, storage_options=dict(storage_options or {}) or None)

    def _join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    @property
    def ledger(self) -> str:
        return self._join("ledger", "events")

    @property
    def probe_marker(self) -> str:
        """The object whose presence says this root's store honours conditional puts (see
        :func:`require_conditional_put`)."""
        return self._join("probes", "conditional-put-verified")

    @property
    def checkpoints(self) -> str:
        """The folder of every checkpoint table: ``<checkpoints>/<job>/<params key>/<run id>/<stage>``."""
        return self._join("checkpoints")

    def checkpoint(self, job: str, params_key: str, stage: str, run_id: str) -> str:
        # One table per run and stage, created in one commit: no run ever writes
        # over another's checkpoint, reads a log longer than one commit, or
        # commits on a table a crash or a hand damaged.
        # (A run id starts with a digit, a stage name never does: the older
        # layout's ``<params key>/<stage>`` tables cannot collide with these.)
        return "/".join([self.checkpoints, job, params_key, run_id, stage])

    def target(self, text: str, catalog: bool | None = None) -> "Target":
        """A sink or recovery-point table, carrying this root's storage options."""
        return Target.parse(text, catalog, self.storage_options)


@dataclass(frozen=True)
class Target(Storage):
    """A Delta table a job writes or a recovery point covers: a path or a catalog name.

    >>> Target.parse("warehouse/daily").catalog, Target.parse("sales.daily").catalog
    (False, True)
    """

    location: str = ""
    catalog: bool = False

    @classmethod
    def parse(cls, text: str, catalog: bool | None = None,
              storage_options: Mapping[str, str] | None = None) -> "Target":
        """A catalog name has no slash and no scheme (``db.table``); anything else is a path."""
        if catalog is None:
            catalog = "/" not in text and not _SCHEME.match(text)
        location = text if catalog else (_local_path(text) if is_local(text) else text)
        return cls(storage_options=dict(storage_options or {}) or None, location=location, catalog=catalog)

    @property
    def ident(self) -> str:
        """How Spark SQL names it."""
        return self.location if self.catalog else f"delta.`{spark_uri(self.location)}`"


_PROBE_WRITERS = 4  # writers racing to create one commit file, per round
_PROBE_ROUNDS = 30  # rounds until one race reached the store (a loser's create refused by the store itself)
_verified_roots: set[str] = set()  # in this process: one marker read per root, not one per lease


def require_conditional_put(layout: "Layout") -> None:
    """Refuse (:class:`UsageError`, exit 2) an S3 root whose store lets two writers create one commit file.

    Delta commits on S3 (the ledger's, and so the lease's) are safe only if the
    store honours conditional puts (``If-None-Match: *``). The probe asks the
    store itself, through delta-rs (the client that commits the ledger): a few
    writers race to create one scratch table, each a single put-if-absent of
    its first commit file; exactly one may win. A round whose losers all saw
    the winner's file before putting proves nothing and is run again. The
    verdict is kept in the root (:attr:`Layout.probe_marker`), so the probe
    runs once per root; a refusal is not kept, so a root whose store was fixed
    is probed again. Other stores commit by atomic rename or conditional create
    and need no probe.
    """
    if not is_s3(layout.root) or layout.root in _verified_roots:
        return
    fs, marker = layout.filesystem(layout.probe_marker)
    import pyarrow.fs as pafs

    if fs.get_file_info(marker).type != pafs.FileType.NotFound:
        _verified_roots.add(layout.root)
        return
    for _ in range(_PROBE_ROUNDS):
        scratch = f"{layout.root}/probes/conditional-put-{uuid.uuid4().hex}"
        try:
            winners, refused_by_store = _race_to_create(native_uri(scratch), layout.storage_options)
        finally:
            with contextlib.suppress(OSError):  # nothing to delete when no writer got as far as creating
                layout.delete_tree(scratch)
        if winners > 1:
            opts = {k.lower(): v for k, v in (layout.storage_options or {}).items()}
            store = opts.get("aws_endpoint_url") or opts.get("aws_endpoint") or "AWS S3"
            raise UsageError(
                f"the store of root {layout.root} ({store}) does not honour conditional writes",
                f"expected S3 conditional puts (If-None-Match: *): of {_PROBE_WRITERS} writers creating one "
                f"commit file, exactly one may succeed; found {winners} succeeded. On such a store concurrent "
                "commits to the ledger and to sink tables overwrite each other silently. Use a store that "
                "honours If-None-Match (AWS S3, recent MinIO, moto >= 5.0.15), or a delta-rs locking "
                "provider (AWS_S3_LOCKING_PROVIDER=dynamodb) in the root's storage options",
                root=layout.root, store=store, winners=winners)
        if refused_by_store:
            with fs.open_output_stream(marker) as out:
                out.write(b'{"conditional_put": true}\n')
            _verified_roots.add(layout.root)
            return
    # No round raced at the store (each loser saw the winner first): nothing disproved, nothing kept.


def _race_to_create(uri: str, storage_options: Mapping[str, str] | None) -> tuple[int, bool]:
    """Race :data:`_PROBE_WRITERS` creates of one table; return (winners, whether the store refused a put)."""
    import deltalake
    import pyarrow as pa

    start, outcomes = threading.Barrier(_PROBE_WRITERS), []
    props = deltalake.CommitProperties(max_commit_retries=0)  # a refused put must not retry as version 1

    def create() -> None:
        start.wait()
        try:
            deltalake.DeltaTable.create(uri, pa.schema([("probe", pa.int64())]), mode="error",
                                        storage_options=dict(storage_options or {}) or None, commit_properties=props)
            outcomes.append("created")
        except deltalake.exceptions.CommitFailedError:
            outcomes.append("refused")  # its put-if-absent of the commit file was refused by the store
        except Exception:
            outcomes.append("saw")  # it saw the winner's table before putting (or failed otherwise)

    writers = [threading.Thread(target=create, name="conditional-put-probe") for _ in range(_PROBE_WRITERS)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    return outcomes.count("created"), "refused" in outcomes


_UNIT_DAYS = {"microsecond": 1 / 86_400_000_000, "millisecond": 1 / 86_400_000, "second": 1 / 86_400,
              "minute": 1 / 1440, "hour": 1 / 24, "day": 1.0, "week": 7.0}


def interval_days(text: str) -> float:
    """A Delta retention interval in days (``interval 2 weeks 3 days``, ``30 minutes``...).

    >>> interval_days("interval 1 week"), interval_days("interval 36 hours"), round(interval_days("30 minutes") * 1440, 6)
    (7.0, 1.5, 30.0)
    """
    words = text.lower().replace("interval", " ").split()
    if not words or len(words) % 2:
        raise ValueError(f"not a Delta interval: {text!r}")
    total = 0.0
    for number, unit in zip(words[::2], words[1::2]):
        base = unit.rstrip("s") if unit.rstrip("s") in _UNIT_DAYS else unit
        if base not in _UNIT_DAYS:
            raise ValueError(f"unknown unit {unit!r} in Delta interval {text!r}")
        total += float(number) * _UNIT_DAYS[base]
    return total
