import os

import pytest
import torch

# The suite runs on 2 shared cores: keep PyTorch to one thread per test process, never download.
torch.set_num_threads(1)
os.environ.setdefault("ONEBIT_NO_DOWNLOAD", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
