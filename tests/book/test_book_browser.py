"""The book, checked in a real browser: headless Chromium on the built site, network cut off.

Not part of plain ``make test`` (it needs the docs extra and a Chromium): it runs when
``TINYGRAD_MHA_BROWSER=1``. ``.ci/run`` does, after ``make book``:

    apt-get install -y chromium                 # Debian's browser; Playwright drives it
    make book
    TINYGRAD_MHA_BROWSER=1 .venv/bin/python -m pytest tests/book -q

``TINYGRAD_MHA_BOOK=DIR`` checks another build (default ``build/book``; built first if missing).
The site is served on 127.0.0.1 and every request to any other host is blocked and recorded:
a page that needs the network (a CDN script, a web font, MathJax) fails the check.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

if os.environ.get("TINYGRAD_MHA_BROWSER", "") in ("", "0"):
    pytest.skip("the browser check of the book runs with TINYGRAD_MHA_BROWSER=1 (see .ci/run)",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
BOOK = Path(os.environ.get("TINYGRAD_MHA_BOOK", ROOT / "build" / "book")).resolve()
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
# the public names the API pages must show (issue #14); those not in this checkout yet are skipped
API_NAMES = ["Tensor", "no_grad", "grad", "einsum", "matmul", "softmax", "log_softmax", "dropout",
             "dot_product_attention", "use_kernels", "gradcheck", "gradgradcheck",
             "MultiHeadAttention", "Dense", "Embedding", "LayerNormalization", "PositionalEncoding",
             "Sequential", "Model", "SGD", "Adam", "AdamW", "get"]
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|\w+Error: .*\n.*File \"")
# a library warning leaking into a cell's output (a learner reads it as something gone wrong)
STRAY_WARNING = re.compile(r"\w+Warning: ")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("no Chromium: apt-get install -y chromium")


@pytest.fixture(scope="module")
def site():
    if not (BOOK / "index.html").exists():
        subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-j", "auto", "-q",
                        str(ROOT / "docs"), str(BOOK)], check=True, cwd=ROOT)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(BOOK))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def visits(site):
    """Load every page once in Chromium; record what each showed and every outside request."""
    sync_api = pytest.importorskip("playwright.sync_api", reason='pip install -e ".[docs]"')
    pages = sorted(p.relative_to(BOOK).as_posix() for p in BOOK.rglob("*.html")
                   if not p.relative_to(BOOK).as_posix().startswith(("_sources/", "_static/")))
    assert "index.html" in pages
    outside, failed, results = [], [], {}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium(),
            # no DNS for anything but this machine: the network is cut off
            args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"])
        context = browser.new_context()

        def route(route_):
            host = urllib.parse.urlsplit(route_.request.url).hostname
            if route_.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
                route_.continue_()
            else:
                outside.append(route_.request.url)
                route_.abort()

        context.route("**/*", route)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # (a browser asks for /favicon.ico on its own; the site has none and needs none)
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
        for name in pages:
            errors.clear()
            response = page.goto(site + name, wait_until="load")
            if "tutorials/" in name:
                page.wait_for_load_state("networkidle")
            info = page.evaluate("""() => ({
                text: document.body.innerText,
                title: document.title,
                ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
                links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
                images: Array.from(document.images).map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0,
                                                              output: !!i.closest('.cell_output, .output')})),
                math: document.querySelectorAll('mjx-container').length,
            })""")
            info["status"] = response.status if response else None
            info["errors"] = list(errors)
            results[name] = info
        browser.close()
    return {"pages": results, "outside": outside, "failed": failed, "site": site}


def test_every_page_loads_without_errors_or_tracebacks(visits):
    problems = []
    for name, info in visits["pages"].items():
        if info["status"] != 200:
            problems.append(f"{name}: HTTP {info['status']}")
        if info["errors"]:
            problems.append(f"{name}: JavaScript errors {info['errors'][:3]}")
        if TRACEBACK.search(info["text"]):
            problems.append(f"{name}: shows a traceback")
        if STRAY_WARNING.search(info["text"]):
            problems.append(f"{name}: shows a warning: {STRAY_WARNING.search(info['text'])[0]}...")
    problems += [f"request failed: {line}" for line in visits["failed"]]
    assert not problems, "\n".join(problems)


def test_nothing_is_fetched_from_outside_the_site(visits):
    assert not visits["outside"], f"pages asked the network for: {sorted(set(visits['outside']))[:10]}"


def test_every_image_loads_and_tutorials_show_their_figures(visits):
    broken = [(name, img["src"]) for name, info in visits["pages"].items()
              for img in info["images"] if not img["ok"]]
    assert not broken, f"images that did not load: {broken[:10]}"
    with_figures = []
    for path in TUTORIALS:
        info = visits["pages"].get(f"tutorials/{path.stem}.html")
        assert info is not None, f"no page for {path.name} (expected tutorials/{path.stem}.html)"
        figures = [img for img in info["images"] if img["output"]]
        draws = "show(" in path.read_text(encoding="utf-8")
        if draws:
            assert figures, f"{path.stem}: the tutorial draws a figure, its page shows none"
            with_figures.append(path.stem)
    assert len(with_figures) >= 9, f"only {len(with_figures)} tutorials show figures: {with_figures}"


def test_math_is_typeset_offline(visits):
    info = visits["pages"]["tutorials/05_softmax.html"]
    assert info["math"] > 0, "MathJax typeset nothing on the softmax tutorial"


def _ids(path: Path) -> set:
    return set(re.findall(r'\bid="([^"]+)"', path.read_text(encoding="utf-8", errors="replace")))


def test_every_internal_link_resolves(visits):
    site, bad, ids = visits["site"], [], {}
    for name, info in visits["pages"].items():
        for href in info["links"]:
            if not href.startswith(site):
                continue
            url, _, fragment = href.partition("#")
            target = urllib.parse.unquote(url[len(site):]) or "index.html"
            file = BOOK / target
            if file.is_dir():
                file = file / "index.html"
            if not file.is_file():
                bad.append(f"{name} -> {href} (no such file)")
                continue
            if fragment and file.suffix == ".html":
                if file not in ids:
                    ids[file] = _ids(file)
                if urllib.parse.unquote(fragment) not in ids[file]:
                    bad.append(f"{name} -> {href} (no such anchor)")
    bad = sorted(set(bad))
    assert not bad, f"{len(bad)} broken links:\n" + "\n".join(bad[:20])


def test_every_tutorial_page_links_to_its_notebook_and_it_is_valid(visits):
    nbformat = pytest.importorskip("nbformat")
    site = visits["site"]
    for path in TUTORIALS:
        info = visits["pages"][f"tutorials/{path.stem}.html"]
        wanted = f"{site}notebooks/{path.stem}.ipynb"
        assert wanted in info["links"], f"{path.stem}: no link to {wanted}"
        with urllib.request.urlopen(wanted, timeout=30) as response:
            notebook = nbformat.reads(response.read().decode("utf-8"), as_version=4)
        nbformat.validate(notebook)
        assert sum(c.cell_type == "code" for c in notebook.cells) >= 3, path.stem


def test_api_pages_name_the_public_classes_and_functions(visits):
    import tinygrad_mha as tm

    api = "\n".join(info["text"] for name, info in visits["pages"].items() if name.startswith("api/"))
    missing = [n for n in API_NAMES if (hasattr(tm, n) or hasattr(tm.layers, n) or hasattr(tm.optimizers, n)
                                        or n == "get") and not re.search(rf"\b{n}\b", api)]
    for module in (tm.initializers, tm.regularizers, tm.constraints):
        missing += [f"{module.__name__}.{n}" for n in module.__all__ if n[0].isupper() and n not in api]
    assert not missing, f"the API reference does not show: {missing}"
    # and the tutorials link into it
    linked = [name for name, info in visits["pages"].items() if name.startswith("tutorials/")
              and any("/api/" in href for href in info["links"])]
    assert len(linked) >= len(TUTORIALS) - 1, f"tutorial pages linking to the API: {linked}"
