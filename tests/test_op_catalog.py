"""Every differentiable op in the catalog passes a float64 gradcheck (and gradgradcheck)."""

import pytest

import tinygrad_mha as tm
from tinygrad_mha.op_catalog import CATALOG


@pytest.mark.parametrize("case", CATALOG, ids=lambda c: c.name)
def test_gradcheck(case, device):
    assert tm.gradcheck(case.fn, case.inputs(device=device))


@pytest.mark.parametrize("case", [c for c in CATALOG if c.second_order], ids=lambda c: c.name)
def test_gradgradcheck(case, device):
    assert tm.gradgradcheck(case.fn, case.inputs(device=device))
