"""Fingerprints: the key that decides whether a checkpoint may be reused.

A stage's fingerprint covers (DESIGN.md, semantics 2):

* its **code as this process loaded it**: the function's code object
  (bytecode, names, constants and nested functions; line numbers, comments,
  formatting and the docstring do not count), plus, recursively, what it
  reaches: the helper functions it calls, the modules and names it imports,
  in its body too, and the user's classes it uses (by their bases, their
  methods with what those reach, and their attributes), its closure, its
  default arguments and the bodies of the UDFs it calls;
* every **constant** it reaches, element by element: numbers, strings,
  containers, dataclasses, dates, decimals, enums, a pyspark ``DataType`` (a
  schema) by its JSON, a compiled regex by pattern and flags, an object of the
  user's own class by its state, a builtin or library callable by its
  qualified name (library code is covered by the versions);
* every **module of the user's project** it reaches (a sibling of the job
  file, a package of the repository, a module in a zip on the path: anything
  outside the standard library, site-packages and spark-recover), by its
  whole source read through the module's loader, and the user modules those
  import. A module holding a function its source no longer says (edited
  after import in a long-lived process) is refused (:class:`RefusedError`,
  exit 3) naming it: restart the process or reload the module. Values count
  as the process holds them, whatever the file says now;
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
data read from outside Spark, the environment, the clock, names a stage
reaches only dynamically (``getattr``, ``importlib`` with a computed name), or
the content of objects it cannot encode (a DataFrame, a ``Column``, a
session, a client, a lock): those count by their type only, are listed in the
parts under ``"unencoded"`` and named in a :class:`FingerprintWarning`.

The parts are kept next to the digest, so a changed fingerprint can say *why*.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import decimal
import enum
import dis
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import os
import re
import site
import sys
import sysconfig
import textwrap
import types
import uuid
import warnings
from typing import Any, Callable, Mapping

from .errors import RefusedError

__all__ = ["FingerprintWarning", "digest", "code_parts", "user_file", "library_versions", "unpinned_reads",
           "visible_params", "stage_fingerprint", "explain_change", "pin_text"]

_PRIMITIVES = (str, int, float, bool, bytes, type(None))


class FingerprintWarning(UserWarning):
    """A stage reaches a value the fingerprint cannot encode faithfully (only its type counts)."""


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


def _const_form(const: Any) -> Any:
    """A code constant as data; a frozenset (``x in {"a", "b"}``) sorted, so no hash seed shows through."""
    if isinstance(const, types.CodeType):
        return _code_form(const)
    if isinstance(const, (tuple, frozenset)):
        items = [_const_form(c) for c in const]
        return [type(const).__name__, sorted(items, key=repr) if isinstance(const, frozenset) else items]
    return [type(const).__name__, repr(const)]


def _code_form(code: types.CodeType, doc: str | None = None) -> list[Any]:
    """A loaded code object as data: its bytecode, names and constants, nested code included.

    Line numbers and file names do not count (so comments and formatting do
    not); ``doc``, the function's docstring, is left out of its constants.
    """
    consts = list(code.co_consts)
    if doc is not None and consts and consts[0] == doc:
        consts[0] = None
    return [code.co_code.hex(), code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars,
            code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags,
            [_const_form(c) for c in consts]]


def _imports(code: types.CodeType) -> list[tuple[str, int, tuple[str, ...]]]:
    """The imports a function body runs: ``(module, level, names imported from it)``."""
    found: list[tuple[str, int, tuple[str, ...]]] = []
    consts: list[Any] = []
    for ins in dis.get_instructions(code):
        if ins.opname == "LOAD_CONST":
            consts = [*consts[-1:], ins.argval]
        elif ins.opname == "IMPORT_NAME" and len(consts) == 2:
            level, fromlist = consts
            found.append((ins.argval, level if isinstance(level, int) else 0, tuple(fromlist or ())))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found += _imports(const)
    return found


def _source(module: types.ModuleType) -> str:
    """A module's source through its loader: a plain file, or a member of a zip on the path."""
    loader = getattr(module, "__loader__", None)
    try:
        source = loader.get_source(module.__name__) if loader is not None else None
    except (ImportError, OSError):
        source = None
    if source is None:
        raise RefusedError(f"cannot read the source of module {module.__name__}",
                           f"expected its loader to give the source of {module.__file__}, found none",
                           module=module.__name__, path=module.__file__)
    return source


def _stale_part(module: types.ModuleType, source: str) -> str | None:
    """A function ``module`` holds whose code its source no longer says, else ``None``.

    Each function and method defined in the module is compared, by qualified
    name, with the code its source compiles to now. Values (``THRESHOLD = 10``)
    are not compared: the stage hashes those it reaches as loaded, and a test
    may well have set one on purpose.
    """
    try:
        compiled = compile(source, module.__file__ or module.__name__, "exec", dont_inherit=True)
    except SyntaxError:
        return "source (it no longer compiles)"
    now: dict[str, list[Any]] = {}
    todo = [compiled]
    while todo:
        code = todo.pop()
        now.setdefault(code.co_qualname, []).append(_code_form(code))
        todo += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    for func in _defined_functions(module):
        if func.__code__.co_filename == compiled.co_filename and \
                _code_form(func.__code__) not in now.get(func.__code__.co_qualname, []):
            return f"function {func.__qualname__}"
    return None


def _defined_functions(module: types.ModuleType) -> list[types.FunctionType]:
    """The functions a module defines, its classes' methods included (not what it imports).

    A decorator's wrapper or a dataclass's generated method may claim the
    module too: the caller keeps those whose code comes from the module's file.
    """
    found: list[types.FunctionType] = []
    todo: list[Any] = list(vars(module).values())
    seen: set[int] = set()
    while todo:
        value = todo.pop()
        if id(value) in seen or getattr(value, "__module__", None) != module.__name__:
            continue
        seen.add(id(value))
        if isinstance(value, types.FunctionType):
            found.append(value)
        elif isinstance(value, type):
            todo += [_unwrap(v) for v in vars(value).values()]
    return found


def _unwrap(member: Any) -> Any:
    """The function behind a static or class method."""
    return member.__func__ if isinstance(member, (staticmethod, classmethod)) else member


# What a class's namespace holds that is Python's bookkeeping, not the user's code or data.
_CLASS_BOOKKEEPING = frozenset({"__dict__", "__weakref__", "__module__", "__qualname__", "__doc__",
                                "__annotations__", "__orig_bases__", "__parameters__", "_abc_impl"})
_SLOTS = (types.MemberDescriptorType, types.GetSetDescriptorType)
_BUILTIN_CALLABLES = (types.BuiltinFunctionType, types.MethodDescriptorType, types.WrapperDescriptorType,
                      types.MethodWrapperType, types.ClassMethodDescriptorType)


def _qualified(obj: Any) -> str:
    owner = getattr(obj, "__objclass__", None)
    module = getattr(obj, "__module__", None) or getattr(owner, "__module__", None) or "builtins"
    return f"{module}.{getattr(obj, '__qualname__', getattr(obj, '__name__', type(obj).__name__))}"


def _spark_type_json(value: Any) -> str | None:
    """A pyspark ``DataType`` (a schema) by its JSON; ``None`` for anything else."""
    types_module = sys.modules.get("pyspark.sql.types")  # not imported: the value cannot be one
    if types_module is not None and isinstance(value, types_module.DataType):
        return value.json()
    return None


class _Hasher:
    """Walks what a stage reaches: its code as loaded, helpers, modules of the user's project, values."""

    def __init__(self, job_file: str | None, home: str | None) -> None:
        self.job_file = job_file  # seen function by function; other user modules count whole
        self.home = home  # the stage's module (a notebook's __main__ has no file, but is the user's)
        self.seen: dict[int, Any] = {}
        self.modules: dict[str, str] = {}  # user module file -> digest of its source
        self.unencoded: list[str] = []  # "name (type)" of each value only its type stands for

    def mine(self, obj: Any) -> bool:
        """Whether a function or class is the user's own code (not a library's)."""
        return user_file(obj) is not None or getattr(obj, "__module__", None) == self.home

    def value(self, value: Any, name: str) -> Any:
        """A faithful, stable JSON form of ``value`` (``name`` says where it was found)."""
        inner = getattr(value, "func", None)
        if callable(inner) and hasattr(value, "returnType"):  # @F.udf, @F.pandas_udf
            return {"udf": self.value(inner, name), "returnType": str(value.returnType)}
        if isinstance(value, functools.partial):
            return {"partial": self.value(value.func, name), "args": self.value(list(value.args), name),
                    "kwargs": self.value(value.keywords, name)}
        if isinstance(value, types.MethodType):
            return {"method": self.value(value.__func__, name), "of": self.value(value.__self__, name)}
        if isinstance(value, types.FunctionType):
            return self.function(value) if self.mine(value) else _qualified(value)
        if isinstance(value, _BUILTIN_CALLABLES):  # str.upper, len: library code, covered by versions
            owner = getattr(value, "__self__", None)
            bound = owner is not None and not isinstance(owner, (types.ModuleType, type))
            return {"builtin": _qualified(value), "of": self.value(owner, name)} if bound else _qualified(value)
        if isinstance(value, types.ModuleType):
            return self.module(value) if user_file(value) else f"module {value.__name__}"
        if isinstance(value, type):
            return self.cls(value)
        if isinstance(value, bytes):
            return value.hex()
        if isinstance(value, _PRIMITIVES):
            return value
        return self.container(value, name)

    def container(self, value: Any, name: str) -> Any:
        """Containers element by element, then the other kinds of constants a job holds."""
        if id(value) in self.seen:  # a container that holds itself
            return "recursive"
        self.seen[id(value)] = value  # kept alive, so its id is not reused while we walk
        try:
            if isinstance(value, (list, tuple)):
                return [self.value(v, f"{name}[{i}]") for i, v in enumerate(value)]
            if isinstance(value, (set, frozenset)):
                return sorted((self.value(v, f"{name} element") for v in value), key=digest)
            if isinstance(value, dict):
                if all(isinstance(k, str) for k in value):
                    return {k: self.value(v, f"{name}[{k!r}]") for k, v in value.items()}
                return {"dict": sorted(([self.value(k, f"{name} key"), self.value(v, f"{name}[{k!r}]")]
                                        for k, v in value.items()), key=digest)}
            return self.instance(value, name)
        finally:
            del self.seen[id(value)]

    def instance(self, value: Any, name: str) -> Any:
        """An object that is not a container: by the encoding its kind has, else named as unencoded."""
        if dataclasses.is_dataclass(value):
            return {"dataclass": self.cls(type(value)),
                    "fields": {f.name: self.value(getattr(value, f.name), f"{name}.{f.name}")
                               for f in dataclasses.fields(value)}}
        if isinstance(value, (decimal.Decimal, dt.date, dt.time, dt.timedelta, enum.Enum, uuid.UUID)):
            return repr(value)
        if isinstance(value, dt.tzinfo):  # a time zone changes results: by its key (ZoneInfo) or its offset
            return {"tzinfo": getattr(value, "key", None) or str(value)}
        if isinstance(value, logging.Logger):  # writes logs, not data: its name is all that counts
            return {"logger": value.name}
        if isinstance(value, re.Pattern):
            return {"regex": self.value(value.pattern, name), "flags": value.flags}
        schema = _spark_type_json(value)
        if schema is not None:
            return {"spark type": schema}
        if isinstance(value, os.PathLike):
            return {"path": os.fspath(value)}
        kind = type(value)
        if self.mine(kind):  # an object of the user's own class: its class and its state
            state = vars(value) if hasattr(value, "__dict__") else \
                {s: getattr(value, s) for s in getattr(kind, "__slots__", ()) if hasattr(value, s)}
            return {"instance of": self.cls(kind), "state": self.value(dict(state), name)}
        # A session, a DataFrame, a Column, a client: we cannot see into it. Say so.
        self.unencoded.append(f"{name} ({_qualified(kind)})")
        return {"unencoded": _qualified(kind)}

    def cls(self, kind: type) -> Any:
        """A user's class by its bases, its methods as functions (with what they reach) and its attributes."""
        if not self.mine(kind):
            return _qualified(kind)
        if id(kind) in self.seen:
            return self.seen[id(kind)]
        self.seen[id(kind)] = f"class {kind.__qualname__}"  # a method that names its own class
        path = user_file(kind)
        if path is not None and path != self.job_file:
            self.module(sys.modules[kind.__module__])
        members = {}
        for key, member in sorted(vars(kind).items()):
            if key in _CLASS_BOOKKEEPING or key.startswith("__dataclass_") or \
                    (key.startswith("_") and key.endswith("_") and not key.startswith("__")) or \
                    isinstance(member, _SLOTS):  # Python's bookkeeping, enum's own names, a slot's accessor
                continue
            member = _unwrap(member)
            if isinstance(member, property):
                member = [member.fget, member.fset, member.fdel]
            members[key] = self.value(member, f"{kind.__qualname__}.{key}")
        bases = [self.value(b, kind.__qualname__) for b in kind.__bases__ if b is not object]
        self.seen[id(kind)] = digest({"class": kind.__qualname__, "bases": bases, "members": members})
        return self.seen[id(kind)]

    def module(self, module: types.ModuleType) -> str:
        """A user module counts whole (its source, as loaded), with the user modules it uses."""
        path = user_file(module)
        if path is None or path == self.job_file:
            return f"module {module.__name__}"
        if path not in self.modules:
            source = _source(module)
            stale = _stale_part(module, source)
            if stale is not None:
                raise RefusedError(
                    f"module {module.__name__} changed since this process imported it",
                    f"expected {path} to hold the code this process runs, found a different {stale}; "
                    "restart the process (or reload the module) so the fingerprint describes what runs",
                    module=module.__name__, path=path)
            self.modules[path] = hashlib.sha256(source.encode()).hexdigest()[:32]
            for value in list(vars(module).values()):
                if isinstance(value, types.ModuleType) or (
                        isinstance(value, (types.FunctionType, type)) and user_file(value) not in (None, path)):
                    self.module(value if isinstance(value, types.ModuleType) else sys.modules[value.__module__])
        return self.modules[path]

    def attributes(self, scope: Mapping[str, Any], names: set[str]) -> dict[str, Any]:
        """``helpers.THRESHOLD``: what a function may read from the user modules it names, as loaded.

        A module counts by its source; the values the process holds in it may
        differ (set since, or the file edited since import), so they count too.
        """
        out: dict[str, Any] = {}
        todo = [(name, scope[name]) for name in sorted(names) if name in scope]
        visited: set[int] = set()
        while todo:
            label, module = todo.pop()
            if not isinstance(module, types.ModuleType) or user_file(module) is None or id(module) in visited:
                continue
            visited.add(id(module))
            for attr in sorted(names & set(vars(module))):
                value = vars(module)[attr]
                out[f"{label}.{attr}"] = self.value(value, f"{label}.{attr}")
                todo.append((f"{label}.{attr}", value))
        return out

    def imported(self, func: types.FunctionType) -> dict[str, Any]:
        """What the imports inside a function's body bring in: modules and names, as loaded."""
        out: dict[str, Any] = {}
        bound: dict[str, Any] = {}  # what the imports bind, as the body's own names
        package = func.__globals__.get("__package__") or None
        for name, level, fromlist in _imports(func.__code__):
            label = f"import {'.' * level}{name}"
            try:
                target = importlib.util.resolve_name("." * level + name, package) if level else name
                module = sys.modules.get(target) or importlib.import_module(target)
            except Exception as exc:  # noqa: BLE001 -- it fails in the stage too; say what we saw
                self.unencoded.append(f"{label} in {func.__qualname__} (not importable: {exc})")
                out[label] = {"unencoded": "import"}
                continue
            out[label] = self.value(module, label)
            if not fromlist:  # `import a.b` binds `a`
                bound[target.split(".")[0]] = sys.modules.get(target.split(".")[0])
            for attr in fromlist:
                if attr == "*":
                    continue
                found = getattr(module, attr, None)
                if found is None:
                    found = sys.modules.get(f"{module.__name__}.{attr}")
                out[f"from {'.' * level}{name} import {attr}"] = self.value(found, attr)
                bound[attr] = found
        out.update(self.attributes(bound, _names(func.__code__)))  # `a.b.LIMIT` after `import a.b`
        return out

    def function(self, func: types.FunctionType) -> str:
        """A function by its loaded code, what it reads and imports, its closure and defaults."""
        if id(func) in self.seen:
            return self.seen[id(func)]
        self.seen[id(func)] = "recursive"
        code = func.__code__
        path = user_file(func)
        if path is not None and path != self.job_file and func.__module__ in sys.modules:
            self.module(sys.modules[func.__module__])
        scope, names = func.__globals__, _names(code)
        refs = {name: self.value(scope[name], name) for name in sorted(names) if name in scope}
        refs.update(self.attributes(scope, names))
        closure = {}
        for name, cell in zip(code.co_freevars, func.__closure__ or ()):
            try:
                closure[name] = self.value(cell.cell_contents, name)
            except ValueError:  # an empty cell
                closure[name] = None
        where = func.__qualname__
        defaults = {"args": self.value(list(func.__defaults__ or ()), f"{where} default"),
                    "kwargs": self.value(dict(func.__kwdefaults__ or {}), f"{where} default")}
        self.seen[id(func)] = digest({"body": _code_form(code, func.__doc__), "refs": refs,
                                      "imports": self.imported(func), "closure": closure,
                                      "defaults": defaults})
        return self.seen[id(func)]


def code_parts(func: Callable[..., Any], job_file: str | None = None, *, stage: str | None = None) -> dict[str, Any]:
    """What a stage runs: a hash of its code, and each user module it reaches with its hash.

    The code hash covers the function's code as this process loaded it
    (comments, formatting and the docstring do not count), the helpers,
    classes and constants it uses, what it imports in its body, its closure,
    its default arguments and the bodies of the UDFs it calls. Modules of the
    user's project other than the job file count whole, by their source; one
    whose source no longer is what the process loaded is refused
    (:class:`RefusedError`). Values that cannot be encoded are listed under
    ``"unencoded"`` and named in a :class:`FingerprintWarning` for ``stage``.

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
    parts: dict[str, Any] = {"code": code, "modules": dict(sorted(modules.items()))}
    if hasher.unencoded:
        parts["unencoded"] = sorted(set(hasher.unencoded))
        name = stage or getattr(func, "__name__", "?")
        warnings.warn(FingerprintWarning(
            f"stage {name!r}: the fingerprint cannot encode {', '.join(parts['unencoded'])}; only their type "
            "counts, so a change in their content will not make the stage recompute"), stacklevel=2)
    return parts


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
            reasons.append(f"source {key!r} changed ({pin_text(old_s.get(key))} -> "
                           f"{pin_text(new_s.get(key))})")
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
    if old.get("chunks") != new.get("chunks"):
        added = len(set(new.get("chunks") or []) - set(old.get("chunks") or []))
        gone = len(set(old.get("chunks") or []) - set(new.get("chunks") or []))
        reasons.append(f"its chunks changed ({added} added, {gone} gone)")
    return "; ".join(reasons) or "fingerprint changed"


def _changed(old: Any, new: Any, what: str, each: str) -> list[str]:
    """Each differing key of two mappings in words (``unset`` where one lacks it)."""
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):  # a fingerprint made before they were recorded
        return [f"{what} {'not recorded before' if old is None else 'changed'}"]
    return [each.format(key, old.get(key, "unset"), new.get(key, "unset"))
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def pin_text(pin: Any) -> str:
    """A source pin in words.

    >>> pin_text({"kind": "delta", "version": 3}), pin_text(None)
    ('version 3', 'absent')
    """
    if isinstance(pin, Mapping) and "version" in pin:
        return f"version {pin['version']}"
    if isinstance(pin, Mapping) and "listing" in pin:
        return f"{pin.get('files', '?')} files, listing {str(pin['listing'])[:8]}"
    return "absent" if pin is None else str(pin)
