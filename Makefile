# `make demo` and `make test` set everything up on a fresh machine: a virtual
# environment in .venv, PyTorch pinned by constraints.txt (CPU wheel by default),
# the package in editable mode, and for tests the dev extra.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUN_STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet -c constraints.txt torch
	$(PY) -m pip install --quiet -c constraints.txt -e .
	touch $@

$(DEV_STAMP): $(RUN_STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

demo: $(RUN_STAMP)
	$(PY) -m hyperode demo

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check hyperode tests benchmarks

# pytest exits 5 when it collects no test: say so loudly rather than fail CI on it.
test: lint
	$(PY) -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "WARNING: pytest collected no tests"; exit 0; fi; \
	exit $$status

bench: $(DEV_STAMP)
	$(PY) benchmarks/solver_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
