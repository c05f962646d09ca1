# Two commands set everything up on a fresh machine with python3 and make:
#   make test   -> .venv with the dev extra, then the whole test suite
#   make demo   -> .venv, then the main job (python -m tinygrad_mha demo)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test test-reference demo bench plots clean notebooks

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	KERAS_BACKEND=jax $(BIN)/python -m pytest

# the suite again on the reference ops alone (tm.use_kernels(False) for the whole process);
# tutorials, figures and the slow stress tests run once, in `make test`
test-reference: $(STAMP)
	TINYGRAD_MHA_KERNELS=0 KERAS_BACKEND=jax $(BIN)/python -m pytest -q -m "not slow" \
		--ignore=tests/test_tutorials.py --ignore=tests/test_plotting.py

demo: $(STAMP)
	$(BIN)/python -m tinygrad_mha demo

# framework vs plain NumPy (ops, then a whole attention step), written to benchmarks/RESULTS.md;
# e.g. make bench BENCH_ARGS=--quick
bench: $(STAMP)
	$(BIN)/python -m tinygrad_mha bench $(BENCH_ARGS)

# every figure in plots/ (PNG, committed); trains the demo model on both tasks (under a minute)
plots: $(STAMP)
	$(BIN)/python -m tinygrad_mha plots --out plots

# tutorials/NN_*.py (jupytext percent cells) -> notebooks/NN_*.ipynb (gitignored)
notebooks: $(STAMP)
	mkdir -p notebooks
	for f in tutorials/[0-9][0-9]_*.py; do \
		$(BIN)/python -m jupytext --quiet --to ipynb --output notebooks/$$(basename $$f .py).ipynb $$f || exit 1; \
	done
	@echo "notebooks written to notebooks/ (open them with jupyter lab notebooks/)"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
