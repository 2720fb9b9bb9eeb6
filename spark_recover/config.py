"""Settings: where the root is, how to build a local SparkSession, timings.

Settings come, lowest precedence first, from built-in defaults, a TOML file
(``--conf FILE``, else ``$SPARK_RECOVER_CONF``, else ``conf/spark-recover.toml``
in the job's project when it exists), ``$SPARK_RECOVER_ROOT``, and explicit
arguments (``--root``).

Nothing depends on the working directory unless the user typed it: the
defaults (``.spark-recover`` and ``conf/spark-recover.toml``) are in the job's
project folder (:func:`spark_recover.project.project_folder`); a relative
``--root``/``--conf`` or ``$SPARK_RECOVER_ROOT``/``$SPARK_RECOVER_CONF`` means
the working directory of the command, and is made absolute at once; a relative
``root`` inside a conf file is under the project that holds the file's ``conf/``
folder (else the file's own folder). Settings always hold absolute paths.

The TOML file has three tables::

    [recover]
    root = ".spark-recover"        # any Hadoop URI: s3a://bucket/recover, hdfs://...
    # sink_root = "/tmp/scratch"   # (drills) write path sinks under this folder instead
    heartbeat_seconds = 10         # how often a quiet run records that it lives
    dead_after_seconds = 60        # silence after which it is dead (>= 3 x heartbeat_seconds)

    [spark]                        # used only when spark-recover builds the session
    "spark.master" = "local[*]"
    "spark.driver.memory" = "4g"

    [storage_options]              # the object store, in delta-rs's spelling; Spark's S3A
    AWS_ENDPOINT_URL = "http://127.0.0.1:9000"     # settings are derived from these
    AWS_REGION = "us-east-1"

For an S3 root, ``AWS_*`` environment variables (endpoint, region, keys) fill
in what the file does not set; see :func:`spark_recover.storage.with_s3_defaults`.
``$SPARK_RECOVER_SHARED_ROOT=1`` declares a local root shared, like ``shared_root``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from pathlib import Path
from typing import Any, Mapping

from .errors import UsageError
from .liveness import BEATS_BEFORE_DEAD
from .storage import anchored, is_s3, with_s3_defaults

__all__ = ["Settings", "load_settings", "check_timings", "DEFAULT_CONF_FILE", "DEFAULT_ROOT"]

DEFAULT_CONF_FILE = Path("conf") / "spark-recover.toml"  # under the project folder
DEFAULT_ROOT = ".spark-recover"  # under the project folder


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved settings of one process.

    >>> Settings(root="/tmp/r").heartbeat_seconds
    10.0
    """

    root: str = DEFAULT_ROOT
    heartbeat_seconds: float = 10.0
    dead_after_seconds: float = 60.0
    spark: Mapping[str, str] = dataclasses.field(default_factory=dict)
    storage_options: Mapping[str, str] = dataclasses.field(default_factory=dict)
    sink_root: str | None = None  # a drill's scratch area: path sinks are redirected under it
    shared_root: bool = False  # a local root every node of a cluster sees (declared by the user)
    remote: str | None = None  # a Spark Connect server (sc://host:port) to run on instead of a local session
    verbose: bool = False
    conf_file: str | None = None

    def __post_init__(self) -> None:
        check_timings(heartbeat_seconds=self.heartbeat_seconds, dead_after_seconds=self.dead_after_seconds,
                      source=self.conf_file)

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


_RECOVER_KEYS = {"root": str, "heartbeat_seconds": (int, float), "dead_after_seconds": (int, float),
                 "sink_root": str, "shared_root": bool, "remote": str}


def check_timings(*, heartbeat_seconds: float, dead_after_seconds: float, source: str | None = None) -> None:
    """Refuse (:class:`UsageError`, exit 2) heartbeat and dead-after settings that cannot work.

    Both are positive numbers of seconds, and a run is judged dead only after
    missing several heartbeats, so ``dead_after_seconds`` is at least
    ``BEATS_BEFORE_DEAD`` times ``heartbeat_seconds``.

    >>> check_timings(heartbeat_seconds=45, dead_after_seconds=60)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    spark_recover.errors.UsageError: settings do not fit together: ... expected dead_after_seconds >= 135 ...
    """
    where = f"{source}: " if source else ""
    for key, value in (("heartbeat_seconds", heartbeat_seconds), ("dead_after_seconds", dead_after_seconds)):
        if not math.isfinite(value) or value <= 0:
            raise UsageError("setting out of range", f"{where}[recover] {key} = {value:g}: expected a positive "
                             "number of seconds", path=source, key=key, value=value)
    least = BEATS_BEFORE_DEAD * heartbeat_seconds
    if dead_after_seconds < least:
        raise UsageError(
            "settings do not fit together",
            f"{where}[recover] dead_after_seconds = {dead_after_seconds:g} with heartbeat_seconds = "
            f"{heartbeat_seconds:g}: expected dead_after_seconds >= {least:g} ({BEATS_BEFORE_DEAD} x "
            "heartbeat_seconds), so a live run is not judged dead between two of its heartbeats",
            path=source, key="dead_after_seconds", value=dead_after_seconds, expected_at_least=least)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError("configuration file not found",
                         f"expected a TOML file at {str(path)!r}", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError("configuration file is not valid TOML",
                         f"{path}: {exc}", path=str(path)) from None


def _from_toml(data: dict[str, Any], path: Path) -> dict[str, Any]:
    unknown = set(data) - {"recover", "spark", "storage_options"}
    if unknown:
        raise UsageError("unknown table in configuration file",
                         f"{path}: found {sorted(unknown)}, expected only "
                         "[recover], [spark], [storage_options]", path=str(path))
    out: dict[str, Any] = {}
    for key, value in data.get("recover", {}).items():
        if key not in _RECOVER_KEYS:
            raise UsageError("unknown setting in configuration file",
                             f"{path}: [recover] {key!r}; expected one of {sorted(_RECOVER_KEYS)}",
                             path=str(path), key=key)
        wanted = _RECOVER_KEYS[key]
        if not isinstance(value, wanted) or (isinstance(value, bool) and wanted is not bool):
            raise UsageError("setting has the wrong type",
                             f"{path}: [recover] {key} = {value!r}", path=str(path), key=key)
        out[key] = value if isinstance(value, (str, bool)) else float(value)
    for table in ("spark", "storage_options"):
        section = data.get(table, {})
        if not isinstance(section, dict):
            raise UsageError("setting has the wrong type",
                             f"{path}: [{table}] must be a table of key = value", path=str(path))
        out[table] = {str(k): str(v).lower() if isinstance(v, bool) else str(v)
                      for k, v in section.items()}
    if "root" in out:
        # A relative root in a file is relative to the file's project: the folder that holds
        # its conf/ folder (else the file's own folder), wherever the command runs.
        base = path.parent.parent if path.parent.name == "conf" else path.parent
        out["root"] = anchored(out["root"], base=str(base))
    return out


def _typed(location: str | os.PathLike[str]) -> str:
    """A location the user typed (an argument or a variable): relative to the working directory, made absolute."""
    return anchored(os.fspath(location), base=os.getcwd())


def load_settings(conf_file: str | os.PathLike[str] | None = None, root: str | None = None,
                  verbose: bool = False, remote: str | None = None, project: str | None = None) -> Settings:
    """Resolve settings from defaults, a TOML file, the environment and arguments.

    ``project`` is the folder the default root and conf file are in: the job's
    project (``job.project``), else the working directory (a notebook, or a
    command that names no job file).

    >>> load_settings(root="/tmp/recover").root
    '/tmp/recover'
    """
    home = Path(project or os.getcwd())
    values: dict[str, Any] = {"root": str(home / DEFAULT_ROOT)}
    chosen = conf_file or os.environ.get("SPARK_RECOVER_CONF")
    default = home / DEFAULT_CONF_FILE
    path = Path(_typed(chosen)) if chosen else (default if default.is_file() else None)
    if path is not None:
        values.update(_from_toml(_read_toml(path), path))
        values["conf_file"] = str(path)
    # A session spark-recover builds keeps its catalog's managed tables in the project too
    # (Spark's own default is spark-warehouse in the working directory).
    values["spark"] = {"spark.sql.warehouse.dir": str(home / "spark-warehouse"), **values.get("spark", {})}
    env_root = os.environ.get("SPARK_RECOVER_ROOT")
    if root or env_root:
        values["root"] = _typed(root or env_root)
    if os.environ.get("SPARK_RECOVER_SINK_ROOT"):
        values["sink_root"] = _typed(os.environ["SPARK_RECOVER_SINK_ROOT"])
    if remote or os.environ.get("SPARK_REMOTE"):
        values["remote"] = remote or os.environ["SPARK_REMOTE"]
    if os.environ.get("SPARK_RECOVER_SHARED_ROOT", "").lower() in ("1", "true", "yes"):
        values["shared_root"] = True
    options = values.get("storage_options", {})
    if is_s3(values.get("root", "")) or any(k.lower().startswith("aws_") for k in options):
        values["storage_options"] = with_s3_defaults(options, os.environ)
    values["verbose"] = verbose
    return Settings(**values)
