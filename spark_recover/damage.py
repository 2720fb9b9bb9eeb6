"""Damaged state, rehearsed: the cases a drill's ``--damage`` runs against the user's job.

Each case damages the job's state the way a hand, a crash or a store without
atomic writes would, runs what an operator runs next (``run --resume``, or
``rollback``) as a real process, and judges the outcome. Two outcomes pass:

* **recomputed**: exit 0, the damaged stage recomputed with the reason in the
  ledger (never reused), and every sink equal to the clean run's, row for row;
* **refused**: exit 3 with a plain message (no traceback), and nothing
  changed: no sink written, the damaged state left as it was.

Anything else (a reused damaged checkpoint, a wrong row, another exit code, a
traceback) fails the drill.
"""

from __future__ import annotations

import signal
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Mapping

from .drill import Scratch, difference
from .errors import RecoverError
from .failpoints import ENV as FAILPOINT_ENV
from .storage import Layout

__all__ = ["CASES", "Case", "run_cases"]

CASES = {
    "checkpoint-file-deleted": "a data file of a checkpoint deleted",
    "checkpoint-file-truncated": "a data file of a checkpoint cut to half its size",
    "checkpoint-log-deleted": "the _delta_log commit file of a checkpoint deleted",
    "checkpoint-log-truncated": "the _delta_log commit file of a checkpoint cut in half",
    "checkpoint-folder-removed": "a checkpoint's whole folder removed by hand",
    "ledger-commit-truncated": "the ledger's newest commit file cut in half (a torn write)",
    "sink-point-vacuumed": "a sink table's recovery-point files vacuumed after the run",
}


@dataclass
class Case:
    """One damaged-state case and what the next operation did with it."""

    name: str
    damage: str  # what was done, concretely
    operation: str  # what the operator ran next
    outcome: str  # recomputed | refused | not applicable | failed
    exit_code: int | None
    said: str  # the recompute reason or the refusal message
    duplicates: int = 0
    missing: int = 0
    extra: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _files(area: Scratch, location: str, version: int | None = None) -> dict[str, int]:
    import pyarrow as pa

    adds = pa.table(area.store.delta(location, version=version).get_add_actions(flatten=True))
    return dict(zip(adds.column("path").to_pylist(), adds.column("size_bytes").to_pylist()))


def _cut(area: Scratch, path: str) -> int:
    """Keep the first half of a file's bytes (a torn write); returns the bytes kept."""
    fs, native = area.store.filesystem(path)
    with fs.open_input_stream(native) as stream:
        data = stream.read()
    with fs.open_output_stream(native) as stream:
        stream.write(data[: len(data) // 2])
    return len(data) // 2


def _remove(area: Scratch, path: str) -> None:
    fs, native = area.store.filesystem(path)
    fs.delete_file(native)


def _plain(err: str) -> str:
    """The CLI's own error lines, or '' when the process died another way."""
    lines = [line.strip() for line in err.splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("spark-recover: error:")), None)
    if start is None:
        return ""
    return ": ".join(line for line in [lines[start].removeprefix("spark-recover: error:").strip(),
                                       *lines[start + 1:start + 2]] if line)


def _listing(area: Scratch, location: str) -> dict[str, int]:
    import pyarrow.fs as pafs

    fs, base = area.store.filesystem(location)
    return {i.path: i.size for i in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            if i.type == pafs.FileType.File}


class _Cases:
    def __init__(self, area: Scratch, reference: Mapping[str, Counter]) -> None:
        self.area, self.reference = area, reference
        self.crashed = f"{area.base}/damage/crashed"
        self.backup = f"{area.base}/damage/crashed-backup"
        self.stage = self.last = ""

    def prepare(self, stages: list[str]) -> None:
        """A run killed right after its last stage's checkpoint: every stage checkpointed, no sink written."""
        area = self.area
        self.last, self.stage = stages[-1], stages[len(stages) // 2]
        area.reset()
        code, err, _ = area.finish(area.start(self.crashed, resume=False,
                                              env={FAILPOINT_ENV: f"{self.last}:after_commit"}))
        if code != -signal.SIGKILL:
            raise RecoverError("the drill could not set up its damaged-state cases",
                               f"the run to damage was to die at {self.last}:after_commit; "
                               f"it exited {code}: {err.strip()[-500:]}")
        area.store.copy_tree(self.crashed, self.backup)

    def restore(self) -> None:
        self.area.store.delete_tree(self.crashed)
        self.area.store.copy_tree(self.backup, self.crashed)
        self.area.reset()

    def checkpoint(self, name: str) -> Case:
        area = self.area
        self.restore()
        rec = area.runs(self.crashed)[-1].stages[self.stage]
        first = rec.output[0]  # a chunked stage's first chunk
        location, version = first["checkpoint"], int(first["version"])
        log = f"{location}/_delta_log/{version:020d}.json"
        if name in ("checkpoint-file-deleted", "checkpoint-file-truncated"):
            path, size = sorted(_files(area, location, version).items())[0]
            if name.endswith("deleted"):
                _remove(area, f"{location}/{path}")
                damage = f"deleted data file {path} of checkpoint {self.stage} (version {version})"
            else:
                kept = _cut(area, f"{location}/{path}")
                damage = f"cut data file {path} of checkpoint {self.stage} from {size} to {kept} bytes"
        elif name == "checkpoint-log-deleted":
            _remove(area, log)
            damage = f"deleted {log.rsplit('/', 2)[-2]}/{version:020d}.json of checkpoint {self.stage}"
        elif name == "checkpoint-log-truncated":
            kept = _cut(area, log)
            damage = f"cut {version:020d}.json of checkpoint {self.stage} to {kept} bytes"
        else:
            area.store.delete_tree(location)
            damage = f"removed the folder of checkpoint {self.stage}"
        code, err, _ = area.finish(area.start(self.crashed, resume=True))
        case = Case(name, damage, "run --resume", "failed", code, "")
        if code == 0:
            newest = area.runs(self.crashed)[-1].stages[self.stage]
            if newest.reused:
                case.error = f"stage {self.stage} reused its damaged checkpoint"
                return case
            case.outcome, case.said = "recomputed", f"stage {self.stage} recomputed because {newest.reason}"
            case.duplicates, case.missing, case.extra = difference(area.contents(), self.reference)
            if case.duplicates or case.missing or case.extra:
                case.error = "the sinks differ from the clean run's"
            return case
        return self._refusal(case, err, unchanged=area.contents() == area.initial_state[0])

    def ledger(self) -> Case:
        area = self.area
        self.restore()
        log = f"{Layout.at(self.crashed, area.settings.storage_options).ledger}/_delta_log"
        newest = max(p for p in _listing(area, log) if p.endswith(".json"))
        kept = _cut(area, newest)
        before = _listing(area, self.crashed)
        code, err, _ = area.finish(area.start(self.crashed, resume=True))
        case = Case("ledger-commit-truncated", f"cut the ledger's newest commit {newest.rsplit('/', 1)[-1]} "
                    f"to {kept} bytes", "run --resume", "failed", code, "")
        if code == 0:
            case.error = "the run went on over a torn ledger commit"
            return case
        return self._refusal(case, err, unchanged=_listing(area, self.crashed) == before
                             and area.contents() == area.initial_state[0])

    def vacuumed(self) -> Case:
        """A finished run's sink tables lose the files of their recovery point; then ``rollback``."""
        area = self.area
        area.reset()
        root = f"{area.base}/damage/published"
        code, err, _ = area.finish(area.start(root, resume=False))
        if code != 0:
            raise RecoverError("the drill could not set up its damaged-state cases",
                               f"the run to vacuum after exited {code}: {err.strip()[-500:]}")
        run = area.runs(root)[-1]
        gone = {}
        for table, point in (run.recovery_point or {}).items():
            location = area.location(table)  # a catalog table's files are where the catalog says
            if point.get("exists") and point.get("version") is not None and location is not None:
                files = set(_files(area, location, int(point["version"]))) - set(_files(area, location))
                for path in files:  # what VACUUM removes: files no longer in the current version
                    _remove(area, f"{location}/{path}")
                if files:
                    gone[table] = len(files)
        case = Case("sink-point-vacuumed", "", f"rollback {run.run_id}", "not applicable", None, "")
        if not gone:
            case.damage = ("nothing to vacuum: no sink table existed before the run, or the run only "
                           "added files (a rollback of it needs no removed file)")
            return case
        names = {scratch: table for table, scratch in area.tables.items()}
        case.damage = "removed " + ", ".join(f"{n} file(s) of {names.get(t, t)}'s recovery point"
                                             for t, n in gone.items())
        versions = {t: area.store.delta(area.location(t)).version() for t in gone}
        code, err, _ = area.finish(area.start_command(["rollback", run.run_id, "--root", root]))
        case.exit_code = code
        if code == 0:
            case.outcome, case.error = "failed", "rollback reported success over a vacuumed recovery point"
            return case
        return self._refusal(case, err, unchanged=versions == {t: area.store.delta(area.location(t)).version()
                                                                       for t in gone})

    @staticmethod
    def _refusal(case: Case, err: str, unchanged: bool) -> Case:
        case.said = _plain(err)
        if case.exit_code != 3:
            case.error = f"exit {case.exit_code}, expected 0 (recomputed) or 3 (refused): {err.strip()[-300:]}"
        elif "Traceback" in err or not case.said:
            case.error = f"refused without a plain message: {err.strip()[-300:]}"
        elif not unchanged:
            case.error = "refused, but state was changed"
        else:
            case.outcome = "refused"
        return case


def run_cases(area: Scratch, stages: list[str], reference: Mapping[str, Counter],
              say: Callable[[str], None]) -> list[Case]:
    """Every damaged-state case of :data:`CASES`, against the drill's scratch copies."""
    cases = _Cases(area, reference)
    cases.prepare(stages)
    out = []
    for name in CASES:
        if name.startswith("checkpoint-"):
            case = cases.checkpoint(name)
        elif name == "ledger-commit-truncated":
            case = cases.ledger()
        else:
            case = cases.vacuumed()
        out.append(case)
        say(f"  damage {name}: {case.damage}; {case.operation} -> {case.outcome}"
            + (f" ({case.said})" if case.said else "") + (f"  <- FAILED: {case.error}" if case.error else ""))
    return out
