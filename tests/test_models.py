"""Every registered model: forward, backward, one step — parametrized over the registry."""

import json

import pytest
import torch

from onebit import models, quant
from onebit.nn import BinaryConv2d, BinaryLinear, constraints

SHAPES = {"bnn-mlp": (1, 28), "bnn-convnet": (3, 32)}


def _shape(name):
    return SHAPES["bnn-mlp"] if "mlp" in name else SHAPES["bnn-convnet"]


def _small(name):
    """Narrow versions so the whole registry runs fast; structure is unchanged."""
    if models.entry(name).family == "resnet":
        return {"width": 16}
    if models.entry(name).family == "wrn":
        return {"widths": (8, 8, 16, 32)}
    if models.entry(name).family == "vgg":
        return {"width": 0.125}
    if "mlp" in name:
        return {"hidden": 64}
    if "convnet" in name:
        return {"widths": (8, 16, 24), "fc": 32}
    return {}


@pytest.mark.parametrize("name", models.names())
def test_forward_backward_step(name):
    c, s = _shape(name)
    model = models.create(name, num_classes=10, in_channels=c, image_size=s, **_small(name))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    constraints.attach(opt, model)
    x, y = torch.randn(4, c, s, s), torch.randint(0, 10, (4,))
    out = model(x)
    assert out.shape == (4, 10)
    torch.nn.functional.cross_entropy(out, y).backward()
    # loss-only parameters (BONN's priors) get gradients from the Bayesian losses, not the task loss
    from onebit.methods.bonn import loss_only_parameters

    loss_only = {id(p) for p in loss_only_parameters(model)}
    assert all(p.grad is not None for p in model.parameters() if id(p) not in loss_only)
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    for m in model.modules():
        if isinstance(m, (BinaryLinear, BinaryConv2d)) and m.clip_weights:
            assert m.weight.abs().max() <= 1
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", models.names())
def test_real_layers_are_as_stated(name):
    """The model's declared real-input / real-weight layers are exactly the non-binary ones."""
    c, s = _shape(name)
    model = models.create(name, in_channels=c, image_size=s, **_small(name))
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (BinaryLinear, BinaryConv2d))}
    real_in = {n for n, m in layers.items() if not quant.is_binary(m.input_quantizer)}
    real_w = {n for n, m in layers.items() if not quant.is_binary(m.weight_quantizer)}
    assert real_in == set(model.real_input_layers)
    assert real_w == set(model.real_weight_layers)


def test_bnn_weight_counts():
    # methods.md §1.14 check 12
    def binary_weights(m):
        return sum(l.weight.numel() for l in m.modules()
                   if isinstance(l, (BinaryLinear, BinaryConv2d)) and quant.is_binary(l.weight_quantizer))

    assert binary_weights(models.create("bnn-mlp")) == 36_806_656
    assert binary_weights(models.create("bnn-convnet")) == 14_022_016


def test_bnn_block_order_pool_before_bn_before_sign():
    m = models.create("bnn-convnet", **_small("bnn-convnet"))
    kinds = [type(l).__name__ for l in m]
    assert kinds[:4] == ["BinaryConv2d", "BatchNorm2d", "BinaryConv2d", "MaxPool2d"]
    assert kinds[4] == "BatchNorm2d" and kinds[-1] == "BatchNorm1d"  # no sign after the last BN


def test_unknown_model_and_config_roundtrip():
    with pytest.raises(KeyError, match="unknown model 'resnet9000'"):
        models.create("resnet9000")
    m = models.create("bnn-mlp", hidden=32, bn="shift")
    cfg = dict(m.onebit_config)
    m2 = models.create(cfg.pop("name"), **cfg)
    assert [type(a) for a in m.modules()] == [type(b) for b in m2.modules()]
    with pytest.raises(ValueError, match="unknown bn"):
        models.create("bnn-mlp", hidden=8, bn="group")


def test_config_holds_the_builders_defaults_so_a_later_default_cannot_change_a_saved_model(monkeypatch):
    import dataclasses
    import functools
    import inspect

    from onebit.models import registry

    m = models.create("bnn-mlp", hidden=32)
    builder = registry.entry("bnn-mlp").builder
    defaults = {k: p.default for k, p in inspect.signature(builder).parameters.items() if p.default is not p.empty}
    assert set(defaults) <= set(m.onebit_config)  # every argument the builder used, not only the given ones
    assert m.onebit_config["bn"] == defaults["bn"] == "standard"
    # a later version makes shift-based BN the default: the saved config still rebuilds standard BN
    e = registry.entry("bnn-mlp")
    monkeypatch.setitem(registry._MODELS, "bnn-mlp", dataclasses.replace(e, builder=functools.partial(builder, bn="shift")))
    cfg = dict(m.onebit_config)
    rebuilt = models.create(cfg.pop("name"), **cfg)
    assert [type(a) for a in rebuilt.modules()] == [type(b) for b in m.modules()]
    assert [type(a) for a in models.create("bnn-mlp", hidden=32).modules()] != [type(b) for b in m.modules()]


@pytest.mark.parametrize("name", models.names())
def test_every_model_loads_back_from_a_checkpoint(name, tmp_path):
    """The load path (`onebit eval`, `export`, `--init-from`) rebuilds the model from its saved config,
    first on PyTorch's meta device (no memory) to check the file's tensors: every builder must work
    there too (a BONN prior once called .item() while building and no BONN checkpoint could load)."""
    from onebit.train.checkpoint import save_checkpoint
    from onebit.train.trainer import load_for_eval

    c, s = _shape(name)
    torch.manual_seed(0)
    model = models.create(name, in_channels=c, image_size=s, **_small(name))
    save_checkpoint(tmp_path / "m.safetensors", model, {"model_config": model.onebit_config})
    loaded, _ = load_for_eval(tmp_path / "m.safetensors")
    assert loaded.onebit_config == json.loads(json.dumps(model.onebit_config))
    want, got = model.state_dict(), loaded.state_dict()
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)


def _loss_and_grads(model, x, y):
    from onebit.train.trainer import method_hook

    hook = method_hook(model)
    torch.manual_seed(1)  # the same dropout / stochastic-sign draws for both formats
    loss = torch.nn.functional.cross_entropy(model(x), y)
    if hook is not None:
        loss = loss + hook.extra_loss(y)
        hook.remove()
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", models.names())
def test_channels_last_trains_every_model(name):
    """``onebit train --channels-last``: every model (method hooks included) runs forward and backward
    in NHWC memory format, with a finite loss and a gradient for the same parameters."""
    import copy

    c, s = _shape(name)
    a = models.create(name, num_classes=10, in_channels=c, image_size=s, **_small(name))
    b = copy.deepcopy(a).to(memory_format=torch.channels_last)
    x, y = torch.randn(4, c, s, s), torch.randint(0, 10, (4,))
    (la, ga), (lb, gb) = _loss_and_grads(a, x, y), _loss_and_grads(b, x, y)
    assert torch.isfinite(lb)
    assert {n for n, g in ga.items() if g is None} == {n for n, g in gb.items() if g is None}
    assert all(torch.isfinite(g).all() for g in gb.values() if g is not None)


@pytest.mark.parametrize("name", [n for n in models.names() if n.endswith("-float")])
def test_channels_last_is_the_same_network(name):
    """In float64 a real-valued network computes the same loss and gradients in either format (the
    formats only sum in another order). Binary nets are not compared this way: a binary conv sum of
    exactly 0 scaled by a real α can land on either side of 0 depending on the order, and sign()
    turns that rounding into a ±1 difference — the same tie-breaking noise any two BLAS give."""
    import copy

    c, s = _shape(name)
    a = models.create(name, num_classes=10, in_channels=c, image_size=s, **_small(name)).double()
    b = copy.deepcopy(a).to(memory_format=torch.channels_last)
    x, y = torch.randn(4, c, s, s, dtype=torch.float64), torch.randint(0, 10, (4,))
    (la, ga), (lb, gb) = _loss_and_grads(a, x, y), _loss_and_grads(b, x, y)
    assert torch.allclose(la, lb, rtol=1e-9, atol=1e-12)
    for n, g in ga.items():
        assert (g is None) == (gb[n] is None), n
        if g is not None:
            assert torch.allclose(g, gb[n], rtol=1e-7, atol=1e-10), n


def test_the_svhn_convnet_defaults_to_svhn():
    from onebit.methods import get_recipe

    assert models.entry("bnn-convnet-svhn").default_data == "svhn" and get_recipe("bnn-convnet-svhn").data == "svhn"


@pytest.mark.parametrize("name", models.names())
def test_every_model_names_the_input_it_takes(name):
    """A wrong input is refused before any layer runs, with the model's name and the shape it takes."""
    model = models.create(name, **_small(name)).eval()
    c, s = _shape(name)
    assert model(torch.randn(2, c, s, s)).shape == (2, 10)
    pooled = models.entry(name).family in ("resnet", "wrn")
    with torch.no_grad():
        for bad in (torch.randn(2, c + 1, s, s), torch.randn(2, c, s, s + 1, 1), torch.randn(2, c, s)):
            with pytest.raises(ValueError, match=rf"model {name} takes input of shape \(N, {c}, "):
                model(bad)
        if "mlp" in name:  # flattened per sample, as its Flatten does: (N, 28, 28) is one image a row
            assert model(torch.randn(5, s, s)).shape == (5, 10)
        else:
            with pytest.raises(ValueError, match="x.unsqueeze"):
                model(torch.randn(c, s, s))
        if pooled:  # global pooling: any image size
            assert model(torch.randn(1, c, s + 3, s + 3)).shape == (1, 10)
        else:  # the classifier sees the flattened map: only the size it was built for
            with pytest.raises(ValueError, match=rf"\(N, {c}, {s}, {s}\)"):
                model(torch.randn(1, c, s + 8, s + 8))
        rows = torch.randn(2, c * s * s)
        if "mlp" in name:
            assert model(rows).shape == (2, 10)
        else:
            with pytest.raises(ValueError, match="got \\(2, "):
                model(rows)
        with pytest.raises(TypeError, match="floating-point input, got torch.uint8"):
            model(torch.randint(0, 255, (2, c, s, s), dtype=torch.uint8))
        with pytest.raises(TypeError, match="torch.float32 weights but got torch.float64"):
            model(torch.randn(2, c, s, s, dtype=torch.float64))
        with pytest.raises(TypeError, match="takes a tensor"):
            model([[0.0]])
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts for the layers: allowed
            assert model(torch.randn(2, c, s, s, dtype=torch.bfloat16)).shape == (2, 10)
        assert model.double()(torch.randn(2, c, s, s, dtype=torch.float64)).dtype == torch.float64


def test_timm_style_aliases():
    assert models.create_model is models.create and models.list_models() == models.names()


def test_scalar_model_arguments_are_type_checked_before_building():
    """`--set model.binary=no` arrives as the string 'no', which Python would take as true."""
    with pytest.raises(TypeError, match="binary must be true or false"):
        models.create("bnn-mlp", hidden=16, binary="no")
    with pytest.raises(TypeError, match="hidden must be an integer"):
        models.create("bnn-mlp", hidden=True)
    m = models.create("bnn-mlp", hidden=16, dropout=0, binary=False)  # an int where a float goes is fine
    assert m.onebit_config["binary"] is False and m.onebit_config["dropout"] == 0
    models.create("bnn-convnet", widths=(8, 8, 8), fc=16, last_bn=None)  # `str | None` takes None
    # NumPy scalars are numbers; a bool stored as 0/1 (older runs' `--set model.binary=1`) still loads
    import numpy as np

    m = models.create("bnn-mlp", hidden=np.int64(16), dropout=np.float32(0.1), binary=1)
    assert m.onebit_config["binary"] is True
    assert models.create("bnn-mlp", hidden=16, binary=np.bool_(False)).onebit_config["binary"] is False
    with pytest.raises(TypeError, match="binary must be true or false"):
        models.create("bnn-mlp", hidden=16, binary=2)
    with pytest.raises(TypeError, match="last_bn must be a string \\(or null\\)"):
        models.create("bnn-convnet", widths=(8, 8, 8), fc=16, last_bn=3)
