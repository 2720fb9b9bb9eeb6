"""Fingerprints: the key that decides whether a checkpoint may be reused.

A stage's fingerprint covers (DESIGN.md, semantics 2):

* its **code**: the function's syntax tree (comments, formatting and the
  docstring do not count), plus, recursively, the helper functions, classes
  and constants (of any JSON-able type) it refers to, its closure, its default
  arguments and the bodies of the UDFs it calls;
* every **module of the user's project** it reaches (a sibling of the job
  file, a package of the repository: anything outside the standard library,
  site-packages and spark-recover), by its whole source, and the user modules
  those import;
* the run **parameters it can see**: only the keys it reads as
  ``params["key"]`` or ``params.get("key")``, or all of them when it uses
  ``params`` any other way;
* the fingerprints of its **input stages** and the **pinned versions** of its
  sources;
* the **session settings that change results** (time zone, ANSI mode, store
  assignment, ``spark.sql.legacy.*``, rebase modes, case sensitivity...: see
  :data:`spark_recover.session.RESULT_SETTINGS`), by name and value;
* the versions of **spark-recover** and of the **Spark and Delta actually
  running** (the server's under Spark Connect), which stand for all library code.

It cannot see tables a stage reads through the injected ``spark`` (declare
them with ``job.source`` to pin them; a warning says so at definition time),
data read from outside Spark, the environment, or objects it cannot turn into
JSON (only their type counts).

The parts are kept next to the digest, so a changed fingerprint can say *why*.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import hashlib
import inspect
import json
import os
import site
import sys
import sysconfig
import textwrap
import types
from typing import Any, Callable, Mapping

__all__ = ["digest", "code_parts", "user_file", "library_versions", "unpinned_reads",
           "visible_params", "stage_fingerprint", "explain_change"]

_PRIMITIVES = (str, int, float, bool, bytes, type(None))


def digest(value: Any, size: int = 32) -> str:
    """A stable hex digest of a JSON-able value.

    >>> digest({"b": 1, "a": 2}) == digest({"a": 2, "b": 1})
    True
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:size]


@functools.lru_cache(maxsize=None)
def _library_roots() -> tuple[str, ...]:
    """Folders whose modules are libraries (covered by versions), not the user's project."""
    paths = sysconfig.get_paths()
    roots = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= set(site.getsitepackages())
    roots.add(site.getusersitepackages())
    roots.add(os.path.dirname(os.path.abspath(__file__)))  # spark-recover itself
    return tuple(os.path.realpath(r) + os.sep for r in roots if r)


def user_file(obj: Any) -> str | None:
    """The source file of a function, class or module of the user's own project, else ``None``.

    The user's project is any Python file outside the standard library,
    site-packages and spark-recover: the job file, its siblings, the packages
    of the repository it lives in.

    >>> user_file(json) is None
    True
    """
    module = obj if isinstance(obj, types.ModuleType) else sys.modules.get(getattr(obj, "__module__", "") or "")
    path = getattr(module, "__file__", None) if module is not None else None
    if not path or not path.endswith(".py"):
        return None
    real = os.path.realpath(path)
    if real.startswith(_library_roots()) or f"{os.sep}site-packages{os.sep}" in real \
            or f"{os.sep}dist-packages{os.sep}" in real:
        return None
    return real


def _function_tree(func: Callable[..., Any]) -> ast.AST | None:
    try:
        source = textwrap.dedent(inspect.getsource(func))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):  # no source, or a lambda inside an expression
        return None
    node = tree.body[0] if tree.body else None
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        node.decorator_list = []
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _json_value(value: Any) -> Any:
    """A JSON form of a constant (lists, dicts, sets, tuples, dataclasses of them), or TypeError."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_json_value(v) for v in value), key=repr)
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {type(value).__qualname__: _json_value(dataclasses.asdict(value))}
    if isinstance(value, (decimal.Decimal, dt.date, dt.time, dt.timedelta, enum.Enum)):
        return repr(value)
    raise TypeError(type(value).__name__)


class _Hasher:
    """Walks what a stage reaches: its code, helpers, modules of the user's project, values."""

    def __init__(self, job_file: str | None, home: str | None) -> None:
        self.job_file = job_file  # seen function by function; other user modules count whole
        self.home = home  # the stage's module (a notebook's __main__ has no file, but is the user's)
        self.seen: dict[int, str] = {}
        self.modules: dict[str, str] = {}  # user module file -> digest of its source

    def value(self, value: Any) -> Any:
        inner = getattr(value, "func", None)
        if callable(inner) and hasattr(value, "returnType"):  # @F.udf, @F.pandas_udf
            return {"udf": self.value(inner), "returnType": str(value.returnType)}
        if isinstance(value, functools.partial):
            return {"partial": self.value(value.func), "args": self.value(list(value.args)),
                    "kwargs": self.value(value.keywords)}
        if isinstance(value, types.MethodType):
            return self.value(value.__func__)
        if isinstance(value, types.FunctionType):
            mine = user_file(value) or value.__module__ == self.home
            return self.function(value) if mine else f"{value.__module__}.{value.__qualname__}"
        if isinstance(value, types.ModuleType):
            return self.module(value) if user_file(value) else f"module {value.__name__}"
        if isinstance(value, type):
            return self.cls(value)
        try:
            return _json_value(value)
        except TypeError:
            # An object we cannot see into (a session, a DataFrame): its class only.
            return {"instance of": self.cls(type(value))}

    def cls(self, kind: type) -> str:
        path = user_file(kind)
        if path is None and kind.__module__ != self.home:
            return f"{kind.__module__}.{kind.__qualname__}"
        if path is not None and path != self.job_file:
            return self.module(sys.modules[kind.__module__])
        try:
            return digest(inspect.getsource(kind))
        except (OSError, TypeError):
            return kind.__qualname__

    def module(self, module: types.ModuleType) -> str:
        """A user module counts whole (its source), with the user modules it uses."""
        path = user_file(module)
        if path is None or path == self.job_file:
            return f"module {module.__name__}"
        if path not in self.modules:
            with open(path, "rb") as fh:
                self.modules[path] = hashlib.sha256(fh.read()).hexdigest()[:32]
            for value in list(vars(module).values()):
                if isinstance(value, types.ModuleType) or (
                        isinstance(value, (types.FunctionType, type)) and user_file(value) not in (None, path)):
                    self.module(value if isinstance(value, types.ModuleType) else sys.modules[value.__module__])
        return self.modules[path]

    def function(self, func: Callable[..., Any]) -> str:
        if id(func) in self.seen:
            return self.seen[id(func)]
        self.seen[id(func)] = "recursive"
        code = func.__code__
        tree = _function_tree(func)
        body = ast.dump(tree) if tree is not None else code.co_code.hex() + repr(code.co_consts)
        path = user_file(func)
        if path is not None and path != self.job_file and func.__module__ in sys.modules:
            self.module(sys.modules[func.__module__])
        scope = func.__globals__
        refs = {name: self.value(scope[name]) for name in sorted(_names(code)) if name in scope}
        closure = {}
        for name, cell in zip(code.co_freevars, func.__closure__ or ()):
            try:
                closure[name] = self.value(cell.cell_contents)
            except ValueError:  # an empty cell
                closure[name] = None
        defaults = {"args": self.value(list(func.__defaults__ or ())),
                    "kwargs": self.value(dict(func.__kwdefaults__ or {}))}
        self.seen[id(func)] = digest({"body": body, "refs": refs, "closure": closure, "defaults": defaults})
        return self.seen[id(func)]


def code_parts(func: Callable[..., Any], job_file: str | None = None) -> dict[str, Any]:
    """What a stage runs: a hash of its code, and each user module it reaches with its hash.

    The code hash covers the function's syntax tree (comments, formatting and
    the docstring do not count), the helpers and constants it uses, its
    closure, its default arguments and the bodies of the UDFs it calls.
    Modules of the user's project other than the job file count whole.

    >>> def f(x): return x + 1
    >>> before = code_parts(f)["code"]
    >>> def f(x):
    ...     "docstrings do not count"
    ...     return x + 1   # nor do comments
    >>> code_parts(f)["code"] == before
    True
    """
    own = os.path.realpath(job_file) if job_file else user_file(func)
    hasher = _Hasher(own, getattr(func, "__module__", None))
    code = hasher.function(func)
    base = os.path.dirname(own or "")
    modules = {_short(path, base): h for path, h in hasher.modules.items() if path != own}
    return {"code": code, "modules": dict(sorted(modules.items()))}


def _short(path: str, base: str) -> str:
    """A module's path as the user would say it: relative to the job file's folder when inside it."""
    if base:
        rel = os.path.relpath(path, base)
        if not rel.startswith(".."):
            return rel
    return path


def library_versions() -> dict[str, str]:
    """The version of spark-recover, in every fingerprint.

    Spark's and Delta's are the engine's (``session.engine_versions``), never
    the pip packages installed here: under Spark Connect those are a client's.
    """
    from . import __version__

    return {"spark-recover": __version__}


_UNPINNED_READS = ("read", "readStream", "sql", "table")


def unpinned_reads(func: Callable[..., Any]) -> list[str]:
    """The ``spark.read``/``spark.table``/``spark.sql`` uses of a stage: reads no pin covers.

    >>> def s(spark):
    ...     return spark.table("sales.orders")
    >>> unpinned_reads(s)
    ['spark.table']
    """
    tree = _function_tree(func)
    if tree is None:
        return []
    return sorted({f"spark.{n.attr}" for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                   and isinstance(n.value, ast.Name) and n.value.id == "spark" and n.attr in _UNPINNED_READS})


def visible_params(func: Callable[..., Any]) -> frozenset[str] | None:
    """The parameter keys a stage reads, or ``None`` when it may read any.

    >>> def s(orders, params):
    ...     return orders.where(orders.day == params["day"])
    >>> sorted(visible_params(s))
    ['day']
    """
    if "params" not in inspect.signature(func).parameters:
        return frozenset()
    tree = _function_tree(func)
    if tree is None:
        return None
    keys: set[str] = set()
    parents: dict[int, ast.AST] = {}
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            parents[id(child)] = parent
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Name) and node.id == "params"):
            continue
        parent = parents.get(id(node))
        if isinstance(parent, ast.arg) or isinstance(parent, ast.arguments):
            continue
        if isinstance(parent, ast.Subscript) and parent.value is node \
                and isinstance(parent.slice, ast.Constant) and isinstance(parent.slice.value, str):
            keys.add(parent.slice.value)
            continue
        grand = parents.get(id(parent))
        if isinstance(parent, ast.Attribute) and parent.attr == "get" and isinstance(grand, ast.Call) \
                and grand.args and isinstance(grand.args[0], ast.Constant) \
                and isinstance(grand.args[0].value, str):
            keys.add(grand.args[0].value)
            continue
        return None  # params passed on or iterated: it may see every key
    return frozenset(keys)


def stage_fingerprint(parts: Mapping[str, Any]) -> str:
    """Digest of a stage's fingerprint parts."""
    return digest(dict(parts))


def explain_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Say in words what differs between two sets of fingerprint parts.

    >>> explain_change({"code": "a", "params": {"day": "1"}}, {"code": "a", "params": {"day": "2"}})
    "parameter 'day' changed ('1' -> '2')"
    """
    reasons: list[str] = []
    old_m, new_m = old.get("modules") or {}, new.get("modules") or {}
    changed_modules = [m for m in sorted(set(old_m) | set(new_m)) if old_m.get(m) != new_m.get(m)]
    for module in changed_modules:
        reasons.append(f"module {module} changed" if module in old_m and module in new_m
                       else f"module {module} {'added' if module in new_m else 'no longer used'}")
    if old.get("code") != new.get("code") and not changed_modules:
        reasons.append("code changed")
    old_p, new_p = old.get("params") or {}, new.get("params") or {}
    for key in sorted(set(old_p) | set(new_p)):
        if old_p.get(key) != new_p.get(key):
            reasons.append(f"parameter {key!r} changed ({old_p.get(key)!r} -> {new_p.get(key)!r})")
    old_s, new_s = old.get("sources") or {}, new.get("sources") or {}
    for key in sorted(set(old_s) | set(new_s)):
        if old_s.get(key) != new_s.get(key):
            reasons.append(f"source {key!r} changed ({_pin_text(old_s.get(key))} -> "
                           f"{_pin_text(new_s.get(key))})")
    old_i, new_i = old.get("inputs") or {}, new.get("inputs") or {}
    for key in sorted(set(old_i) | set(new_i)):
        if old_i.get(key) != new_i.get(key):
            reasons.append(f"input {key!r} changed")
    if old.get("session") != new.get("session"):
        reasons += _changed(old.get("session"), new.get("session"), "session settings",
                            "session setting {} changed ({} -> {})")
    for part in ("engine", "library"):
        old_v, new_v = old.get(part), new.get(part)
        if old_v != new_v:
            reasons += _changed(old_v, new_v, f"{part} versions", "{} version changed ({} -> {})")
    return "; ".join(reasons) or "fingerprint changed"


def _changed(old: Any, new: Any, what: str, each: str) -> list[str]:
    """Each differing key of two mappings in words (``unset`` where one lacks it)."""
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):  # a fingerprint made before they were recorded
        return [f"{what} {'not recorded before' if old is None else 'changed'}"]
    return [each.format(key, old.get(key, "unset"), new.get(key, "unset"))
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def _pin_text(pin: Any) -> str:
    if isinstance(pin, Mapping) and "version" in pin:
        return f"version {pin['version']}"
    if isinstance(pin, Mapping) and "listing" in pin:
        return f"{pin.get('files', '?')} files, listing {str(pin['listing'])[:8]}"
    return "absent" if pin is None else str(pin)
