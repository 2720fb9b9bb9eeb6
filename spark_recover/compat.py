"""The Spark lines spark-recover supports, and the Delta Lake release for each: one table, one place.

spark-recover is a library installed into the user's Spark, so it never pins
pyspark: the running Spark line picks the Delta jar a session spark-recover
builds itself resolves (from Maven Central, through Spark's resolver). A
session that already has Delta (Databricks, EMR with Delta, ``spark-submit
--packages``, a Connect server) is used as it is and nothing is resolved.

>>> delta_coordinate("3.5.6")
'io.delta:delta-spark_2.12:3.3.2'
>>> delta_coordinate("4.2.1")
'io.delta:delta-spark_4.2_2.13:4.4.0'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import SessionError

__all__ = ["SparkLine", "SPARK_LINES", "spark_line", "line_of", "delta_coordinate", "supported_text",
           "pyspark_version", "has_local_spark"]


@dataclass(frozen=True)
class SparkLine:
    """One supported Spark line: its Scala build, the Delta release for it, and that release's jar."""

    line: str
    scala: str
    delta: str
    artifact: str  # Maven artifact id in group io.delta

    @property
    def coordinate(self) -> str:
        return f"io.delta:{self.artifact}:{self.delta}"


#: Spark line -> Delta. Delta 3.3 is the last release for Spark 3.5 (Scala 2.12, pyspark's own build);
#: Delta 4.0 was built for Spark 4.0; from Delta 4.1 on each release is published per Spark line
#: (``delta-spark_<line>_2.13``), and 4.4.0 is the newest for 4.1 and the first for 4.2.
SPARK_LINES: dict[str, SparkLine] = {line.line: line for line in (
    SparkLine("3.5", "2.12", "3.3.2", "delta-spark_2.12"),
    SparkLine("4.0", "2.13", "4.0.1", "delta-spark_2.13"),
    SparkLine("4.1", "2.13", "4.4.0", "delta-spark_4.1_2.13"),
    SparkLine("4.2", "2.13", "4.4.0", "delta-spark_4.2_2.13"),
)}


def line_of(version: str) -> str:
    """The line (major.minor) of a Spark version.

    >>> line_of("4.2.1"), line_of("3.5.0.dev0")
    ('4.2', '3.5')
    """
    return ".".join(version.split(".")[:2])


def supported_text() -> str:
    """The supported lines, for messages.

    >>> supported_text()
    '3.5, 4.0, 4.1, 4.2'
    """
    return ", ".join(SPARK_LINES)


def spark_line(version: str) -> SparkLine:
    """The supported line of Spark ``version``; :class:`SessionError` (exit 2) naming the supported lines if none.

    >>> spark_line("4.0.1").delta
    '4.0.1'
    """
    found = SPARK_LINES.get(line_of(version))
    if found is None:
        raise SessionError(
            f"Spark {version} has no Delta Lake release spark-recover knows",
            f"expected a Spark line with a Delta release ({supported_text()}), found {version}. "
            "Install a supported pyspark, or start from a session that already has Delta "
            "(spark-submit --packages io.delta:..., a Spark Connect server with Delta): it is used as it is",
            spark=version, supported=list(SPARK_LINES))
    return found


def delta_coordinate(version: str) -> str:
    """The Maven coordinate of the Delta jar for Spark ``version`` (see :data:`SPARK_LINES`)."""
    return spark_line(version).coordinate


def pyspark_version() -> str:
    """The installed pyspark's version (``pyspark``, ``pyspark-client`` or a runtime's own copy alike).

    Read from the module, not from pip's metadata: Databricks runtimes and the
    thin Connect client do not register a ``pyspark`` distribution.
    """
    try:
        import pyspark
    except ImportError as exc:
        raise SessionError(
            "pyspark is not installed",
            "expected pyspark in this Python environment: pip install \"spark-recover[local]\" for a local Spark, "
            "or \"spark-recover[connect]\" for a Spark Connect client; on a cluster, use its own pyspark") from exc
    return pyspark.__version__


def has_local_spark() -> bool:
    """Whether this environment can start a Spark JVM: pyspark with its jars (``pip install pyspark``) or a
    Spark distribution at ``$SPARK_HOME``. The thin Connect client (``pyspark-client``) has neither."""
    try:
        import pyspark
    except ImportError:
        return False
    home = os.environ.get("SPARK_HOME")
    return (Path(pyspark.__file__).parent / "jars").is_dir() or bool(home and (Path(home) / "jars").is_dir())
