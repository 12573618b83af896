"""Shared fixtures of the kernel tests: the ISA paths of this CPU and a seeded RNG."""

import numpy as np
import pytest

kernels = pytest.importorskip("onebit.kernels")
if kernels._core is None:  # pragma: no cover
    pytest.skip("onebit.kernels._core is not built", allow_module_level=True)

ISAS = kernels.isa_paths()


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once per available ISA path (forced for the test's duration)."""
    with kernels.use_isa(request.param):
        yield request.param


@pytest.fixture
def rng(request):
    return np.random.default_rng(abs(hash(request.node.name)) % (2**32))
