"""Is a run's driver alive? Process identity and the dead-after rule (pure, no JVM).

A run records the identity of its driver process. On Linux that is the
kernel's boot id, the pid namespace, the pid and the process start time in
clock ticks since boot: a clock step cannot change any of them, and two
containers that share a host name still differ in pid namespace. A reader on
the same boot and in the same pid namespace asks the kernel whether that very
process still runs; anywhere else (another host, container or boot) it cannot
tell, and liveness falls back to the run's heartbeat.

Where there is no boot id (macOS, Windows), and for records written before
the boot id was recorded, identity is the host name plus the wall-clock start
time psutil reports, as before.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import Any, Mapping

__all__ = ["BEATS_BEFORE_DEAD", "this_process", "process_alive", "dead_after"]

BEATS_BEFORE_DEAD = 3  # a run is judged dead only after missing this many of its own heartbeats
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@functools.lru_cache(maxsize=1)
def _machine() -> tuple[str, str] | None:
    """This kernel's boot id and this process's pid namespace: where a recorded pid means something here."""
    try:
        return _BOOT_ID.read_text().strip(), os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _ticks_since_boot(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (monotonic); ``None`` if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return None if fields[0] in ("Z", "X") else int(fields[19])  # proc(5): field 3 is the state, 22 starttime


def _hidden(pid: int) -> bool:
    """Whether ``pid`` exists although /proc does not show it (``hidepid``: another user's process)."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return False


def _wall_clock_start(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch, per psutil), or ``None`` if it is gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        return round(proc.create_time(), 2)
    except (psutil.Error, OSError):
        return None


def this_process() -> dict[str, Any]:
    """The identity of this process, as a run records it (host and wall-clock start are for people).

    >>> sorted(this_process())   # doctest: +SKIP
    ['boot_id', 'host', 'pid', 'pid_ns', 'proc_start', 'start_ticks']
    """
    pid = os.getpid()
    identity: dict[str, Any] = {"host": socket.gethostname(), "pid": pid, "proc_start": _wall_clock_start(pid)}
    machine = _machine()
    if machine is not None:
        identity.update(boot_id=machine[0], pid_ns=machine[1], start_ticks=_ticks_since_boot(pid))
    return identity


def process_alive(process: Mapping[str, Any]) -> bool | None:
    """Whether the recorded process still runs; ``None`` when this machine cannot see it.

    >>> process_alive(this_process())
    True
    """
    pid = process.get("pid")
    if not pid:
        return None
    if process.get("boot_id"):
        if _machine() != (process["boot_id"], process.get("pid_ns")) or process.get("start_ticks") is None:
            return None  # another host, container or boot: only the heartbeat can tell
        ticks = _ticks_since_boot(int(pid))
        if ticks is None:
            return None if _hidden(int(pid)) else False
        return ticks == process.get("start_ticks")  # a different start: the pid was reused
    # Recorded without a boot id (an older spark-recover, or no /proc): host and wall-clock start.
    if process.get("host") != socket.gethostname():
        return None
    start = _wall_clock_start(int(pid))
    try:
        return start is not None and abs(start - float(process.get("proc_start"))) < 0.05
    except (TypeError, ValueError):
        return False


def dead_after(*, reader_seconds: float, writer_heartbeat: float | None) -> float:
    """Seconds of silence after which a run is judged dead.

    The reader's own setting, but never fewer than :data:`BEATS_BEFORE_DEAD`
    of the heartbeats the writer recorded: a writer that beats every 45 s is
    not dead to a reader configured for 60 s.

    >>> dead_after(reader_seconds=60, writer_heartbeat=45)
    135
    >>> dead_after(reader_seconds=60, writer_heartbeat=None)
    60
    """
    if not writer_heartbeat:
        return reader_seconds
    return max(reader_seconds, BEATS_BEFORE_DEAD * writer_heartbeat)
