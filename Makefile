# `make demo` and `make test` set everything up on a fresh machine: they create .venv when it
# is missing and install the project (with its test tools) into it first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/driftpilot demo

test: $(STAMP)
	$(PY) -m pytest

# The edit-test cycle: everything but the tests marked slow (whole demo and replay runs, processes
# killed mid-step, statistical checks over many seeds); under two minutes on two cores.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

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
	$(VENV)/bin/ruff format --check driftpilot tests
	$(VENV)/bin/mypy
	python3 ../shared/tools/check_layers.py
