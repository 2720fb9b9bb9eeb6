"""The job's project: the folder its defaults and relative paths are found from.

A scheduler may start the same command in a new temporary folder on every
retry, so nothing may depend on the working directory: the default root
(``.spark-recover``), the default conf file (``conf/spark-recover.toml``) and
relative source and sink paths are found from the folder of the job's project.
"""

from __future__ import annotations

import os

__all__ = ["PROJECT_MARKERS", "project_folder"]

#: What marks a project's top folder: a Python project, a repository, or spark-recover's own conf folder.
PROJECT_MARKERS = ("pyproject.toml", ".git", "conf")


def _marks_project(folder: str) -> bool:
    # Any kind of entry: a worktree's .git is a file.
    return any(os.path.exists(os.path.join(folder, marker)) for marker in PROJECT_MARKERS)


def project_folder(job_file: str | None = None) -> str:
    """The absolute project folder of ``job_file``.

    The nearest folder at or above the job file's folder that holds
    ``pyproject.toml``, ``.git`` or ``conf/``; if none does, the job file's own
    folder (a loose script keeps its data next to it). Without a job file (a
    job defined in a notebook, or a command that names no job file) it is the
    working directory: there is nothing else to go by.

    >>> project_folder(None) == os.getcwd()
    True
    """
    if job_file is None:
        return os.getcwd()
    start = os.path.dirname(os.path.abspath(job_file))
    folder = start
    while True:
        if _marks_project(folder):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return start
        folder = parent
