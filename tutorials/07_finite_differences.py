# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Finite differences: choosing eps, `gradcheck` and `gradgradcheck`
#
# Every gradient in tinygrad_mha is *proven*, not trusted: the test suite compares each
# analytic derivative that `backward()` produces with a numeric one obtained by nudging the
# input a little. This tutorial is about that nudge.
#
# 1. Why the step `eps` cannot be too large **or** too small: truncation error against
#    round-off error, with a plot of the error against `eps`.
# 2. How `tm.gradcheck` works, by reading its source.
# 3. Fast mode: one random directional derivative instead of one per element.
# 4. Reading a `GradcheckError`: a deliberately wrong op, and what the message tells you.
# 5. `tm.gradgradcheck`: second derivatives, and the bug that only it can see.
#
# Run it as a script (`python tutorials/07_finite_differences.py`) or open it as a notebook
# (`jupytext --to notebook`). `TINYGRAD_MHA_SMALL=1` shrinks the sizes so it runs in seconds.

# %%
import inspect
import os
import time
import warnings

import numpy as np
from matplotlib.figure import Figure  # a figure with no window: needs no display

import tinygrad_mha as tm
from tinygrad_mha.backend import array_module
from tinygrad_mha.plotting import gradcheck_error_vs_eps, show
from tinygrad_mha.tensor import Function

SMALL = os.environ.get("TINYGRAD_MHA_SMALL", "0") not in ("", "0")
print("small mode" if SMALL else "full size")

# %% [markdown]
# ## 1. Two errors that pull in opposite directions
#
# The derivative is a limit, $f'(x) = \lim_{h\to 0} \frac{f(x+h) - f(x)}{h}$. A computer
# cannot take the limit, so it picks a small step $h$ (called `eps` in the code). Taylor's
# theorem tells us what that costs:
#
# $$f(x \pm h) = f(x) \pm h f'(x) + \tfrac{h^2}{2} f''(x) \pm \tfrac{h^3}{6} f'''(x) + O(h^4).$$
#
# * **Forward difference** $\frac{f(x+h) - f(x)}{h} = f'(x) + \tfrac{h}{2} f''(x) + O(h^2)$:
#   truncation error $O(h)$.
# * **Central difference** $\frac{f(x+h) - f(x-h)}{2h} = f'(x) + \tfrac{h^2}{6} f'''(x) + O(h^4)$:
#   the even terms cancel, truncation error $O(h^2)$. This is what `gradcheck` uses.
#
# So smaller is better? No. Floating point stores $f(x\pm h)$ with a relative error of about
# the machine epsilon $\varepsilon$ ($2.2\times10^{-16}$ in float64, $1.2\times10^{-7}$ in
# float32). Subtracting two nearly equal numbers keeps that *absolute* error
# $\approx \varepsilon |f(x)|$ and dividing by $h$ blows it up: a round-off error of
# $\approx \varepsilon |f(x)| / h$. The total error of the central difference is roughly
#
# $$E(h) \approx \underbrace{\frac{h^2}{6}|f'''(x)|}_{\text{truncation}}
#        + \underbrace{\frac{\varepsilon |f(x)|}{h}}_{\text{round-off}},
# \qquad
# E'(h) = 0 \;\Rightarrow\; h^* = \left(\frac{3\varepsilon |f(x)|}{|f'''(x)|}\right)^{1/3}.$$
#
# For the forward difference the same argument gives
# $E(h) \approx \tfrac{h}{2}|f''| + \varepsilon|f|/h$ and $h^* = \sqrt{2\varepsilon |f|/|f''|}$.
#
# The cleanest function to test this on is $f(x) = e^x$: every derivative equals $f$ itself,
# so $h^*_{\text{central}} = (3\varepsilon)^{1/3} \approx 9\times 10^{-6}$ in float64 and
# $\approx 7\times10^{-3}$ in float32. That is why `gradcheck`'s default is `eps=1e-6` and why
# it insists on float64 inputs.
#
# The exact derivative comes from the engine itself: `x.exp()` records an `Exp` node whose
# backward is $g \cdot e^x$.

# %%
X0 = 1.0


def f(x, dtype):
    """e^x evaluated by the library, in ``dtype``, with no graph recorded."""
    with tm.no_grad():
        return tm.Tensor(np.asarray(x, dtype=dtype)).exp().numpy()


x = tm.Tensor(np.float64(X0), requires_grad=True)
x.exp().backward()
exact = float(x.grad)
print(f"engine: d/dx e^x at x={X0} is {exact!r}   (math.e = {np.e!r})")

eps_mach = {np.float64: float(np.finfo(np.float64).eps),
            np.float32: float(np.finfo(np.float32).eps)}
steps = np.logspace(-14, -0.5, 25 if SMALL else 80)


def difference_errors(dtype, kind):
    """|numeric - exact| for each step h, computed entirely in ``dtype``."""
    x = dtype(X0)
    errors = []
    for h in steps:
        h = dtype(h)
        h = (x + h) - x  # the step the machine really took (x + h is rounded too)
        if h == 0:       # h below x's resolution: the difference quotient is meaningless
            errors.append(np.nan)
            continue
        if kind == "central":
            numeric = (f(x + h, dtype) - f(x - h, dtype)) / (dtype(2) * h)
        else:
            numeric = (f(x + h, dtype) - f(x, dtype)) / h
        errors.append(abs(float(numeric) - exact))
    return np.array(errors)


errors = {(dt.__name__, kind): difference_errors(dt, kind)
          for dt in (np.float64, np.float32) for kind in ("central", "forward")}

for (dt, kind), err in errors.items():
    best = int(np.nanargmin(err))
    print(f"{dt:8s} {kind:8s}: best eps {steps[best]:.1e}, error there {err[best]:.1e}")

# %% [markdown]
# Now the picture: log-log axes turn both error terms into straight lines, slope $+2$
# (central truncation), $+1$ (forward truncation) and $-1$ (round-off). The measured errors
# follow the "V" that the formula predicts; dashed lines are the model $E(h)$ (a worst case:
# real round-off errors partly cancel, so the measured curve sits a little below it on the
# left), and the vertical line is `gradcheck`'s default `eps=1e-6`.

# %%
def model(h, dtype, kind):
    e, fx = eps_mach[dtype], np.exp(X0)
    return (h ** 2 / 6 * fx if kind == "central" else h / 2 * fx) + e * fx / h


fig = Figure(figsize=(7, 4.5))
ax = fig.subplots()
colors = {"float64": "tab:blue", "float32": "tab:orange"}
for (dt, kind), err in errors.items():
    style = "-" if kind == "central" else ":"
    ax.loglog(steps, err, style, marker="o", ms=3, color=colors[dt], label=f"{dt} {kind}")
    ax.loglog(steps, model(steps, getattr(np, dt), kind), "--", lw=0.8, color=colors[dt], alpha=0.6)
ax.axvline(1e-6, color="gray", lw=0.8)
ax.text(1.2e-6, 1e-12, "gradcheck default\neps=1e-6", fontsize=8, color="gray")
ax.set_xlabel("eps (step h)")
ax.set_ylabel("|finite difference - exact derivative|")
ax.set_title("d/dx e^x at x=1: truncation (right) vs round-off (left)")
ax.set_ylim(1e-13, 1e1)
ax.legend(fontsize=8)
fig.tight_layout()
show(fig, "gradcheck_error_vs_eps")

# %% [markdown]
# Read the plot from right to left. At large $h$ the central difference (solid) beats the
# forward difference (dotted) by orders of magnitude: $h^2$ against $h$. Both errors fall
# until round-off takes over and they climb back along slope $-1$. float32 hits the wall
# much earlier (its $\varepsilon$ is about $5\times10^{8}$ times larger): at `eps=1e-6` a
# float32 central difference is wrong in the first or second digit. That is
# why `gradcheck` warns when an input is not float64.
#
# The same experiment for any function of a vector is one call to the plotting module,
# which uses the library's own `tm.grad` for the exact side. Here for the softmax-weighted
# sum $f(x) = \sum_i \mathrm{softmax}(x)_i\, x_i^2$ at four points (float64):

# %%
library_figure = gradcheck_error_vs_eps(
    fn=lambda x: (tm.softmax(x) * x * x).sum(),
    x=np.array([0.3, -1.2, 0.8, 1.5]),
    eps_values=np.logspace(-14, -1, 14 if SMALL else 40))
show(library_figure, "gradcheck_error_vs_eps_softmax")

# %% [markdown]
# ## 2. How `gradcheck` works: read the source
#
# A test that `fn` has the right gradient must check the whole Jacobian
# $J = \partial\,\mathrm{fn}(x) / \partial x$, not just the gradient of `fn(x).sum()` (which
# would miss a transposed or mis-summed gradient). `gradcheck` draws a random upstream
# gradient $u$ with the output's shape and checks the scalar
#
# $$\varphi(x) = \langle u, \mathrm{fn}(x)\rangle = \sum_k u_k\, \mathrm{fn}(x)_k,
# \qquad \frac{\partial \varphi}{\partial x_j} = (J^\top u)_j .$$
#
# The analytic side is *one* backward pass, `tm.grad(phi, inputs)`; the numeric side is one
# central difference per input element. An element passes when
# $|a - n| \le \mathrm{atol} + \mathrm{rtol}\,|n|$.

# %%
print(inspect.getsource(tm.gradcheck))

# %% [markdown]
# Note the details: the input array is perturbed **in place** and restored exactly
# (`flat[j] = original`), the scalar $\varphi$ is evaluated under `no_grad` (no graph for the
# $2n$ extra evaluations), and the numeric side is accumulated in float64.
#
# A passing check on a small attention-like function:

# %%
rng = np.random.default_rng(0)
a = tm.Tensor(rng.standard_normal((3, 4)), requires_grad=True)   # float64: what gradcheck wants
b = tm.Tensor(rng.standard_normal((5, 4)), requires_grad=True)


def attention_like(a, b):
    return tm.softmax(a @ b.T / 2.0, axis=-1) @ b


print("gradcheck:", tm.gradcheck(attention_like, (a, b)))

# %% [markdown]
# The theory of part 1 is visible through the tool: with tight tolerances, a huge `eps`
# fails on truncation error and a tiny one fails on round-off; the default sits in the
# valley. (`raise_exception=False` makes `gradcheck` return `False` instead of raising.)

# %%
sweep = {}
for eps in (1e-1, 1e-3, 1e-6, 1e-9, 1e-12):
    sweep[eps] = tm.gradcheck(attention_like, (a, b), eps=eps, atol=1e-7, rtol=1e-6,
                              raise_exception=False)
    print(f"eps={eps:7.0e}: {'pass' if sweep[eps] else 'FAIL'}")

# %% [markdown]
# And float32 inputs with the default `eps=1e-6`: round-off of order
# $\varepsilon_{32}/h \approx 0.1$ swamps everything, so the check fails on a *correct*
# gradient, and `gradcheck` warns you beforehand.

# %%
a32 = tm.Tensor(a.numpy().astype(np.float32), requires_grad=True)
b32 = tm.Tensor(b.numpy().astype(np.float32), requires_grad=True)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    float32_passes = tm.gradcheck(attention_like, (a32, b32), raise_exception=False)
print("float32 at eps=1e-6:", "pass" if float32_passes else "FAIL")
print("warning:", caught[0].message if caught else None)

# %% [markdown]
# ## 3. Fast mode: one directional derivative
#
# The full check costs $2n$ evaluations of `fn` for an input with $n$ elements. For a
# $64\times64$ weight that is 8192 forward passes. Fast mode (`fast=True`) draws a random
# direction $v$ and compares one number:
#
# $$\underbrace{\frac{\varphi(x + h v) - \varphi(x - h v)}{2h}}_{\text{2 evaluations}}
# \;\approx\; \langle \nabla\varphi(x), v\rangle = u^\top J\, v .$$
#
# If the analytic gradient $g$ is wrong, $\langle g - \nabla\varphi, v\rangle$ is a random
# variable that is zero only on a hyperplane, i.e. with probability 0: fast mode catches a
# wrong gradient just as surely. What it cannot tell you is *which* element is wrong, so the
# usual workflow is fast mode on big inputs, full mode on small ones when something fails.

# %%
n = 24 if SMALL else 64
big_a = tm.Tensor(rng.standard_normal((n, n)), requires_grad=True)
big_b = tm.Tensor(rng.standard_normal((n, n)), requires_grad=True)


def mlp_like(a, b):
    return (a @ b).tanh() @ b.T


timings = {}
for fast in (False, True):
    start = time.perf_counter()
    assert tm.gradcheck(mlp_like, (big_a, big_b), fast=fast)
    timings[fast] = time.perf_counter() - start
    print(f"fast={fast!s:5}: passed in {timings[fast] * 1e3:8.1f} ms "
          f"({'4' if fast else 4 * n * n} evaluations of fn)")

# %% [markdown]
# ## 4. Reading a `GradcheckError`
#
# Let us write a wrong op on purpose. An op is a `Function` with a `forward` on arrays and a
# `backward` that returns the input's gradient as a Tensor (see `tinygrad_mha/ops/`). This
# sigmoid forgets the factor $(1 - \sigma)$ of $\sigma'(x) = \sigma(x)(1 - \sigma(x))$, and
# only where $x > 0$, so most elements look right:

# %%
print(inspect.getsource(tm.ops.elementwise.Sigmoid))  # the real one, for comparison


class BuggySigmoid(Function):
    """sigmoid, with the derivative sigma instead of sigma (1 - sigma) where x > 0."""

    def forward(self, x):
        xp = array_module(x)          # numpy or cupy: the backend seam (tutorial 12)
        return 1.0 / (1.0 + xp.exp(-x))

    def backward(self, g):
        y = self.output
        x = self.inputs[0]
        wrong = tm.where(x > 0, y, y * (1 - y))
        return g * wrong


xs = tm.Tensor(np.array([[-1.5, -0.2, 0.4], [-0.7, -2.0, -0.1]]), requires_grad=True)
try:
    tm.gradcheck(BuggySigmoid.apply, (xs,))
    error_message = None
except tm.GradcheckError as exc:
    error_message = str(exc)
print(error_message)

# %% [markdown]
# The message answers the questions you would ask next:
#
# * **which input** (`input 0`, and its shape), **which element** (`at index (0, 2)`: the
#   only positive entry, 0.4);
# * **analytic vs numeric**: here $\sigma(0.4) \approx 0.599$ against the true
#   $\sigma(1-\sigma) \approx 0.240$ (times the random $u$ of that element);
# * **absolute and relative error**, and the tolerance they broke.
#
# With that, you open the op's `backward` and compare its formula with the numbers. In fast
# mode the message says "along a random direction" instead of an index. `GradcheckError` is an
# `AssertionError`, so inside pytest a failing gradcheck reads like any failed assert.

# %%
try:
    tm.gradcheck(BuggySigmoid.apply, (xs,), fast=True)
    fast_message = None
except tm.GradcheckError as exc:
    fast_message = str(exc)
print(fast_message)

# %% [markdown]
# ## 5. Second derivatives: `gradgradcheck`
#
# `backward(create_graph=True)` records the backward pass itself, so a gradient can be
# differentiated again (Hessian-vector products, gradient penalties, meta-learning). That only
# works if every `backward` is written with differentiable Tensor ops. `gradgradcheck` runs
# `gradcheck` on the map
#
# $$(x, v) \mapsto \frac{\partial \langle \mathrm{fn}(x), v\rangle}{\partial x} = J(x)^\top v,$$
#
# i.e. it checks the derivative of the gradient with respect to the inputs (second
# derivatives of `fn`) and to the upstream gradient $v$:

# %%
print(inspect.getsource(tm.gradgradcheck))

# %% [markdown]
# Here is the bug only `gradgradcheck` sees: a sigmoid whose first derivative is **right**,
# but computed from raw NumPy arrays. Its value is correct, so `gradcheck` passes; but
# `tm.Tensor(array)` is a constant to the engine, so the dependence of $\sigma'(x)$ on $x$ is
# invisible and the second derivative $\sigma''(x) = \sigma'(x)(1 - 2\sigma(x))$ comes out 0.

# %%
class DetachedSigmoid(Function):
    """sigmoid with a correct, but non-differentiable, backward."""

    def forward(self, x):
        return 1.0 / (1.0 + array_module(x).exp(-x))

    def backward(self, g):
        y = self.output.numpy()
        return g * tm.Tensor(y * (1 - y))   # a constant: the graph cannot see y depends on x


first_order_ok = tm.gradcheck(DetachedSigmoid.apply, (xs,))
try:
    tm.gradgradcheck(DetachedSigmoid.apply, (xs,))
    second_message = None
except tm.GradcheckError as exc:
    second_message = str(exc)
print("gradcheck of DetachedSigmoid:", first_order_ok)
print("gradgradcheck of DetachedSigmoid:", second_message)
print("gradgradcheck of tm sigmoid:", tm.gradgradcheck(lambda t: t.sigmoid(), (xs,)))
print("gradgradcheck of attention_like:", tm.gradgradcheck(attention_like, (a, b)))

# %% [markdown]
# The library's `Sigmoid.backward` is `g * (y * (1 - y))` with `y = self.output`, a Tensor in
# the graph: the same formula, but differentiable, so higher derivatives come for free.
#
# ## Check: what this tutorial taught
#
# The cell below asserts every claim made above, against the exact derivative $e$ and the
# error model.

# %%
e_exact = np.e
assert abs(exact - e_exact) < 1e-15, "the engine's derivative of exp at 1 must be e"

central64 = errors[("float64", "central")]
forward64 = errors[("float64", "forward")]
central32 = errors[("float32", "central")]


def at(h):
    return int(np.argmin(np.abs(np.log(steps) - np.log(h))))


# truncation regime: the measured error matches h^2/6 * f''' (central) and h/2 * f'' (forward)
h_big = steps[at(1e-1)]
assert abs(central64[at(1e-1)] / (h_big ** 2 / 6 * e_exact) - 1) < 0.05
assert abs(forward64[at(1e-1)] / (h_big / 2 * e_exact) - 1) < 0.1
# the valley: the best step is near the predicted h* and the error there is tiny
h_star64 = (3 * eps_mach[np.float64]) ** (1 / 3)
best64 = steps[int(np.nanargmin(central64))]
assert h_star64 / 30 < best64 < h_star64 * 30, (best64, h_star64)
assert np.nanmin(central64) < 1e-9
# round-off regime: a tiny step is far worse than the default
assert central64[at(1e-12)] > 1e3 * central64[at(1e-6)]
# central beats forward at gradcheck's default step
assert central64[at(1e-6)] < forward64[at(1e-6)]
# float32 is useless at eps=1e-6 and its best step is much larger
assert central32[at(1e-6)] > 1e-3
h_star32 = (3 * eps_mach[np.float32]) ** (1 / 3)
best32 = steps[int(np.nanargmin(central32))]
assert h_star32 / 30 < best32 < h_star32 * 30, (best32, h_star32)
assert len(fig.axes) == 1 and len(fig.axes[0].lines) >= 8  # 4 measured curves, 4 models
assert len(library_figure.axes) == 1

# gradcheck: passes in the valley, fails at both ends with tight tolerances, fails in float32
assert sweep[1e-6] and sweep[1e-3]
assert not sweep[1e-1] and not sweep[1e-12]
assert not float32_passes and caught and "float32" in str(caught[0].message)

# fast mode: same verdict, far fewer evaluations
assert timings[True] < timings[False]

# the GradcheckError names the input and the only wrong element (the one positive entry)
assert error_message is not None and "input 0" in error_message
assert "at index (0, 2)" in error_message
assert fast_message is not None and "random direction" in fast_message

# gradgradcheck catches the backward that gradcheck cannot
assert first_order_ok is True
assert second_message is not None and "gradcheck failed" in second_message
print("all checks passed")
