# Two commands set everything up on a fresh machine with python3 and make:
#   make test   -> .venv with the dev extra, then the whole test suite
#   make demo   -> .venv with the package alone (numpy, matplotlib, tqdm), then the main job;
#                  its figures go to build/demo/ (git-ignored; `make plots` rewrites plots/)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-package

.PHONY: test demo bench plots clean notebooks

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# the package and its runtime dependencies only: what `make demo` needs
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(DEMO_STAMP)

# the dev extra on top (pytest, hypothesis, jupytext; Keras for the comparisons on 3.11+)
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP) $(DEMO_STAMP)

test: $(STAMP)
	KERAS_BACKEND=jax $(BIN)/python -m pytest

demo: $(DEMO_STAMP)
	$(BIN)/python -m tinygrad_mha demo --out build/demo

# framework vs plain NumPy (ops, then a whole attention step), written to benchmarks/RESULTS.md;
# e.g. make bench BENCH_ARGS=--quick
bench: $(STAMP)
	$(BIN)/python -m tinygrad_mha bench $(BENCH_ARGS)

# every figure in plots/ (PNG, committed); trains the demo model on both tasks (under a minute)
plots: $(DEMO_STAMP)
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
