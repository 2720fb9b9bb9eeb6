"""Which dead Spark Connect runs a run taking the lease stops first (pure, no JVM)."""

from __future__ import annotations

import importlib

import pytest

from spark_recover.history import RunRecord
from spark_recover.runner import dead_connect_runs
from spark_recover.session import _attach_url, dead_operations_text, stop_dead_operations
from spark_recover.testing import free_port


def _client_missing() -> str | None:
    """Why pyspark's Spark Connect client cannot load here (a pyspark without its ``connect`` extra), or None."""
    try:
        importlib.import_module("pyspark.sql.connect.client")
    except ImportError as exc:
        return str(exc)
    return None


needs_client = pytest.mark.skipif(_client_missing() is not None,
                                  reason=f"needs the Spark Connect client (pyspark[connect]): {_client_missing()}")
CONNECT = {"server": "127.0.0.1:15002", "session_id": "s", "user_id": None, "tag": "spark-recover-run-x"}


def _run(run_id: str, key: str = "k", connect=CONNECT, finished: bool = False) -> RunRecord:
    return RunRecord(run_id, "j", params_key=key, connect=connect, finished=finished)


def test_the_last_holder_and_the_replayed_run_if_they_died_over_connect():
    older, other_key, last = _run("older"), _run("other", key="k2"), _run("last")
    assert [r.run_id for r in dead_connect_runs([older, other_key, last], "new", "k", None)] == ["last"]
    assert [r.run_id for r in dead_connect_runs([older, last], "new", "k", older)] == ["last", "older"]
    assert dead_connect_runs([older, last], "new", "k", last) == [last]  # once


def test_finished_local_and_own_runs_are_left_alone():
    assert dead_connect_runs([_run("done", finished=True)], "new", "k", None) == []
    assert dead_connect_runs([_run("local", connect=None)], "new", "k", None) == []
    assert dead_connect_runs([_run("new")], "new", "k", None) == []


def test_what_it_says():
    assert dead_operations_text("r1", {"operations": ["op"], "seconds": 0.24, "unreachable": None}) == \
        "interrupted 1 operation of dead run r1 on the Spark Connect server and waited 0.2s for it to end"
    assert "no operation of it was still running" in \
        dead_operations_text("r1", {"operations": [], "seconds": 0.1, "unreachable": None})


@needs_client
def test_a_server_that_cannot_be_reached_is_said_so_at_once():
    """A real gRPC client against a closed port: no retries for minutes, the reason in a warning."""
    outcome = stop_dead_operations({**CONNECT, "server": f"127.0.0.1:{free_port()}",
                                    "session_id": "3d78969b-1892-44b4-bb5f-7b30defb3e0a"})
    assert outcome["operations"] == [] and "Connection refused" in outcome["unreachable"]
    assert dead_operations_text("r1", outcome).startswith("warning: dead run r1: its Spark Connect server cannot")


@needs_client
def test_the_dead_session_is_reached_with_the_channel_settings_of_the_same_server_only():
    dead = {**CONNECT, "user_id": "etl"}
    url = _attach_url(dead, remote="sc://127.0.0.1:15002/;token=abc;use_ssl=true;session_id=mine")
    assert url == "sc://127.0.0.1:15002/;token=abc;use_ssl=true;session_id=s;user_id=etl"
    assert _attach_url(dead, remote="sc://other:15002/;token=abc") == "sc://127.0.0.1:15002/;session_id=s;user_id=etl"
