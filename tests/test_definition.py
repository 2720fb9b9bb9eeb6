"""Definitions are validated when declared: no Spark needed."""

import pytest

from spark_recover import Job
from spark_recover.errors import JobDefinitionError
from spark_recover.fingerprint import code_parts, explain_change, visible_params


def _job():
    job = Job("defs")
    job.source("orders", path="data/orders")
    return job


def test_stage_decorator_returns_function_unchanged():
    job = _job()

    def cleaned(orders):
        return orders

    assert job.stage(cleaned) is cleaned
    assert job.stage(name="again")(cleaned) is cleaned
    assert [s.name for s in job.stages] == ["cleaned", "again"]
    assert job.stages[0].inputs == ("orders",)


def test_unknown_input_names_the_known_ones():
    job = _job()
    with pytest.raises(JobDefinitionError) as info:
        @job.stage
        def cleaned(ordrs):
            return ordrs
    assert info.value.fields["input"] == "ordrs"
    assert info.value.fields["known"] == ["orders"]
    assert "expected a source or an earlier stage" in str(info.value)


def test_duplicate_name_is_refused():
    job = _job()
    with pytest.raises(JobDefinitionError, match="duplicate name 'orders'"):
        @job.stage
        def orders(spark):
            return spark.range(1)


def test_self_cycle_is_refused():
    job = _job()
    with pytest.raises(JobDefinitionError, match="reads itself"):
        @job.stage
        def loop(loop):
            return loop


@pytest.mark.parametrize("bad", ["1abc", "has space", "a/b", "", "class"])
def test_bad_stage_names(bad):
    job = _job()
    with pytest.raises(JobDefinitionError, match="bad stage name"):
        job.stage(name=bad)(lambda orders: orders)


def test_reserved_and_bad_job_names():
    with pytest.raises(JobDefinitionError, match="bad job name"):
        Job("no/slashes")
    with pytest.raises(JobDefinitionError, match="reserved"):
        _job().source("params", path="x")


def test_varargs_and_source_location_rules():
    job = _job()
    with pytest.raises(JobDefinitionError, match="unsupported parameter"):
        @job.stage
        def star(*frames):
            return frames[0]
    with pytest.raises(JobDefinitionError, match="exactly one location"):
        job.source("both", path="a", table="b")


def test_downstream_closure():
    job = _job()
    job.stage(name="a")(lambda orders: orders)

    def b(a):
        return a

    def c(orders):
        return orders

    def d(b, c):
        return b

    for f in (b, c, d):
        job.stage(f)
    assert job.downstream(["b"]) == {"b", "d"}
    with pytest.raises(JobDefinitionError, match="unknown stage 'zz'"):
        job.downstream(["zz"])


def test_visible_params():
    def reads_day(orders, params):
        return orders.where(orders.day == params["day"]).limit(int(params.get("n", 5)))

    def passes_params_on(orders, params):
        return helper(orders, params)

    def no_params(orders):
        return orders

    assert visible_params(reads_day) == {"day", "n"}
    assert visible_params(passes_params_on) is None
    assert visible_params(no_params) == frozenset()


def helper(orders, params):
    return orders


THRESHOLD = 3


def uses_constant(orders):
    return orders.where(orders.qty > THRESHOLD)


def test_code_hash_follows_module_constants(monkeypatch):
    before = code_parts(uses_constant)["code"]
    monkeypatch.setitem(globals(), "THRESHOLD", 4)
    assert code_parts(uses_constant)["code"] != before


def test_explain_change_names_each_part():
    old = {"code": "a", "params": {"t": "1"}, "sources": {"s": {"version": 1}}, "library": "0.1"}
    new = {"code": "b", "params": {"t": "2"}, "sources": {"s": {"version": 2}}, "library": "0.1"}
    assert explain_change(old, new) == ("code changed; parameter 't' changed ('1' -> '2'); "
                                        "source 's' changed (version 1 -> version 2)")
