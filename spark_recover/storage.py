"""Every storage location spark-recover uses is derived here, from one root.

The root is a local folder (tests, notebooks) or any Hadoop URI
(``hdfs://``, ``s3a://``, ``abfss://``, ``gs://``). Nothing else in the package
joins paths: it asks a :class:`Layout`. Spark (and so Delta's JVM writer) gets
Hadoop URIs; delta-rs and pyarrow, which read the ledger and verify
checkpoints without a JVM, get the same location in their own spelling.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping

__all__ = ["Layout", "Target", "spark_uri", "native_uri", "is_local", "filesystem", "read_delta", "delete_tree"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# Hadoop scheme -> the scheme delta-rs / pyarrow use for the same store.
_NATIVE_SCHEMES = {"s3a": "s3", "s3n": "s3", "gs": "gs", "abfss": "abfss", "abfs": "abfs",
                   "hdfs": "hdfs", "viewfs": "viewfs"}


def is_local(location: str) -> bool:
    """True for a plain path or a ``file:`` URI."""
    return not _SCHEME.match(location) or location.startswith("file:")


def _local_path(location: str) -> str:
    if location.startswith("file:"):
        location = re.sub(r"^file:(//)?", "", location)
        if not location.startswith("/"):
            location = "/" + location
    return os.path.abspath(os.path.expanduser(location))


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


@dataclass(frozen=True)
class Layout:
    """Derives checkpoint and ledger locations from the root.

    >>> lay = Layout.at("/tmp/recover")
    >>> lay.checkpoint("daily_sales", "3f2a", "cleaned")
    '/tmp/recover/checkpoints/daily_sales/3f2a/cleaned'
    >>> lay.ledger
    '/tmp/recover/ledger/events'
    """

    root: str
    storage_options: Mapping[str, str] | None = None

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
    def checkpoints(self) -> str:
        """The folder holding every checkpoint table: ``<checkpoints>/<job>/<params key>/<stage>``."""
        return self._join("checkpoints")

    def checkpoint(self, job: str, params_key: str, stage: str) -> str:
        # One table per (job, parameters, stage): runs with other parameters
        # never share, and so never conflict on or read, each other's table.
        return "/".join([self.checkpoints, job, params_key, stage])


@dataclass(frozen=True)
class Target:
    """A Delta table a job writes or a recovery point covers: a path or a catalog name.

    >>> Target.parse("warehouse/daily").catalog, Target.parse("sales.daily").catalog
    (False, True)
    """

    location: str
    catalog: bool = False

    @classmethod
    def parse(cls, text: str) -> "Target":
        """A catalog name has no slash and no scheme (``db.table``); anything else is a path."""
        catalog = "/" not in text and not _SCHEME.match(text)
        return cls(text if catalog else (_local_path(text) if is_local(text) else text), catalog)

    @property
    def ident(self) -> str:
        """How Spark SQL names it."""
        return self.location if self.catalog else f"delta.`{spark_uri(self.location)}`"


def filesystem(location: str):
    """A pyarrow file system and path for ``location`` (JVM-free listing and stat)."""
    import pyarrow.fs as pafs

    uri = native_uri(location)
    return pafs.FileSystem.from_uri(uri if "://" in uri else "file://" + uri)


def read_delta(location: str, version: int | None = None, filter=None,
               storage_options: Mapping[str, str] | None = None):
    """Read a Delta table (at ``version``) into a pyarrow Table, without a JVM.

    The data files are read through pyarrow's own file system: scanning through
    delta-rs's Python file-system handler with Arrow's thread pool can abort
    the interpreter at exit ("terminate called without an active exception").

    >>> read_delta("/tmp/recover/ledger/events").num_rows   # doctest: +SKIP
    """
    import deltalake
    import pyarrow.fs as pafs

    table = deltalake.DeltaTable(native_uri(location), version=version,
                                 storage_options=dict(storage_options or {}) or None)
    fs, base = filesystem(location)
    return table.to_pyarrow_dataset(filesystem=pafs.SubTreeFileSystem(base, fs)).to_table(filter=filter)


def delete_tree(spark, location: str) -> None:
    """Delete a folder through Hadoop's FileSystem, so any URI the cluster reads works."""
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(spark_uri(location))
    path.getFileSystem(spark._jsc.hadoopConfiguration()).delete(path, True)
