"""Bi-Real Net (methods.md §2): quantizers against closed forms, block structure, init, accounting, recipes."""

import operator

import pytest
import torch
from torch import fx, nn

import onebit
from onebit import models, quant
from onebit.methods import get_recipe, recipe_names
from onebit.methods.bireal import (PIPELINES, InitMismatchError, absorb_scale, init_from_real,
                                   prepare_bn_retraining)
from onebit.models.resnet import BinaryBasicBlock, BiRealBlock
from onebit.nn import BinaryConv2d, BinaryLinear
from onebit.quant.approx_sign import approx_sign_surrogate, leaky_clip

BIREAL = ["bireal-resnet18", "bireal-resnet34", "bireal-resnet18-cifar", "bireal-resnet34-cifar"]
PLAIN = ["binary-resnet18", "binary-resnet18-cifar"]
FLOAT = ["resnet18-float", "resnet18-cifar-float"]
SMALL = {"width": 8}


def grad_of(q, x):
    x = x.clone().requires_grad_(True)
    q(x).sum().backward()
    return x.grad


# ---------------------------------------------------------------- quantizers (§2.9 checks 1, 2, 6)

def test_approx_sign_forward_and_backward_closed_form():
    q = quant.get("approx_sign")
    x = torch.tensor([-1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5])
    assert q(x).tolist() == [-1, -1, -1, -1, 1, 1, 1, 1, 1]  # sign(0) = +1, never 0
    assert grad_of(q, x).tolist() == [0, 0, 1, 1.5, 2, 1.5, 1, 0, 0]
    assert q.binary and q.export_as == "sign" and quant.is_binary(q)
    # the backward is the derivative of the piecewise polynomial F (dense grid, autograd of F)
    xs = torch.linspace(-2, 2, 4001, dtype=torch.float64)
    assert torch.allclose(grad_of(q, xs), grad_of(approx_sign_surrogate, xs))
    assert torch.allclose(grad_of(q, xs), (2 - 2 * xs.abs()).clamp_min(0))
    assert torch.equal(q(xs), quant.sign(xs))


def test_approx_sign_surrogate_values():
    f = approx_sign_surrogate(torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]))
    assert f.tolist() == [-1, -1, -0.75, 0, 0.75, 1, 1]
    x = torch.linspace(-1.01, 1.01, 20001, dtype=torch.float64)  # continuous: no jumps on a fine grid
    assert approx_sign_surrogate(x).diff().abs().max() < 2.1 * (x[1] - x[0])


def test_leaky_clip_and_clip_slopes():
    x = torch.tensor([-3.0, -1.5, -0.5, 0.0, 0.5, 1.5, 3.0])
    assert torch.allclose(leaky_clip(x), torch.tensor([-1.2, -1.05, -0.5, 0.0, 0.5, 1.05, 1.2]))
    assert torch.allclose(grad_of(quant.get("leaky_clip"), x), torch.tensor([0.1, 0.1, 1, 1, 1, 0.1, 0.1]))
    assert grad_of(quant.get("htanh"), x).tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert not quant.is_binary(quant.get("leaky_clip"))


def _weights():
    w = torch.randn(8, 4, 3, 3) * 0.8
    w[0, 0, 0, :3] = torch.tensor([1.0, -1.0, 0.0])  # the boundary |W| = 1 and W = 0
    return w


def _wgrad(q, w, g):
    w = w.clone().requires_grad_(True)
    (q(w) * g).sum().backward()  # L = <G, q(W)>
    return w.grad


def test_magnitude_aware_sign_forward_and_paper_gradient():
    q = quant.get("magnitude_aware_sign")
    w, g = _weights(), torch.randn(8, 4, 3, 3)
    alpha = torch.stack([w[c].abs().mean() for c in range(8)]).view(8, 1, 1, 1)
    out = q(w)
    assert torch.allclose(out, alpha * torch.where(w >= 0, 1.0, -1.0))
    assert (out != 0).all()
    # paper: α·G·1[|W| < 1]; no gradient through α (it would add a term to every entry)
    assert torch.allclose(_wgrad(q, w, g), alpha * g * (w.abs() < 1))
    assert _wgrad(q, w, g)[0, 0, 0, 0] == 0  # W = 1 exactly: masked (strict <)
    assert torch.allclose(q.scale(w), alpha.flatten())
    assert q.binary and q.scaled and q.export_as == "sign" and quant.is_binary(q)


@pytest.mark.parametrize("rule", ["larq", "pytorch", "caffe"])
def test_magnitude_aware_sign_reference_code_rules(rule):
    q = quant.get("magnitude_aware_sign", grad=rule)
    w, g = _weights(), torch.randn(8, 4, 3, 3)
    alpha = w.abs().flatten(1).mean(1).view(8, 1, 1, 1)
    want = {"larq": alpha * g * (w.abs() <= 1), "pytorch": g * (w.abs() <= 1), "caffe": g}[rule]
    assert torch.allclose(q(w), alpha * quant.sign(w))
    assert torch.allclose(_wgrad(q, w, g), want)
    assert q.config() == {"name": "magnitude_aware_sign", "grad": rule, "per": "out_channel"}


def test_with_bn_after_the_conv_the_papers_rule_is_the_plain_sign_ste():
    """BN cancels a per-channel scale: the gradient reaching ``α·sign(W)`` is that of ``sign(W)``
    divided by α, so the paper's ``α·g`` gives ``W`` exactly the plain STE's gradient (up to BN's ε),
    while the Caffe code's identity ``g`` gives it 1/α times more (its larger steps)."""
    torch.manual_seed(0)
    x = torch.randn(16, 4, 7, 7)
    w0 = torch.randn(8, 4, 3, 3) * 0.03
    target = torch.randn(16, 8, 7, 7)

    def grad_of(weight, **kw):
        conv = BinaryConv2d(4, 8, 3, padding=1, input_quantizer="approx_sign",
                            weight_quantizer=quant.get(weight, **kw))
        bn = nn.BatchNorm2d(8, eps=1e-12).train()
        with torch.no_grad():
            conv.weight.copy_(w0)
        ((bn(conv(x)) - target) ** 2).sum().backward()
        return conv.weight.grad

    alpha = w0.abs().flatten(1).mean(1).view(8, 1, 1, 1)
    g_ste, g_paper = grad_of("ste_sign"), grad_of("magnitude_aware_sign")
    g_caffe = grad_of("magnitude_aware_sign", grad="caffe")
    assert (g_paper - g_ste).norm() <= 1e-5 * g_ste.norm()  # the same update: float rounding apart
    assert (g_caffe - g_ste / alpha).norm() <= 1e-5 * (g_ste / alpha).norm()
    assert (g_caffe.norm() / g_paper.norm()) > 20  # α ≈ 0.024 here: a 1/α ≈ 40× larger step


def test_magnitude_aware_per_tensor_and_xnor_weight():
    w, g = _weights(), torch.randn(8, 4, 3, 3)
    q = quant.get("magnitude_aware_sign", per="tensor")
    assert torch.allclose(q(w), w.abs().mean() * quant.sign(w))
    assert torch.allclose(q.scale(w), w.abs().mean().expand(8))
    x = quant.get("xnor_weight")
    alpha = w.abs().flatten(1).mean(1).view(8, 1, 1, 1)
    assert torch.allclose(x(w), alpha * quant.sign(w))
    assert torch.allclose(_wgrad(x, w, g), g * (w.abs() <= 1))
    assert x.scaled and x.export_as == "sign" and x.name == "xnor_weight"
    with pytest.raises(ValueError, match="gradient rule"):
        quant.get("magnitude_aware_sign", grad="bogus")


def test_registry_names():
    assert {"approx_sign", "magnitude_aware_sign", "xnor_weight", "leaky_clip"} <= set(quant.names())
    assert set(BIREAL + PLAIN + FLOAT) <= set(models.names())
    assert {models.entry(n).default_data for n in ["bireal-resnet18", "bireal-resnet34", "binary-resnet18",
                                                   "resnet18-float"]} == {"imagefolder"}
    assert {models.entry(n).default_data for n in models.names() if "cifar" in n and "resnet" in n} == {"cifar10"}
    for pipeline in PIPELINES.values():
        for stage in pipeline:
            r = get_recipe(stage.recipe)
            assert r.model in models.names()


# ---------------------------------------------------------------- structure (§2.2, §2.9 checks 3, 5)

class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, name):
        return isinstance(m, (BinaryConv2d, BinaryLinear)) or super().is_leaf_module(m, name)


def _shortcut_spans(model):
    """For every residual addition in the traced graph: the binary convs on its main branch.

    The main branch is walked back from the addition to the node the shortcut branch starts from;
    every binary conv on the way is covered by that shortcut.
    """
    graph = _Tracer().trace(model)
    mods = dict(model.named_modules())
    spans = []
    for node in graph.nodes:
        if node.op == "call_function" and node.target in (torch.add, operator.add):
            main, skip = node.args
            while skip.op == "call_module" and ".shortcut" in skip.target:  # walk the shortcut back
                skip = skip.args[0]
            convs, cur = [], main
            while cur is not skip:
                assert cur.op == "call_module", f"unexpected {cur} on a main branch"
                m = mods[cur.target]
                if isinstance(m, BinaryConv2d) and quant.is_binary(m.input_quantizer):
                    convs.append(cur.target)
                cur = cur.args[0]
            spans.append(convs)
    return spans


@pytest.mark.parametrize("name", BIREAL + PLAIN)
def test_a_shortcut_spans_every_binary_conv(name):
    model = models.create(name, **SMALL)
    per_span = 2 if name in PLAIN else 1
    binary = [n for n, m in model.named_modules() if isinstance(m, BinaryConv2d) and quant.is_binary(m.input_quantizer)]
    assert len(binary) == (32 if "34" in name else 16)
    spans = _shortcut_spans(model)
    assert all(len(s) == per_span for s in spans)  # Bi-Real: one conv per shortcut; plain: two
    assert sorted(c for s in spans for c in s) == sorted(binary)  # every binary conv is covered
    blocks = [m for m in model.modules() if isinstance(m, (BiRealBlock, BinaryBasicBlock))]
    assert all(isinstance(b, BinaryBasicBlock if name in PLAIN else BiRealBlock) for b in blocks)
    for b in blocks:  # each block holds exactly its one (Bi-Real) or two (plain) binary convs
        inside = [m for m in b.modules() if isinstance(m, BinaryConv2d) and quant.is_binary(m.input_quantizer)]
        assert len(inside) == per_span
    # binary convs: sign input, scaled-sign weights, no bias, zero padding, no latent clipping
    for n in binary:
        m = model.get_submodule(n)
        assert m.bias is None and m.pad_value == 0 and not m.clip_weights and m.scale == "none"
        assert m.input_quantizer.name == "approx_sign" and m.weight_quantizer.name == "magnitude_aware_sign"
        assert m.kernel_size == (3, 3)


def test_real_layers_are_stem_downsampling_and_fc():
    model = models.create("bireal-resnet18", **SMALL)
    want = ("conv1", "layer2.0.shortcut.1", "layer3.0.shortcut.1", "layer4.0.shortcut.1", "fc")
    assert model.real_input_layers == want and model.real_weight_layers == want
    ds = model.layer2[0].shortcut
    assert [type(m).__name__ for m in ds] == ["AvgPool2d", "BinaryConv2d", "BatchNorm2d"]
    assert ds[1].kernel_size == (1, 1) and ds[1].stride == (1, 1)
    assert not any(isinstance(m, (nn.ReLU, nn.Hardtanh)) for m in model.modules())  # no ReLU in the binary net
    f = models.create("resnet18-float", **SMALL)
    layers = tuple(n for n, m in f.named_modules() if isinstance(m, (BinaryConv2d, BinaryLinear)))
    assert f.real_input_layers == f.real_weight_layers == layers and len(layers) == 21
    assert f.layer1[0].conv.input_quantizer.name == "htanh"
    assert models.create("resnet18-float", activation="relu", **SMALL).layer1[0].conv.input_quantizer.name == "relu"


@pytest.mark.parametrize("downsample", ["avgpool", "conv"])
def test_block_with_zero_bn_is_its_shortcut(downsample):
    model = models.create("bireal-resnet18-cifar", downsample=downsample, **SMALL).eval()
    x = torch.randn(2, 8, 16, 16)
    for blk in [model.layer1[1], model.layer2[0]]:
        with torch.no_grad():
            blk.bn.weight.zero_()
            blk.bn.bias.zero_()
            xin = x if blk is model.layer1[1] else torch.randn(2, 8, 16, 16)
            out = blk(xin)
            if isinstance(blk.shortcut, nn.Identity):
                assert torch.equal(out, xin)
            else:
                assert torch.allclose(out, blk.shortcut(xin)) and out.shape == (2, 16, 8, 8)
    conv = model.layer2[0].shortcut[1]
    assert conv.stride == ((2, 2) if downsample == "conv" else (1, 1))


def test_options_propagate():
    m = models.create("bireal-resnet18-cifar", pad_value=1, clip_weights=True, activation="ste_sign",
                      weight="identity_ste_sign", **SMALL)
    c = m.layer3[1].conv
    assert c.pad_value == 1 and c.clip_weights and c.input_quantizer.name == "ste_sign"
    assert c.weight_quantizer.name == "identity_ste_sign"
    m = models.create("bireal-resnet18-cifar", weight_kwargs={"grad": "pytorch"}, **SMALL)
    assert m.layer1[0].conv.weight_quantizer.grad == "pytorch"
    m = models.create("bireal-resnet18-cifar", weight_init="bireal_pytorch", **SMALL)
    w = torch.cat([c.weight.flatten() for _, c in m.binary_convs()])
    assert (w >= 0).all() and (w < 1e-3).all()
    assert (torch.cat([c.weight.flatten() for _, c in models.create("bireal-resnet18-cifar", **SMALL)
                       .binary_convs()]) < 0).any()  # default init is symmetric
    cfg = dict(m.onebit_config)
    m2 = models.create(cfg.pop("name"), **cfg)
    assert [type(a) for a in m.modules()] == [type(b) for b in m2.modules()]
    with pytest.raises(ValueError, match="unknown block"):
        models.create("bireal-resnet18", block="dense", **SMALL)


# ---------------------------------------------------------------- shapes

@pytest.mark.parametrize("name", ["bireal-resnet18-cifar", "bireal-resnet34-cifar", "binary-resnet18-cifar",
                                  "resnet18-cifar-float"])
@pytest.mark.parametrize("c, s", [(3, 32), (1, 28)])
def test_small_input_forward_shapes(name, c, s):
    model = models.create(name, num_classes=10, in_channels=c, image_size=s, width=16)
    assert model(torch.randn(2, c, s, s)).shape == (2, 10)


def test_imagenet_forward_at_width_16():
    model = models.create("bireal-resnet18", num_classes=1000, width=16).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


# ---------------------------------------------------------------- clip pre-training init (§2.5)

@pytest.mark.parametrize("binary, real, kw", [("bireal-resnet18-cifar", "resnet18-cifar-float", {}),
                                              ("binary-resnet18-cifar", "resnet18-cifar-float", {"block": "basic"}),
                                              ("bireal-resnet34", "resnet18-float", {"depth": 34})])
def test_init_from_real_copies_every_tensor(binary, real, kw):
    b = models.create(binary, **SMALL)
    r = models.create(real, **SMALL, **kw)
    with torch.no_grad():
        for t in r.state_dict().values():  # make every real tensor differ from the binary net's init
            t.copy_(torch.randint_like(t, 1, 100) if not t.is_floating_point() else torch.randn_like(t))
    copied = init_from_real(b, r)
    assert copied == list(b.state_dict())
    rs = r.state_dict()
    for k, v in b.state_dict().items():
        assert torch.equal(v, rs[k]), k
    b(torch.randn(2, 3, 32, 32)).sum().backward()  # still trains: latent weights are leaves with grads
    assert all(c.weight.grad is not None for _, c in b.binary_convs())


def test_init_from_real_reports_mismatches():
    b = models.create("bireal-resnet18-cifar", **SMALL)
    before = {k: v.clone() for k, v in b.state_dict().items()}
    with pytest.raises(InitMismatchError, match=r"shape mismatch: .*fc\.weight"):
        init_from_real(b, models.create("resnet18-cifar-float", num_classes=100, **SMALL))
    with pytest.raises(InitMismatchError, match=r"missing in the real model: .*layer1\.0\.conv\.weight"):
        init_from_real(b, models.create("resnet18-cifar-float", block="basic", **SMALL))
    assert all(torch.equal(v, before[k]) for k, v in b.state_dict().items())  # nothing copied
    got = init_from_real(b, models.create("resnet18-cifar-float", num_classes=100, **SMALL), strict=False)
    assert "fc.weight" not in got and "layer1.0.conv.weight" in got


# ---------------------------------------------------------------- α absorption / BN retraining (§2.4, §2.9 check 4)

def test_absorb_scale_into_bn_is_exact():
    model = models.create("bireal-resnet18-cifar", **SMALL)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
        model.layer1[0].conv.weight.mul_(1000.0)   # α > 1 …
        model.layer1[0].bn.running_var.fill_(1e-9)  # … with a tiny variance: the γ-rescaling fallback
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        changed = absorb_scale(model)
        after = model(x)
    assert len(changed) == 16
    assert all(c.weight_quantizer.name == "identity_ste_sign" for _, c in model.binary_convs())
    assert model.onebit_config["weight"] == "identity_ste_sign"
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-4 * before.abs().max().item())
    trainable = prepare_bn_retraining(model)
    assert trainable and all(".bn" in n or "bn1" in n or "shortcut.2" in n for n in trainable)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n not in trainable)


# ---------------------------------------------------------------- accounting (§0.6, §2.7, §2.9 check 5)

def test_bireal18_accounting():
    s = onebit.summary(models.create("bireal-resnet18", num_classes=1000), (3, 224, 224))
    binary_w = sum(r.params for r in s.rows if r.weight == "binary")
    assert s.params == 11_689_512 and binary_w == 10_985_472
    assert s.binary_macs == pytest.approx(1.676e9, rel=0.01)
    assert s.binary_macs + s.float_macs == pytest.approx(1.814e9, rel=0.01)
    assert s.ops == pytest.approx(1.64e8, rel=0.01) and s.ops == pytest.approx(1.63e8, rel=0.01)
    # 33.51 Mbit without the 3,840 per-channel α, 33.64 Mbit with them; the paper quotes 33.6 (11.14×)
    assert s.memory_bits / 1e6 == pytest.approx(33.6, rel=0.01)
    assert s.compression == pytest.approx(11.1, rel=0.01)
    assert s.speedup == pytest.approx(11.06, rel=0.01)


def test_bireal34_accounting():
    s = onebit.summary(models.create("bireal-resnet34", num_classes=1000), (3, 224, 224))
    assert s.memory_bits / 1e6 == pytest.approx(43.7, rel=0.01)
    assert s.ops == pytest.approx(1.93e8, rel=0.01)
    assert s.speedup == pytest.approx(18.99, rel=0.01)


# ---------------------------------------------------------------- recipes (§2.6)

def test_recipes_are_the_papers():
    r18, r34 = get_recipe("bireal-resnet18"), get_recipe("bireal-resnet34")
    assert (r18.optimizer, r18.lr, r18.momentum, r18.weight_decay, r18.epochs, r18.batch_size, r18.milestones) == \
        ("sgd", 0.01, 0.9, 0.0, 20, 128, (10, 15))
    assert (r34.lr, r34.epochs, r34.batch_size, r34.milestones, r34.weight_decay) == (0.08, 40, 1024, (20, 30), 0.0)
    assert r18.data == "imagefolder" and r18.loss == "ce"
    for name in ["bireal-resnet18", "bireal-resnet34", "binary-resnet18", "bireal-resnet18-cifar",
                 "binary-resnet18-cifar", "bireal-resnet18-bn-retrain"]:  # §2.6: plain momentum SGD
        assert get_recipe(name).nesterov is False, name
    pre = get_recipe(PIPELINES["bireal-resnet18"][0].recipe)
    assert pre.model == "resnet18-float"
    for name in ["bireal-resnet18-cifar", "bireal-resnet34-cifar", "binary-resnet18-cifar"]:
        r = get_recipe(name)
        assert r.data == "cifar10" and r.weight_decay == 0 and r.epochs < 100 and "shorter" in r.description
    for name in recipe_names():
        r = get_recipe(name)
        if "resnet" in r.model:
            models.create(r.model, **{**r.model_kwargs, "width": 4})  # every recipe's model builds
