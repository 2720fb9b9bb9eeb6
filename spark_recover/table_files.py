"""The files of a Delta table's folder: those its log ever referenced, and the others.

A rollback removes a table its run created. It may remove only what that
table's own log ever referenced, in any version (files added, files removed,
change data, deletion vectors), with the ``_delta_log`` itself, and what the
table's writers left uncommitted: Spark and delta-rs name a data file
``part-NNNNN-<uuid>-cNNN.<codec>.parquet`` and a deletion vector
``deletion_vector_<uuid>.bin``, and leave such files unreferenced (Delta does
not log an empty task's file; a writer killed before its commit leaves its
files). A run never creates a table in a folder that held files (it refuses
one), so such a file is the table's writers'. Anything else in the folder is
someone's data (a ``_SUCCESS``, a ``README.txt``, another name), and the
rollback is refused. The log is read
from its commit files and checkpoints directly (one pass over ``_delta_log``),
not version by version through delta-rs.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid
from typing import Any, Iterable, Mapping

from .storage import Storage, native_uri

__all__ = ["action_paths", "dv_file", "logged_files", "unlogged_files", "remove_table"]

_LOG = "_delta_log"
_COMMIT = re.compile(r"^\d{20}(\.\d{20}\.compacted)?\.json$")
_CHECKPOINT = re.compile(r"^(\d{20}\.checkpoint.*\.parquet|_sidecars/.+\.parquet)$")
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_WRITERS = re.compile(rf"^([^/]+=[^/]*/)*(part-\d{{5}}-{_UUID}(-c\d{{3}})?(\.[a-z0-9]+)?\.parquet"
                      rf"|([^/]+/)?deletion_vector_{_UUID}\.bin)$")
_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


def _z85_decode(text: str) -> bytes:
    """Z85 (ZeroMQ base-85), as the Delta protocol encodes a deletion vector's UUID."""
    out = bytearray()
    for i in range(0, len(text), 5):
        value = 0
        for char in text[i:i + 5]:
            value = value * 85 + _Z85.index(char)
        out += value.to_bytes(4, "big")
    return bytes(out)


def dv_file(dv: Mapping[str, Any] | None) -> str | None:
    """The file of a deletion vector descriptor (``None`` when inline or absent).

    Storage type ``u`` is an optional folder prefix and 20 Z85 characters of a
    UUID, stored as ``<prefix>/deletion_vector_<uuid>.bin``; ``p`` is a path.

    >>> dv_file({"storageType": "u", "pathOrInlineDv": "ab" + "0" * 20})
    'ab/deletion_vector_00000000-0000-0000-0000-000000000000.bin'
    """
    if not dv or dv.get("storageType") not in ("u", "p"):
        return None
    text = dv["pathOrInlineDv"]
    if dv["storageType"] == "p":
        return text
    prefix, encoded = text[:-20], text[-20:]
    name = f"deletion_vector_{uuid.UUID(bytes=_z85_decode(encoded))}.bin"
    return f"{prefix}/{name}" if prefix else name


def action_paths(actions: Iterable[Mapping[str, Any]]) -> set[str]:
    """Every file path the log actions name (still URL-encoded, relative or absolute).

    >>> sorted(action_paths([{"add": {"path": "a=1/p.parquet"}}, {"remove": {"path": "q.parquet"}},
    ...                      {"commitInfo": {}}]))
    ['a=1/p.parquet', 'q.parquet']
    """
    out: set[str] = set()
    for action in actions:
        for kind in ("add", "remove", "cdc"):
            entry = action.get(kind)
            if not entry:
                continue
            if entry.get("path"):
                out.add(entry["path"])
            dv = dv_file(entry.get("deletionVector"))
            if dv:
                out.add(dv)
    return out


def _relative(location: str, path: str) -> str | None:
    """A logged path relative to the table's folder (``None`` for a file outside it)."""
    path = urllib.parse.unquote(path)
    if "://" not in path and not path.startswith("/"):
        return path
    base = native_uri(location).rstrip("/") + "/"
    full = native_uri(path)
    return full[len(base):] if full.startswith(base) else None


def _checkpoint_actions(stream) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(stream)
    columns = [c for c in ("add", "remove", "cdc") if c in table.column_names]
    return table.select(columns).to_pylist()


def logged_files(storage: Storage, location: str) -> set[str]:
    """Every file the table's log still on storage ever referenced, relative to its folder.

    >>> logged_files(Storage(None), "/tmp/no-such-table")
    set()
    """
    fs, base = storage.filesystem(f"{location.rstrip('/')}/{_LOG}")
    paths: set[str] = set()
    for name in storage.files(f"{location.rstrip('/')}/{_LOG}"):
        if _COMMIT.match(name):
            with fs.open_input_stream(f"{base}/{name}") as stream:
                lines = stream.read().decode("utf-8").splitlines()
            paths |= action_paths(json.loads(line) for line in lines if line.strip())
        elif _CHECKPOINT.match(name):
            with fs.open_input_file(f"{base}/{name}") as stream:
                paths |= action_paths(_checkpoint_actions(stream))
    return {rel for p in paths if (rel := _relative(location, p)) is not None}


def _companion_of(name: str) -> str | None:
    """The file a Hadoop checksum file (``dir/.name.crc``) belongs to."""
    folder, _, base = name.rpartition("/")
    if not (base.startswith(".") and base.endswith(".crc")):
        return None
    return f"{folder}/{base[1:-4]}" if folder else base[1:-4]


# Clock skew between the driver that recorded a run's start and the store that stamps a file.
_SKEW_SECONDS = 60.0


def _tables(name: str, mtime: float, logged: set[str], since: float | None) -> bool:
    """Whether a file under the folder is the table's: its log, a file it referenced, or its writers'.

    A writer-named file the log never referenced counts only when it is newer than ``since`` (the
    start of the logical run that created the table); with no ``since``, never.
    """
    if name.startswith(f"{_LOG}/"):
        return True
    owner = _companion_of(name) or name
    if owner in logged:
        return True
    return since is not None and mtime >= since - _SKEW_SECONDS and bool(_WRITERS.match(owner))


def _file_times(storage: Storage, location: str) -> list[tuple[str, float]]:
    """Every file under a folder with its modification time (epoch seconds), as paths relative to it."""
    import pyarrow.fs as pafs

    fs, base = storage.filesystem(location)
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return []
    base = base.rstrip("/")
    return sorted((i.path[len(base) + 1:], i.mtime.timestamp() if i.mtime else 0.0)
                  for i in fs.get_file_info(pafs.FileSelector(base, recursive=True)) if i.type == pafs.FileType.File)


def unlogged_files(storage: Storage, location: str, logged: set[str] | None = None, *,
                   since: float | None = None) -> list[str]:
    """The files under a table's folder that are not the table's (neither its log, nor logged, nor its writers').

    >>> unlogged_files(Storage(None), "/tmp/no-such-table", set())
    []
    """
    logged = logged_files(storage, location) if logged is None else logged
    return [f for f, mtime in _file_times(storage, location) if not _tables(f, mtime, logged, since)]


def remove_table(storage: Storage, location: str, *, since: float | None = None) -> int:
    """Delete a table's log and every file of it, then the folders left empty; return the file count.

    Data files go first and the log last: a crash midway leaves a log that still
    names what remains, so the next rollback removes it. A file that is not the
    table's is left where it is (the caller refused such a folder before).
    """
    import pyarrow.fs as pafs

    logged = logged_files(storage, location)
    fs, base = storage.filesystem(location)
    base = base.rstrip("/")
    doomed = [f for f, mtime in _file_times(storage, location)
              if _tables(f, mtime, logged, since) and not f.startswith(f"{_LOG}/")]
    for name in doomed:
        fs.delete_file(f"{base}/{name}")
    # The log last, newest commit first and version 0 last: a crash midway leaves a readable log
    # (checkpoints and _last_checkpoint go first, then commits from the newest down).
    log = [f for f, _ in _file_times(storage, f"{location.rstrip('/')}/{_LOG}")]
    checkpoints = [f for f in log if f.startswith("_") or ".checkpoint" in f]
    commits = sorted((f for f in log if f not in checkpoints), reverse=True)
    for name in [*checkpoints, *commits]:
        fs.delete_file(f"{base}/{_LOG}/{name}")
    if fs.get_file_info(f"{base}/{_LOG}").type == pafs.FileType.Directory:
        fs.delete_dir(f"{base}/{_LOG}")
    folders = sorted((i.path for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))
                      if i.type == pafs.FileType.Directory), key=len, reverse=True)
    for folder in [*folders, base]:  # deepest first, the table's folder last; never its parent
        if not fs.get_file_info(pafs.FileSelector(folder)):
            fs.delete_dir(folder)
    return len(doomed)
