"""Sources: pinning a job's input tables at run start, and reading them pinned.

A Delta source is pinned to its table version (DESIGN.md semantics 4): every
read of the run, and of any replay of it, uses ``versionAsOf``. Other formats
cannot be pinned; they are fingerprinted by their file listing (path, size,
modification time) so that a change is seen and reported.
"""

from __future__ import annotations

from typing import Any, Mapping

from .errors import UsageError
from .fingerprint import digest
from .job import Source
from .storage import Layout, Target, spark_uri

__all__ = ["pin", "read"]


def pin(spark, source: Source, params: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    """The pin of a source now: its Delta version, or its file listing's digest."""
    location = source.location(params)
    if source.format == "delta":
        try:
            ident = Target.parse(location, source.table is not None).ident
            row = spark.sql(f"DESCRIBE HISTORY {ident} LIMIT 1").first()
        except Exception as exc:
            raise UsageError(f"source {source.name!r} is not a readable Delta table",
                             f"expected a Delta table at {location!r}: {str(exc).splitlines()[0]}",
                             source=source.name, location=location) from None
        return {"kind": "delta", "location": location, "version": int(row["version"])}
    return {"kind": "files", "location": location, **_listing(source, location, layout)}


def _listing(source: Source, location: str, layout: Layout) -> dict[str, Any]:
    import pyarrow.fs as pafs

    fs, base = layout.filesystem(location)
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise UsageError(f"source {source.name!r} not found",
                         f"expected {source.format} data at {location!r}, found nothing there",
                         source=source.name, location=location)
    infos = [info] if info.type == pafs.FileType.File else \
        fs.get_file_info(pafs.FileSelector(base, recursive=True))
    files = sorted((i.path, i.size, i.mtime_ns) for i in infos if i.type == pafs.FileType.File)
    return {"listing": digest(files), "files": len(files), "bytes": sum(f[1] or 0 for f in files)}


def read(spark, source: Source, pin_: Mapping[str, Any]):
    """Read a source as pinned (a Delta source at its pinned version)."""
    if pin_["kind"] == "delta":
        if source.table is not None:
            return spark.sql(f"SELECT * FROM {source.table} VERSION AS OF {int(pin_['version'])}")
        return (spark.read.format("delta").options(**source.options)
                .option("versionAsOf", int(pin_["version"])).load(spark_uri(pin_["location"])))
    return spark.read.format(source.format).options(**source.options).load(spark_uri(pin_["location"]))
