"""The fingerprint's encoders and walk, without a JVM: every constant element by element,
classes by their methods, imports inside bodies, and a warning for what cannot be encoded."""

from __future__ import annotations

import importlib
import os
import sys
import warnings

import pytest

from spark_recover.errors import RefusedError
from spark_recover.fingerprint import FingerprintWarning, code_parts

from test_rules import _stage_code

HEAD = "import re\nfrom pyspark.sql import functions as F, types as T\n"


@pytest.mark.parametrize("before, after", [
    # a dict holding a callable: element by element, not reduced to its type
    ("LIMITS = {'min_id': 10, 'fmt': str.upper}\ndef s(df):\n    return df.limit(LIMITS['min_id'])\n",
     "LIMITS = {'min_id': 60, 'fmt': str.upper}\ndef s(df):\n    return df.limit(LIMITS['min_id'])\n"),
    ("LIMITS = {'fmt': str.upper}\ndef s(df):\n    return df.limit(LIMITS['fmt']('1'))\n",
     "LIMITS = {'fmt': str.lower}\ndef s(df):\n    return df.limit(LIMITS['fmt']('1'))\n"),
    # a schema by its JSON
    ("SCHEMA = T.StructType([T.StructField('v', T.IntegerType())])\n"
     "def s(df):\n    return df.select(F.from_json('j', SCHEMA))\n",
     "SCHEMA = T.StructType([T.StructField('v', T.LongType())])\n"
     "def s(df):\n    return df.select(F.from_json('j', SCHEMA))\n"),
    # a time zone constant changes results: by its key
    ("import zoneinfo\nTZ = zoneinfo.ZoneInfo('UTC')\ndef s(df):\n    return df.where(df.x == str(TZ))\n",
     "import zoneinfo\nTZ = zoneinfo.ZoneInfo('Europe/Paris')\ndef s(df):\n    return df.where(df.x == str(TZ))\n"),
    # a regex by pattern and flags
    ("PAT = re.compile('a+')\ndef s(df):\n    return df.where(df.x == PAT.pattern)\n",
     "PAT = re.compile('a+', re.I)\ndef s(df):\n    return df.where(df.x == PAT.pattern)\n"),
    # a job-file helper reached only through a class method
    ("def bucket(c):\n    return c % 3\nclass Rules:\n    def apply(self, df):\n        return bucket(df)\n"
     "def s(df):\n    return Rules().apply(df)\n",
     "def bucket(c):\n    return c % 7\nclass Rules:\n    def apply(self, df):\n        return bucket(df)\n"
     "def s(df):\n    return Rules().apply(df)\n"),
    # a base class's method
    ("class Base:\n    def n(self):\n        return 1\nclass Rules(Base):\n    pass\n"
     "def s(df):\n    return df.limit(Rules().n())\n",
     "class Base:\n    def n(self):\n        return 2\nclass Rules(Base):\n    pass\n"
     "def s(df):\n    return df.limit(Rules().n())\n"),
    # an instance of a user class, by its state
    ("class Conf:\n    def __init__(self, n):\n        self.n = n\nCONF = Conf(1)\n"
     "def s(df):\n    return df.limit(CONF.n)\n",
     "class Conf:\n    def __init__(self, n):\n        self.n = n\nCONF = Conf(2)\n"
     "def s(df):\n    return df.limit(CONF.n)\n"),
])
def test_every_constant_is_encoded_element_by_element(tmp_path, before, after):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FingerprintWarning)  # all of these encode faithfully
        first, second = _stage_code(HEAD + before, tmp_path), _stage_code(HEAD + after, tmp_path)
    assert first["code"] != second["code"]
    assert first == _stage_code(HEAD + before, tmp_path)  # and is stable
    assert "unencoded" not in first


def test_what_cannot_be_encoded_is_named_in_a_warning_and_in_the_parts(tmp_path):
    source = ("import threading\nLOCK = threading.Lock()\nRULES = {'when': [LOCK]}\n"
              "def s(df):\n    with RULES['when'][0]:\n        return df\n")
    with pytest.warns(FingerprintWarning, match=r"stage 's'.*RULES\['when'\]\[0\].*_thread.lock"):
        parts = _stage_code(source, tmp_path)
    assert parts["unencoded"] == ["RULES['when'][0] (_thread.lock)"]


def _notebook_stage(body: str):
    """Stage ``s`` defined in a notebook cell: module ``__main__``, no file."""
    scope = {"__name__": "__main__"}
    exec(compile("class Rules:\n    def apply(self, df):\n        return df.limit(" + body + ")\n"
                 "def s(df):\n    return Rules().apply(df)\n", "<cell>", "exec"), scope)
    return scope["s"]


def test_a_notebook_class_counts_by_its_methods_code():
    assert code_parts(_notebook_stage("1"))["code"] != code_parts(_notebook_stage("2"))["code"]
    assert code_parts(_notebook_stage("1"))["code"] == code_parts(_notebook_stage("1"))["code"]


def _write(path, text: str, tick: int) -> None:
    path.write_text(text)
    os.utime(path, (1_700_000_000 + tick, 1_700_000_000 + tick))  # never mistaken for the cached bytecode


def test_an_import_inside_the_body_is_covered_as_loaded_and_a_stale_module_refused(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    helper = tmp_path / "fp_unit_helpers.py"
    _write(helper, "THRESHOLD = 10\ndef cap(n):\n    return min(n, 100)\n", 0)
    source = "def s(df):\n    from fp_unit_helpers import THRESHOLD, cap\n    return df.limit(cap(THRESHOLD))\n"
    try:
        first = _stage_code(source, tmp_path)
        assert list(first["modules"]) == ["fp_unit_helpers.py"]
        _write(helper, "THRESHOLD = 50\ndef cap(n):\n    return min(n, 100)\n", 1)
        stale = _stage_code(source, tmp_path)  # this process still holds THRESHOLD = 10
        importlib.reload(sys.modules["fp_unit_helpers"])
        fresh = _stage_code(source, tmp_path)  # and now 50, from the same file
        assert fresh["modules"] == stale["modules"] != first["modules"]
        assert fresh["code"] != stale["code"]  # the value as loaded counts, not the file's
        _write(helper, "THRESHOLD = 50\ndef cap(n):\n    return min(n, 70)\n", 2)
        with pytest.raises(RefusedError, match=r"fp_unit_helpers\.py.*function cap.*restart the process") as info:
            _stage_code(source, tmp_path)  # the module's source no longer is the code this process runs
        assert info.value.fields["module"] == "fp_unit_helpers" and info.value.exit_code == 3
        importlib.reload(sys.modules["fp_unit_helpers"])
        assert _stage_code(source, tmp_path)["code"] != fresh["code"]
    finally:
        sys.modules.pop("fp_unit_helpers", None)


@pytest.mark.parametrize("module, source", [
    ("fp_unit_conf", "import fp_unit_conf\ndef s(df):\n    return df.limit(fp_unit_conf.LIMIT)\n"),
    ("fp_unit_body_conf", "def s(df):\n    import fp_unit_body_conf\n    return df.limit(fp_unit_body_conf.LIMIT)\n"),
])
def test_a_module_attribute_counts_as_loaded(tmp_path, monkeypatch, module, source):
    """Imported at module level or in the stage's body: the value the process holds counts."""
    monkeypatch.syspath_prepend(str(tmp_path))
    _write(tmp_path / f"{module}.py", "LIMIT = 10\n", 0)
    try:
        first = _stage_code(source, tmp_path)
        monkeypatch.setattr(sys.modules[module], "LIMIT", 20)  # as a test or a notebook may do
        assert _stage_code(source, tmp_path)["code"] != first["code"]
    finally:
        sys.modules.pop(module, None)


def test_builtins_and_library_callables_count_by_name(tmp_path):
    upper = _stage_code("import os\nF = {'f': str.upper, 'j': os.path.join, 'n': len}\n"
                        "def s(df):\n    return F\n", tmp_path)
    lower = _stage_code("import os\nF = {'f': str.lower, 'j': os.path.join, 'n': len}\n"
                        "def s(df):\n    return F\n", tmp_path)
    assert upper["code"] != lower["code"] and "unencoded" not in upper


def test_a_logger_is_encoded_by_name_without_a_warning(tmp_path):
    source = "import logging\nLOG = logging.getLogger('etl')\ndef s(df):\n    LOG.info('x')\n    return df\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FingerprintWarning)  # a logger in every stage must not warn on every run
        parts = _stage_code(source, tmp_path)
    assert not parts.get("unencoded")
