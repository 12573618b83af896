"""Shared fixtures of the kernel tests: the ISA paths of this CPU and a seeded RNG."""

import zlib

import numpy as np
import pytest

from onebit import kernels

if kernels._core is None:  # pragma: no cover — fail every kernel test, never skip the whole folder
    raise RuntimeError("onebit.kernels._core is not built (pip install -e . builds it); the kernel tests need it")

ISAS = kernels.isa_paths()


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once per available ISA path (forced for the test's duration)."""
    with kernels.use_isa(request.param):
        yield request.param


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))  # the same seed every run
