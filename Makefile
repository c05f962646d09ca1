# Two commands set everything up on a fresh machine with python3 and make:
#   make test   -> .venv with the dev extra, then the whole test suite
#   make demo   -> .venv, then the main job (python -m tinygrad_mha demo)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	KERAS_BACKEND=numpy $(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/python -m tinygrad_mha demo

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ops.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
