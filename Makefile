# gogate: `make run` starts the gateway with the development backend; `make test` runs the suite.
# Both create the virtualenv, install the dependencies and build the extension when needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-tools test-js autobahn fuzz lint bench bench-smoke clean

# Programs the tests run that pip cannot install, with the Debian package of each
# (.ci/run installs them): a real Redis, Prometheus' promtool, a headless browser.
TEST_TOOLS := redis-server:redis-server promtool:prometheus chromium:chromium npm:npm

$(STAMP): pyproject.toml setup.py gogate_fast/_fast.pyx gogate_fast/_fast.pxd
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m gogate --dev

test: test-tools $(STAMP) lint
	$(BIN)/python -m pytest
	GOGATE_NO_EXTENSIONS=1 $(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/test_protocol.py tests/test_delivery.py tests/test_lifetime.py tests/test_robustness.py
	$(MAKE) --no-print-directory test-js
	$(MAKE) --no-print-directory autobahn
	$(MAKE) --no-print-directory bench-smoke

# Another gateway to compare against in the load benchmarks, e.g.
#   make bench BASELINE='--baseline go=legacy:/path/to/original/gogate'
BASELINE ?=

# Every benchmark at tiny sizes: checks that they run and print their figures (no timing gates).
bench-smoke: $(STAMP)
	$(BIN)/python -m bench.micro --benchmark-max-time=0.01 --benchmark-min-rounds=1
	$(BIN)/python -m bench.loadgen all --smoke $(BASELINE)
	$(BIN)/python -m bench.scaleout --smoke
	$(BIN)/python -m bench.soak --smoke
	$(BIN)/python -m bench.streams_memory --smoke
	$(BIN)/python -m bench.redis_cost --smoke

# Autobahn|Testsuite's conformance cases against /ws, judged as a server that does not echo
# (rules in tests/autobahn/run.py). Needs Python 2.7; sets up .venv-autobahn/ on first use.
autobahn: $(STAMP)
	$(BIN)/python -m tests.autobahn.run

# The full load benchmarks (several minutes; run nothing else meanwhile).
bench: $(STAMP)
	$(BIN)/python -m bench.micro
	$(BIN)/python -m bench.loadgen all --repeat 2 $(BASELINE)
	$(BIN)/python -m bench.scaleout
	$(BIN)/python -m bench.streams_memory
	$(BIN)/python -m bench.redis_cost

# The TypeScript client and the demo page in headless Chromium against a real gateway; the
# committed demo bundle must be what `npm run build` makes.
test-js: $(STAMP)
	cd clients/js && npm ci --no-audit --no-fund --loglevel=error && npm test
	git diff --exit-code -- gogate/devbackend/static/demo.js

# The frame and event fuzz at length: 120,000 inputs against one gateway (about 20 minutes).
fuzz: $(STAMP)
	GOGATE_FUZZ_PROFILE=long $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=0 \
		tests/test_fuzz.py

# Stops with one line naming what to install when a program the tests need is missing.
test-tools:
	@missing=; for tool in $(TEST_TOOLS); do command -v $${tool%%:*} >/dev/null \
		|| missing="$$missing $${tool#*:}"; done; \
	if [ -n "$$missing" ]; then echo "make test needs programs that are not installed:" \
		"run 'apt-get install$$missing' (as .ci/run does)" >&2; exit 1; fi

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find gogate_fast -name '*.so' -delete
