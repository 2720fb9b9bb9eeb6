# The README's two commands: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test soak test-cluster test-connect test-compat test-browser setup bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints/spark-4.2.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11" >&2; exit 2; }
	@command -v java >/dev/null || test -n "$$JAVA_HOME" || { echo "error: Java 17 not found; install OpenJDK 17 (apt-get install openjdk-17-jre-headless) or set JAVA_HOME" >&2; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints/spark-4.2.txt -e ".[local,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m jobs.demo

test: $(STAMP)
	$(BIN)/python -m pytest

# The long real-process tests (damaged state, racing drivers), then a drill of the four-sink test job with real
# `run --resume` recoveries and killed rollbacks (CI: 20 kills).
KILLS ?= 20
soak: $(STAMP)
	$(BIN)/python -m pytest -m soak
	$(BIN)/python tests/soak.py --kills $(KILLS)

# A standalone master and two workers plus an S3 server (moto) on localhost: the demo job through
# spark-submit with root, sources and sinks on S3 (clean, executor killed, driver killed + resume, rollback).
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -m cluster -s -p no:cacheprovider tests/test_cluster.py tests/test_s3_commits.py

# One Spark Connect server with Delta for the session; the tests' session and the job processes are its
# clients: the Connect tests, and the sink, recovery, replay and retention tests again, through Connect, and a
# parallel backfill into shared tables (its MERGE conflicts are retried in new server sessions).
test-connect: $(STAMP)
	$(BIN)/python -m pytest --connect -m "not soak and not cluster" -p no:cacheprovider \
	  tests/test_connect.py tests/test_sinks.py tests/test_recovery.py tests/test_replay.py tests/test_retention.py \
	  tests/test_session_settings.py tests/test_backfill.py::test_a_parallel_backfill_into_shared_tables_commits_each_value_once

# The compatibility matrix (tests/compat.py): spark-recover installed into environments that already hold
# Spark 3.5 + delta-spark 3.3, Spark 4.0 + delta-spark 4.0, Spark 4.2.1 alone and Spark 4.3 (no Delta: refused),
# and a Connect-only client (pyspark-client) against a server; environments kept in .compat/.
test-compat: $(STAMP)
	$(BIN)/python tests/compat.py

# The report in Debian's headless Chromium (apt-get install chromium chromium-driver; .ci/run installs them).
test-browser: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints/spark-4.2.txt -e ".[local,test,browser]"
	$(BIN)/python -m pytest -m browser -p no:cacheprovider tests/test_report_browser.py

# Benchmarks side by side (bench/results/latest.json and latest.md); BENCH=--large for bigger sizes.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints/spark-4.2.txt -e ".[local,test,bench]"
	$(BIN)/python -m bench $(BENCH)
	$(BIN)/python -m bench.lease_race --trials 20
	$(BIN)/python -m bench.connect --rounds 2
	$(BIN)/python -m bench.history --e2e
	$(BIN)/python -m bench.chunks

clean:
	rm -rf $(VENV) .compat .spark-recover demo-data
