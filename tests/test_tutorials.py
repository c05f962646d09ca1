"""Every tutorial runs as a script and as a notebook, and ends by asserting what it taught.

Scripts run as subprocesses in small mode (``TINYGRAD_MHA_SMALL=1``) with a non-interactive
matplotlib backend, from a temporary directory (so nothing they write lands in the repo).
The notebook test converts a tutorial with jupytext and executes its code cells in order in
one namespace, as a Jupyter kernel would (without needing one).
"""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
# the ones that run in-process as notebooks (the rest run as scripts only, to keep this fast)
AS_NOTEBOOKS = [p for p in TUTORIALS if p.name[:2] in {"01", "02", "03", "04", "05", "06"}]


def small_env(tmp_path: Path) -> dict:
    return dict(os.environ, TINYGRAD_MHA_SMALL="1", MPLBACKEND="Agg", TMPDIR=str(tmp_path),
                PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_the_first_six_tutorials_are_there():
    assert [p.name[:2] for p in TUTORIALS[:6]] == ["01", "02", "03", "04", "05", "06"]


def run_script(path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=small_env(tmp_path),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def script_runs(request, tmp_path_factory):
    """Start every selected tutorial script at once (a few at a time); each test awaits its own.

    The scripts are independent processes, so running them side by side keeps the wall time
    near that of the slowest one instead of the sum.
    """
    selected = [item.callspec.params["path"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_tutorial_runs_as_a_script"]
    pool = ThreadPoolExecutor(max_workers=max(2, min(6, os.cpu_count() or 2)))
    runs = {path: pool.submit(run_script, path, tmp_path_factory.mktemp(path.stem)) for path in selected}
    yield runs
    pool.shutdown(wait=True)


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_as_a_script(path, script_runs, tmp_path):
    run = script_runs.get(path)
    proc = run.result() if run is not None else run_script(path, tmp_path)
    assert proc.returncode == 0, f"{path.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_is_a_percent_notebook_that_ends_with_a_check(path):
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.read(path)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds[0] == "markdown" and "markdown" in kinds[1:] and "code" in kinds
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    assert any("import tinygrad_mha" in source for source in code), "tutorials import the package"
    assert "assert" in code[-1], "the last code cell must assert what the tutorial taught"


@pytest.mark.parametrize("path", AS_NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_runs_as_a_notebook(path, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    monkeypatch.setenv("TINYGRAD_MHA_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    # py -> ipynb on disk -> back, as `make notebooks` and a notebook server would
    ipynb = tmp_path / (path.stem + ".ipynb")
    jupytext.write(jupytext.read(path), ipynb, fmt="ipynb")
    notebook = nbformat.read(ipynb, as_version=4)
    nbformat.validate(notebook)
    namespace = {"__name__": "__main__"}  # like a kernel: no __file__
    cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert cells
    import tinygrad_mha as tm
    try:
        for number, cell in enumerate(cells):
            exec(compile(cell.source, f"<{path.stem} cell {number}>", "exec"), namespace)
    finally:
        tm.set_seed(None)  # a tutorial may seed the shared generator; give the next test a fresh one
    assert "SMALL" in namespace and namespace["SMALL"] is True


def test_make_notebooks_target_converts_with_jupytext(tmp_path):
    makefile = (ROOT / "Makefile").read_text()
    assert "\nnotebooks:" in makefile and "jupytext" in makefile
    assert "notebooks/" in (ROOT / ".gitignore").read_text().split()
    out = tmp_path / "01.ipynb"
    proc = subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--to", "ipynb", "--output", str(out),
                           str(TUTORIALS[0])], capture_output=True, text=True, timeout=120)
    if proc.returncode and "No module named jupytext" in proc.stderr:
        pytest.skip("jupytext is not installed (it is in the dev extra)")
    assert proc.returncode == 0, proc.stderr
    import nbformat
    notebook = nbformat.read(out, as_version=4)
    nbformat.validate(notebook)
    assert sum(c.cell_type == "code" for c in notebook.cells) >= 5


@pytest.fixture(scope="module")
def kernel_runs(request, tmp_path_factory):
    """Execute every selected tutorial in a real Jupyter kernel (nbclient), two at a time."""
    nbclient = pytest.importorskip("nbclient", reason='nbclient comes with the docs extra')
    pytest.importorskip("ipykernel", reason='ipykernel comes with the docs extra')
    jupytext = pytest.importorskip("jupytext")
    selected = [item.callspec.params["path"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_tutorial_runs_in_a_jupyter_kernel"]
    env = dict(TINYGRAD_MHA_SMALL="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment

    def execute(path):
        cwd = tmp_path_factory.mktemp(path.stem + "_kernel")
        notebook = jupytext.read(path)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(cwd)}}).execute()
        return notebook, cwd

    pool = ThreadPoolExecutor(max_workers=2)
    runs = {path: pool.submit(execute, path) for path in selected}
    yield runs
    pool.shutdown(wait=True)
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_in_a_jupyter_kernel(path, kernel_runs):
    """As a learner's notebook: every cell runs, figures are image/png outputs, nothing is written."""
    notebook, cwd = kernel_runs[path].result()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    if "show(" in path.read_text(encoding="utf-8"):
        assert images, f"{path.stem} draws a figure but the notebook has no image/png output"
    assert not any(cwd.iterdir()), f"{path.stem} wrote files: {sorted(p.name for p in cwd.iterdir())}"


def test_at_least_nine_tutorials_draw_a_figure():
    assert sum("show(" in p.read_text(encoding="utf-8") for p in TUTORIALS) >= 9
