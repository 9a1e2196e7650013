# gogate: `make run` starts the gateway with the development backend; `make test` runs the suite.
# Both create the virtualenv, install the dependencies and build the extension when needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench bench-smoke clean

$(STAMP): pyproject.toml setup.py gogate_fast/_fast.pyx gogate_fast/_fast.pxd
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m gogate --dev

test: $(STAMP) lint
	$(BIN)/python -m pytest
	GOGATE_NO_EXTENSIONS=1 $(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/test_protocol.py tests/test_delivery.py tests/test_lifetime.py tests/test_robustness.py
	$(MAKE) --no-print-directory bench-smoke

# Every benchmark at tiny sizes: checks that they run and print their figures (no timing gates).
bench-smoke: $(STAMP)
	$(BIN)/python -m bench.micro --benchmark-max-time=0.01 --benchmark-min-rounds=1
	$(BIN)/python -m bench.loadgen all --smoke
	$(BIN)/python -m bench.scaleout --smoke

# The full load benchmarks (several minutes; run nothing else meanwhile).
bench: $(STAMP)
	$(BIN)/python -m bench.micro
	$(BIN)/python -m bench.loadgen all --repeat 2
	$(BIN)/python -m bench.scaleout

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find gogate_fast -name '*.so' -delete
