"""Figures for the tutorials, the demo and ``plots/``, drawn with matplotlib.

matplotlib (a dependency) is imported only when a figure is drawn, so ``import tinygrad_mha``
stays quick. Every figure is drawn on its own ``Figure`` with the
non-interactive Agg canvas and saved to a PNG: nothing touches pyplot's global state or opens
a window, so this works the same in a terminal, a test, a notebook or on a server.

Each function draws one figure; given a ``path`` it writes a PNG there and returns the path,
without one it returns the ``Figure`` (for ``show``):

    attention_heatmaps(scores, path)         one panel per head (1-D or 2-D attention axes)
    loss_curve(history, path)                training loss (and accuracy) per step
    gradcheck_error_vs_eps(path)             finite-difference error against eps: the V shape
    computational_graph(tensor, path)        the graph recorded for a small expression
    benchmark_bars(rows, path)               grouped bars of timings
    broadcasting_diagram(a_shape, b_shape)   how two shapes stretch to one (tutorial 03)
    einsum_diagram(subscripts, a, b)         which entries one output element sums over (04)
    softmax_temperature(x, temperatures)     softmax(x / T) and its Jacobian (tutorial 05)
    dropout_masks(shape, rates)              the masks inverted dropout draws (tutorial 06)

``show(fig, name)`` is what the tutorials call: in a notebook (a Jupyter kernel) it displays
the figure as a PNG cell output; run as a script it saves nothing unless the learner names a
folder with ``TINYGRAD_MHA_FIGURES=DIR``, and then writes ``DIR/<name>.png``.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

from . import backend
from .tensor import Tensor

DPI = 100


# ---------------------------------------------------------------- matplotlib, lazily
def _figure(width: float, height: float, layout=None):
    """A new Figure on an Agg canvas (no pyplot, no window, no global backend switch)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise RuntimeError("plotting needs matplotlib, a dependency of tinygrad_mha that is "
                           "missing here: pip install matplotlib") from exc
    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    """Write ``fig`` to ``path`` (a PNG) and return the path; with no path, return the Figure."""
    if path is None:
        return fig
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _host(x) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.numpy()
    return backend.to_numpy(x) if backend.is_cupy_array(x) else np.asarray(x)


# ---------------------------------------------------------------- attention heatmaps
def _attention_panels(scores: np.ndarray, attention_dims, batch_index: int):
    """(heads, T, S) matrices from scores of any layout ``MultiHeadAttention`` returns.

    Layouts: (T, S); (H, T, S); (B, H, T, S); in general (batch dims..., H, T1..Tk, S1..Sk)
    with k = ``attention_dims`` (inferred when the rank leaves no doubt). 2-D attention over
    (rows, cols) is shown as a (rows*cols, rows*cols) matrix: query pixels down, key pixels across.
    """
    if scores.ndim < 2:
        raise ValueError("attention_heatmaps: scores need at least 2 axes (queries, keys), got "
                         f"shape {scores.shape}")
    if scores.ndim == 2:
        return scores[None], 1, scores.shape[:1], scores.shape[1:]
    if attention_dims is None:
        if scores.ndim == 3:
            attention_dims = 1
        elif (scores.ndim - 2) % 2 == 0:
            attention_dims = (scores.ndim - 2) // 2
        else:
            raise ValueError("attention_heatmaps: cannot tell the attention axes of scores with "
                             f"shape {scores.shape}; "
                             "pass attention_dims (the number of attention axes)")
    k = int(attention_dims)
    lead = scores.ndim - 2 * k - 1  # batch axes before the head axis
    if k < 1 or lead < 0:
        raise ValueError(f"attention_heatmaps: attention_dims={attention_dims} does not fit scores "
                         f"of shape {scores.shape}: "
                         f"need (batch..., heads, {k} query axes, {k} key axes)")
    if lead:
        if not -scores.shape[0] <= batch_index < scores.shape[0]:
            raise ValueError(f"attention_heatmaps: batch_index {batch_index} is out of range for "
                             f"{scores.shape[0]} examples")
        scores = scores[(batch_index,) + (0,) * (lead - 1)]
    heads, t_shape, s_shape = scores.shape[0], scores.shape[1:1 + k], scores.shape[1 + k:]
    return scores.reshape(heads, math.prod(t_shape), math.prod(s_shape)), heads, t_shape, s_shape


def attention_heatmaps(scores, path=None, title="Attention scores", queries=None, keys=None,
                       attention_dims=None, batch_index=0, max_heads=8, query_label=None,
                       key_label=None):
    """One heatmap per head: row = query position, column = key position, colour = weight.

    ``scores`` as returned by ``MultiHeadAttention(..., return_attention_scores=True)`` (a
    Tensor or array). ``queries`` / ``keys`` optionally label the rows / columns (e.g. the
    input digits), ``query_label`` / ``key_label`` name the axes. Scores with 2-D attention
    axes are flattened row-major, so a 4x4 image gives a 16x16 map per head.
    """
    panels, heads, t_shape, s_shape = _attention_panels(_host(scores).astype(np.float64),
                                                        attention_dims, batch_index)
    shown = min(heads, max_heads)
    cols = min(shown, 4)
    rows = math.ceil(shown / cols)
    fig = _figure(3.1 * cols + 1.0, 3.0 * rows + 0.6, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    vmax = float(panels[:shown].max()) if panels.size else 1.0
    image = None
    for h, ax in enumerate(axes.flat):
        if h >= shown:
            ax.axis("off")
            continue
        image = ax.imshow(panels[h], cmap="viridis", vmin=0.0, vmax=vmax or 1.0, aspect="auto",
                          interpolation="nearest")
        ax.set_title(f"head {h}", fontsize=10)
        n_t, n_s = panels.shape[1:]
        if len(t_shape) > 1:
            ax.set_xlabel(key_label or f"key position (flattened {'x'.join(map(str, s_shape))})",
                          fontsize=8)
            ax.set_ylabel(query_label
                          or f"query position (flattened {'x'.join(map(str, t_shape))})",
                          fontsize=8)
        else:
            ax.set_xlabel(key_label or "key position", fontsize=8)
            ax.set_ylabel(query_label or "query position", fontsize=8)
        for labels, n, set_ticks, set_labels in ((keys, n_s, ax.set_xticks, ax.set_xticklabels),
                                                (queries, n_t, ax.set_yticks, ax.set_yticklabels)):
            if labels is not None and len(labels) == n and n <= 32:
                set_ticks(range(n))
                set_labels([str(v) for v in labels], fontsize=7)
            elif n <= 16:
                set_ticks(range(n))
                set_labels([str(v) for v in range(n)], fontsize=7)
    if heads > shown:
        title = f"{title} (first {shown} of {heads} heads)"
    fig.suptitle(title, fontsize=11)
    if image is not None:
        fig.colorbar(image, ax=axes, label="attention weight", shrink=0.85)
    return _save(fig, path)


# ---------------------------------------------------------------- loss curve
def _history_dict(history) -> dict:
    if hasattr(history, "history"):  # a layers.History (or a Keras History)
        history = history.history
    if isinstance(history, dict):
        if "loss" not in history:
            raise ValueError(f"loss_curve: history has no 'loss' entry (keys: {sorted(history)})")
        return {k: np.asarray(v, dtype=np.float64) for k, v in history.items()}
    return {"loss": np.asarray(list(history), dtype=np.float64)}


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    head = np.cumsum(values[:window - 1]) / np.arange(1, window)  # a shorter window at the start
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def loss_curve(history, path=None, title="Training loss", log_scale=True):
    """Loss per step (raw, faint; and a moving average), plus accuracy on a second axis if present.

    ``history``: what ``Model.fit`` returns, a dict with a "loss" list, or a list of losses.
    """
    data = _history_dict(history)
    loss = data["loss"]
    if loss.size == 0:
        raise ValueError("loss_curve: the history holds no loss values")
    steps = np.arange(1, loss.size + 1)
    window = max(1, loss.size // 50)
    fig = _figure(6.4, 3.8)
    ax = fig.subplots()
    ax.plot(steps, loss, color="tab:blue", alpha=0.3, linewidth=0.8, label="loss (per step)")
    ax.plot(steps, _moving_average(loss, window), color="tab:blue", linewidth=1.8,
            label=f"loss (mean of {window} steps)" if window > 1 else "loss")
    if log_scale and np.all(loss > 0):
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss" + (" (log scale)" if ax.get_yscale() == "log" else ""))
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if "accuracy" in data and data["accuracy"].size == loss.size:
        ax2 = ax.twinx()
        ax2.plot(steps, _moving_average(data["accuracy"], window), color="tab:orange",
                 linewidth=1.5, label="accuracy (training batches)")
        ax2.set_ylim(0, 1.02)
        ax2.set_ylabel("accuracy")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="center right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- finite differences
def _default_fn(x):
    return (x.tanh() * x.exp()).sum()


def finite_difference_errors(fn=None, x=None, eps_values=None):
    """(eps_values, central errors, forward errors, f(x)): max |analytic - numeric| per eps.

    The analytic gradient comes from the engine (``tm.grad``); the numeric ones from
    ``(f(x+eps) - f(x-eps)) / 2eps`` (central) and ``(f(x+eps) - f(x)) / eps`` (forward).
    """
    from .tensor import grad as tm_grad, no_grad

    fn = _default_fn if fn is None else fn
    x0 = np.array([0.3, -1.2, 0.8, 1.5]) if x is None else _host(x)
    x0 = np.asarray(x0, dtype=np.float64)
    eps_values = (np.logspace(-15, -0.5, 59) if eps_values is None
                  else np.asarray(eps_values, dtype=np.float64))

    def value(arr) -> float:
        with no_grad():
            out = fn(Tensor(arr))
        return float(out.numpy().sum())

    xt = Tensor(x0.copy(), requires_grad=True)
    out = fn(xt)
    analytic = tm_grad(out.sum() if out.size != 1 else out, [xt])[0].numpy().reshape(-1)
    flat = x0.reshape(-1)
    f0 = value(x0)
    central, forward = [], []
    for eps in eps_values:
        c_err = f_err = 0.0
        for j in range(flat.size):
            plus, minus = flat.copy(), flat.copy()
            plus[j] += eps
            minus[j] -= eps
            fp, fm = value(plus.reshape(x0.shape)), value(minus.reshape(x0.shape))
            c_err = max(c_err, abs((fp - fm) / (2 * eps) - analytic[j]))
            f_err = max(f_err, abs((fp - f0) / eps - analytic[j]))
        central.append(c_err)
        forward.append(f_err)
    return eps_values, np.array(central), np.array(forward), f0


def gradcheck_error_vs_eps(path=None, fn=None, x=None, eps_values=None,
                           title="Finite differences: truncation vs round-off"):
    """Max |analytic - numeric| gradient error against eps, log-log, for two difference formulas.

    Large eps: the Taylor terms we dropped dominate (truncation error ~eps for forward
    differences, ~eps^2 for central ones). Small eps: f(x+eps) - f(x-eps) cancels almost all
    digits of float64 (round-off error ~1e-16 / eps). The sum is a V whose bottom is the
    best eps. ``fn`` maps a float64 Tensor to a Tensor (summed if not scalar); default
    ``sum(tanh(x) * exp(x))`` at a few points.
    """
    eps_values, central, forward, f0 = finite_difference_errors(fn, x, eps_values)
    central, forward = np.maximum(central, 1e-18), np.maximum(forward, 1e-18)

    fig = _figure(6.4, 4.2)
    ax = fig.subplots()
    ax.loglog(eps_values, forward, "o-", markersize=3, color="tab:gray",
              label="forward (f(x+e)-f(x))/e")
    ax.loglog(eps_values, central, "o-", markersize=3, color="tab:blue",
              label="central (f(x+e)-f(x-e))/2e")
    best = int(np.argmin(central))
    ax.loglog([eps_values[best]], [central[best]], "*", markersize=14, color="tab:red",
              label=f"best central eps = {eps_values[best]:.1e}")
    # guide lines: truncation anchored at the largest eps, round-off from float64 precision
    e = eps_values
    anchor = central[-1] / e[-1] ** 2
    ax.loglog(e, anchor * e ** 2, "--", color="tab:green", linewidth=1, label="truncation ~ eps^2")
    roundoff = 1.1e-16 * max(1.0, abs(f0)) / e
    ax.loglog(e, roundoff, ":", color="tab:purple", linewidth=1.2, label="round-off ~ 1e-16 / eps")
    top = max(central.max(), forward.max()) * 10
    ax.set_ylim(max(min(central.min(), forward.min()) / 10, 1e-18), top)
    ax.axvline(1e-6, color="black", linewidth=0.8, alpha=0.5)
    ax.text(1e-6, top / 5, " gradcheck's\n default\n eps = 1e-6", fontsize=7, va="top")
    ax.set_xlabel("eps")
    ax.set_ylabel("max |analytic - numeric| gradient")
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- computational graph
def _graph(root: Tensor, max_nodes: int):
    """Tensors and Function nodes reachable from ``root`` (iteratively), with edges."""
    tensors, functions, edges = {}, {}, []
    # graph node -> the one Tensor drawn for it (stand-ins share their tensor's node)
    canonical = {}

    def canon(t):
        key = id(t._ctx) if t._ctx is not None else id(t)
        if key not in canonical:
            real = getattr(t._ctx, "_output", lambda: None)() if t._ctx is not None else None
            canonical[key] = t if real is None else real
        return canonical[key]

    stack = [canon(root)]
    while stack:
        t = stack.pop()
        if id(t) in tensors:
            continue
        tensors[id(t)] = t
        ctx = t._ctx
        if ctx is None:
            continue
        if ctx.inputs is None:
            raise ValueError("computational_graph: this graph was freed by backward(); draw it "
                             "before calling backward, or call backward(retain_graph=True)")
        functions[id(ctx)] = ctx
        edges.append((id(ctx), id(t)))
        for parent in map(canon, ctx.inputs):
            edges.append((id(parent), id(ctx)))
            stack.append(parent)
        if len(tensors) + len(functions) > max_nodes:
            raise ValueError(f"computational_graph: the graph has more than {max_nodes} nodes; "
                             "draw a smaller expression")
    return tensors, functions, edges


def _tensor_label(t: Tensor, index: int) -> str:
    shape = "x".join(map(str, t.shape)) if t.shape else "scalar"
    if t.name:
        return f"{t.name}\n{shape}"
    if t.size == 1 and t._ctx is None:
        return f"{t.item():.3g}"
    return shape


def computational_graph(tensor, path=None, title=None, max_nodes=80):
    """Draw the graph ``tensor`` was computed by: boxes are Tensors, circles are Functions.

    Inputs are on the left, the result on the right; every arrow is an edge the backward pass
    walks in the opposite direction. Leaves that require a gradient are green, constants grey.
    Set ``t.name = "x"`` on leaves to label them. Draw before ``backward()`` frees the graph.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"computational_graph: expected a Tensor, got {type(tensor).__name__}")
    tensors, functions, edges = _graph(tensor, max_nodes)
    parents: dict[int, list[int]] = {}
    for a, b in edges:
        parents.setdefault(b, []).append(a)
    # column = longest path from the root, so every arrow points to the right
    depth = {id(tensor): 0}
    order = [id(tensor)]
    for node in order:  # breadth-first relaxation (graphs here are small DAGs)
        for p in parents.get(node, ()):
            if depth.get(p, -1) < depth[node] + 1:
                depth[p] = depth[node] + 1
                order.append(p)
    max_depth = max(depth.values())
    columns: dict[int, list[int]] = {}
    for node, d in depth.items():
        columns.setdefault(max_depth - d, []).append(node)
    pos = {}
    for col, nodes in columns.items():
        nodes.sort(key=lambda n: (n in functions, str(n)))
        for i, n in enumerate(nodes):
            pos[n] = (col, (len(nodes) - 1) / 2 - i)
    height = max(len(v) for v in columns.values())

    fig = _figure(max(4.0, 0.95 * (max_depth + 1) + 0.6), max(2.4, 1.0 * height + 1.1))
    ax = fig.subplots()
    for a, b in edges:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="-|>", color="0.35", shrinkA=18, shrinkB=18,
                                    linewidth=1))
    counter = 0
    for node, (x, y) in pos.items():
        if node in functions:
            ax.text(x, y, type(functions[node]).__name__, ha="center", va="center", fontsize=8,
                    bbox=dict(boxstyle="circle,pad=0.45", facecolor="#fde9b0", edgecolor="#c98f00"))
            continue
        t = tensors[node]
        if node == id(tensor):
            face, edge = "#c9defc", "#1f5fbf"
        elif t._ctx is None and t.requires_grad:
            face, edge = "#cdeccd", "#2d862d"
        elif t._ctx is None:
            face, edge = "#e6e6e6", "#808080"
        else:
            face, edge = "white", "#1f5fbf"
        ax.text(x, y, _tensor_label(t, counter), ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round,pad=0.4", facecolor=face, edgecolor=edge))
        counter += 1
    ax.set_xlim(-0.6, max_depth + 0.6)
    ax.set_ylim(-height / 2 - 0.2, height / 2 + 0.2)
    ax.axis("off")
    n_ops = len(functions)
    ax.set_title(title or f"Computational graph: {n_ops} Function nodes (circles), "
                          f"{len(tensors)} Tensors (boxes)", fontsize=10)
    fig.text(0.01, 0.01, "green: leaf with requires_grad   grey: constant   blue: result",
             fontsize=7, color="0.3")
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- benchmark bars
def _benchmark_rows(rows):
    """Normalise rows to (label, {series: value}); accepts dicts with "label" or
    (label, value|dict)."""
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            row = dict(row)
            label = row.pop("label", None) or row.pop("case", None) or f"row {i}"
            values = {k: float(v) for k, v in row.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)}
        elif isinstance(row, (tuple, list)) and len(row) == 2:
            label, value = row
            values = ({k: float(v) for k, v in value.items()} if isinstance(value, dict)
                      else {"time": float(value)})
        else:
            raise TypeError(f"benchmark_bars: row {i} must be a dict with a 'label' "
                            f"or a (label, value) pair, got {row!r}")
        if not values:
            raise ValueError(f"benchmark_bars: row {i} ({label!r}) has no numbers")
        out.append((str(label), values))
    if not out:
        raise ValueError("benchmark_bars: no rows to draw")
    return out


def benchmark_bars(rows, path=None, title="Forward + backward time", unit="ms", log_scale=None):
    """Grouped horizontal bars: one group per row, one bar per series (e.g. NumPy vs framework).

    ``rows``: ``[{"label": "scores (small)", "numpy": 0.21, "tinygrad_mha": 0.25}, ...]`` or
    ``[("label", value), ...]``.
    """
    data = _benchmark_rows(rows)
    series = list(dict.fromkeys(k for _, values in data for k in values))
    n = len(data)
    fig = _figure(7.0, max(2.5, 0.32 * n * max(1, len(series)) + 1.3), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / len(series)
    colors = ["tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    everything = [v for _, values in data for v in values.values() if v > 0]
    if log_scale is None:
        log_scale = bool(everything) and max(everything) / min(everything) > 50
    for j, name in enumerate(series):
        ys = [i + (j - (len(series) - 1) / 2) * height for i in range(n)]
        xs = [values.get(name, 0.0) for _, values in data]
        bars = ax.barh(ys, xs, height=height * 0.95, color=colors[j % len(colors)], label=name)
        for bar, x in zip(bars, xs):
            if x > 0:
                ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {x:.3g}",
                        va="center", fontsize=6)
    ax.set_yticks(range(n))
    ax.set_yticklabels([label for label, _ in data], fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.12)  # room for the value labels
    if log_scale:
        ax.set_xscale("log")
    ax.set_xlabel(f"{unit}{' (log scale)' if log_scale else ''}, lower is better")
    ax.set_title(title, fontsize=11)
    fig.legend(loc="outside lower center", ncol=len(series), frameon=False, fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


def read_results_table(path, numeric=("numpy ms", "framework ms"), label_columns=("case", "size")):
    """Rows for ``benchmark_bars`` from the markdown tables in ``benchmarks/RESULTS.md``.

    Each table row that has every ``numeric`` column becomes
    ``{"label": "<case> (<size>)", "<numeric column>": value, ...}``; returns [] if none do.
    """
    if not os.path.exists(path):
        return []
    rows, header = [], None
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if all(re.fullmatch(r":?-+:?", c) for c in cells):
            continue
        record = dict(zip(header, cells))
        if not all(col in record for col in numeric):
            continue
        try:
            values = {col.replace(" ms", ""): float(record[col].rstrip("x")) for col in numeric}
        except ValueError:
            continue
        parts = [record[c] for c in label_columns if c in record and record[c]]
        label = (parts[0] + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")
                 if parts else f"row {len(rows)}")
        rows.append({"label": label, **values})
    return rows


# ---------------------------------------------------------------- show: notebook or script
FIGURES_ENV = "TINYGRAD_MHA_FIGURES"


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, nbclient, a docs build), False in a script."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def show(fig, name="figure", folder=None) -> None:
    """Show a figure where the learner is: a PNG cell output in a notebook; in a script, a line.

    Run as a script nothing is written unless a folder is named, by ``folder`` or the
    environment variable ``TINYGRAD_MHA_FIGURES``; then the figure goes to ``<folder>/<name>.png``.
    Returns None, so a notebook shows the picture once.
    """
    notebook = in_notebook()
    if notebook:
        import io

        from IPython.display import Image, display
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=DPI, format="png")
        display(Image(data=buffer.getvalue(), format="png"))
    folder = folder or os.environ.get(FIGURES_ENV)
    if folder:
        path = _save(fig, os.path.join(os.fspath(folder), name + '.png'))
        print(f"figure {name!r}: wrote {path}")
    elif not notebook:
        print(f"figure {name!r} drawn, not saved (open this tutorial as a notebook to see it, "
              f"or set {FIGURES_ENV}=DIR to write DIR/{name}.png)")


# ---------------------------------------------------------------- teaching diagrams
def _two_d(shape) -> tuple:
    shape = tuple(int(n) for n in shape)
    if len(shape) > 2:
        raise ValueError(f"broadcasting_diagram draws shapes of at most 2 axes, got {shape}")
    return (1,) * (2 - len(shape)) + shape


def _cells(ax, shape, label, is_original, color, title):
    rows, cols = shape
    for r in range(rows):
        for c in range(cols):
            original = is_original(r, c)
            ax.add_patch(_rectangle((c, rows - 1 - r), color if original else "white",
                                    hatch=None if original else "//", edge=color))
            ax.text(c + 0.5, rows - 0.5 - r, label(r, c), ha="center", va="center", fontsize=8,
                    color="black" if original else "0.35")
    ax.set_xlim(-0.1, max(cols, 1) + 0.1)
    ax.set_ylim(-0.1, max(rows, 1) + 0.1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=9)


def _rectangle(xy, face, hatch=None, edge="black"):
    from matplotlib.patches import Rectangle
    return Rectangle(xy, 1, 1, facecolor=face, edgecolor=edge, hatch=hatch, linewidth=1.2)


def broadcasting_diagram(a_shape=(3, 1), b_shape=(1, 4), path=None):
    """``a + b`` for two shapes of at most 2 axes: the operands, their copies, the result.

    Solid cells are the operands' own entries; hatched cells are the copies ``broadcast_to``
    makes. The gradient of each copy flows back to the entry it copies: ``sum_to`` adds them.
    """
    a2, b2 = _two_d(a_shape), _two_d(b_shape)
    out = np.broadcast_shapes(a2, b2)  # raises NumPy's own error for incompatible shapes

    def name(prefix, shape):
        def label(r, c):
            index = (r if shape[0] > 1 else 0) * shape[1] + (c if shape[1] > 1 else 0)
            return f"{prefix}{index}"
        return label

    def kept(shape, full):
        return lambda r, c: (shape[0] == full[0] or r == 0) and (shape[1] == full[1] or c == 0)

    widths = [a2[1], b2[1], out[1], out[1], out[1] * 1.6]
    fig = _figure(min(2.0 + 0.75 * sum(widths), 14.0), 1.4 + 0.55 * out[0])
    axes = fig.subplots(1, 5, gridspec_kw={"width_ratios": widths})
    blue, orange = "#c9defc", "#ffd9b3"
    _cells(axes[0], a2, name("a", a2), lambda r, c: True, blue, f"a {tuple(a_shape)}")
    _cells(axes[1], b2, name("b", b2), lambda r, c: True, orange, f"b {tuple(b_shape)}")
    _cells(axes[2], out, name("a", a2), kept(a2, out), blue, f"a stretched to {out}")
    _cells(axes[3], out, name("b", b2), kept(b2, out), orange, f"b stretched to {out}")
    _cells(axes[4], out, lambda r, c: name("a", a2)(r, c) + "+" + name("b", b2)(r, c),
           lambda r, c: True, "#e2f0d9", f"a + b {out}")
    fig.suptitle("broadcast_to copies (hatched); in backward, sum_to adds each copy's gradient "
                 "back to its entry", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def einsum_diagram(subscripts, a, b, out_index=None, path=None):
    """For ``einsum(subscripts, a, b)`` with operands of at most 2 axes: the entries one
    output element multiplies and sums (framed in red), next to that element."""
    a, b = np.asarray(_host(a), dtype=np.float64), np.asarray(_host(b), dtype=np.float64)
    if "->" not in subscripts:
        raise ValueError("einsum_diagram needs an explicit output ('ij,jk->ik'), got "
                         f"{subscripts!r}")
    inputs, output = subscripts.replace(" ", "").split("->")
    letters = inputs.split(",")
    if len(letters) != 2 or a.ndim > 2 or b.ndim > 2:
        raise ValueError(f"einsum_diagram draws two operands of at most 2 axes, got {subscripts!r} "
                         f"with shapes {a.shape} and {b.shape}")
    out = np.einsum(subscripts, a, b)
    out_index = tuple(out_index) if out_index is not None else tuple(n // 2 for n in out.shape)
    fixed = dict(zip(output, out_index))
    summed = sorted(set(inputs.replace(",", "")) - set(output))

    def panel(ax, values, subs, title, highlight):
        grid = values.reshape((1,) * (2 - values.ndim) + values.shape)
        ax.imshow(grid, cmap="Greys", alpha=0.35, vmin=grid.min() - 1, vmax=grid.max() + 1)
        for (r, c), v in np.ndenumerate(grid):
            index = (r, c)[2 - values.ndim:]
            ax.text(c, r, f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}", ha="center",
                    va="center", fontsize=8)
            if highlight(dict(zip(subs, index))):
                ax.add_patch(_frame(c, r))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)

    fig = _figure(9.0, 3.2)
    axes = fig.subplots(1, 3)
    agrees = lambda idx: all(idx[k] == v for k, v in fixed.items() if k in idx)  # noqa: E731
    panel(axes[0], a, letters[0], f"a[{','.join(letters[0])}] {a.shape}", agrees)
    panel(axes[1], b, letters[1], f"b[{','.join(letters[1])}] {b.shape}", agrees)
    panel(axes[2], out, output, f"out[{','.join(output)}] {out.shape}",
          lambda idx: idx == fixed)
    where = ", ".join(f"{k}={v}" for k, v in fixed.items()) or "the only element"
    fig.suptitle(f"einsum('{subscripts}'): out at {where} = sum over "
                 f"{', '.join(summed) or 'nothing'} of the framed products", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _frame(c, r):
    from matplotlib.patches import Rectangle
    return Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="tab:red", linewidth=2.2)


def softmax_temperature(x, temperatures=(0.5, 1.0, 2.0, 4.0), path=None):
    """Left: ``softmax(x / T)`` for a few temperatures. Right: the Jacobian
    ``diag(y) - y y^T`` of ``y = softmax(x)`` (T = 1): every row sums to zero."""
    import tinygrad_mha as tm  # the public functional API (imported late: no import upward)
    x = np.asarray(_host(x), dtype=np.float64).ravel()
    fig = _figure(9.5, 3.6)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
    k = np.arange(x.size)
    width = 0.8 / len(temperatures)
    for j, temperature in enumerate(temperatures):
        y = tm.softmax(Tensor(x / float(temperature))).numpy()
        left.bar(k + (j - (len(temperatures) - 1) / 2) * width, y, width=width * 0.95,
                 label=f"T = {temperature:g}")
    left.set_xticks(k)
    left.set_xticklabels([f"x{i}={v:.1f}" for i, v in enumerate(x)], fontsize=7)
    left.set_ylabel("softmax(x / T)")
    left.set_title("low T: nearly one-hot; high T: nearly uniform", fontsize=9)
    left.legend(fontsize=7)
    y = tm.softmax(Tensor(x)).numpy()
    jac = np.diag(y) - np.outer(y, y)
    bound = float(np.abs(jac).max()) or 1.0
    image = right.imshow(jac, cmap="RdBu_r", vmin=-bound, vmax=bound)
    right.set_title("Jacobian diag(y) - y yᵀ at T = 1", fontsize=9)
    right.set_xlabel("input j")
    right.set_ylabel("output i")
    fig.colorbar(image, ax=right, fraction=0.046)
    fig.tight_layout()
    return _save(fig, path)


def dropout_masks(shape=(6, 16), rates=(0.1, 0.5, 0.8), seed=0, path=None):
    """What ``tm.dropout(ones, rate)`` returns for a few rates: zeros where dropped, and
    ``1 / (1 - rate)`` where kept, so every entry's mean stays 1."""
    import tinygrad_mha as tm
    ones = np.ones(shape)
    top = max(1.0 / (1.0 - float(rate)) for rate in rates)  # one colour scale for every panel
    fig = _figure(3.4 * len(rates) + 0.8, 0.9 + 0.22 * shape[0], layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(rates)))
    for ax, rate in zip(axes, rates):
        kept = tm.dropout(Tensor(ones), float(rate), training=True, seed=seed).numpy()
        image = ax.imshow(kept, cmap="viridis", vmin=0, vmax=top)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"rate {rate:g}: {np.mean(kept != 0):.0%} kept, each x{1 / (1 - rate):.3g}\n"
                     f"mean {kept.mean():.2f}", fontsize=8)
    fig.colorbar(image, ax=list(axes), fraction=0.02, label="value")
    fig.suptitle("inverted dropout of a tensor of ones (dark = dropped)", fontsize=9)
    return _save(fig, path)




# ---------------------------------------------------------------- blocked (flash) attention
def _figure_for(width: float, height: float, ncols: int = 1):
    """A figure (Agg, as above) and its ``ncols`` axes."""
    fig = _figure(width, height, layout="constrained")
    return fig, fig.subplots(1, ncols)


def block_sweep_figure(T, S, block_q, block_k, causal=True, window=None, path=None):
    """The blocked attention sweep: one cell per (query block, key block), coloured by what
    the kernel does with it (skipped, partly masked, computed whole), with the order in
    which query block 1 visits its key blocks. Returns the figure, or the path when given."""
    import matplotlib.colors as mcolors
    nq, nk = math.ceil(T / block_q), math.ceil(S / block_k)
    status = np.zeros((nq, nk))
    for i in range(nq):
        t0, t1 = i * block_q, min(T, (i + 1) * block_q)
        for j in range(nk):
            s0, s1 = j * block_k, min(S, (j + 1) * block_k)
            d = np.arange(s0, s1)[None, :] - np.arange(t0, t1)[:, None]
            keep = np.ones_like(d, dtype=bool)
            if causal:
                keep &= d <= 0
            if window is not None:
                keep &= np.abs(d) < window
            status[i, j] = 0 if not keep.any() else (2 if keep.all() else 1)
    fig, ax = _figure_for(1.2 + 0.55 * nk, 1.0 + 0.55 * nq)
    cmap = mcolors.ListedColormap(["#eeeeee", "#f4b183", "#5b9bd5"])
    ax.imshow(status, cmap=cmap, vmin=0, vmax=2)
    row = min(1, nq - 1)
    visited = [j for j in range(nk) if status[row, j] > 0]
    for n, j in enumerate(visited):
        ax.text(j, row, str(n + 1), ha="center", va="center", fontsize=9, color="black")
    ax.set_xticks(range(nk), [f"{j * block_k}" for j in range(nk)], fontsize=7)
    ax.set_yticks(range(nq), [f"{i * block_q}" for i in range(nq)], fontsize=7)
    ax.set_xlabel("key block (first position)")
    ax.set_ylabel("query block")
    kind = "causal" if causal else "full"
    ax.set_title(f"{kind}{'' if window is None else f', window {window}'}: grey skipped, "
                 f"orange masked in part, blue whole\n(numbers: query block {row}'s sweep, "
                 "running max and sum)", fontsize=8)
    return _save(fig, path)


def long_attention_figure(rows, path=None, title="Attention training step: dense vs blocked"):
    """Step time and peak extra memory against T, from rows of benchmarks/bench_long.py
    (keys T, causal, dense_ms, blocked_ms, torch_ms, dense_mb, blocked_mb; any may be missing).
    Returns the figure, or the path when given."""
    timed = any(k.endswith("_ms") for r in rows for k in r)
    fig, axes = _figure_for(10 if timed else 5.5, 4, ncols=2 if timed else 1)
    ax_t, ax_m = axes if timed else (None, axes)
    styles = {"dense": ("#c00000", "o"), "blocked": ("#2e75b6", "s"), "torch": ("#7f7f7f", "^")}
    for name, (color, marker) in styles.items():
        for causal, line in ((False, "-"), (True, "--")):
            pts = [(r["T"], r[name + "_ms"]) for r in rows
                   if r.get("causal", False) == causal and name + "_ms" in r]
            if pts and ax_t is not None:
                ax_t.plot(*zip(*pts), line, color=color, marker=marker,
                          label=f"{name}{' causal' if causal else ''}")
            pts = [(r["T"], r[name + "_mb"]) for r in rows
                   if r.get("causal", False) == causal and name + "_mb" in r]
            if pts:
                ax_m.plot(*zip(*pts), line, color=color, marker=marker,
                          label=f"{name}{' causal' if causal else ''}")
    for ax, label in ((ax_t, "step time (ms)"), (ax_m, "peak extra memory (MB)")):
        if ax is None:
            continue
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax_m.set_title("memory: dense grows as T², blocked as T", fontsize=9)
    if ax_t is not None:
        ax_t.set_title(title, fontsize=9)
    return _save(fig, path)


__all__ = ["attention_heatmaps", "loss_curve", "gradcheck_error_vs_eps", "computational_graph",
           "benchmark_bars", "finite_difference_errors", "read_results_table", "show",
           "in_notebook", "broadcasting_diagram", "einsum_diagram", "softmax_temperature",
           "dropout_masks", "block_sweep_figure", "long_attention_figure"]

