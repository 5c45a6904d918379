# optaxlab: the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.optaxlab-installed
RUNTIME_STAMP := $(VENV)/.optaxlab-runtime-installed
PYTEST_WORKERS ?= 2

.PHONY: install install-aot demo demo-quadratic experiments test test-slow test-all aot lint bench clean

# The runtime alone (what `make demo` needs); the test extras add torch (the test-only reference).
$(RUNTIME_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(RUNTIME_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch 2.13.0 is the CPU wheel (test-only reference); pin it first so nothing pulls a CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP) $(RUNTIME_STAMP)

install: $(STAMP)

demo: $(RUNTIME_STAMP)
	$(PY) experiments/demo.py

demo-quadratic: $(RUNTIME_STAMP)
	$(PY) experiments/demo_quadratic.py

# One script per reproduced figure, named after its paper (docs/papers.md); not the demos.
PAPER_EXPERIMENTS := $(filter-out experiments/demo%.py experiments/_common.py,$(sort $(wildcard experiments/*.py)))

experiments: $(RUNTIME_STAMP)
	@for f in $(PAPER_EXPERIMENTS); do echo "== $$f"; $(PY) $$f || exit 1; done

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not aot" -n $(PYTEST_WORKERS) -q

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow and not aot" -q

test-all: $(STAMP)
	$(PY) -m pytest -m "not aot" -n $(PYTEST_WORKERS) -q

# Deviceless TPU / GPU compiles (libtpu + jax's CUDA plugin, no accelerator needed): the `aot`
# tests, then issue 19's table, one compile at a time (docs/accelerators.md).
AOT_STAMP := $(VENV)/.optaxlab-aot-installed
$(AOT_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,tpu-aot,gpu-aot]"
	touch $(AOT_STAMP)

install-aot: $(AOT_STAMP)

aot: $(AOT_STAMP)
	$(PY) -m pytest -m aot -q tests/train/test_aot.py
	$(PY) -m optaxlab.train.aot --table --json --json_out=aot_table.json

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	@for f in experiments/benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
