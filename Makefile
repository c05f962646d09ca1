# Two commands set everything up on a fresh machine with python3 and make:
#   make test   -> .venv with the dev extra, then the whole test suite
#   make demo   -> .venv with the package alone (numpy, matplotlib, tqdm), then the main job;
#                  its figures go to build/demo/ (git-ignored; `make plots` rewrites plots/)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-package

.PHONY: test test-reference test-gpu demo bench plots clean notebooks book lab

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

# the suite again on the reference ops alone (tm.use_kernels(False) for the whole process);
# tutorials, figures and the slow stress tests run once, in `make test`
test-reference: $(STAMP)
	TINYGRAD_MHA_KERNELS=0 KERAS_BACKEND=jax $(BIN)/python -m pytest -q -m "not slow" \
		--ignore=tests/test_tutorials.py --ignore=tests/test_plotting.py

# the whole suite with real CuPy on the GPU: the gpu extra (cupy-cuda12x) on top of dev, and
# TM_FAKE_CUDA=0 so no "cuda" case falls back to the NumPy stand-in; stops first without a GPU
GPU_STAMP := $(VENV)/.installed-gpu
$(GPU_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev,gpu]"
	touch $(GPU_STAMP)

test-gpu:
	@nvidia-smi -L >/dev/null 2>&1 || { echo "make test-gpu: no NVIDIA GPU here (nvidia-smi is missing or fails); run make test instead" >&2; exit 2; }
	@$(MAKE) --no-print-directory $(GPU_STAMP)
	@$(BIN)/python -c "import cupy; assert cupy.cuda.runtime.getDeviceCount() > 0" || { echo "make test-gpu: CuPy sees no GPU (see the error above; CUDA 13 needs cupy-cuda13x)" >&2; exit 2; }
	TM_FAKE_CUDA=0 KERAS_BACKEND=jax $(BIN)/python -m pytest

demo: $(DEMO_STAMP)
	$(BIN)/python -m tinygrad_mha demo --out build/demo

# framework vs plain NumPy (ops, then a whole attention step), written to benchmarks/RESULTS.md;
# e.g. make bench BENCH_ARGS=--quick
bench: $(STAMP)
	$(BIN)/python -m tinygrad_mha bench $(BENCH_ARGS)

# every figure in plots/ (PNG, committed); trains the demo model on both tasks (under a minute)
plots: $(DEMO_STAMP)
	$(BIN)/python -m tinygrad_mha plots --out plots

# tutorials/NN_*.py (jupytext percent cells) -> notebooks/NN_*.ipynb (gitignored), with the
# lab extra (JupyterLab, jupytext, ipykernel); a notebook newer than its tutorial (your edits) is kept
LAB_STAMP := $(VENV)/.installed-lab
NOTEBOOKS := $(patsubst tutorials/%.py,notebooks/%.ipynb,$(wildcard tutorials/[0-9][0-9]_*.py))

$(LAB_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[lab]"
	touch $(LAB_STAMP)

notebooks: $(NOTEBOOKS)
	@echo "notebooks in notebooks/ (make lab opens them in JupyterLab)"

notebooks/%.ipynb: tutorials/%.py | $(LAB_STAMP)
	@mkdir -p notebooks
	$(BIN)/python -m jupytext --quiet --set-kernel python3 --to ipynb --output $@ $<

# JupyterLab on the tutorials, in .venv, whose python3 kernel imports tinygrad_mha;
# e.g. make lab LAB_ARGS="--no-browser --port 8899"
lab: $(LAB_STAMP) notebooks
	$(BIN)/python -m jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# the book: every tutorial executed (outputs and figures inline), the exercises, the API
# reference -> build/book/index.html, a static site that works offline (docs extra)
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

book: $(DOCS_STAMP)
	rm -rf build/book
	$(BIN)/python -m sphinx -b html -j auto -q docs build/book
	@echo "the book: build/book/index.html"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
