"""Binarizers against the closed forms of methods.md §0.3 and §1.14."""

import math

import pytest
import torch

from onebit import quant

GRID = torch.tensor([-1.5, -1.0, -0.3, 0.0, 0.7, 1.0, 2.0])


def grad_of(q, x):
    x = x.clone().requires_grad_(True)
    q(x).sum().backward()
    return x.grad


def test_sign_convention_zero_is_plus_one():
    out = quant.sign(torch.tensor([-2.0, -0.0, 0.0, 1e-30, -1e-30, 3.0]))
    assert out.tolist() == [-1, 1, 1, 1, -1, 1]


@pytest.mark.parametrize("name", ["ste_sign", "identity_ste_sign", "stochastic_sign"])
@pytest.mark.parametrize("training", [True, False])
def test_binarized_tensors_never_hold_zero(name, training):
    q = quant.get(name).train(training)
    x = torch.cat([torch.zeros(1000), torch.randn(1000), torch.tensor([-0.0, 1.0, -1.0])])
    out = q(x)
    assert set(out.unique().tolist()) <= {-1.0, 1.0}


def test_ste_sign_gradient_is_hardtanh_derivative():
    # methods.md §1.14 check 2: inclusive at ±1
    assert grad_of(quant.get("ste_sign"), GRID).tolist() == [0, 1, 1, 1, 1, 1, 0]


def test_ste_sign_clip_window():
    g = grad_of(quant.get("ste_sign", clip=0.5), torch.tensor([-0.6, -0.5, 0.2, 0.9]))
    assert g.tolist() == [0, 1, 1, 0]


def test_identity_ste_gradient_is_one():
    assert grad_of(quant.get("identity_ste_sign"), GRID).tolist() == [1.0] * len(GRID)


def test_gradcheck_against_surrogate():
    """Backward of ste_sign equals the autograd derivative of htanh (its surrogate) everywhere."""
    x = torch.randn(500) * 2
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    g = torch.randn(500)
    (quant.ste_sign(x1) * g).sum().backward()
    (quant.hard_tanh(x2) * g).sum().backward()
    mask = (x.abs() - 1).abs() > 1e-6  # htanh's autograd differs at exactly ±1 only
    assert torch.equal(x1.grad[mask], x2.grad[mask])


def test_stochastic_probability_and_mean():
    # methods.md §1.14 check 3
    torch.manual_seed(1)
    x = torch.full((1_000_000,), 0.5)
    out = quant.stochastic_sign(x)
    p = (out == 1).float().mean().item()
    assert abs(p - 0.75) < 0.002
    assert abs(out.mean().item() - 0.5) < 0.004


def test_stochastic_mean_is_hardtanh_on_grid():
    xs = torch.linspace(-1.5, 1.5, 13)
    x = xs.repeat(200_000, 1)
    mean = quant.stochastic_sign(x).mean(0)
    assert torch.allclose(mean, quant.hard_tanh(xs), atol=0.01)


def test_stochastic_is_deterministic_outside_unit_interval_and_in_eval():
    x = torch.tensor([-3.0, -1.0, 1.0, 2.5]).repeat(1000)
    assert torch.equal(quant.stochastic_sign(x), quant.sign(x))
    q = quant.get("stochastic_sign").eval()
    y = torch.randn(1000)
    assert torch.equal(q(y), quant.sign(y))


def test_stochastic_gradient():
    assert grad_of(quant.get("stochastic_sign").train(), GRID).tolist() == [0, 1, 1, 1, 1, 1, 0]


def test_registry_get_forms():
    assert isinstance(quant.get("ste_sign"), quant.SteSign)
    m = quant.SteSign()
    assert quant.get(m) is m
    lam = quant.get(torch.tanh)
    assert torch.equal(lam(torch.ones(2)), torch.tanh(torch.ones(2)))
    assert isinstance(quant.get(None), quant.Identity)
    with pytest.raises(KeyError, match="unknown quantizer 'nope'.*ste_sign"):
        quant.get("nope")
    with pytest.raises(TypeError):
        quant.get(3)


def test_registry_rejects_duplicates_and_reports_binary():
    with pytest.raises(ValueError):
        quant.register("ste_sign")(quant.SteSign)
    assert quant.is_binary(quant.get("ste_sign")) and not quant.is_binary(quant.get("identity"))
    assert {"ste_sign", "identity_ste_sign", "stochastic_sign", "identity"} <= set(quant.names())
    assert quant.get("ste_sign", clip=2.0).config() == {"name": "ste_sign", "clip": 2.0}


def test_registry_refuses_what_would_break_it_and_options_it_would_ignore():
    for bad in (3, "", None):
        with pytest.raises(ValueError, match="non-empty string name"):
            quant.register(bad)
    with pytest.raises(ValueError, match="'identity' is already registered"):
        quant.register("identity")(quant.SteSign)
    with pytest.raises(TypeError, match="decorates a class or factory"):
        quant.register("not_a_factory")(42)
    assert "not_a_factory" not in quant.names() and quant.names() == sorted(quant.names())
    with pytest.raises(TypeError, match=r"keyword arguments \(clip\) configure a quantizer given by name"):
        quant.get(quant.SteSign(), clip=5)


def test_nan_binarizes_to_plus_one_as_the_docstring_says():
    x = torch.tensor([float("nan"), -1.0])
    assert quant.sign(x).tolist() == [1.0, -1.0]
    assert quant.get("ste_sign")(x).tolist() == [1.0, -1.0]


@pytest.mark.parametrize("x, want", [(2.82, 2), (2.83, 4), (3.0, 4), (0.7, 0.5), (0.75, 1),
                                     (-0.3, -0.25), (0.0, 0.0), (1.0, 1.0), (-5.0, -4.0)])
def test_ap2_values(x, want):
    # methods.md §1.14 check 6
    assert quant.ap2(torch.tensor(x)).item() == want


def test_ap2_is_within_sqrt2_and_ste_passes_gradient():
    x = torch.randn(10000).abs() + 1e-3
    r = quant.ap2(x) / x
    assert (r >= 2 ** -0.5 - 1e-6).all() and (r <= 2 ** 0.5 + 1e-6).all()
    xg = x.clone().requires_grad_(True)
    quant.ap2_ste(xg).sum().backward()
    assert torch.equal(xg.grad, torch.ones_like(x))


@pytest.mark.parametrize("clip", [0.0, -1.0, math.nan, math.inf])
def test_ste_sign_refuses_a_gradient_window_that_is_not_positive(clip):
    with pytest.raises(ValueError, match="clip .* must be a finite number > 0"):
        quant.get("ste_sign", clip=clip)
