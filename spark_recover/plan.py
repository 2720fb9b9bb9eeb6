"""The plan of a run: stage order, fingerprints, and what a replay may reuse.

The reuse rule (DESIGN.md semantics 2, as Metaflow's resume): a stage is reused
only if it succeeded in the origin run, its fingerprint is unchanged, every
input stage was reused too, and its checkpoint is still whole. Anything
recomputed forces its downstream to recompute. Each decision carries its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping, Sequence

from .fingerprint import code_parts, digest, explain_change, library_versions, stage_fingerprint
from .job import Job, Stage, chunk_key
from .history import RunRecord, StageRecord, origin_stage

__all__ = ["StagePlan", "plan_run", "chunk_fingerprint", "reusable_chunk"]


@dataclass
class StagePlan:
    """One stage's place in a run: its fingerprint and whether to reuse a checkpoint."""

    stage: Stage
    parts: dict[str, Any]
    fingerprint: str
    reuse: bool = False
    reason: str | None = None      # why it is recomputed (None on a fresh run)
    origin: StageRecord | None = None
    forced: bool = False  # --rerun: nothing of it is reused (not even a chunked stage's chunks)
    chunk_base: str | None = None  # a chunked stage: its fingerprint without its chunk list (each chunk's basis)

    @property
    def name(self) -> str:
        return self.stage.name


def _parts(stage: Stage, job_file: str | None, params: Mapping[str, Any], pins: Mapping[str, Any],
           fingerprints: Mapping[str, str], session_parts: Mapping[str, Any]) -> dict[str, Any]:
    keys = sorted(params) if stage.visible_params is None else sorted(stage.visible_params)
    # Chunks named by the parameters are part of what the stage outputs (a source column's follow its pin).
    chunks = {"chunks": [chunk_key(v) for v in stage.chunk_values(params)]} \
        if stage.chunks is not None and stage.chunks.of_params is not None else {}
    return {
        **chunks,
        **code_parts(stage.func, job_file, stage=stage.name),
        "params": {k: params.get(k) for k in keys},
        "inputs": {i: fingerprints[i] for i in stage.inputs if i in fingerprints},
        "sources": {i: pins[i] for i in stage.inputs if i in pins},
        "library": library_versions(),
        **session_parts,
    }


def plan_run(job: Job, params: Mapping[str, Any], pins: Mapping[str, Any],
             origin: RunRecord | None = None, rerun: Collection[str] = (),
             verify: Callable[[StageRecord], str | None] = lambda _: None,
             ancestors: Sequence[RunRecord] = (), session_parts: Mapping[str, Any] | None = None) -> list[StagePlan]:
    """Plan every stage of ``job``; with an ``origin`` run, decide what to reuse.

    ``session_parts``: what of the session every stage's fingerprint holds, its
    result settings and engine versions (``session.fingerprint_parts``, asked once per run).

    ``verify`` checks a candidate checkpoint and returns what is wrong with it
    (it is called only for stages that would otherwise be reused).
    ``ancestors`` are the origin's own origins, nearest first (see :func:`~spark_recover.history.origin_stage`).
    """
    forced = job.downstream(list(rerun)) if rerun else set()
    fingerprints: dict[str, str] = {}
    reused: set[str] = set()
    plans: list[StagePlan] = []
    for stage in job.stages:
        parts = _parts(stage, job.file, params, pins, fingerprints, session_parts or {})
        plan = StagePlan(stage, parts, stage_fingerprint(parts))
        if stage.chunks is not None:  # chunks named by the parameters: the list is in the stage's fingerprint only
            plan.chunk_base = stage_fingerprint({k: v for k, v in parts.items() if k != "chunks"}) \
                if "chunks" in parts else plan.fingerprint
        fingerprints[stage.name] = plan.fingerprint
        plans.append(plan)
        if origin is None:
            continue
        source, before = origin_stage([origin, *ancestors], stage.name)
        plan.origin = before
        recomputed_inputs = [i for i in stage.inputs if i in fingerprints and i not in reused]
        if stage.name in forced:
            plan.forced = True
            plan.reason = ("forced by --rerun" if stage.name in rerun else
                           f"upstream of it was forced by --rerun {', '.join(rerun)}")
        elif before is None or before.status != "succeeded":
            state = "failed" if before is not None and before.status == "failed" else "did not complete"
            plan.reason = f"it {state} in run {source.run_id}"
            if before is not None and before.fingerprint not in (None, plan.fingerprint):
                plan.reason += f"; since then {explain_change(before.parts, parts)}"
        elif before.fingerprint != plan.fingerprint:
            plan.reason = explain_change(before.parts, parts)
        elif recomputed_inputs:
            plan.reason = f"input {recomputed_inputs[0]!r} was recomputed"
        else:
            problem = verify(before)
            if problem:
                plan.reason = f"its checkpoint is damaged: {problem}"
            else:
                plan.reuse = True
                reused.add(stage.name)
    return plans


def chunk_fingerprint(stage_fingerprint: str | None, key: str) -> str:
    """A chunk's fingerprint: its stage's (code, parameters, inputs, session; not its chunk list) and its key.

    >>> chunk_fingerprint("ab", '"2026-11-01"') == chunk_fingerprint("ab", '"2026-11-02"')
    False
    """
    return digest([stage_fingerprint, key], 32)


def reusable_chunk(plan: StagePlan, key: str, verify: Callable[[Mapping[str, Any]], str | None]) -> dict | None:
    """The chunk ``key`` of a recomputed chunked stage that the replayed run committed and a replay
    reuses: same chunk fingerprint, a whole checkpoint (``verify``), the stage not forced; else ``None``."""
    if plan.forced or plan.origin is None:
        return None
    old = plan.origin.chunks.get(key)
    if old is None or old.get("version") is None or old.get("fingerprint") != chunk_fingerprint(plan.chunk_base, key):
        return None
    return old if verify(old) is None else None
