# The two commands a new user needs: `make up` (run Sluice) and `make test` (run every test).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: up test bench vendor chromium postgres clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

## Run Sluice on its embedded default: broker, SQLite, examples, web + runner + bridge + celery.
up: $(STAMP)
	$(PY) manage.py up

# The tests that exercise the database's own behaviour (upserts, constraints, transactions,
# the monitor's queries), run a second time on a throwaway PostgreSQL server.
POSTGRES_TESTS ?= tests/test_projector.py tests/test_services.py tests/test_monitor_views.py \
	tests/test_api_runs.py tests/test_api_workflows.py tests/test_dead_letter_replay.py tests/test_alerts.py \
	tests/test_input_schema.py tests/test_verify_history.py tests/test_run_list_pages.py tests/test_upsert.py

## Install what the tests need (Debian's chromium and PostgreSQL included) and run the whole
## suite: everything on SQLite, then the database tests again on PostgreSQL.
test: $(STAMP) chromium postgres
	$(PY) -m pytest $(PYTEST_ARGS)
	./scripts/with-postgres $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS) $(POSTGRES_TESTS)

## Benchmarks (print tables; never part of the test suite).
bench: $(STAMP)
	$(PY) -m bench

## Re-vendor the canvas libraries from the pinned npm lockfile into static/vendor/.
vendor:
	./scripts/vendor.sh

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| { echo "could not install chromium: run 'apt-get install chromium' as root"; exit 1; }; }

postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "installing Debian's postgresql for the PostgreSQL run of the database tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
		|| { echo "could not install postgresql: run 'apt-get install postgresql' as root"; exit 1; }; }

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis tests/artifacts
