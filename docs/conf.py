"""Sphinx configuration of the book: `make book` -> build/book/index.html.

Sphinx + MyST-NB execute the tutorials (jupytext percent files, tutorials/NN_*.py) during the
build, so each page shows the code, its printed output and its figures; autodoc turns the
docstrings into the API reference. Everything the pages load is inside the site: the theme's
own assets and MathJax from the sphinx-mathjax-offline package (no CDN).

Before Sphinx reads anything, this file generates (all gitignored):
  docs/tutorials/NN_*.py       copies of tutorials/NN_*.py with one cell added after the title:
                               the notebook download link and the API entries the tutorial uses
  docs/_extra/notebooks/*.ipynb  the same tutorials as notebooks (served at notebooks/NN_*.ipynb)
  docs/api/*.md                the API reference pages, one autodoc entry per public name that
                               exists in this checkout (names still to come are skipped)
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import tinygrad_mha as tm  # noqa: E402

project = "tinygrad_mha"
author = "tinygrad_mha contributors"
release = version = tm.__version__
copyright = "tinygrad_mha contributors, MIT license"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
]

# ---------------------------------------------------------------- MathJax, offline
# The sphinx-mathjax-offline package ships MathJax 3; we copy it into _static/mathjax
# ourselves (its own extension does the same but forbids a parallel read) and point at it.
mathjax_path = "mathjax/tex-chtml.js"


def _copy_mathjax(app, exc):
    import importlib.util

    from sphinx.util.fileutil import copy_asset
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError('MathJax is missing: pip install -e ".[docs]" (sphinx-mathjax-offline)')
    if exc is None:
        source = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax"
        copy_asset(str(source), os.path.join(app.outdir, "_static", "mathjax"))


def _plain_docstring(app, what, name, obj, options, lines):
    """Our docstrings are plain text, where |x| means an absolute value, not an RST
    substitution: escape the bars so docutils prints them."""
    lines[:] = [line.replace("|", "\\|") for line in lines]


def setup(app):
    app.connect("build-finished", _copy_mathjax)
    app.connect("autodoc-process-docstring", _plain_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

# ---------------------------------------------------------------- API reference (generated)
# (page, title, [(module, names)]): a name that this checkout does not have yet is skipped,
# so entries such as tm.dot_product_attention appear as soon as they land.
API_PAGES = [
    ("autograd", "Tensor and autograd", [
        ("tinygrad_mha", ["Tensor", "no_grad", "enable_grad", "grad", "set_seed", "cuda_available"])]),
    ("functions", "Functions", [
        ("tinygrad_mha", ["einsum", "matmul", "tensordot", "softmax", "log_softmax", "dropout",
                          "dot_product_attention", "concatenate", "stack", "where", "use_kernels"])]),
    ("gradcheck", "Gradient checking", [
        ("tinygrad_mha", ["gradcheck", "gradgradcheck", "GradcheckError"])]),
    ("layers", "Layers", [
        ("tinygrad_mha.layers", ["MultiHeadAttention", "Dense", "EinsumDense", "Embedding",
                                 "LayerNormalization", "PositionalEncoding", "Sequential", "Model",
                                 "History", "Layer", "Parameter"])]),
    ("initializers", "Initializers", [("tinygrad_mha.initializers", None)]),
    ("regularizers", "Regularizers", [("tinygrad_mha.regularizers", None)]),
    ("constraints", "Constraints", [("tinygrad_mha.constraints", None)]),
    ("optimizers", "Optimizers", [("tinygrad_mha.optimizers", None)]),
    ("losses", "Losses", [("tinygrad_mha.losses", None)]),
    ("plotting", "Plotting", [("tinygrad_mha.plotting", None)]),
]


def _public(module_name, names):
    module = __import__(module_name, fromlist=["_"])
    if names is None:
        names = list(getattr(module, "__all__", None) or
                     [n for n, o in vars(module).items() if not n.startswith("_")
                      and (inspect.isfunction(o) or inspect.isclass(o))
                      and getattr(o, "__module__", "") == module_name])
    return [(n, getattr(module, n)) for n in names if hasattr(module, n)]


def write_api_pages() -> dict:
    """docs/api/*.md; returns {short name: (role, target)} for the tutorials' links."""
    out = DOCS / "api"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    targets, toc = {}, []
    for page, title, groups in API_PAGES:
        lines = [f"# {title}", ""]
        for module_name, names in groups:
            if module_name != "tinygrad_mha":
                lines += [f"```{{eval-rst}}\n.. automodule:: {module_name}\n   :no-members:\n```", ""]
            for name, obj in _public(module_name, names):
                full = f"{module_name}.{name}"
                if inspect.isclass(obj):
                    kind, options = "autoclass", ["   :members:", "   :show-inheritance:"]
                    if issubclass(obj, BaseException):
                        options = ["   :show-inheritance:"]
                elif callable(obj):
                    kind, options = "autofunction", []
                else:
                    kind, options = "autodata", ["   :annotation:"]
                lines += [f"```{{eval-rst}}\n.. {kind}:: {full}", *options, "```", ""]
                role = "class" if inspect.isclass(obj) else "func" if callable(obj) else "data"
                short = name if module_name == "tinygrad_mha" else f"{module_name.split('.')[-1]}.{name}"
                targets[short] = (role, full)
                if module_name == "tinygrad_mha.layers":
                    targets.setdefault(name, (role, full))
        (out / f"{page}.md").write_text("\n".join(lines), encoding="utf-8")
        toc.append(page)
    index = ["# API reference", "",
             "Generated from the docstrings. `import tinygrad_mha as tm`: the names on the first",
             "three pages are `tm.<name>`; the others live in their module (`tm.layers.Dense`,",
             "`tm.initializers.get`, ...).", "",
             "```{toctree}", ":maxdepth: 2", "", *toc, "```", ""]
    (out / "index.md").write_text("\n".join(index), encoding="utf-8")
    return targets


# ---------------------------------------------------------------- tutorials (generated copies)
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))


def _api_used(source: str, targets: dict) -> list:
    used = re.findall(r"\btm\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)", source)
    for imported in re.findall(r"from tinygrad_mha\.layers import ([\w, ()\n]+)", source):
        used += [n.strip() for n in imported.replace("(", "").replace(")", "").split(",")]
    seen = []
    for name in used:
        for candidate in (name, name.split(".")[0]):
            if candidate in targets and candidate not in seen:
                seen.append(candidate)
                break
    return seen


def write_tutorial_pages(targets: dict) -> None:
    import jupytext

    pages, notebooks = DOCS / "tutorials", DOCS / "_extra" / "notebooks"
    for folder in (pages, notebooks):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for path in TUTORIALS:
        source = path.read_text(encoding="utf-8")
        notebook = jupytext.reads(source, fmt="py:percent")
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                           "language": "python"}
        jupytext.write(notebook, notebooks / f"{path.stem}.ipynb", fmt="ipynb")
        links = ", ".join(f"{{py:{role}}}`~{target}`" for role, target in
                          (targets[n] for n in _api_used(source, targets)))
        cell = ["# %% [markdown]",
                f'# <p class="tm-download"><a href="../notebooks/{path.stem}.ipynb" download>'
                f"Download this tutorial as a notebook</a> ({path.stem}.ipynb), or run it with "
                f"<code>.venv/bin/python tutorials/{path.name}</code>.</p>",
                "#"]
        if links:
            cell.append(f"# **API used here:** {links}")
        cell.append("")
        # after the first cell (the title), so the page keeps the tutorial's own title
        parts = re.split(r"(?m)^(?=# %%)", source)
        first = next(i for i, p in enumerate(parts) if p.startswith("# %%"))
        parts.insert(first + 1, "\n".join(cell) + "\n")
        (pages / path.name).write_text("".join(parts), encoding="utf-8")


API_TARGETS = write_api_pages()
write_tutorial_pages(API_TARGETS)

# ---------------------------------------------------------------- sources and execution
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".py": "myst-nb"}
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
root_doc = "index"
exclude_patterns = ["_build", "_extra", "conf.py", "**.ipynb_checkpoints", "README.md"]
html_extra_path = ["_extra"]

nb_execution_mode = "force"             # every build runs every tutorial
nb_execution_raise_on_error = True      # a tutorial that fails breaks the build
nb_execution_timeout = int(os.environ.get("TINYGRAD_MHA_BOOK_TIMEOUT", "600"))
nb_execution_show_tb = True
nb_merge_streams = True
# Progress bars: a static page cannot update one, and tqdm's notebook widget (when ipywidgets is
# installed, as `make lab` does) would make MyST-NB load the widget manager from a CDN.
os.environ["TQDM_DISABLE"] = "1"      # the kernels inherit this process's environment
nb_ipywidgets_js = {}
nb_kernel_rgx_aliases = {".*": "python3"}   # the kernel of the Python running Sphinx
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "html_image"]
myst_heading_anchors = 3
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"undoc-members": False}
add_module_names = False

# ---------------------------------------------------------------- HTML
html_theme = "sphinx_book_theme"
html_title = f"tinygrad_mha {release}"
html_static_path = ["_static"]
html_css_files = ["book.css"]
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,   # our own plain link to the .ipynb is on every tutorial page
    "use_fullscreen_button": False,
}
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False
