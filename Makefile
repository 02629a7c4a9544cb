# Two entry points, each doing all set-up on a fresh machine with Python 3 and make:
#   make reproduce   create .venv, install, run the paper's experiments in quick mode (writes runs/reproduce)
#   make test        create .venv with the test extras, run lint (ruff), types (mypy) and the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build of torch, pinned for fast installs (the package itself accepts torch>=2.3).
PIP_INSTALL := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt
# Data that is available offline on the project machines (see README, "Data").
SHARED_DATA := $(abspath ../shared/data)
export COARSEGRAD_DATA ?= $(if $(wildcard $(SHARED_DATA)/mnist),$(SHARED_DATA),)

.PHONY: reproduce test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-%: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e ".[$*]"
	touch $@

reproduce: $(VENV)/.installed-plot
	$(BIN)/coarsegrad reproduce --quick --out runs/reproduce

test: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs
