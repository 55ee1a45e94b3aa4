# fersuite — two commands do everything on a fresh machine: `make train` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test test-all lint format sweep gpu-check clean

# The venv is (re)built when pyproject.toml or the lock file changes.
$(STAMP): pyproject.toml requirements-lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c requirements-lock.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/fersuite-train model=mit_fer $(ARGS)

# Two pytest workers (pytest-xdist), one test file per worker at a time (--dist loadfile: a
# file's module-scoped fixtures are built once; the session-scoped ones of tests/_helpers, e.g.
# a trained run, once per worker). PYTEST_WORKERS=0: one process. The 15 slowest tests are
# listed at the end.
PYTEST_WORKERS ?= 2
XDIST = -n $(PYTEST_WORKERS) --dist loadfile

test: $(STAMP)
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(BIN)/python -m pytest -q $(XDIST) --durations=15 $(PYTEST_ARGS)

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(BIN)/python -m pytest -q -m '' $(XDIST) --durations=15 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard experiments)
	$(BIN)/ruff format --check src tests $(wildcard experiments)
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff format src tests $(wildcard experiments)
	$(BIN)/ruff check --fix src tests $(wildcard experiments)

# The model zoo of experiment=study_zoo with one seed: 5 models on a schedule where each learns.
sweep: $(STAMP)
	$(BIN)/fersuite-train --multirun experiment=study_zoo seed=0 $(ARGS)

# The GPU paths (bf16/fp16, distillation, compile, DDP, CUDA profiling) in < 8 min; no CUDA: exit 0.
gpu-check: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python experiments/gpu_check/run.py $(ARGS)

clean:
	rm -rf logs outputs multirun wandb .pytest_cache .ruff_cache
