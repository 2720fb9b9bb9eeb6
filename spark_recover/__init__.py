"""spark-recover: recoverable multi-stage batch jobs on Apache Spark and Delta Lake.

>>> from spark_recover import Job
>>> job = Job("daily_sales")
"""

__version__ = "0.1.0"

from .errors import RecoverError  # noqa: E402
from .job import Job  # noqa: E402
from .recovery import create_point, list_points, rollback  # noqa: E402
from .timeline import drill_html, report  # noqa: E402

__all__ = ["Job", "RecoverError", "rollback", "create_point", "list_points", "report", "drill_html", "__version__"]
