# The README names two targets: `make demo` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-unit test-integration lint fmt clean sandbox-data up down bench browser java

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(MAKE) --no-print-directory java
	touch $(STAMP)

# The Spark linkage engine (pyspark, its test) needs a Java 17 runtime: installed here when `java` is missing (as
# root, Debian package openjdk-17-jre-headless), else how to install it is printed.
java:
	@if command -v java >/dev/null 2>&1; then \
	  true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Java 17 (Debian package openjdk-17-jre-headless) for the Spark linkage engine"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openjdk-17-jre-headless; \
	else \
	  echo "Java 17 is missing: the Spark linkage engine needs it and its tests will be skipped; install it with:"; \
	  echo "  sudo apt-get install -y --no-install-recommends openjdk-17-jre-headless"; \
	fi

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m devstack.demo

# The local Airflow stack (no Docker): UI on localhost, the asset-driven chain run by the real scheduler.
up: $(STAMP)
	$(BIN)/python -m devstack.localstack up

down:
	$(BIN)/python -m devstack.localstack down

# The real-browser test (tests/e2e/test_audit_ui.py) drives the system Chromium, never a downloaded one:
# installed here when missing (as root, Debian package `chromium`), else how to install it is printed.
browser:
	@if command -v chromium >/dev/null 2>&1; then \
	  true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Chromium (Debian package chromium) for the browser test"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core; \
	else \
	  echo "Chromium is missing, the browser test will be skipped; install it with:"; \
	  echo "  sudo apt-get install -y --no-install-recommends chromium"; \
	fi

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Every pipeline benchmark at one size (docs/benchmarks.md); writes benchmarks/results/bench-<N>.json.
# SCALE=province (default): 2,000,000 citizens, 150k enterprises (ratio 0.075), parcel ratio 1.0.
# SCALE=small: 20,000 citizens, CI-sized (~1.5 min). SCALE=<number>: that many citizens.
SCALE ?= province
BENCH_CITIZENS = $(if $(filter province,$(SCALE)),2000000,$(if $(filter small,$(SCALE)),20000,$(SCALE)))
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --citizens $(BENCH_CITIZENS)

clean:
	rm -rf var .pytest_cache .ruff_cache
