"""Sources: pinning a job's input tables at run start, and reading them pinned.

A Delta source is pinned to its table version (DESIGN.md semantics 4): every
read of the run, and of any replay of it, uses ``versionAsOf``. Other formats
cannot be pinned; they are fingerprinted by their file listing (path, size,
modification time) so that a change is seen and reported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .errors import UsageError
from .fingerprint import digest
from .job import Source
from .storage import Layout, Target, spark_uri

if TYPE_CHECKING:  # pragma: no cover
    from .history import RunRecord

__all__ = ["pin", "kept_pin", "listing_pin", "read"]


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
    return listing_pin(source, location, layout)


def kept_pin(source: Source, params: Mapping[str, Any], chain: Sequence["RunRecord"],
             refresh: bool) -> dict[str, Any] | None:
    """The pin a replay keeps from the runs it builds on (``chain``, nearest first), or ``None``: pin afresh.

    A replay reads a Delta source at the version its origin pinned (same input;
    a replay killed before it pinned passes its origin's pin on); files-based
    sources are re-listed so a change is seen, and a source whose location
    changed with a parameter override, or ``refresh`` (``--refresh-sources``), is pinned afresh.

    >>> from spark_recover.job import Job
    >>> src = Job("j").source("events", path="/data/events")
    >>> kept_pin(src, {}, [], refresh=False) is None
    True
    """
    old = next((r.sources[source.name] for r in chain if source.name in r.sources), None)
    keep = (old is not None and old.get("kind") == "delta" and not refresh
            and old.get("location") == source.location(params))
    return old if keep else None


def listing_pin(source: Source, location: str, layout: Layout) -> dict[str, Any]:
    """The pin of a files-based source: its listing's digest (path, size, modification time of each file)."""
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
