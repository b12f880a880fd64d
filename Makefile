# Every target installs what it needs into a local virtualenv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint format bench migrate purge report s3 clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install  ## start callrec on its embedded defaults (SQLite + SeaweedFS under ./var)
	$(BIN)/callrec serve

test: install  ## the whole test suite (PostgreSQL tests skip, visibly, if none is reachable)
	$(BIN)/pytest

lint: install  ## ruff, formatting, mypy --strict, and the layering contract
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install  ## benchmarks; each prints its figures and the ratio to a same-run baseline
	$(BIN)/python -m bench

migrate: install  ## apply database migrations
	$(BIN)/callrec migrate

purge: install  ## withdraw expired purposes and purge what has none left (ARGS="--dry-run")
	$(BIN)/callrec purge $(ARGS)

report: install  ## the retention report as an HTML dashboard in CALLREC_DATA_DIR (default var/)
	$(BIN)/callrec report --out "$(or $(CALLREC_DATA_DIR),var)/retention-report.html" $(ARGS)

s3: install  ## run the embedded SeaweedFS S3 alone
	$(BIN)/callrec s3 serve

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
