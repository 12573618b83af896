"""Binary layers, clipping constraint, bit-plane first layer, shift-based BN (methods.md §1.14)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onebit import quant
from onebit.nn import (BinaryConv2d, BinaryLinear, BitPlaneConv2d, BitPlaneLinear, ShiftBatchNorm1d,
                       ShiftBatchNorm2d, constraints, glorot_lr_scale)


def test_binary_linear_forward_is_sign_product():
    layer = BinaryLinear(13, 7, bias=True)
    x = torch.randn(5, 13)
    want = F.linear(quant.sign(x), quant.sign(layer.weight), layer.bias)
    assert torch.equal(layer(x), want)


def test_binary_linear_mean_abs_scale():
    layer = BinaryLinear(10, 4, scale="mean_abs", input_quantizer=None)
    x = torch.randn(3, 10)
    alpha = layer.weight.abs().mean(1, keepdim=True)
    assert torch.allclose(layer(x), x @ (alpha * quant.sign(layer.weight)).t())


@pytest.mark.parametrize("pad_value", [0.0, 1.0, -1.0])
@pytest.mark.parametrize("stride", [1, 2])
def test_binary_conv_padding_semantics(pad_value, stride):
    conv = BinaryConv2d(5, 6, 3, stride=stride, padding=1, pad_value=pad_value)
    x = torch.randn(2, 5, 9, 7)
    xb = F.pad(quant.sign(x), (1, 1, 1, 1), value=pad_value)
    want = F.conv2d(xb, quant.sign(conv.weight), None, stride)
    assert torch.equal(conv(x), want)


def test_real_input_conv_pads_with_zeros():
    conv = BinaryConv2d(3, 4, 3, padding=1, input_quantizer=None, pad_value=1)
    x = torch.randn(1, 3, 5, 5)
    assert torch.equal(conv(x), F.conv2d(x, quant.sign(conv.weight), None, 1, 1))


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="pad_value"):
        BinaryConv2d(3, 4, 3, pad_value=0.5)
    with pytest.raises(ValueError, match="scale"):
        BinaryLinear(3, 4, scale="max")
    with pytest.raises(KeyError, match="unknown quantizer"):
        BinaryLinear(3, 4, input_quantizer="signn")
    for q in ("magnitude_aware_sign", "xnor_weight"):  # they scale already: a second α would square it
        with pytest.raises(ValueError, match="would apply a scale twice"):
            BinaryLinear(3, 4, scale="mean_abs", weight_quantizer=q)
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="input_dropout must be in"):
            BinaryLinear(3, 4, input_dropout=p)
    # geometry that torch would take and then crop silently (padding −1 with a ±1 pad) or fail on later
    for kw, msg in (({"padding": -1, "pad_value": 1}, r"padding must be >= 0, got padding=\(-1, -1\)"),
                    ({"padding": (1, -1)}, "padding must be >= 0"), ({"stride": 0}, "stride must be >= 1"),
                    ({"dilation": 0}, "dilation must be >= 1")):
        with pytest.raises(ValueError, match=msg):
            BinaryConv2d(3, 4, 3, **kw)
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        BinaryConv2d(3, 4, (3, 0))
    for args, msg in (((0, 4, 3), "in_channels must be a positive integer, got 0"),
                      ((3, 2.5, 3), "out_channels must be a positive integer, got 2.5")):
        with pytest.raises(ValueError, match=msg):
            BinaryConv2d(*args)
    with pytest.raises(ValueError, match="in_features must be a positive integer, got 0"):
        BinaryLinear(0, 3)
    assert BinaryConv2d(np.int64(3), 4, (3, 1), padding=(1, 0)).padding == (1, 0)  # NumPy ints are fine


def test_layers_behave_like_torch_layers():
    layer = BinaryConv2d(3, 4, 3, padding=1, dtype=torch.float64)
    assert layer.weight.dtype == torch.float64
    sd = layer.state_dict()
    assert set(sd) == {"weight"}
    other = BinaryConv2d(3, 4, 3, padding=1, dtype=torch.float64)
    other.load_state_dict(sd)
    assert torch.equal(other.weight, layer.weight)


def test_clipping_holds_after_steps():
    # methods.md §1.14 check 4
    model = nn.Sequential(BinaryLinear(20, 30, input_quantizer=None), nn.BatchNorm1d(30), BinaryLinear(30, 5))
    opt = torch.optim.SGD(model.parameters(), lr=10.0)
    constraints.attach(opt, model)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(8, 20)).pow(2).sum().backward()
        opt.step()
        for m in (model[0], model[2]):
            assert m.weight.abs().max() <= 1.0
    assert model[1].weight.abs().max() > 1.0  # BN parameters are not clipped


def test_real_weight_layers_are_not_clipped():
    layer = BinaryLinear(4, 4, weight_quantizer="identity")
    assert not layer.clip_weights
    assert list(constraints.constrained(layer)) == []


def test_glorot_scale_conv_128():
    # methods.md §1.14 check 5
    g = glorot_lr_scale(BinaryConv2d(128, 128, 3))
    assert abs(g - 1 / math.sqrt(1.5 / 2304)) < 1e-9 and abs(g - 39.19) < 0.01
    assert quant.ap2(torch.tensor(g)).item() == 32


@pytest.mark.parametrize("n", [1, 5, 1024])
def test_bitplane_identity_dense(n):
    # methods.md §1.14 check 9
    layer = BitPlaneLinear(n, 6)
    x = torch.randint(0, 256, (4, n), dtype=torch.uint8)
    want = F.linear(x.double(), quant.sign(layer.weight).double())
    assert torch.equal(layer(x).double(), want)


def test_bitplane_identity_conv():
    layer = BitPlaneConv2d(3, 8, 3, stride=2, padding=1)
    x = torch.randint(0, 256, (2, 3, 9, 9), dtype=torch.uint8)
    want = F.conv2d(x.double(), quant.sign(layer.weight).double(), None, 2, 1)
    assert torch.equal(layer(x).double(), want)


def test_bitplane_rejects_non_8bit():
    with pytest.raises(ValueError, match="integers in \\[0, 255\\]"):
        BitPlaneLinear(4, 2)(torch.tensor([[0.5, 1.0, 2.0, 3.0]]))


@pytest.mark.parametrize("x", [torch.tensor([[300, 1]]), torch.tensor([[-2, 1]]), torch.tensor([[256, 0]], dtype=torch.int16),
                               torch.tensor([[float("nan"), 1.0]]), torch.tensor([[True, False]])])
def test_bitplane_rejects_integers_outside_8_bits_instead_of_wrapping(x):
    """A cast to uint8 would wrap 300 to 44 and -2 to 254, a silently wrong sum (methods.md §1.7)."""
    with pytest.raises(ValueError, match="integers in \\[0, 255\\]"):
        BitPlaneLinear(2, 3)(x)


def test_bitplane_takes_in_range_integers_of_any_dtype():
    layer = BitPlaneLinear(5, 3)
    x = torch.tensor([[0, 1, 127, 128, 255]])
    want = layer(x.to(torch.uint8))
    for dt in (torch.int16, torch.int32, torch.int64, torch.float32, torch.float64):
        assert torch.equal(layer(x.to(dt)), want)


def test_shift_bn_without_ap2_equals_batchnorm():
    # methods.md §1.14 check 7, first half
    x = torch.randn(64, 12) * 3 + 1
    sbn = ShiftBatchNorm1d(12, eps=1e-5, use_ap2=False)
    bn = nn.BatchNorm1d(12, eps=1e-5)
    with torch.no_grad():
        sbn.weight.uniform_(0.5, 2)
        sbn.bias.uniform_(-1, 1)
        bn.weight.copy_(sbn.weight)
        bn.bias.copy_(sbn.bias)
    assert torch.allclose(sbn(x), bn(x), atol=1e-5)


def test_shift_bn_normalised_second_moment_bounds():
    # methods.md §1.14 check 7, second half: E[xhat^2] within [2^-3/2, 2^3/2]
    sbn = ShiftBatchNorm2d(16, eps=1e-12, affine=False)
    x = torch.randn(32, 16, 5, 5) * torch.logspace(-2, 2, 16).view(1, -1, 1, 1)
    m2 = sbn(x).pow(2).mean((0, 2, 3))
    assert (m2 >= 2 ** -1.5).all() and (m2 <= 2 ** 1.5).all()


def test_shift_bn_close_to_exact_and_powers_of_two():
    x = torch.randn(256, 8) * 2
    sbn = ShiftBatchNorm1d(8)
    bn = nn.BatchNorm1d(8, eps=1e-5)
    y, yb = sbn(x), bn(x)
    ratio = (y / yb)[yb.abs() > 1e-3]
    assert (ratio > 2 ** -0.76).all() and (ratio < 2 ** 0.76).all()
    with torch.no_grad():
        sbn.weight.copy_(torch.tensor([0.3, 0.7, 1.0, 1.4, 1.5, 2.9, 3.0, 5.0]))  # not powers of two
        sbn.bias.uniform_(-1, 1)
    sbn.eval()
    a, b = sbn.fold()
    # methods.md §1.5: eval is (x - running_mean)·AP2(running_invstd), then AP2(γ)·(.) + β — a shift
    assert torch.equal(a, quant.ap2(sbn.running_invstd) * quant.ap2(sbn.weight.detach()))
    assert torch.equal(quant.ap2(a.abs()), a.abs())   # a product of two powers of two is one
    assert torch.allclose(sbn(x), a * x + b, atol=1e-5)  # the folded form is the eval forward


def test_shift_bn_eval_uses_running_stats_and_backprops():
    sbn = ShiftBatchNorm2d(3)
    x = torch.randn(8, 3, 4, 4, requires_grad=True)
    sbn(x).sum().backward()
    assert x.grad is not None and sbn.weight.grad is not None
    sbn.eval()
    y = sbn(torch.zeros(1, 3, 2, 2))
    a, b = sbn.fold()
    assert torch.allclose(y, b.view(1, 3, 1, 1).expand_as(y))
    with pytest.raises(ValueError, match="got shape"):
        sbn(torch.zeros(2, 4, 2, 2))


def test_shift_bn_checks_rank_and_refuses_a_batch_without_statistics():
    with pytest.raises(ValueError, match=r"takes 4-D input with 3 channels on axis 1, got shape \(4, 3\)"):
        ShiftBatchNorm2d(3)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="takes 2-D or 3-D input"):
        ShiftBatchNorm1d(3)(torch.randn(4, 3, 2, 2))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ShiftBatchNorm1d(3)(torch.randn(1, 3))
    assert ShiftBatchNorm1d(3).eval()(torch.randn(1, 3)).shape == (1, 3)  # eval: running statistics


def test_declarations_survive_deepcopy_and_cover_param_groups_added_later():
    """Clipping (and BONN's lr factor) are kept on the layer, so a deep copy of a model keeps them;
    attach() also clips a param group the optimizer gets after it was attached."""
    import copy

    from onebit.nn.bonn import BonnConv2d
    from onebit.optim import param_groups

    a, b = BinaryLinear(4, 3), BinaryLinear(3, 2)
    twin = copy.deepcopy(nn.Sequential(a, b))
    assert [p for p, _ in constraints.constrained(twin)] == [twin[0].weight, twin[1].weight]
    opt = torch.optim.SGD([twin[0].weight], lr=100.0)
    constraints.attach(opt, twin)
    opt.add_param_group({"params": [twin[1].weight]})
    for p in (twin[0].weight, twin[1].weight):
        p.grad = -torch.ones_like(p)
    opt.step()
    assert twin[0].weight.abs().max() <= 1 and twin[1].weight.abs().max() <= 1
    bonn = copy.deepcopy(BonnConv2d(2, 2, 3))
    groups = param_groups(bonn, 0.1)
    recon = [g for g in groups if any(p is bonn.weight_quantizer.recon for p in g["params"])]
    assert recon and recon[0]["lr"] == pytest.approx(0.1 * bonn.weight_quantizer.recon_lr_scale)
