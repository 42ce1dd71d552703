# Every target sets itself up: a fresh clone needs only Python >= 3.11 and make.
# What .venv holds is decided by the committed uv.lock, not by what PyPI serves that day: the Makefile
# bootstraps a pinned uv into .venv-tools/ and syncs .venv to the lock (docs/decisions/0036-uv-lock.md).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .venv-tools
UV := $(TOOLS)/bin/uv
UV_STAMP := $(TOOLS)/.installed
# The first interpreter on PATH that is Python 3.11 to 3.13: the versions uv.lock covers.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info < (3, 14))' \
	2>/dev/null && { echo $$p; break; }; done)

# uv uses the interpreter found above and never downloads one; it syncs this project's .venv whatever
# VIRTUAL_ENV says; and no index from the environment reaches it (the lock is PyPI only).
export UV_PYTHON_DOWNLOADS := never
unexport VIRTUAL_ENV UV_PROJECT_ENVIRONMENT UV_FROZEN UV_LOCKED UV_NO_SYNC
unexport UV_INDEX UV_DEFAULT_INDEX UV_INDEX_URL UV_EXTRA_INDEX_URL UV_FIND_LINKS UV_NO_INDEX UV_INDEX_STRATEGY
# Locking also ignores uv.toml files of the user or the machine (--no-config): only pyproject.toml decides.
UV_LOCK = $(UV) lock --no-config --python $(PYTHON)

.PHONY: install demo test test-fast test-faults lint format bench bench-quick bench-ci vendor-docs-assets lock lock-upgrade lock-check clean

define need_python
	@test -n "$(PYTHON)" || { echo "derbridge needs Python 3.11, 3.12 or 3.13 on PATH (uv.lock covers those)" >&2; exit 1; }
endef

# pip only installs uv here: exactly the files hashed in tools/uv-requirements.txt, from PyPI, whatever this
# machine's pip configuration adds (its extra indexes, find-links or constraints).
$(UV_STAMP): tools/uv-requirements.txt
	$(need_python)
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	env -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
		$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check --no-input \
		--index-url https://pypi.org/simple --only-binary :all: --require-hashes -r tools/uv-requirements.txt
	@touch $@

# Exactly what uv.lock says (packages not in it are removed); --frozen: the lock is not re-resolved here,
# CI checks it against pyproject.toml (make lock-check). --compile-bytecode: uv, unlike pip, writes no .pyc
# at install, and where PYTHONDONTWRITEBYTECODE is set (this machine sets it) every command would compile
# SQLAlchemy, pydantic & co. from source at each start: 1.9 s instead of 0.8 s for `messages stats`.
$(STAMP): uv.lock pyproject.toml $(UV_STAMP)
	$(need_python)
	$(UV) sync --frozen --extra dev --compile-bytecode --python $(PYTHON)
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/derbridge demo

test: $(STAMP)
	$(BIN)/pytest

# While working (about 2 minutes on 2 cores): the unit and domain tests and the flow tests on SQLite. Left out:
# tests marked slow (property tests with a hundred examples or more, fuzzers, processes) or postgres, and every
# other folder. Not a substitute for make test, which runs all of them (CI does) before a change is done.
# Without the fuzzers, schemathesis's pytest plugin is not loaded either (seconds of imports at each start).
test-fast: $(STAMP)
	$(BIN)/pytest tests/unit tests/flows -m "not slow and not postgres" -q -p no:schemathesis

# The fault suite (tests/fault/, about 10 minutes): the distributed topology as processes through SIGKILL,
# SIGSTOP, PostgreSQL and RabbitMQ restarts, latency, resets and partitions. Needs DERBRIDGE_TEST_POSTGRES_URL
# and DERBRIDGE_TEST_AMQP_URL; DERBRIDGE_FAULT_REAL_RESTARTS=1 restarts those servers for real (CI's own step
# only). Report: $${DERBRIDGE_FAULT_REPORT:-build/fault-report.json}.
test-faults: $(STAMP)
	DERBRIDGE_TEST_FAULTS=1 $(BIN)/pytest tests/fault -m fault -v

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

# lint-imports checks the layer contracts of pyproject.toml ([tool.importlinter]): which module may import which.
lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src
	$(BIN)/lint-imports --no-logo

format: $(STAMP)
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

# The Swagger UI and ReDoc files the API docs pages load, from the npm registry (needs npm, not the venv):
# the pinned versions again, or ARGS=--latest, or ARGS='--swagger-ui-dist X --redoc Y'. See
# src/derbridge/infra/docs_assets/README.md.
vendor-docs-assets:
	$(need_python)
	$(PYTHON) tools/vendor_docs_assets.py $(ARGS)

# The lock changes only on purpose, each time in a commit of its own (README, "Development").
# make lock: after a range in pyproject.toml changed; keeps every pin the new ranges still allow.
lock: $(UV_STAMP)
	$(need_python)
	$(UV_LOCK)

# make lock-upgrade: every package to the newest release its range allows (one package:
# .venv-tools/bin/uv lock --no-config --upgrade-package NAME); then make test, and commit uv.lock alone.
lock-upgrade: $(UV_STAMP)
	$(need_python)
	$(UV_LOCK) --upgrade

# What CI runs first: uv.lock must be the lock of pyproject.toml as committed, made with the pinned uv.
lock-check: $(UV_STAMP)
	$(need_python)
	@v=$$($(UV) --version | cut -d' ' -f2); grep -qx "required-version = \"==$$v\"" pyproject.toml || { \
		echo "uv $$v (tools/uv-requirements.txt) is not [tool.uv] required-version in pyproject.toml" >&2; exit 1; }
	@$(UV_LOCK) --check || { echo "uv.lock does not match pyproject.toml: run 'make lock' and commit uv.lock" >&2; \
		exit 1; }

clean:
	rm -rf $(VENV) $(TOOLS) var .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache
