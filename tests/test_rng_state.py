"""rng_state / set_rng_state: torch, NumPy's global generator and Python's `random` come back exactly,
in memory and through a checkpoint file."""

import random

import numpy as np
import pytest
import torch

from onebit.train.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state


def _draw() -> tuple:
    """The next values of the three generators (NumPy's normal too: it uses the cached-gauss slot)."""
    return (torch.rand(5).tolist(), torch.randint(0, 1 << 30, (3,)).tolist(),
            np.random.random(5).tolist(), np.random.standard_normal(3).tolist(), np.random.randint(0, 1 << 30, 3).tolist(),
            [random.random() for _ in range(5)], random.gauss(0, 1), random.getrandbits(64))


def _seed_all(s: int) -> None:
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def _per_generator(a: tuple, b: tuple) -> dict:
    """Which generators' draws are equal: torch (0, 1), numpy (2–4), python (5–7)."""
    return {"torch": a[:2] == b[:2], "numpy": a[2:5] == b[2:5], "python": a[5:] == b[5:]}


def test_round_trip_in_memory():
    _seed_all(1)
    _draw()  # moves every generator off its seeded start; 3 normals leave NumPy (and Python) a cached gauss
    assert np.random.get_state()[3] == 1  # has_gauss: the saved state must carry the cached value
    tensors, meta = rng_state()
    first = _draw()
    set_rng_state(tensors, {"rng": meta})  # the layout save_checkpoint writes: meta["rng"]
    assert _per_generator(_draw(), first) == {"torch": True, "numpy": True, "python": True}


def test_restore_after_other_draws_gives_the_saved_next_values():
    _seed_all(2)
    tensors, meta = rng_state()
    want = _draw()
    for _ in range(3):  # the generators move on, reseeded and drawn from
        _seed_all(99)
        _draw()
    assert _per_generator(_draw(), want) == {"torch": False, "numpy": False, "python": False}
    set_rng_state(tensors, {"rng": meta})
    assert _per_generator(_draw(), want) == {"torch": True, "numpy": True, "python": True}
    set_rng_state(tensors, {"rng": meta})  # the saved state is not consumed: again the same values
    assert _per_generator(_draw(), want) == {"torch": True, "numpy": True, "python": True}


def test_round_trip_through_a_checkpoint_file(tmp_path):
    _seed_all(3)
    _draw()
    assert np.random.get_state()[3] == 1  # a cached NumPy gauss goes into the file too
    save_checkpoint(tmp_path / "c.safetensors", torch.nn.Linear(2, 2), {"epoch": 0})
    want = _draw()
    _seed_all(4)
    _draw()
    assert _per_generator(_draw(), want) == {"torch": False, "numpy": False, "python": False}
    tensors, meta = load_checkpoint(tmp_path / "c.safetensors")
    assert {"rng.torch", "rng.numpy"} <= set(tensors) and set(meta["rng"]) == {"numpy", "python"}
    set_rng_state(tensors, meta)
    assert _per_generator(_draw(), want) == {"torch": True, "numpy": True, "python": True}


def test_each_generator_is_restored_from_its_own_entry(tmp_path):
    """Without an entry that generator is left as it is (not reset), the others still restored."""
    _seed_all(5)
    tensors, meta = rng_state()
    want = _draw()
    _seed_all(6)
    now = rng_state()
    set_rng_state({k: v for k, v in tensors.items() if k != "rng.torch"}, {"rng": meta})
    got = _draw()
    assert _per_generator(got, want) == {"torch": False, "numpy": True, "python": True}
    set_rng_state(*now[:1], {"rng": now[1]})
    assert got[:2] == _draw()[:2]  # torch had kept seed 6's state


def test_malformed_states_are_checkpoint_errors():
    tensors, meta = rng_state()
    with pytest.raises(CheckpointError, match="rng.torch must be a uint8 vector"):
        set_rng_state({**tensors, "rng.torch": torch.zeros(3, dtype=torch.float32)}, {"rng": meta})
    with pytest.raises(CheckpointError, match="NumPy RNG state"):
        set_rng_state({**tensors, "rng.numpy": torch.zeros(5, dtype=torch.int64)}, {"rng": meta})
    with pytest.raises(CheckpointError, match="cannot restore the RNG state"):
        set_rng_state(tensors, {"rng": {**meta, "python": [3, [1, 2], None]}})


def test_rng_states_own_meta_is_accepted_as_is():
    """``set_rng_state(*rng_state())`` restores all three generators, not only torch's: the meta may
    be rng_state's own or a checkpoint's (which holds it under "rng")."""
    state = rng_state()
    a = _draw()
    set_rng_state(*state)
    assert _draw() == a
