# ig-gate — every target installs what it needs itself (venv, Python packages, Debian packages when root).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# STAMP: the runtime alone (what `make demo` runs); DEV_STAMP: plus the [dev] extras (tests, lint, bench, fuzz)
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
DEBS_TEST := docker-registry nginx chromium wrk redis-server prometheus faketime prometheus-alertmanager
DEMO_PORT ?= 8080

.PHONY: help venv venv-dev deps-debian deps-node demo test test-mypyc lint bench bench-micro fuzz clean

help:
	@echo "make demo         build + sign the example bundle with a fresh dev key, serve a protected demo GraphQL app"
	@echo "make test         run the whole test suite (installs venv, Debian and npm test dependencies)"
	@echo "make test-mypyc   build the opt-in mypyc-compiled wheel (IG_GATE_MYPYC=1), run the request-path tests on it"
	@echo "make lint         ruff"
	@echo "make bench        side-by-side overhead benchmark (bare vs protected), writes bench/results/"
	@echo "make bench-micro  pytest-benchmark micro-benchmarks"
	@echo "make fuzz         run each fuzz harness (fuzz/) FUZZ_SECONDS (default 60), growing fuzz/corpus/"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[demo]'
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(DEV_STAMP)

venv: $(STAMP)

venv-dev: $(DEV_STAMP)

# Debian packages the tests and benchmarks drive for real; installed with apt-get when we are root.
deps-debian:
	@missing=""; for p in $(DEBS_TEST); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -q $$missing || (apt-get update -q && apt-get install -y -q $$missing)) >/dev/null; \
	  else echo "missing Debian packages:$$missing (run as root or install them)" >&2; exit 1; fi; \
	fi

deps-node:
	@# installed when missing, and again when package-lock.json is newer than what npm last installed
	@if [ -f tests/apollo/package.json ] && { [ ! -d tests/apollo/node_modules ] || \
	  [ tests/apollo/package-lock.json -nt tests/apollo/node_modules/.package-lock.json ]; }; then \
	  cd tests/apollo && npm install --no-audit --no-fund --silent; fi

demo: venv
	$(BIN)/python -m ig_gate.sidecar.demo --port $(DEMO_PORT)

test: venv-dev deps-debian deps-node
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --benchmark-disable --durations=20

# The opt-in compiled build (setup.py) against the request-path tests; not part of `make test`, which runs
# the same tests on the pure-Python modules: mypy and gcc take 1.5-3 min here. Needs gcc, the Python headers.
test-mypyc: venv-dev
	IG_GATE_TEST_MYPYC=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/packaging/test_mypyc_build.py

lint: venv-dev
	$(BIN)/ruff check .

bench: venv-dev deps-debian
	$(BIN)/python bench/overhead.py

bench-micro: venv-dev
	$(BIN)/python -m pytest -q bench --benchmark-only

# Coverage-guided fuzzing (atheris): each harness in turn, its corpus grown then minimised in the repo; a
# finding stops the run, saved as fuzz/findings/<target>-crash-<sha1>. `make test` runs a 2 s smoke of each.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=

fuzz: venv-dev
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

clean:
	rm -rf $(VENV) dist build *.egg-info .pytest_cache .benchmarks
