"""Fuzzing the two loaders of untrusted files: ``.onebit`` models and training checkpoints (issue 7).

Every mutated file must end in the loader's own error (:class:`DeployError`,
:class:`CheckpointError`) or load as a valid model — never another exception, a hang (each example
has a deadline) or a huge allocation (NumPy/Python allocations are traced; a peak above 64 MiB fails).

Mutations: byte level (truncation, flipped/overwritten/inserted bytes), safetensors header level
(dtypes, huge or negative shapes, offsets past the end, missing/extra/renamed tensors, broken
metadata), JSON level (any value of the graph or checkpoint metadata replaced by hostile JSON,
keys dropped, ops swapped) and tensor level (a tensor re-saved with another dtype or shape).

CI runs a few hundred examples per fuzzer; ``ONEBIT_FUZZ_EXAMPLES=10000 python3 -m pytest -q
tests/test_fuzz_loaders.py --hypothesis-show-statistics`` runs the long campaign.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import resource
import tempfile
import traceback
import tracemalloc
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save as save_np

from onebit import models
from onebit.deploy import DeployError, Engine, export
from onebit.deploy import format as fmt
from onebit.methods.recipe import Recipe
from onebit.nn import constraints
from onebit.optim import make_scheduler
from onebit.train import CheckpointError, load_for_eval
from onebit.train.checkpoint import parse_checkpoint, read_meta, restore, save_checkpoint
from onebit.train.trainer import build_optimizer

pytest.importorskip("onebit.kernels")

EXAMPLES = int(os.environ.get("ONEBIT_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=5),
                suppress_health_check=list(HealthCheck))
PEAK_LIMIT = 64 << 20
WORK = Path(tempfile.mkdtemp(prefix="onebit-fuzz-"))


@atexit.register
def _cleanup() -> None:
    """Remove the scratch files; keep saved failing inputs (crash-*) for replay."""
    for p in WORK.iterdir():
        if not p.name.startswith("crash-"):
            p.unlink(missing_ok=True)
    if not any(WORK.iterdir()):
        WORK.rmdir()


# ---------------------------------------------------------------------------------------------
# seed files


def split(raw: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def join(header: dict, blob: bytes, len_delta: int = 0) -> bytes:
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return max(len(h) + len_delta, 0).to_bytes(8, "little") + h + blob


def _onebit_seeds() -> list[bytes]:
    torch.manual_seed(0)
    out = []
    for name, kw, shape in (("bnn-convnet", {"widths": (8, 16, 24), "fc": 32}, (1, 3, 32, 32)),
                            ("bnn-mlp", {"hidden": 70, "image_size": 12, "in_channels": 1}, (1, 1, 12, 12))):
        model = models.create(name, **kw).eval()
        p = WORK / f"seed-{name}.onebit"
        export(model, p, torch.randn(*shape), preprocess={"normalize": "pm1"})
        # without its checksum (a hostile file leaves it out too): the mutations reach the validator
        # instead of all stopping at the checksum (tested in tests/deploy/test_export_engine.py,
        # test_a_changed_bit_anywhere_after_the_header_is_named_damage)
        graph, tensors = fmt.parse(p.read_bytes())
        out.append(save_np(tensors, metadata={"onebit_graph": json.dumps(graph)}))
    return out


def _recipe() -> Recipe:
    return Recipe(model="bnn-mlp", data="mnist", model_kwargs={"hidden": 8}, epochs=3, optimizer="adam",
                  lr_schedule="exp", lr_final=1e-5)


def _fresh():
    torch.manual_seed(0)
    r = _recipe()
    model = models.create("bnn-mlp", hidden=8, in_channels=1, image_size=6)
    opt = build_optimizer(r, model)
    constraints.attach(opt, model)
    sched = make_scheduler(opt, r.lr_schedule, epochs=r.epochs, lr=r.lr, lr_final=r.lr_final, every=r.lr_every,
                           milestones=r.milestones)
    return model, opt, sched


def _ckpt_seed() -> bytes:
    model, opt, sched = _fresh()
    out = model(torch.randn(4, 1, 6, 6))
    out.square().mean().backward()
    opt.step()
    sched.step()
    meta = {"recipe": _recipe().to_dict(), "model_config": model.onebit_config, "epoch": 0, "kind": "epoch",
            "global_step": 1, "best_val_acc": 0.5, "best_epoch": 0, "test_acc_at_best": 0.5, "wall_s": 1.0}
    p = WORK / "seed.safetensors"
    save_checkpoint(p, model, meta, optimizer=opt, scheduler=sched)
    # without its checksum (a hostile file leaves it out too, or recomputes it): the mutations reach
    # the checks behind it instead of all stopping there (the checksum itself: tests/test_train.py,
    # test_a_changed_bit_in_a_checkpoint_is_detected)
    header, blob = split(p.read_bytes())
    del header["__metadata__"]["onebit_sha256"]
    return join(header, blob)


ONEBIT_SEEDS = _onebit_seeds()
CKPT_SEED = _ckpt_seed()
SEEDS = {"onebit": ONEBIT_SEEDS, "checkpoint": [CKPT_SEED]}  # strategies take the key (short reprs)


# ---------------------------------------------------------------------------------------------
# the targets: what a user-facing load does with the file


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


RSS0 = _max_rss()


def _bounded(fn, raw: bytes, tag: str, trace: bool):
    """Run ``fn``; fail on any exception (with a one-line message naming where it was raised; the
    input is saved for replay) or on a huge allocation: with ``trace``, NumPy/Python allocations
    are traced (peak above PEAK_LIMIT fails); always, the process's peak RSS may not grow by 1 GiB
    (PyTorch's allocations, which tracemalloc does not see)."""
    if trace:
        tracemalloc.start()
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
    except Exception as e:
        path = WORK / f"crash-{tag}-{hashlib.sha1(raw).hexdigest()[:12]}.bin"
        path.write_bytes(raw)
        where = traceback.extract_tb(e.__traceback__)[-1]
        raise AssertionError(f"{type(e).__name__}: {str(e)[:300]} at {where.filename}:{where.lineno} "
                             f"(input saved to {path})") from None
    finally:
        if trace:
            tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"a load allocated {peak >> 20} MiB"
    assert _max_rss() - RSS0 < 1 << 30, f"the process grew by {(_max_rss() - RSS0) >> 20} MiB"


def load_onebit(raw: bytes) -> None:
    """Open with the engine and run one input; only DeployError may escape (or nothing)."""
    p = WORK / "fuzz.onebit"
    p.write_bytes(raw)

    def go():
        try:
            e = Engine(p, threads=1)
        except DeployError as err:
            # the generic safety nets must never be what catches a file: validate() names the problem
            assert "invalid graph (" not in str(err) and "cannot prepare op" not in str(err), str(err)
            return
        if int(np.prod(e.input_shape)) > 1 << 16:
            return  # a (validly) huge input: running it would measure the input, not the loader
        x = np.zeros((1, *e.input_shape), np.float32)
        y = e.run(x)
        assert y.ndim == 2 and y.shape[0] == 1

    _bounded(go, raw, "onebit", trace=True)


def load_ckpt(raw: bytes) -> None:
    """Everything a checkpoint goes through: header-only read (resume's choice), load_for_eval,
    and restoring into a model + optimizer + scheduler + RNG (resume). Only CheckpointError may escape."""
    p = WORK / "fuzz.safetensors"
    p.write_bytes(raw)
    rng = torch.get_rng_state()

    def go():
        try:
            read_meta(p)
        except CheckpointError:
            pass
        try:
            load_for_eval(p)
        except CheckpointError:
            pass
        try:
            tensors, meta = parse_checkpoint(raw, "fuzz")
            model, opt, sched = _fresh()
            restore(tensors, meta, model, optimizer=opt, scheduler=sched, rng=True)
        except CheckpointError:
            pass

    try:
        _bounded(go, raw, "checkpoint", trace=False)
    finally:
        torch.set_rng_state(rng)


# ---------------------------------------------------------------------------------------------
# mutations


BIG = [0, 1, -1, 7, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53 + 1, 2 ** 62, 2 ** 63 - 1, 2 ** 64 - 1, 2 ** 64, 10 ** 30]
json_scalars = (st.none() | st.booleans() | st.sampled_from(BIG) | st.integers(-100, 100)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
                | st.sampled_from(["F32", "U64", "I32", "U8", "BOOL", "F16", "BF16", "I64", "F64", "input", "weight",
                                   "bconv", "dense", "bits", "float", "htanh", "pm1", "model.0.weight"]))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=5) | st.dictionaries(
    st.text(max_size=8), c, max_size=4), max_leaves=10)


@st.composite
def byte_mutation(draw, kind_of: str) -> bytes:
    b = bytearray(draw(st.sampled_from(SEEDS[kind_of])))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete", "header-len"]))
        pos = draw(st.integers(0, max(len(b) - 1, 0)))
        if kind == "truncate":
            del b[pos:]
        elif kind == "flip" and b:
            b[pos] ^= draw(st.integers(1, 255))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            b[pos:pos + len(chunk)] = chunk
        elif kind == "insert":
            b[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del b[pos:pos + draw(st.integers(1, 64))]
        elif kind == "header-len" and len(b) >= 8:
            n = draw(st.sampled_from([v for v in BIG if 0 <= v < 2 ** 64] + [len(b), len(b) - 8, len(b) - 7]))
            b[:8] = max(n, 0).to_bytes(8, "little")
    return bytes(b)


@st.composite
def header_mutation(draw, kind_of: str) -> bytes:
    header, blob = split(draw(st.sampled_from(SEEDS[kind_of])))
    names = [k for k in header if k != "__metadata__"]
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(names))
        entry = header.get(name)
        kind = draw(st.sampled_from(["dtype", "shape", "offsets", "delete", "rename", "add", "metadata", "entry"]))
        if kind == "dtype" and isinstance(entry, dict):
            entry["dtype"] = draw(st.sampled_from(["F32", "U64", "I32", "U8", "BOOL", "F16", "BF16", "I64", "F64",
                                                   "I8", "U16", "F8_E4M3", "XX", ""]))
        elif kind == "shape" and isinstance(entry, dict):
            entry["shape"] = draw(st.lists(st.sampled_from(BIG) | st.integers(-3, 70), max_size=6))
        elif kind == "offsets" and isinstance(entry, dict):
            entry["data_offsets"] = draw(st.lists(st.sampled_from(BIG) | st.integers(0, len(blob) + 16),
                                                  min_size=0, max_size=3))
        elif kind == "delete":
            header.pop(name, None)
        elif kind == "rename" and name in header:
            header[draw(st.text(max_size=10))] = header.pop(name)
        elif kind == "add":
            header[draw(st.text(max_size=10))] = draw(json_values)
        elif kind == "metadata":
            md = header.get("__metadata__")
            if isinstance(md, dict) and md and draw(st.booleans()):
                key = draw(st.sampled_from(sorted(md)))
                md[key] = draw(json_values | st.text(max_size=40))
            else:
                header["__metadata__"] = draw(json_values)
        elif kind == "entry":
            header[name] = draw(json_values)
    return join(header, blob, draw(st.sampled_from([0, 0, 0, 8, -8, 1])))


@st.composite
def _path(draw, doc) -> tuple:
    """A random path into ``doc``: descend from the root, one random child at a time, and stop
    anywhere (so every level of the structure is hit, whatever the size of a list below it)."""
    path, node = (), doc
    while isinstance(node, (dict, list)) and node:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        path += (draw(st.sampled_from(keys)),)
        node = node[path[-1]]
        if draw(st.integers(0, 2)) == 0:
            break
    return path


@st.composite
def json_mutation(draw, kind_of: str, key: str) -> bytes:
    """Mutate the JSON document stored in ``__metadata__[key]`` (the graph / the checkpoint meta)."""
    header, blob = split(draw(st.sampled_from(SEEDS[kind_of])))
    doc = json.loads(header["__metadata__"][key])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(_path(doc))
        if not path:
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        last = path[-1]
        kind = draw(st.sampled_from(["replace", "replace", "delete", "swap", "duplicate"]))
        if kind == "replace":
            parent[last] = draw(json_values)
        elif kind == "delete":
            del parent[last]
        elif kind in ("swap", "duplicate") and isinstance(parent, list) and len(parent) > 1:
            j = draw(st.integers(0, len(parent) - 1))
            if kind == "swap":
                parent[last], parent[j] = parent[j], parent[last]
            else:
                parent.insert(j, json.loads(json.dumps(parent[last])))
    header["__metadata__"][key] = json.dumps(doc)
    return join(header, blob)


NP_DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.uint64, np.int8, np.bool_]


@st.composite
def tensor_mutation(draw, kind_of: str) -> bytes:
    """Re-save one tensor with another dtype/shape, drop one, or add a stray one (a valid safetensors file)."""
    from safetensors.numpy import load, save

    raw = draw(st.sampled_from(SEEDS[kind_of]))
    header, _ = split(raw)
    tensors = load(raw)
    names = sorted(tensors)
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.sampled_from(names))
        kind = draw(st.sampled_from(["retype", "reshape", "both", "drop", "add"]))
        t = tensors.get(name)
        if kind == "drop":
            tensors.pop(name, None)
            continue
        dtype = draw(st.sampled_from(NP_DTYPES)) if kind in ("retype", "both", "add") or t is None else t.dtype
        shape = (tuple(draw(st.lists(st.integers(0, 9), max_size=4))) if kind in ("reshape", "both", "add")
                 or t is None else t.shape)
        arr = np.frombuffer(draw(st.binary(min_size=int(np.prod(shape)) * np.dtype(dtype).itemsize,
                                           max_size=int(np.prod(shape)) * np.dtype(dtype).itemsize)), dtype=dtype)
        stray = draw(st.text(alphabet="abcmodel._0123", min_size=1, max_size=12))
        tensors[name if kind != "add" else stray] = arr.reshape(shape)
    return save(tensors, metadata=header.get("__metadata__"))


# ---------------------------------------------------------------------------------------------
# the fuzzers


def test_seeds_load():
    """The unmutated seeds load with no error at all (the fuzz targets would swallow a DeployError /
    CheckpointError, so a loader that refused every file would make each fuzzer pass trivially)."""
    for i, raw in enumerate(ONEBIT_SEEDS):
        p = WORK / f"seed{i}.onebit"
        p.write_bytes(raw)
        e = Engine(p, threads=1)
        y = e.run(np.zeros((1, *e.input_shape), np.float32))
        assert y.ndim == 2 and y.shape[0] == 1 and np.isfinite(y).all()
        load_onebit(raw)
    p = WORK / "seed.safetensors"
    p.write_bytes(CKPT_SEED)
    assert read_meta(p) and load_for_eval(p) is not None
    rng = torch.get_rng_state()
    try:
        tensors, meta = parse_checkpoint(CKPT_SEED, "seed")
        model, opt, sched = _fresh()
        restore(tensors, meta, model, optimizer=opt, scheduler=sched, rng=True)
    finally:
        torch.set_rng_state(rng)
    sd = model.state_dict()
    assert sd and all(torch.equal(v, tensors[f"model.{k}"]) for k, v in sd.items())  # every weight restored
    load_ckpt(CKPT_SEED)


@FUZZ
@given(byte_mutation("onebit"))
def test_fuzz_onebit_bytes(raw):
    load_onebit(raw)


@FUZZ
@given(header_mutation("onebit"))
def test_fuzz_onebit_header(raw):
    load_onebit(raw)


@FUZZ
@given(json_mutation("onebit", "onebit_graph"))
def test_fuzz_onebit_graph(raw):
    load_onebit(raw)


@FUZZ
@given(tensor_mutation("onebit"))
def test_fuzz_onebit_tensors(raw):
    load_onebit(raw)


@FUZZ
@given(byte_mutation("checkpoint"))
def test_fuzz_checkpoint_bytes(raw):
    load_ckpt(raw)


@FUZZ
@given(header_mutation("checkpoint"))
def test_fuzz_checkpoint_header(raw):
    load_ckpt(raw)


@FUZZ
@given(json_mutation("checkpoint", "onebit"))
def test_fuzz_checkpoint_meta(raw):
    load_ckpt(raw)


@FUZZ
@given(tensor_mutation("checkpoint"))
def test_fuzz_checkpoint_tensors(raw):
    load_ckpt(raw)


# ---------------------------------------------------------------------------------------------
# cases worth pinning down


def test_deeply_nested_json_is_refused_not_a_recursion_crash():
    deep = "[" * 200_000 + "]" * 200_000
    header, blob = split(ONEBIT_SEEDS[1])
    header["__metadata__"]["onebit_graph"] = deep
    from onebit.deploy.format import parse

    with pytest.raises(DeployError, match="corrupt"):
        parse(join(header, blob))
    header, blob = split(CKPT_SEED)
    header["__metadata__"]["onebit"] = deep
    with pytest.raises(CheckpointError):
        parse_checkpoint(join(header, blob))


def test_a_lone_surrogate_beside_a_checksum_is_damage_not_a_unicode_crash():
    """A header whose JSON decodes to a lone surrogate (valid JSON, not encodable UTF-8) next to a
    checksum key: the checksum comparison must not raise UnicodeEncodeError."""
    from onebit.deploy.format import parse

    header, blob = split(CKPT_SEED)
    header["__metadata__"].update(onebit='{"a": "\ud800"}', onebit_sha256="0")
    with pytest.raises(CheckpointError, match="damaged"):
        parse_checkpoint(join(header, blob))
    header, blob = split(ONEBIT_SEEDS[1])
    header["__metadata__"].update(onebit_graph='{"\ud800": 1}', onebit_sha256="0")
    with pytest.raises(DeployError, match="damaged"):
        parse(join(header, blob))


def test_huge_declared_shape_is_refused_without_allocating():
    from onebit.deploy.format import parse

    header, blob = split(ONEBIT_SEEDS[1])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [2 ** 40, 2 ** 40]
    tracemalloc.start()
    with pytest.raises(DeployError):
        parse(join(header, blob))
    header, blob = split(CKPT_SEED)
    name = next(k for k in header if k.startswith("model."))
    header[name]["shape"] = [2 ** 62, 4]
    with pytest.raises(CheckpointError):
        parse_checkpoint(join(header, blob))
    assert tracemalloc.get_traced_memory()[1] < PEAK_LIMIT
    tracemalloc.stop()


def test_hostile_model_config_is_refused_before_allocation(tmp_path):
    header, blob = split(CKPT_SEED)
    meta = json.loads(header["__metadata__"]["onebit"])
    meta["model_config"]["hidden"] = 60_000  # 36 GB of float32 weights if it were built
    header["__metadata__"]["onebit"] = json.dumps(meta)
    p = tmp_path / "big.safetensors"
    p.write_bytes(join(header, blob))
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_for_eval(p)
    meta["model_config"]["hidden"] = 10 ** 9
    header["__metadata__"]["onebit"] = json.dumps(meta)
    p.write_bytes(join(header, blob))
    with pytest.raises(CheckpointError, match="out of range"):
        load_for_eval(p)


def test_non_finite_weights_are_refused():
    from safetensors.numpy import load, save

    from onebit.deploy.format import parse

    header, _ = split(ONEBIT_SEEDS[0])
    tensors = load(ONEBIT_SEEDS[0])
    name = next(k for k, v in tensors.items() if v.dtype == np.float32)
    tensors[name] = tensors[name].copy()
    tensors[name][0] = np.nan
    with pytest.raises(DeployError, match="NaN or Inf"):
        parse(save(tensors, metadata=header["__metadata__"]))
