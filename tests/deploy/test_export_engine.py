"""Export → engine equivalence on every registered model; the runtime is torch-free; bad files fail clearly."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from onebit import models
from onebit.deploy import DeployError, Engine, export
from onebit.nn import BinaryConv2d, BinaryLinear

kernels = pytest.importorskip("onebit.kernels")


def _small(name):
    """Narrow versions of each registered family (structure unchanged) and an input shape."""
    family = models.entry(name).family
    if family == "bnn":
        if "mlp" in name:
            return {"hidden": 100}, (1, 28, 28)
        return {"widths": (8, 16, 24), "fc": 40}, (3, 32, 32)
    if family == "resnet":
        return {"width": 8}, ((3, 32, 32) if "cifar" in name else (3, 64, 64))
    if family == "wrn":
        return {"widths": (8, 8, 16, 32)}, (3, 32, 32)
    if family == "vgg":
        return {"width": 0.125}, (3, 32, 32)
    raise AssertionError(f"add a small configuration of family {family!r} for {name}")


def _randomize_bn(model, seed=0):
    """Random running statistics and affine parameters, including negative gammas."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 10 - 5)
            m.running_var.copy_(torch.rand(n, generator=g) * 20 + 0.5)
            if not m.affine:
                continue
            m.weight.data.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.bias.data.copy_(torch.rand(n, generator=g) * 2 - 1)


def _reference(model, x):
    """The PyTorch model in eval mode, in float64 (so float rounding cannot flip a sign)."""
    import copy

    with torch.no_grad():
        return copy.deepcopy(model).double()(x.double()).numpy()


def _check(model, x, path, threads=2):
    model.eval()
    export(model, path, x)
    y = Engine(path, threads=threads).run(x.numpy())
    ref = _reference(model, x)
    scale = np.abs(ref).max()
    assert np.abs(y - ref).max() <= 1e-4 * scale + 1e-6
    assert (y.argmax(1) == ref.argmax(1)).all()
    return y


@pytest.mark.parametrize("name", models.names())
def test_engine_equals_pytorch_random_weights(name, tmp_path):
    kw, shape = _small(name)
    torch.manual_seed(1)
    model = models.create(name, in_channels=shape[0], image_size=shape[1], **kw)
    _randomize_bn(model)
    _check(model, torch.randn(3, *shape), tmp_path / "m.onebit")


@pytest.mark.parametrize("pad_value", [0, 1, -1])
def test_convnet_padding_values_and_channel_tails(pad_value, tmp_path):
    torch.manual_seed(2)
    model = models.create("bnn-convnet", widths=(70, 64, 130), fc=65, pad_value=pad_value)
    _randomize_bn(model, seed=pad_value + 5)
    _check(model, torch.randn(2, 3, 32, 32), tmp_path / "m.onebit")


@pytest.mark.parametrize("channels, hw", [(120, (1, 2)), (100, (1, 2)), (48, (1, 3)), (120, (2, 2)), (32, (2, 2)),
                                          (130, (1, 1)), (70, (1, 1)), (63, (3, 3)), (100, (2, 2))])
@pytest.mark.parametrize("out", ["float", "bits"])
def test_binary_dense_after_a_flattened_binary_map(channels, hw, out, tmp_path):
    """A flattened bit map keeps each pixel's zero tail: the dense layer must count the real bits of
    every pixel, also when pixels × tail bits < 64 (2 × 120 channels: 2 × 8 padding bits)."""
    torch.manual_seed(channels + hw[1])
    layers = [BinaryConv2d(3, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.Flatten(),
              BinaryLinear(channels * hw[0] * hw[1], 11, bias=False), nn.BatchNorm1d(11)]
    if out == "bits":  # the dense layer's own output is packed for a next binary layer
        layers += [BinaryLinear(11, 5, bias=False), nn.BatchNorm1d(5)]
    model = nn.Sequential(*layers)
    _randomize_bn(model, seed=channels)
    _check(model, torch.randn(3, 3, *hw), tmp_path / "m.onebit", threads=1)


def test_shift_bn_and_trained_weights(tmp_path):
    torch.manual_seed(3)
    model = models.create("bnn-mlp", hidden=96, bn="shift")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):  # a few real training steps so weights and running stats are "trained"
        x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    _check(model, torch.randn(4, 1, 28, 28), tmp_path / "m.onebit")


def test_hidden_binary_layers_are_integer_exact(tmp_path):
    """A binary layer's accumulators from the kernels equal the float products exactly."""
    torch.manual_seed(4)
    layer = BinaryConv2d(37, 19, 3, stride=2, padding=1, pad_value=0)
    x = torch.randn(2, 37, 9, 11)
    want = layer(x).detach().numpy().transpose(0, 2, 3, 1)
    xb = kernels.pack_bits(np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1)))
    w = kernels.pack_conv_weights(layer.weight.detach().numpy())
    acc = kernels.bconv2d(xb, w, 37, (3, 3), 2, 1, 0, output="int")
    assert np.array_equal(acc, want.astype(np.int32))


def test_same_output_with_one_and_two_threads(tmp_path):
    torch.manual_seed(5)
    model = models.create("bnn-convnet", widths=(16, 32, 64), fc=64)
    _randomize_bn(model)
    x = torch.randn(3, 3, 32, 32)
    export(model.eval(), tmp_path / "m.onebit", x)
    e = Engine(tmp_path / "m.onebit")
    assert np.array_equal(e.run(x.numpy(), threads=1), e.run(x.numpy(), threads=2))


def test_file_is_small(tmp_path):
    model = models.create("bnn-mlp", hidden=1024)
    rep = export(model.eval(), tmp_path / "m.onebit", torch.randn(1, 1, 28, 28))
    fp32 = sum(t.numel() * 4 for t in model.state_dict().values())
    assert rep["bytes"] < fp32 / 25


def test_runtime_imports_no_torch(tmp_path):
    model = models.create("bnn-mlp", hidden=64).eval()
    export(model, tmp_path / "m.onebit", torch.randn(1, 1, 28, 28))
    code = ("import sys, numpy as np; from onebit.deploy import Engine; "
            f"e = Engine({str(tmp_path / 'm.onebit')!r}); e.run(np.zeros((2, 1, 28, 28), np.float32)); "
            "assert 'torch' not in sys.modules, 'torch was imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_unexportable_layers_are_named(tmp_path):
    model = nn.Sequential(nn.Flatten(), BinaryLinear(784, 10, input_quantizer=None), nn.GELU())
    with pytest.raises(DeployError, match="2: the engine cannot run GELU"):
        export(model, tmp_path / "m.onebit", torch.randn(1, 1, 28, 28))
    model = nn.Sequential(nn.Flatten(), BinaryLinear(784, 10, input_quantizer=torch.tanh))
    with pytest.raises(DeployError, match="input_quantizer.*no exact engine form"):
        export(model, tmp_path / "m.onebit", torch.randn(1, 1, 28, 28))
    assert not (tmp_path / "m.onebit").exists()


def test_engine_input_validation(tmp_path):
    model = models.create("bnn-mlp", hidden=64).eval()
    export(model, tmp_path / "m.onebit", torch.randn(1, 1, 28, 28))
    e = Engine(tmp_path / "m.onebit")
    with pytest.raises(ValueError, match="this model takes \\(N, 1, 28, 28\\)"):
        e.run(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        e.run(np.full((1, 1, 28, 28), np.nan, np.float32))
    with pytest.raises(TypeError):
        e.run([[0.0]])
    with pytest.raises(ValueError, match="threads"):
        Engine(tmp_path / "m.onebit", threads=0)


@pytest.fixture
def good_file(tmp_path):
    model = models.create("bnn-convnet", widths=(8, 16, 24), fc=32).eval()
    export(model, tmp_path / "m.onebit", torch.randn(1, 3, 32, 32))
    return tmp_path / "m.onebit"


def test_truncated_and_corrupt_files(good_file, tmp_path):
    data = good_file.read_bytes()
    for cut in (0, 5, 8, 100, len(data) // 2, len(data) - 1):
        p = tmp_path / f"cut{cut}.onebit"
        p.write_bytes(data[:cut])
        with pytest.raises(DeployError):
            Engine(p)
    with pytest.raises(DeployError, match="not found"):
        Engine(tmp_path / "missing.onebit")
    rng = np.random.default_rng(0)
    for i in range(30):  # flipped bytes anywhere: a DeployError or a valid model, never a crash
        b = bytearray(data)
        for pos in rng.integers(0, len(b), 3):
            b[pos] ^= 0xFF
        p = tmp_path / f"flip{i}.onebit"
        p.write_bytes(bytes(b))
        try:
            Engine(p).run(np.zeros((1, 3, 32, 32), np.float32))
        except DeployError:
            pass


def test_a_changed_bit_anywhere_after_the_header_is_named_damage(good_file, tmp_path):
    """The header's SHA-256 covers the graph JSON and every tensor byte: one flipped bit in a weight,
    a threshold or a number of the graph is refused (before, 14 of 30 such flips loaded and ran)."""
    from onebit.deploy import format as fmt

    data = good_file.read_bytes()
    hlen = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + hlen])
    assert len(header["__metadata__"][fmt.CHECKSUM_KEY]) == 64
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    want = Engine(good_file).run(x)
    rng = np.random.default_rng(1)
    for i, pos in enumerate([8 + hlen, len(data) - 1, *rng.integers(8 + hlen, len(data), 20)]):
        b = bytearray(data)
        b[pos] ^= 1 << int(rng.integers(0, 8))
        p = tmp_path / f"bit{i}.onebit"
        p.write_bytes(bytes(b))
        with pytest.raises(DeployError, match="damaged: its graph and weights do not match the checksum"):
            Engine(p)
    g = data.index(b'\\"stride\\": [1, 1]')  # a digit inside the graph JSON
    b = bytearray(data)
    b[g + len(b'\\"stride\\": [')] = ord("3")
    (tmp_path / "stride.onebit").write_bytes(bytes(b))
    with pytest.raises(DeployError, match="damaged"):
        Engine(tmp_path / "stride.onebit")
    # a file written without the checksum (before it existed) still loads, and computes the same
    graph, tensors = fmt.parse(data)
    from safetensors.numpy import save

    (tmp_path / "old.onebit").write_bytes(save(tensors, metadata={"onebit_graph": json.dumps(graph)}))
    assert np.array_equal(Engine(tmp_path / "old.onebit").run(x), want)


def test_export_never_overwrites_unless_asked(good_file, tmp_path):
    model = models.create("bnn-convnet", widths=(8, 16, 24), fc=32).eval()
    user = tmp_path / "notes.txt"
    user.write_text("USER DATA")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export(model, user, torch.randn(1, 3, 32, 32))
    assert user.read_text() == "USER DATA"
    before = good_file.read_bytes()
    with pytest.raises(FileExistsError):
        export(model, good_file, torch.randn(1, 3, 32, 32))
    assert good_file.read_bytes() == before
    export(model, good_file, torch.randn(1, 3, 32, 32), overwrite=True)
    assert good_file.read_bytes() != before and Engine(good_file).run(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        export(None, tmp_path / "none.onebit", torch.randn(1, 3, 32, 32))



def test_export_refuses_a_file_that_appears_while_it_works(tmp_path, monkeypatch):
    """The existence check runs first (before seconds of lowering and verification) and again as
    the file is published: a file created in between is kept, not replaced."""
    from onebit.deploy import exporter

    model = models.create("bnn-mlp", hidden=16).eval()
    target = tmp_path / "m.onebit"
    real = exporter._verify

    def verify_then_someone_writes(*a, **kw):
        real(*a, **kw)
        target.write_text("written by someone else meanwhile")

    monkeypatch.setattr(exporter, "_verify", verify_then_someone_writes)
    with pytest.raises(FileExistsError, match="was not replaced"):
        export(model, target, torch.randn(1, 1, 28, 28))
    assert target.read_text() == "written by someone else meanwhile"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onebit"]  # no temp file left


def _rewrite_graph(src, dst, edit):
    from safetensors.numpy import load, save

    from safetensors import safe_open

    with safe_open(str(src), framework="numpy") as f:
        graph = json.loads(f.metadata()["onebit_graph"])
    tensors = load(src.read_bytes())
    edit(graph, tensors)
    dst.write_bytes(save(tensors, metadata={"onebit_graph": json.dumps(graph)}))


@pytest.mark.parametrize("edit, msg", [
    (lambda g, t: g["ops"][0].update(op="softmax"), "unknown op"),
    (lambda g, t: g["ops"][1].update(input="nowhere"), "not defined"),
    (lambda g, t: g["ops"][0].update(kernel=[3]), "kernel"),
    (lambda g, t: g["ops"][0].update(in_channels=4), "in_channels"),
    (lambda g, t: g["input"].update(shape=[3, 10 ** 9, 32]), "input shape"),
    (lambda g, t: g.update(version=99), "version"),
    (lambda g, t: t.pop(g["ops"][0]["tensors"]["weight"]), "not in the file"),
    (lambda g, t: t.update({g["ops"][0]["tensors"]["weight"]: np.zeros((2, 2), np.float32)}), "must be"),
    (lambda g, t: g.update(output="v999"), "graph.output"),
])
def test_inconsistent_graphs_are_refused(good_file, tmp_path, edit, msg):
    bad = tmp_path / "bad.onebit"
    _rewrite_graph(good_file, bad, edit)
    with pytest.raises(DeployError, match=msg):
        Engine(bad)


@pytest.mark.parametrize("name, shape, kw", [("bnn-mlp", (1, 28, 28), {"hidden": 70}),
                                             ("bnn-convnet", (3, 32, 32), {"widths": (8, 16, 24), "fc": 40}),
                                             ("bnn-convnet-float", (3, 32, 32), {"widths": (8, 16, 24), "fc": 40})])
def test_uint8_input_bitplane_first_layer_is_exact(name, shape, kw, tmp_path):
    """uint8 pixels through the bit-plane path give what PyTorch gives on x/127.5 - 1."""
    torch.manual_seed(6)
    model = models.create(name, **kw)
    _randomize_bn(model, seed=3)
    x8 = torch.randint(0, 256, (4, *shape), dtype=torch.uint8)
    xf = x8.double() / 127.5 - 1
    export(model.eval(), tmp_path / "m.onebit", xf.float(), preprocess={"normalize": "pm1"})
    e = Engine(tmp_path / "m.onebit", threads=2)
    y8 = e.run(x8.numpy())
    yf = e.run(xf.float().numpy())
    ref = _reference(model, xf.float())
    scale = np.abs(ref).max()
    assert np.abs(y8 - ref).max() <= 1e-4 * scale + 1e-6
    assert np.abs(y8 - yf).max() <= 1e-4 * scale + 1e-6
    assert (y8.argmax(1) == ref.argmax(1)).all()


@pytest.mark.parametrize("name, reads_float", [("bireal-resnet18-cifar", True), ("bnn-convnet", False),
                                                ("bnn-mlp", False)])
def test_uint8_batch_is_preprocessed_up_front_only_for_real_first_layers(name, reads_float, tmp_path):
    """With a real-weight first layer the engine turns uint8 pixels into x/127.5 − 1 in its input
    step; the logits are then bit-identical to feeding that float batch. A binary first layer
    (exact integer path) and a flatten keep the integers."""
    kw, shape = _small(name)
    torch.manual_seed(2)
    model = models.create(name, **kw).eval()
    _randomize_bn(model, seed=2)
    export(model, tmp_path / "m.onebit", torch.zeros(1, *shape), preprocess={"normalize": "pm1"})
    e = Engine(tmp_path / "m.onebit", threads=2)
    assert e._input_pm1 is reads_float
    x8 = np.random.default_rng(0).integers(0, 256, (3, *shape)).astype(np.uint8)
    y8 = e.run(x8)
    xf = x8.astype(np.float32) / np.float32(127.5) - np.float32(1)
    ref = _reference(model, torch.from_numpy(xf))
    assert np.abs(y8 - ref).max() <= 1e-4 * np.abs(ref).max() + 1e-6  # either way, the model's logits
    if reads_float:
        yf = e.run(xf)
        assert np.array_equal(y8.view(np.uint32), yf.view(np.uint32))


def test_engine_is_safe_to_call_from_several_threads(good_file):
    from concurrent.futures import ThreadPoolExecutor

    e = Engine(good_file, threads=2)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((2, 3, 32, 32)).astype(np.float32) for _ in range(8)]
    want = [e.run(x) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(e.run, xs))
    assert all(np.array_equal(a, b) for a, b in zip(want, got))


def test_a_later_run_never_changes_logits_already_returned(tmp_path):
    """The engine keeps per-op buffers between calls: a second batch must not change the first
    batch's returned logits, and repeated runs agree."""
    torch.manual_seed(3)
    model = models.create("bireal-resnet18-cifar", width=8).eval()
    _randomize_bn(model, seed=3)
    export(model, tmp_path / "m.onebit", torch.zeros(1, 3, 32, 32))
    e = Engine(tmp_path / "m.onebit", threads=2)
    xa = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    xb = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    ya = e.run(xa)
    ya_copy = ya.copy()
    yb = e.run(xb)
    assert np.array_equal(ya, ya_copy) and not np.array_equal(ya, yb)
    assert np.array_equal(e.run(xa), ya_copy)
    ref = _reference(model, torch.from_numpy(xa))
    assert np.abs(ya - ref).max() <= 1e-4 * np.abs(ref).max() + 1e-6


# ------------------------------------------------------------------ what export refuses, and why

def _mlp_head(c=3, s=8):
    return [nn.Flatten(), nn.Linear(4 * s * s, 2)]


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_a_padding_mode_other_than_zeros_is_refused(mode, tmp_path):
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode), *_mlp_head()).eval()
    with pytest.raises(DeployError, match=f"0: padding_mode='{mode}'"):
        export(m, tmp_path / "m.onebit", torch.zeros(1, 3, 8, 8))
    assert not (tmp_path / "m.onebit").exists()


def test_string_padding_same_and_valid(tmp_path):
    torch.manual_seed(0)
    same = nn.Sequential(nn.Conv2d(3, 4, 3, padding="same"), *_mlp_head()).eval()
    _check(same, torch.randn(2, 3, 8, 8), tmp_path / "same.onebit")
    valid = nn.Sequential(nn.Conv2d(3, 4, 3, padding="valid"), nn.Flatten(), nn.Linear(4 * 36, 2)).eval()
    _check(valid, torch.randn(2, 3, 8, 8), tmp_path / "valid.onebit")
    even = nn.Sequential(nn.Conv2d(3, 4, 2, padding="same"), *_mlp_head()).eval()
    with pytest.raises(DeployError, match="0: padding='same' with an even kernel"):
        export(even, tmp_path / "even.onebit", torch.zeros(1, 3, 8, 8))


class _Chain(nn.Module):
    """Two layers whose forward does more than apply them in order: a ReLU between them."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_a_custom_module_must_declare_that_its_forward_is_a_chain(tmp_path):
    with pytest.raises(DeployError, match="cannot export _Chain: the exporter reads layers, not forward"):
        export(_Chain().eval(), tmp_path / "m.onebit", torch.zeros(1, 4))
    assert not (tmp_path / "m.onebit").exists()


def test_a_declared_chain_that_is_not_one_is_caught_by_the_verification_and_nothing_is_written(tmp_path):
    torch.manual_seed(0)
    m = _Chain().eval()
    m.export_chain = True  # a false declaration: the ReLU in forward is not a layer
    out = tmp_path / "m.onebit"
    out.write_bytes(b"the user's older file")
    with pytest.raises(DeployError, match="does not reproduce the model"):
        export(m, out, torch.zeros(1, 4), overwrite=True)
    assert out.read_bytes() == b"the user's older file"
    export(m, out, torch.zeros(1, 4), verify=False, overwrite=True)  # the caller's own risk: written as lowered
    assert out.read_bytes()[:8] != b"the user"


def test_export_verification_passes_on_a_zero_example_where_signs_tie(tmp_path):
    """A constant example input puts values exactly on sign ties (there even PyTorch fp32 and
    fp64 disagree); the verification probes with random inputs, so a good model still exports."""
    torch.manual_seed(0)
    model = models.create("bireal-resnet18-cifar", num_classes=10, width=8).eval()
    export(model, tmp_path / "m.onebit", torch.zeros(1, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    y = Engine(tmp_path / "m.onebit", threads=1).run(x.numpy())
    assert np.abs(y - _reference(model, x)).max() <= 1e-4 * np.abs(y).max() + 1e-6


@pytest.mark.parametrize("shape, msg", [((1, 3, 6, 6), "2: Linear with 256 input features gets 144 here"),
                                        ((1, 2, 8, 8), "0: Conv2d with 3 input channels gets a map of shape")])
def test_an_example_input_of_another_size_names_the_layer(shape, msg, tmp_path):
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *_mlp_head()).eval()
    with pytest.raises(DeployError, match=msg):
        export(m, tmp_path / "m.onebit", torch.zeros(shape))


def test_uint8_input_needs_the_preprocessing_recorded_and_other_integers_are_refused(tmp_path):
    torch.manual_seed(0)
    m = models.create("bnn-mlp", hidden=16).eval()
    export(m, tmp_path / "bare.onebit", torch.randn(2, 1, 28, 28))  # no preprocess recorded
    e = Engine(tmp_path / "bare.onebit", threads=1)
    with pytest.raises(ValueError, match="records no preprocessing, so uint8 pixels have no meaning"):
        e.run(np.zeros((1, 1, 28, 28), np.uint8))
    with pytest.raises(TypeError, match="expects float32 input .* got dtype int64"):
        e.run(np.zeros((1, 1, 28, 28), np.int64))
    with pytest.raises(ValueError, match="beyond the float32 range"):
        e.run(np.full((1, 1, 28, 28), 1e300))
    with pytest.raises(DeployError, match="unknown preprocess normalize 'bogus'"):
        export(m, tmp_path / "bogus.onebit", torch.randn(2, 1, 28, 28), preprocess={"normalize": "bogus"})
    export(m, tmp_path / "pm1.onebit", torch.randn(2, 1, 28, 28), preprocess={"normalize": "pm1"})
    x8 = np.random.default_rng(0).integers(0, 256, (2, 1, 28, 28), dtype=np.uint8)
    e = Engine(tmp_path / "pm1.onebit", threads=1)
    assert np.array_equal(e.run(x8), e.run((x8 / 127.5 - 1).astype(np.float32)))


def test_a_folder_given_as_the_model_file_is_named(tmp_path):
    with pytest.raises(DeployError, match="is a folder, not a .onebit model file"):
        Engine(tmp_path)


def test_export_unwraps_compile_and_dataparallel_and_models_ending_in_a_map(tmp_path):
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *_mlp_head()).eval()
    for i, wrapped in enumerate((nn.DataParallel(seq), torch.compile(seq))):
        export(wrapped, tmp_path / f"w{i}.onebit", torch.zeros(1, 3, 8, 8))
    conv_out = nn.Sequential(nn.Conv2d(3, 4, 3)).eval()  # the engine returns NHWC maps
    export(conv_out, tmp_path / "c.onebit", torch.zeros(1, 3, 7, 7))
    x = torch.randn(2, 3, 7, 7)
    y = Engine(tmp_path / "c.onebit", threads=1).run(x.numpy())
    assert np.allclose(y, conv_out(x).detach().permute(0, 2, 3, 1).numpy(), atol=1e-5)
    pooled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1)).eval()  # (N, C, 1, 1) vs (N, C)
    export(pooled, tmp_path / "p.onebit", torch.zeros(1, 3, 7, 7))


def test_a_model_that_cannot_be_deep_copied_is_verified_as_it_is(tmp_path):
    import threading

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3)).eval()
    m.lock = threading.Lock()  # copy.deepcopy refuses it
    export(m, tmp_path / "m.onebit", torch.zeros(1, 4))
    x = torch.randn(2, 4)
    assert np.allclose(Engine(tmp_path / "m.onebit", threads=1).run(x.numpy()), m(x).detach().numpy(), atol=1e-5)


def test_cli_run_on_a_file_without_recorded_preprocessing_assumes_pm1_and_says_so(make_tiny_mnist, tmp_path,
                                                                                  capsys):
    from onebit.cli.main import main as cli

    torch.manual_seed(0)
    m = models.create("bnn-mlp", hidden=16).eval()
    export(m, tmp_path / "m.onebit", torch.zeros(1, 1, 28, 28))  # the Python API, no preprocess
    with pytest.warns(UserWarning, match="records no preprocessing; assuming 'pm1'"):
        code = cli(["run", str(tmp_path / "m.onebit"), "--data", "mnist", "--data-root", str(make_tiny_mnist())])
    assert code == 0 and "accuracy" in capsys.readouterr().out


def test_default_threads_never_exceed_the_cores_limit(tmp_path, monkeypatch):
    """A machine with more than 256 cores gets 256 threads by default, not an error at run time."""
    import os

    from onebit.deploy import engine as engine_mod

    model = nn.Sequential(nn.Flatten(), BinaryLinear(16, 3, input_quantizer=None)).eval()
    export(model, tmp_path / "m.onebit", torch.randn(1, 1, 4, 4))
    monkeypatch.setattr(os, "cpu_count", lambda: 384)
    e = Engine(tmp_path / "m.onebit")
    assert e.threads == engine_mod.MAX_THREADS == 256
    assert e.run(np.zeros((1, 1, 4, 4), np.float32)).shape == (1, 3)
