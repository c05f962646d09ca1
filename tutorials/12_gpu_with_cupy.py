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
# # 12 · The same code on a GPU, with CuPy
#
# [CuPy](https://cupy.dev) is NumPy's API on NVIDIA GPUs: `cupy.exp`, `cupy.einsum`,
# `cupy.matmul`... take and return `cupy.ndarray`s that live in GPU memory. Because every op
# in tinygrad_mha asks its inputs which array module they belong to, instead of importing
# NumPy directly, the *same* engine, ops, layers, optimizers and gradient checks run on
# either device. All you do is put the data there:
#
# ```python
# x = tm.Tensor(array, device="cuda")   # or: x = tm.Tensor(array).to("cuda")
# layer.to("cuda")                      # moves the weights; inputs given as NumPy arrays follow
# ```
#
# This tutorial runs on a GPU when CuPy and a GPU are present (`pip install -e ".[gpu]"`),
# and otherwise runs every cell on the CPU, saying so. Either way it checks that the results
# do not depend on the device.

# %%
import inspect
import math
import os
import time

import numpy as np

import tinygrad_mha as tm
from tinygrad_mha import backend

SMALL = os.environ.get("TINYGRAD_MHA_SMALL", "0") not in ("", "0")
HAS_GPU = tm.cuda_available()
DEVICE = "cuda" if HAS_GPU else "cpu"
if HAS_GPU:
    import cupy

    gpu_name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    gpu_name = gpu_name.decode() if isinstance(gpu_name, bytes) else gpu_name
    print(f"GPU found: {gpu_name} with CuPy {cupy.__version__}. "
          f'Every "{DEVICE}" cell below runs on it.')
else:
    print("=" * 78)
    print("NO GPU: CuPy is not installed or no CUDA GPU is visible, so this tutorial runs")
    print('on the CPU. Every cell that says DEVICE uses "cpu" instead of "cuda"; the code is')
    print('exactly what you would run on a GPU. (Install the "gpu" extra on a CUDA machine.)')
    print("=" * 78)
print("small mode" if SMALL else "full size", "| DEVICE =", DEVICE)

# %% [markdown]
# ## 1. The backend seam
#
# All knowledge of NumPy versus CuPy sits in one small module, `tinygrad_mha/backend.py`.
# The heart of it is one function: given an array, which module owns it?

# %%
print(inspect.getsource(backend.array_module))
print(inspect.getsource(backend.xp_for))

# %% [markdown]
# An op never writes `np.exp(x)`; it writes `xp = array_module(x)` and then `xp.exp(x)`
# (the convention of DeZero and of CuPy's own docs). Here is the softmax forward, which runs
# unchanged on both devices:

# %%
print(inspect.getsource(tm.ops.nn.Softmax.forward))

# %% [markdown]
# CuPy is imported *lazily*, the first time someone asks for `"cuda"` (or hands over a CuPy
# array, whose own module then answers), so a CPU-only machine never imports it. When it is
# missing, asking for `"cuda"` fails with an error that says what to install, before anything
# is half-done:

# %%
print(inspect.getsource(backend._import_cupy))
if HAS_GPU:
    cuda_error = None
    print("(CuPy and a GPU are present, so asking for cuda succeeds)")
else:
    try:
        tm.Tensor([1.0, 2.0], device="cuda")
        cuda_error = None
    except RuntimeError as exc:
        cuda_error = str(exc)
    print("tm.Tensor([1., 2.], device='cuda') raised:\n ", cuda_error)

# %% [markdown]
# A tensor tells you where it lives: `.device` is `"cpu"` or `"cuda"`, `.data` is the
# backend array, `.xp` the module that owns it, and `.numpy()` always gives a host NumPy
# copy, which is what you print, plot or compare.

# %%
t = tm.Tensor(np.arange(6.0).reshape(2, 3), device=DEVICE)
print(f"device {t.device!r}, data type {type(t.data).__module__}.{type(t.data).__name__}, "
      f"xp = {t.xp.__name__}, numpy() type {type(t.numpy()).__name__}")

# %% [markdown]
# ## 2. The engine on the device
#
# Attention from tutorial 08, written once. Run it on the CPU and on `DEVICE` and compare.
# Gradients land on the same device as their tensor (`x.grad` is a `cupy.ndarray` on the
# GPU); `backend.to_numpy` brings any backend array home.

# %%
def attention(q, k, v, mask=None):
    scores = tm.einsum("btd,bsd->bts", q, k) * (1.0 / math.sqrt(q.shape[-1]))  # a Python float
    return tm.einsum("bts,bse->bte", tm.softmax(scores, axis=-1, mask=mask), v)


rng = np.random.default_rng(0)
B, T, D = 2, 5, 8
arrays = [rng.standard_normal((B, T, D)) for _ in range(3)]
upstream = rng.standard_normal((B, T, D))
causal = np.tril(np.ones((T, T), dtype=bool))

results = {}
for device in dict.fromkeys(["cpu", DEVICE]):        # just "cpu" when there is no GPU
    q, k, v = (tm.Tensor(a, requires_grad=True, device=device) for a in arrays)
    out = attention(q, k, v, mask=causal)
    out.backward(tm.Tensor(upstream, device=device))
    results[device] = {"out": out.numpy(),
                       **{n: backend.to_numpy(x.grad) for n, x in zip("qkv", (q, k, v))}}
    print(f"{device}: output on {out.device}, q.grad is a {type(q.grad).__module__}.ndarray")

device_error = max(float(np.abs(results[DEVICE][key] - results["cpu"][key]).max())
                   for key in results["cpu"])
print(f"max |{DEVICE} - cpu| over output and gradients: {device_error:.2e}")

# %% [markdown]
# `.to(device)` is itself a differentiable op (`ToDevice`): its backward moves the gradient
# back. So a CPU leaf can feed a computation on the GPU and still receive its gradient, on
# the CPU:

# %%
x_cpu = tm.Tensor(rng.standard_normal(4), requires_grad=True)
y = (x_cpu.to(DEVICE) * x_cpu.to(DEVICE)).sum()       # d/dx sum(x^2) = 2x
y.backward()
print(f"y lives on {y.device}; x_cpu.grad is a {type(x_cpu.grad).__name__} on the cpu:", x_cpu.grad)

# %% [markdown]
# The finite-difference check of tutorial 07 runs on the device as well: it perturbs the
# inputs in place in device memory and compares with the analytic gradient.

# %%
small = [tm.Tensor(np.ascontiguousarray(a[:1, :3, :4]), requires_grad=True, device=DEVICE)
         for a in arrays]
device_gradcheck = tm.gradcheck(lambda q, k, v: attention(q, k, v, mask=causal[:3, :3]), small)
print(f"gradcheck on {DEVICE}:", device_gradcheck)

# %% [markdown]
# ## 3. A layer and an optimizer on the device
#
# `layer.to(DEVICE)` moves every weight in place (the `Parameter` objects stay the same, so
# an optimizer created before or after still holds them). NumPy inputs are moved to the
# layer's device when it is called, and the optimizer updates each weight where it lives.
#
# We train the same layer, from the same initial weights, on the same batches, on the CPU
# and on `DEVICE`, in float64. The two runs do the same arithmetic in a different order (GPU
# reductions are parallel), so they agree to round-off, not bit for bit.

# %%
STEPS = 10 if SMALL else 50
x_train = rng.standard_normal((8, 6, 16))
y_train = rng.standard_normal((8, 6, 16))
initial = tm.MultiHeadAttention(num_heads=2, key_dim=8, seed=0, dtype="float64")
initial.build(x_train.shape, x_train.shape)
start_weights = initial.get_weights()


def train_on(device):
    layer = tm.MultiHeadAttention(num_heads=2, key_dim=8, dtype="float64")
    layer.build(x_train.shape, x_train.shape)
    layer.set_weights(start_weights)
    layer.to(device)
    opt = tm.optimizers.Adam(layer.trainable_weights, learning_rate=1e-2)
    losses = []
    for _ in range(STEPS):
        loss = tm.losses.mean_squared_error(y_train, layer(x_train, x_train, use_causal_mask=True))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return layer, losses


trained = {device: train_on(device) for device in dict.fromkeys(["cpu", DEVICE])}
weights_error = max(float(np.abs(a - b).max()) for a, b in
                    zip(trained["cpu"][0].get_weights(), trained[DEVICE][0].get_weights()))
print(f"loss on {DEVICE}: {trained[DEVICE][1][0]:.4f} -> {trained[DEVICE][1][-1]:.4f}")
print(f"weights on {trained[DEVICE][0].weights[0].device!r}; max |{DEVICE} - cpu| after "
      f"{STEPS} Adam steps: {weights_error:.2e}")

# %% [markdown]
# ## 4. When is the GPU worth it?
#
# A GPU launches a kernel per op; for tiny arrays the launch overhead (microseconds) costs
# more than the arithmetic, and the CPU wins. For large batches of attention the GPU's
# thousands of cores take over. We time one forward + backward pass of attention on a
# batch big enough to tell (synchronising with `.item()`, since GPU work is asynchronous).
# Without a GPU only the CPU time is shown.

# %%
BIG = (4, 64, 32) if SMALL else (16, 256, 64)


def time_attention(device, repeats=3):
    big = [tm.Tensor(rng.standard_normal(BIG).astype(np.float32), requires_grad=True, device=device)
           for _ in range(3)]
    best = float("inf")
    for _ in range(repeats + 1):                   # the first run warms up (CuPy compiles kernels)
        start = time.perf_counter()
        loss = attention(*big).sum()
        loss.backward()
        big[0].grad.sum().item()                   # wait for the device to finish
        best = min(best, time.perf_counter() - start)
        for x in big:
            x.zero_grad()
    return best


timings = {device: time_attention(device) for device in dict.fromkeys(["cpu", DEVICE])}
for device, seconds in timings.items():
    print(f"{device:5s} attention forward+backward on {BIG}: {seconds * 1e3:8.2f} ms")
if not HAS_GPU:
    print("(no GPU here: nothing to compare with)")

# %% [markdown]
# ## Writing device-agnostic code
#
# * Create tensors with `device=` or move them with `.to(...)`; move layers with `layer.to(...)`.
# * Inside your own ops or helpers, ask `x.xp` (or `backend.array_module(array)`) for the
#   module instead of importing NumPy or CuPy.
# * Leave the device only at the edges: `.numpy()` / `.item()` to print, plot or compare.
# * Keep all operands of one op on one device; mixing raises an error that names both.

# %%
mixing_error = None
if HAS_GPU:
    try:
        tm.Tensor([1.0]) + tm.Tensor([1.0], device="cuda")
    except ValueError as exc:
        mixing_error = str(exc)
    print("cpu tensor + cuda tensor raised:", mixing_error)
else:
    print("mixing devices: (needs a GPU to show)")

# %% [markdown]
# ## Check: what this tutorial taught

# %%
# the seam: numpy arrays belong to numpy; a cuda tensor's data to cupy
assert backend.array_module(np.ones(2)) is np
assert t.device == DEVICE and isinstance(t.numpy(), np.ndarray)
assert t.xp.__name__ == ("cupy" if HAS_GPU else "numpy")
# without a GPU, asking for cuda is a clear error that names what is missing
if not HAS_GPU:
    assert cuda_error is not None and ("CuPy" in cuda_error or "GPU" in cuda_error)
# the engine gives the same outputs and gradients on every device (NumPy is the reference)
assert device_error < 1e-12
assert device_gradcheck
# .to() is differentiable: the CPU leaf got d/dx sum(x^2) = 2x
np.testing.assert_allclose(x_cpu.grad, 2 * x_cpu.numpy(), rtol=1e-12)
assert isinstance(x_cpu.grad, np.ndarray)
# a layer trained on DEVICE matches the CPU run, and its weights stayed on DEVICE
assert weights_error < 1e-9
assert all(w.device == DEVICE for w in trained[DEVICE][0].weights)
assert trained[DEVICE][1][-1] < trained[DEVICE][1][0]
if HAS_GPU:
    assert mixing_error is not None and "device" in mixing_error
print(f"all checks passed on {DEVICE}" + ("" if HAS_GPU else " (no GPU: the CPU stood in for it)"))
