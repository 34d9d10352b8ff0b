# `make demo` and `make test` set everything up on a fresh machine: they create .venv when it
# is missing and install the project (with its test tools) into it first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench

# The same seeded figures on every x86-64 CPU: MKL, oneDNN, ATen and numpy otherwise pick
# AVX-512 kernels where the CPU has them, whose float rounding differs from AVX2's, and a seeded
# training run (or a CBPE estimate) then lands elsewhere; tests pin those outputs. AVX2 costs
# little on small networks. (numpy refuses names outside its build's dispatch list: these are in it.)
export MKL_CBWR ?= AVX2
export DNNL_MAX_CPU_ISA ?= AVX2
export ATEN_CPU_CAPABILITY ?= avx2
export NPY_DISABLE_CPU_FEATURES ?= X86_V4 AVX512_ICL AVX512_SPR

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/driftpilot demo

test: $(STAMP)
	$(PY) -m pytest

# The measured tables of evals/ (about 25 minutes on two cores); each script writes its
# JSON and Markdown table under evals/results/.
bench: $(STAMP)
	$(PY) evals/drift_bench.py
	$(PY) evals/cbpe_bench.py
	$(PY) evals/incidents/run.py
	$(PY) evals/incremental_bench.py
	$(PY) evals/replay_bench.py
	$(PY) evals/release_bench.py

lint: $(STAMP)
	$(VENV)/bin/ruff check driftpilot tests
	python3 ../shared/tools/check_layers.py
