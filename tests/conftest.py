import os

import pytest
import torch

# The suite runs on 2 shared cores: keep PyTorch to one thread per test process, never download.
torch.set_num_threads(1)
os.environ.setdefault("ONEBIT_NO_DOWNLOAD", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def make_tiny_mnist(tmp_path_factory):
    """``make(n_train, n_test)`` → folder of a learnable 10-class 'MNIST' (IDX files): class k lights
    up row band k. Deterministic (seed 0) and built once per size."""
    import numpy as np

    from onebit.data.formats import write_idx

    cache = {}

    def make(n_train: int = 300, n_test: int = 60):
        if (n_train, n_test) not in cache:
            root = tmp_path_factory.mktemp(f"tiny-mnist-{n_train}-{n_test}")
            rng = np.random.default_rng(0)
            for prefix, n in (("train", n_train), ("t10k", n_test)):
                y = rng.integers(0, 10, n).astype(np.uint8)
                x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
                for i, k in enumerate(y):
                    x[i, 2 * k + 4: 2 * k + 7, 4:24] = 250
                write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x)
                write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y)
            cache[(n_train, n_test)] = root
        return cache[(n_train, n_test)]

    return make


@pytest.fixture
def cli_error(capsys):
    """``cli_error(args)`` runs ``onebit ARGS``, checks it failed the way a user error should (exit 2,
    one line ``onebit: error: …``, no traceback) and returns that line."""
    from onebit.cli.main import main as cli

    def run(args: list[str]) -> str:
        rc = cli(args)
        err = capsys.readouterr().err
        assert rc == 2, err
        assert err.count("\n") == 1 and err.startswith("onebit: error: "), err
        return err

    return run
