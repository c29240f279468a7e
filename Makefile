# The two commands of README.md: `make lab` (the main job) and `make test` (the whole suite).
# Each bootstraps .venv from the pinned set in constraints.txt, so a fresh machine needs only
# python3 (>= 3.11), make and, for the tests, apt-get (Debian packages of real peers).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: lab test lint unit clean venv

# The suites that run a second time with every site on PostgreSQL (a private cluster).
PG_SUITES := tests/unit/store tests/unit/directory tests/unit/queue tests/unit/replication \
	tests/integration/imap/test_imap.py tests/integration/imap/test_imap_semantics.py \
	tests/integration/ims tests/integration/replication tests/integration/multiserver/test_claims.py

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,speed,postgres]'
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/sitemail lab up --dir lab

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP)
	scripts/test-deps.sh
	$(MAKE) lint
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest --database postgresql $(PG_SUITES)

clean:
	rm -rf $(VENV) lab .pytest_cache .mypy_cache .ruff_cache
