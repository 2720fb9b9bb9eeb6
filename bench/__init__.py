"""Benchmarks: run them with `make bench`; results land in bench/results/ (latest.json and latest.md are committed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["save_results"]


def save_results(name: str, result: dict[str, Any]) -> None:
    """Print ``result`` and keep it as ``bench/results/<name>.json``."""
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
