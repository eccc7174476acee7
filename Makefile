# `make demo` and `make test` set everything up on a fresh machine: a virtual
# environment in .venv, PyTorch pinned by constraints.txt (CPU wheel by default),
# the package in editable mode, and for tests the dev extra.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint docs docs-strict typecheck bench clean

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

# ruff, then pyright on the package (typecheck).
lint: $(DEV_STAMP) typecheck
	$(VENV)/bin/ruff check hyperode tests benchmarks examples docs/hooks

# The documentation site, built offline into site/ (mkdocs.yml). NO_MKDOCS_2_WARNING
# silences the theme's notice about its successor, which is not a build problem.
docs: $(DEV_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --quiet

# The same build in strict mode: a broken link, anchor or API reference fails it.
docs-strict: $(DEV_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --quiet --strict

# pyright on the package ([tool.pyright] in pyproject.toml): 0 errors expected; part of
# `lint` and so of `test`.
typecheck: $(DEV_STAMP)
	$(VENV)/bin/pyright

# pytest exits 5 when it collects no test: say so loudly rather than fail CI on it.
test: lint typecheck docs-strict
	$(PY) -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "WARNING: pytest collected no tests"; exit 0; fi; \
	exit $$status

bench: $(DEV_STAMP)
	$(PY) benchmarks/solver_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info site
