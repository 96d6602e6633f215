# The two commands a new user needs: `make up` (run Sluice) and `make test` (run every test).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: up test bench vendor chromium clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

## Run Sluice on its embedded default: broker, SQLite, examples, web + runner + bridge + celery.
up: $(STAMP)
	$(PY) manage.py up

## Install what the tests need (Debian's chromium included) and run the whole suite.
test: $(STAMP) chromium
	$(PY) -m pytest $(PYTEST_ARGS)

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

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis tests/artifacts
