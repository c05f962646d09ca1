"""Every differentiable op in the catalog passes a float64 gradcheck (and gradgradcheck), on
its kernels and on its reference definition (``tm.use_kernels(False)``)."""

import pytest

import tinygrad_mha as tm
from tinygrad_mha.op_catalog import CATALOG


@pytest.fixture(params=[True, False], ids=["kernels", "reference"])
def mode(request):
    with tm.use_kernels(request.param):
        yield request.param


@pytest.mark.parametrize("case", CATALOG, ids=lambda c: c.name)
def test_gradcheck(case, device, mode):
    assert tm.gradcheck(case.fn, case.inputs(device=device))


@pytest.mark.parametrize("case", [c for c in CATALOG if c.second_order], ids=lambda c: c.name)
def test_gradgradcheck(case, device, mode):
    assert tm.gradgradcheck(case.fn, case.inputs(device=device))
