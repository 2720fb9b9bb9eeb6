"""The package's import layers (see the direction of imports in the project's layout notes); no JVM.

Each module imports only from its own layer or lower ones, so what run history
means (``history``) never depends on how it is stored or run. The only upward
edges are ``Job``'s front-door methods (``run``, ``plan``, ``resume``, ``redo``,
``drill``, ``backfill``, ``main``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "spark_recover"
LAYERS = [
    {"errors", "storage", "config", "fingerprint", "failpoints", "liveness", "compat", "project", "table_files"},
    {"job", "history"},  # what a job declares; what the ledger's events mean
    {"plan", "publication", "display", "rerun"},  # pure rules and text over records
    {"ledger", "lease", "checkpoint", "sources", "sinks", "session"},  # storage, the engine
    {"runner", "recovery", "retention", "preview", "backfill", "timeline"},  # the stories of commands
    {"drill", "damage"},
    {"cli", "testing", "__init__", "__main__"},
]
FRONT_DOOR = {("job", name) for name in ("runner", "preview", "recovery", "drill", "backfill", "cli")}
PACKAGE_METADATA = {"__version__"}  # `from . import __version__`: a constant, not a layer


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports anywhere (top level, functions, ``TYPE_CHECKING``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):  # import spark_recover.x
            out |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("spark_recover.")}
        elif isinstance(node, ast.ImportFrom) and (node.level == 1
                                                   or (node.module or "").split(".")[0] == "spark_recover"):
            inner = (node.module or "").removeprefix("spark_recover").lstrip(".") if node.level == 0 else node.module
            out |= {inner.split(".")[0]} if inner else {alias.name for alias in node.names}
    return out - PACKAGE_METADATA


def test_every_module_has_a_layer():
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    layered = set().union(*LAYERS)
    assert modules - layered == set(), "give each new module a layer in LAYERS"
    assert layered - modules == set(), "a module in LAYERS no longer exists"


def test_imports_point_to_the_same_or_a_lower_layer():
    layer = {name: n for n, names in enumerate(LAYERS) for name in names}
    imports = {path.stem: _imports(path) for path in PACKAGE.glob("*.py")}
    unknown = sorted((module, target) for module, targets in imports.items() for target in targets
                     if target not in layer)
    assert unknown == [], f"imports of names that are no module of the package (module, imported): {unknown}"
    upward = sorted((module, target) for module, targets in imports.items() for target in targets
                    if layer[target] > layer[module] and (module, target) not in FRONT_DOOR)
    assert upward == [], f"imports into a higher layer (module, imported): {upward}"
