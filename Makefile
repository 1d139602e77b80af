# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
AIRFLOW_VERSION ?= 3.3.2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(AIRFLOW_VERSION)

.PHONY: venv demo test test-fast test-distributed test-matrix bench lint package clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "apache-airflow==$(AIRFLOW_VERSION)" -e ".[dev]" --config-settings editable_mode=compat
	# the install's metadata lives in the venv; a second copy in the source tree (on sys.path) makes
	# Airflow find the plugin twice ("already registered"), and then OpenLineage emits no task events
	rm -rf airflow_provider_empirical.egg-info
	touch $@

venv: $(STAMP)

## Run the example DAG for real against the local emulator (or the real API with EMPIRICAL_API_KEY set).
demo: venv
	$(BIN)/python scripts/demo.py

## The whole test suite: tests/unit and tests/integration four at a time (they mostly wait on sockets),
## then tests/e2e (DAG runs, the deployment tier, the browser) one at a time.
test: venv
	$(BIN)/python -m pytest -n 4 tests/unit tests/integration
	$(BIN)/python -m pytest tests/e2e

## Unit (milliseconds) and integration (real HTTP to the emulator and loopback servers) tests only,
## four at a time: most of their time is spent waiting on sockets and timeouts, not on the CPU.
test-fast: venv
	$(BIN)/python -m pytest -n 4 tests/unit tests/integration

## The distributed tier (tests/distributed): CeleryExecutor, PostgreSQL, Redis, 2 Celery workers and
## 2 triggerers as local processes, in a venv of its own (pinned in tests/distributed/constraints.txt;
## the main .venv is never touched). PostgreSQL and Redis come from Debian (scripts/install-services.sh).
DVENV := .venv-distributed
DSTAMP := $(DVENV)/.installed-$(AIRFLOW_VERSION)
$(DSTAMP): pyproject.toml tests/distributed/constraints.txt
	test -x $(DVENV)/bin/python || $(PYTHON) -m venv $(DVENV)
	$(DVENV)/bin/python -m pip install -q --upgrade pip
	$(DVENV)/bin/python -m pip install -q -c tests/distributed/constraints.txt "apache-airflow==$(AIRFLOW_VERSION)" \
		apache-airflow-providers-celery psycopg2-binary asyncpg pytest -e . --config-settings editable_mode=compat
	rm -rf airflow_provider_empirical.egg-info  # as for .venv: one copy of the install's metadata
	touch $@

test-distributed: $(DSTAMP)
	bash scripts/install-services.sh
	EMPIRICAL_DISTRIBUTED_TIER=1 $(DVENV)/bin/python -m pytest -m distributed tests/distributed

## Performance figures, side by side with the dbt Cloud provider (not part of make test).
bench: venv
	test -f $(VENV)/.installed-bench || $(BIN)/python -m pip install -q "apache-airflow==$(AIRFLOW_VERSION)" "apache-airflow-providers-dbt-cloud>=4.11"
	touch $(VENV)/.installed-bench
	$(BIN)/python bench/run_all.py

## Unit and end-to-end suites on Airflow 2.11, 3.1 and 3.3, and the OpenLineage tests in their own venv.
test-matrix: venv
	bash scripts/test-matrix.sh

## ruff (lint + format) on the whole tree: package, tests, bench, scripts, examples; mypy --strict on the package.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy airflow_provider_empirical

## Wheel + sdist, twine check, install into a fresh venv with only Airflow.
package: venv
	bash scripts/check-package.sh

clean:
	rm -rf $(VENV) $(DVENV) build dist *.egg-info
