"""Fingerprints: the key that decides whether a checkpoint may be reused.

A stage's fingerprint covers (DESIGN.md, semantics 2):

* its **code**: the function's syntax tree (comments, formatting and the
  docstring do not count), plus, recursively, the module-level helper
  functions and constants of the job file it refers to;
* the run **parameters it can see**: only the keys it reads as
  ``params["key"]`` or ``params.get("key")``, or all of them when it uses
  ``params`` any other way;
* the fingerprints of its **input stages** and the **pinned versions** of its
  sources;
* the **library version** (a new spark-recover may write checkpoints differently).

The parts are kept next to the digest, so a changed fingerprint can say *why*.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import textwrap
import types
from typing import Any, Callable, Mapping

__all__ = ["digest", "code_hash", "visible_params", "stage_fingerprint", "explain_change"]

_PRIMITIVES = (str, int, float, bool, bytes, type(None))


def digest(value: Any, size: int = 32) -> str:
    """A stable hex digest of a JSON-able value.

    >>> digest({"b": 1, "a": 2}) == digest({"a": 2, "b": 1})
    True
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def _function_tree(func: Callable[..., Any]) -> ast.AST | None:
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return None
    tree = ast.parse(source)
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


def _global_refs(func: Callable[..., Any], seen: set[int]) -> dict[str, Any]:
    refs: dict[str, Any] = {}
    module = getattr(func, "__module__", None)
    for name in sorted(_names(func.__code__)):
        if name not in func.__globals__:
            continue
        value = func.__globals__[name]
        if isinstance(value, _PRIMITIVES) or (isinstance(value, (tuple, frozenset)) and
                                              all(isinstance(v, _PRIMITIVES) for v in value)):
            refs[name] = repr(value)
        elif isinstance(value, types.FunctionType) and value.__module__ == module:
            refs[name] = _code_hash(value, seen)
        elif isinstance(value, type) and value.__module__ == module:
            try:
                refs[name] = digest(inspect.getsource(value))
            except (OSError, TypeError):
                pass
    return refs


def _code_hash(func: Callable[..., Any], seen: set[int]) -> str:
    if id(func) in seen:
        return "recursive"
    seen.add(id(func))
    tree = _function_tree(func)
    body = ast.dump(tree) if tree is not None else func.__code__.co_code.hex()
    return digest({"body": body, "refs": _global_refs(func, seen)})


def code_hash(func: Callable[..., Any]) -> str:
    """Hash of a function's code and of the job-file helpers and constants it uses.

    >>> def f(x): return x + 1
    >>> before = code_hash(f)
    >>> def f(x):
    ...     '''docstrings do not count'''
    ...     return x + 1   # nor do comments
    >>> code_hash(f) == before
    True
    """
    return _code_hash(func, set())


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
    if old.get("code") != new.get("code"):
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
    if old.get("library") != new.get("library"):
        reasons.append(f"spark-recover version changed ({old.get('library')} -> {new.get('library')})")
    return "; ".join(reasons) or "fingerprint changed"


def _pin_text(pin: Any) -> str:
    if isinstance(pin, Mapping) and "version" in pin:
        return f"version {pin['version']}"
    if isinstance(pin, Mapping) and "listing" in pin:
        return f"{pin.get('files', '?')} files, listing {str(pin['listing'])[:8]}"
    return "absent" if pin is None else str(pin)
