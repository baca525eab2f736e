# The two set-up commands: `make serve` starts the server on the embedded default (SQLite, keys
# made on first start); `make test` runs the suite on SQLite and on PostgreSQL. Both create the
# virtual environment in .venv first when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench bench-quick bench-scale clean

# uv installs the pinned dependencies in seconds where pip takes a minute or more; should uv
# not install, pip does the same work. Both compile the dependencies' bytecode at install, as
# pip does by default: with PYTHONDONTWRITEBYTECODE set, nothing else would, and every process
# (each CLI command, each server a test starts) would compile SQLAlchemy and the rest from source
# again, a second or more of its start.
UV_VERSION := 0.9.30
PIP := $(BIN)/pip install --quiet --disable-pip-version-check
UV := $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python
# Our own sources are installed editable; compiled before a run for the same reason (only what
# changed since is compiled again). The tests compile them themselves (tests/conftest.py).
COMPILE := $(BIN)/python -m compileall -q authsvc migrations

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) uv==$(UV_VERSION) 2>&1 | grep -v "^WARNING: Location" || true
	$(UV) -e '.[dev]' || \
		{ $(PIP) --upgrade pip && $(PIP) -e '.[dev]'; } 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import authsvc, fastapi, jwt, passlib, sqlalchemy"
	touch $(STAMP)

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(UV) -e '.[dev,bench]' || \
		$(PIP) -e '.[dev,bench]' 2>&1 | grep -v "^WARNING: Location" || true
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	touch $(BENCH_STAMP)

# The benchmarks (a few minutes; see docs/benchmarks.md). bench-quick is a < 60 s smoke run.
bench: $(BENCH_STAMP)
	@$(COMPILE)
	$(BIN)/python bench/run.py

bench-quick: $(BENCH_STAMP)
	@$(COMPILE)
	$(BIN)/python bench/run.py --quick

# At scale: PostgreSQL seeded with millions of rows against an empty one (~35 min on 2 cores).
bench-scale: $(BENCH_STAMP)
	@$(COMPILE)
	$(BIN)/python bench/scale.py

serve: $(STAMP)
	@$(COMPILE)
	$(BIN)/authsvc serve

# One worker more than there are cores (many tests wait on a server process they started); each
# test module runs whole on one worker, so its module-scoped servers start once, in the order
# tests/conftest.py gives them (xdist would otherwise start the modules with most tests first).
JOBS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))
test: $(STAMP)
	$(BIN)/pytest -n $(JOBS) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check authsvc tests migrations bench
	$(BIN)/ruff format --check authsvc tests migrations bench
	$(BIN)/mypy authsvc tests

clean:
	rm -rf $(VENV) .authsvc .pytest_cache .mypy_cache .ruff_cache
