"""Every figure renders to a PNG with the Agg canvas; the numbers behind the figures are right."""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_mha as tm

pytest.importorskip("matplotlib")
from tinygrad_mha import plotting  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_png(path, min_bytes=5000):
    """A real PNG file of some substance; returns (width, height) from its IHDR chunk."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) >= min_bytes, f"{path} is only {len(data)} bytes"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 200 <= width <= 2000 and 150 <= height <= 1500, (width, height)
    return width, height


# ---------------------------------------------------------------- attention heatmaps
def test_attention_heatmaps_from_a_layer(tmp_path, rng):
    layer = tm.MultiHeadAttention(num_heads=3, key_dim=2)
    x = rng.standard_normal((2, 5, 4)).astype("float32")
    _, scores = layer(x, x, return_attention_scores=True)
    path = plotting.attention_heatmaps(scores, tmp_path / "sub" / "att.png", title="three heads",
                                       queries=list("abcde"), keys=list("vwxyz"))
    assert str(path).endswith("att.png")
    width, height = check_png(path)
    assert width > height  # three panels side by side


def test_attention_panels_flatten_2d_attention_row_major(rng):
    scores = rng.random((2, 3, 2, 4, 2, 4))  # (B, H, rows, cols, rows, cols)
    panels, heads, t_shape, s_shape = plotting._attention_panels(scores, None, batch_index=1)
    assert (heads, t_shape, s_shape) == (3, (2, 4), (2, 4))
    # query pixel (r, c) is row r * 4 + c; key pixel likewise
    for h, r, c, r2, c2 in [(0, 1, 2, 0, 3), (2, 0, 0, 1, 1), (1, 1, 3, 1, 3)]:
        assert panels[h, r * 4 + c, r2 * 4 + c2] == scores[1, h, r, c, r2, c2]


def test_attention_heatmaps_2d_axes_and_other_layouts(tmp_path, rng):
    layer = tm.MultiHeadAttention(num_heads=2, key_dim=2, attention_axes=(1, 2))
    image = rng.random((1, 3, 4, 5)).astype("float32")
    _, scores = layer(image, image, return_attention_scores=True)
    assert scores.shape == (1, 2, 3, 4, 3, 4)
    check_png(plotting.attention_heatmaps(scores, tmp_path / "att2d.png"))
    check_png(plotting.attention_heatmaps(rng.random((4, 6)), tmp_path / "one.png"), min_bytes=3000)
    check_png(plotting.attention_heatmaps(rng.random((9, 4, 4)), tmp_path / "many.png", max_heads=4))
    # attention over axis 2 only: the scores keep axis 1 as a batch axis -> (B, X, H, T, S)
    layer = tm.MultiHeadAttention(num_heads=2, key_dim=2, attention_axes=(2,))
    _, scores = layer(image, image, return_attention_scores=True)
    assert scores.shape == (1, 3, 2, 4, 4)
    with pytest.raises(ValueError, match="pass attention_dims"):
        plotting.attention_heatmaps(scores, tmp_path / "x.png")
    check_png(plotting.attention_heatmaps(scores, tmp_path / "axis2.png", attention_dims=1))
    with pytest.raises(ValueError, match="at least 2 axes"):
        plotting.attention_heatmaps(np.ones(3), tmp_path / "y.png")


# ---------------------------------------------------------------- loss curve
def test_loss_curve_accepts_history_dict_and_list(tmp_path, rng):
    model = tm.layers.Sequential([tm.layers.Dense(3)])
    x, y = rng.standard_normal((40, 2)).astype("float32"), rng.integers(0, 3, 40)
    history = model.fit(x, y, loss="sparse_categorical_crossentropy", steps=30, batch_size=8,
                        metrics=["accuracy"], progress=False)
    check_png(plotting.loss_curve(history, tmp_path / "h.png"))
    check_png(plotting.loss_curve({"loss": [3.0, 2.0, 1.5]}, tmp_path / "d.png"))
    check_png(plotting.loss_curve([1.0, -0.5, 0.2], tmp_path / "l.png"))  # not positive: linear scale
    with pytest.raises(ValueError, match="no 'loss' entry"):
        plotting.loss_curve({"acc": [1]}, tmp_path / "e.png")


# ---------------------------------------------------------------- finite differences
def test_finite_difference_errors_make_a_v():
    eps, central, forward, _ = plotting.finite_difference_errors()
    at = lambda e: central[np.argmin(np.abs(np.log(eps / e)))]  # noqa: E731
    assert at(1e-5) < 1e-8                      # the bottom of the V
    assert at(1e-1) > 100 * at(1e-5)            # truncation on the right
    assert at(1e-13) > 100 * at(1e-5)           # round-off on the left
    # central differences are second order, forward ones first order: at eps=1e-3 the
    # central error is far smaller
    i = np.argmin(np.abs(np.log(eps / 1e-3)))
    assert central[i] < 1e-3 * forward[i]


def test_gradcheck_error_vs_eps_png(tmp_path):
    check_png(plotting.gradcheck_error_vs_eps(tmp_path / "v.png"))
    path = plotting.gradcheck_error_vs_eps(tmp_path / "custom.png", fn=lambda x: tm.softmax(x) * x,
                                           x=np.array([0.1, 0.5, -0.3]), eps_values=np.logspace(-12, -1, 12))
    check_png(path)


# ---------------------------------------------------------------- computational graph
def test_computational_graph_png_and_errors(tmp_path, rng):
    x = tm.Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    w = tm.Tensor(rng.standard_normal((3, 2)), requires_grad=True)
    x.name, w.name = "x", "w"
    loss = ((x @ w).relu() * 2.0).sum()
    check_png(plotting.computational_graph(loss, tmp_path / "g.png"))
    tensors, functions, edges = plotting._graph(loss, 80)
    assert sorted(type(f).__name__ for f in functions.values()) == ["MatMul", "Mul", "Relu", "Sum"]
    assert len(tensors) == 7  # x, w, x@w, relu, the constant 2.0, the product, the sum
    loss.backward()
    with pytest.raises(ValueError, match="freed by backward"):
        plotting.computational_graph(loss, tmp_path / "freed.png")
    with pytest.raises(TypeError, match="expected a Tensor"):
        plotting.computational_graph(np.ones(2), tmp_path / "n.png")
    y = tm.Tensor(np.ones(2), requires_grad=True)
    for _ in range(60):
        y = y * 1.0
    with pytest.raises(ValueError, match="more than 80 nodes"):
        plotting.computational_graph(y, tmp_path / "big.png")


# ---------------------------------------------------------------- benchmark bars
def test_benchmark_bars_and_results_table(tmp_path):
    rows = [{"label": "scores", "numpy": 0.2, "tinygrad_mha": 0.25},
            {"label": "context", "numpy": 1.0, "tinygrad_mha": 1.3}]
    check_png(plotting.benchmark_bars(rows, tmp_path / "b.png"))
    check_png(plotting.benchmark_bars([("a", 1.0), ("b", 300.0)], tmp_path / "log.png"), min_bytes=3000)
    with pytest.raises(ValueError, match="no rows"):
        plotting.benchmark_bars([], tmp_path / "e.png")
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmarks\n\n| case | equation | size | numpy ms | numpy ref | framework ms | ratio |\n"
                       "|---|---|---|---:|---|---:|---:|\n"
                       "| scores | `aecd,abcd->acbe` | small | 0.120 | matmul | 0.150 | 1.25x |\n"
                       "| output | `abcd,cde->abe` | medium | 2.000 | einsum | 2.100 | 1.05x |\n\n"
                       "| other | table |\n|---|---|\n| 1 | 2 |\n")
    parsed = plotting.read_results_table(results)
    assert parsed == [{"label": "scores (small)", "numpy": 0.12, "framework": 0.15},
                      {"label": "output (medium)", "numpy": 2.0, "framework": 2.1}]
    assert plotting.read_results_table(tmp_path / "missing.md") == []


# ---------------------------------------------------------------- the plots/ script's own figures
def test_plots_all_static_figures(tmp_path, monkeypatch):
    from tinygrad_mha import plots_all

    check_png(plots_all.attention_2d(tmp_path / "attention_2d.png"))
    check_png(plots_all.computational_graph(tmp_path / "graph.png"))
    monkeypatch.setattr(plots_all, "RESULTS", tmp_path / "none.md")
    monkeypatch.setattr(plots_all, "_quick_benchmark_rows", lambda: [{"label": "x", "numpy": 1.0, "tinygrad_mha": 2.0}])
    path, source = plots_all.benchmark_bars(tmp_path / "bars.png")
    assert "quick measurement" in source
    check_png(path)


def test_core_package_does_not_import_matplotlib_and_plots_never_use_pyplot(tmp_path):
    code = ("import sys, tinygrad_mha\n"
            "assert 'matplotlib' not in sys.modules, 'import tinygrad_mha pulled in matplotlib'\n"
            "from tinygrad_mha import plotting\n"
            f"plotting.loss_curve([3, 2, 1], {str(tmp_path / 'l.png')!r})\n"
            "assert 'matplotlib.pyplot' not in sys.modules, 'plotting used pyplot'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------- teaching diagrams and show()
def test_teaching_diagrams_render(tmp_path):
    check_png(plotting.broadcasting_diagram((3, 1), (4,), path=tmp_path / "b.png"))
    check_png(plotting.einsum_diagram("ij,jk->ik", np.arange(6.0).reshape(2, 3),
                                      np.arange(12.0).reshape(3, 4), path=tmp_path / "e.png"))
    check_png(plotting.softmax_temperature([1.0, -0.5, 2.0], path=tmp_path / "s.png"))
    check_png(plotting.dropout_masks((4, 8), rates=(0.2, 0.6), path=tmp_path / "d.png"))
    with pytest.raises(ValueError):
        plotting.broadcasting_diagram((3, 4), (3,))  # NumPy's rule refuses these shapes
    with pytest.raises(ValueError, match="explicit output"):
        plotting.einsum_diagram("ij,jk", np.ones((2, 2)), np.ones((2, 2)))


def test_without_a_path_a_figure_comes_back_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fig = plotting.loss_curve([1.0, 0.5, 0.25])
    assert type(fig).__name__ == "Figure" and fig.axes
    assert list(tmp_path.iterdir()) == []


def test_show_in_a_script_writes_only_to_the_folder_the_learner_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(plotting.FIGURES_ENV, raising=False)
    fig = plotting.dropout_masks((3, 5))
    assert plotting.show(fig, "masks") is None
    assert list(tmp_path.iterdir()) == [] and "not saved" in capsys.readouterr().out
    monkeypatch.setenv(plotting.FIGURES_ENV, str(tmp_path / "figs"))
    plotting.show(fig, "masks")
    check_png(tmp_path / "figs" / "masks.png", min_bytes=2000)
