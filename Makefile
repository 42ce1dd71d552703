# Every target sets itself up: a fresh clone needs only Python >= 3.11 and make.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The first interpreter on PATH that is Python >= 3.11.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)

.PHONY: install demo test lint format bench bench-quick bench-ci clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "derbridge needs Python >= 3.11 on PATH" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/derbridge demo

test: $(STAMP)
	$(BIN)/pytest

# Benchmarks (docs/performance.md): one JSON object per scenario on stdout. PostgreSQL and RabbitMQ runs
# use DERBRIDGE_BENCH_POSTGRES_URL / DERBRIDGE_BENCH_AMQP_URL (or the test URLs) when set.
bench: $(STAMP)
	$(BIN)/derbridge bench

bench-quick: $(STAMP)
	$(BIN)/derbridge bench --quick

# What CI runs: the whole quick mode takes over 3 minutes on the 2-core machine, so CI keeps the scenarios
# that cover every backend: the event season (F4, F5, F7 on one world) on SQLite and PostgreSQL, the bridge
# on sql/SQLite, sql/PostgreSQL and amqp; and the CLI's start-up (about half a minute).
bench-ci: $(STAMP)
	$(BIN)/derbridge bench --quick --json f4-score-transfer f5-reservation f7-outcomes bridge-throughput \
		cli-version cli-read-only

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src

format: $(STAMP)
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
