"""What an audit against real CuPy 13.6 / 14.2 found (issue 16), one test per finding.

They run on the strict stand-in of ``fake_cupy`` (or real CuPy on a GPU via the ``device``
fixture); the last ones compare names with real CuPy, which imports without a GPU.
"""

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha import backend, initializers

import fake_cupy
from fake_cupy import install

ROOT = Path(__file__).resolve().parents[1]


def _real_cupy():
    """Real CuPy when it imports (it does without a GPU), else skip."""
    if isinstance(sys.modules.get("cupy"), fake_cupy.FakeCupy):
        pytest.skip("the stand-in is installed")
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        pytest.skip(f"cupy does not import here: {exc}")
    return cupy


# ---------------------------------------------------------------- 1: the array names its module
def test_a_cupy_array_brings_its_own_module_without_xp_for(monkeypatch):
    fake = install(monkeypatch)  # like a fresh session: nothing has asked for "cuda" yet
    x = fake.asarray(np.array([1.0, 2.0, 3.0]))
    assert backend.array_module(x) is fake
    t = tm.Tensor(x, requires_grad=True)  # from a CuPy array: to_device has nothing to do
    y = tm.einsum("i,i->i", t * t, t)[np.array([0, 2, 2])]
    y.sum().backward()
    assert y.device == "cuda" and backend.device_of(t.grad) == "cuda"
    np.testing.assert_allclose(backend.to_numpy(t.grad), [3.0, 0.0, 54.0])


# ---------------------------------------------------------------- 2: out-of-range indices raise
@pytest.mark.parametrize("index, axis, bad, size", [
    ([5], 0, 5, 3),
    (np.array([0, -4]), 0, -4, 3),
    ((slice(None), [0, 4]), 1, 4, 4),
    ((Ellipsis, np.array([9])), 1, 9, 4),
    ((None, 3, [1]), 0, 3, 3),
    ((np.ones(3, bool), [7]), 1, 7, 4),
])
def test_getitem_out_of_range_raises_index_error_on_every_device(device, index, axis, bad, size):
    x = tm.Tensor(np.arange(12.0).reshape(3, 4), device=device)
    with pytest.raises(IndexError, match=f"index {bad} is out of bounds for axis {axis} with size {size}"):
        x[index]


def test_getitem_in_range_integer_indices_still_match_numpy(device):
    host = np.arange(12.0).reshape(3, 4)
    x = tm.Tensor(host, device=device)
    for index in ([2, -3], (slice(None), [-1, 0]), (Ellipsis, np.array([3])), (np.array([True, False, True]), [1])):
        np.testing.assert_array_equal(x[index].numpy(), host[index])


# ---------------------------------------------------------------- 3: no deprecated scatter_add
def test_integer_index_gradient_adds_repeats_without_a_deprecation_warning(device):
    x = tm.Tensor(np.arange(4.0), requires_grad=True, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cupyx.scatter_add warns DeprecationWarning on every call
        x[np.array([1, 1, 3])].sum().backward()
    assert backend.device_of(x.grad) == device
    np.testing.assert_array_equal(backend.to_numpy(x.grad), [0.0, 2.0, 0.0, 1.0])


# ---------------------------------------------------------------- item 2: seeded draws agree
@pytest.mark.parametrize("name", ["random_normal", "random_uniform", "truncated_normal", "glorot_uniform",
                                  "glorot_normal", "he_normal", "lecun_uniform", "orthogonal"])
def test_a_seeded_initializer_gives_the_same_values_on_cpu_and_cuda(device, name):
    shape = (6, 5)
    on_cpu = initializers.get({"class_name": name, "config": {"seed": 7}})(shape, "float32", "cpu")
    here = initializers.get({"class_name": name, "config": {"seed": 7}})(shape, "float32", device)
    assert backend.device_of(here) == device
    np.testing.assert_array_equal(backend.to_numpy(here), on_cpu)
    tm.set_seed(11)  # the shared host stream, seeded: the same on both devices too
    a = initializers.get(name)(shape, "float32", "cpu")
    tm.set_seed(11)
    b = initializers.get(name)(shape, "float32", device)
    np.testing.assert_array_equal(backend.to_numpy(b), a)
    tm.set_seed(None)


# ---------------------------------------------------------------- 5, 6: an installable extra, make test-gpu
def test_the_gpu_extra_names_a_binary_wheel():
    try:
        import tomllib  # Python 3.11+
    except ImportError:
        tomllib = pytest.importorskip("tomli")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = [re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0] for req in extras["gpu"]]
    assert names == ["cupy-cuda12x"]  # "cupy" alone has no wheel: it compiles from source


def test_make_test_gpu_installs_the_gpu_extra_and_uses_real_cupy():
    makefile = (ROOT / "Makefile").read_text()
    target = makefile[makefile.index("\ntest-gpu:"):].split("\n\n")[0]
    assert ".[dev,gpu]" in makefile and "TM_FAKE_CUDA=0" in target and "nvidia-smi" in target


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_gpu_stops_with_a_clear_message_without_a_gpu(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH where nvidia-smi fails, as on a machine without a GPU
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["make", "-s", "--no-print-directory", "test-gpu", "VENV=" + str(tmp_path / "venv")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "no NVIDIA GPU" in done.stderr
    assert not (tmp_path / "venv").exists()  # stopped before installing anything


# ---------------------------------------------------------------- 8: CuPy values and arrays at the API
def test_constant_takes_a_cupy_scalar(device):
    value = backend.xp_for(device).asarray(np.float32(0.25)).sum()  # a 0-d array on the device
    init = initializers.Constant(value)
    assert init.value == 0.25 and init.get_config() == {"value": 0.25}
    np.testing.assert_array_equal(backend.to_numpy(init((2,), "float32", device)), [0.25, 0.25])


def test_set_weights_refuses_a_bare_cupy_array(device):
    layer = tm.layers.Dense(2)
    layer.build((3, 4))
    before = [w.copy() for w in layer.get_weights()]
    with pytest.raises(TypeError, match="list of 2 arrays"):
        layer.set_weights(backend.xp_for(device).zeros((2, 4, 2)))
    for w, b in zip(layer.get_weights(), before):
        np.testing.assert_array_equal(w, b)


# ---------------------------------------------------------------- names: the package, the stand-in, real CuPy
def _xp_names_the_package_calls() -> set[str]:
    names = set()
    for path in (ROOT / "tinygrad_mha").rglob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"\bxp\.([A-Za-z_]\w*)", text))  # xp.exp, a.xp.zeros_like
        names |= set(re.findall(r"\b(?:array_module|xp_for)\([^()]*\)\.([A-Za-z_]\w*)", text))
    return names


def test_the_stand_in_has_every_xp_name_the_package_calls():
    missing = _xp_names_the_package_calls() - fake_cupy.CUPY_NAMES
    assert not missing, f"xp.<name> the package calls but fake_cupy lacks: {sorted(missing)}"


def test_every_xp_name_the_package_calls_exists_in_real_cupy():
    cupy = _real_cupy()
    missing = sorted(n for n in _xp_names_the_package_calls() if not hasattr(cupy, n))
    assert not missing, f"xp.<name> the package calls but CuPy {cupy.__version__} lacks: {missing}"
    assert hasattr(cupy.add, "at")  # backend.scatter_add


def test_the_stand_in_offers_only_what_real_cupy_has():
    cupy = _real_cupy()
    assert sorted(n for n in fake_cupy.CUPY_NAMES if not hasattr(cupy, n)) == []
    assert sorted(n for n in fake_cupy._NDARRAY_METHODS if not hasattr(cupy.ndarray, n)) == []
    assert sorted(n for n in fake_cupy._Generator._METHODS if not hasattr(cupy.random.Generator, n)) == []
    own = set(dir(fake_cupy.ndarray)) - {"__getattr__", "__slots__", "_a", "_of"}
    assert sorted(n for n in own if not hasattr(cupy.ndarray, n)) == []  # no extra method or dunder
    assert sorted(n for n in dir(fake_cupy.ufunc) if not n.startswith("_") and not hasattr(cupy.add, n)) == []
    assert not hasattr(cupy.ndarray, "__index__") and not hasattr(cupy.random.Generator, "normal")
