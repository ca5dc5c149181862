# `make demo` and `make test` work on a fresh machine: they create .venv and install the project.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-fast test-long lint bench bench-gpu clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The demo is sized for CPU. libtpu (the test extra's TPU compiler, for --compile_only) would
# otherwise make JAX probe for a TPU first and log its failure; JAX_PLATFORMS=... overrides.
demo: install
	JAX_PLATFORMS=$${JAX_PLATFORMS:-cpu} $(BIN)/python tools/run_pipeline.py demo --out runs/demo

lint: install
	$(BIN)/ruff check scicot_jax tools tests bench
	$(BIN)/ruff format --check scicot_jax tools tests bench

# CI: everything but the long tests (the whole seeded demo, the 4-process pod), which would
# take CI past its 25 minutes on 2 cores.
test: install lint
	$(BIN)/python -m pytest -q -n 2 --durations=15 -m "not long" tests $(PYTEST_ARGS)

# The long tests: the README demo's claims on a seeded run, the 4-process pod (~30 min).
test-long: install
	$(BIN)/python -m pytest -q -n 2 --durations=15 -m long tests $(PYTEST_ARGS)

# The edit loop: the tests not marked slow.
test-fast: install
	$(BIN)/python -m pytest -q -n 2 -m "not slow" tests $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/decode.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/data.py
	$(BIN)/python bench/teacher.py

# One H100/H200, ~8 minutes: train and sampling vs Hugging Face, one JSON (bench_gpu.json).
bench-gpu: install
	$(BIN)/python bench/gpu.py --out bench_gpu.json

clean:
	rm -rf $(VENV) runs build *.egg-info
