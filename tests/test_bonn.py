"""BONN (methods.md §4): kernel binarizer, Bayesian losses against closed forms (§4.10), models, hook, recipes."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onebit import models, quant
from onebit.losses.bayes import (BayesConfig, FeaturePrior, KernelPrior, bayes_feature_loss,
                                 center_update, model_kernel_loss)
from onebit.methods import get_recipe, recipe_names
from onebit.methods.bonn import PAPER_TABLE1, BonnHook, hook_for, loss_only_parameters
from onebit.models.wrn import BonnResNet, WideResNet
from onebit.nn import BinaryConv2d, BinaryLinear, constraints
from onebit.nn.bonn import BonnConv2d
from onebit.optim import param_groups
from onebit.quant.bonn import BonnKernelSign

BONN_MODELS = ["bonn-wrn22", "bonn-wrn40", "bonn-resnet18"]
SMALL_WRN = {"widths": (8, 8, 16, 32)}


def _small(name):
    """Small configuration and input shape of each BONN model (what tests/test_models.py needs too)."""
    if models.entry(name).family == "wrn":
        return dict(SMALL_WRN), (3, 32, 32)
    return {"width": 8}, (3, 64, 64)


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _layer(cin=3, cout=4, code_scale="one", sigma_param="direct", seed=0, **kw):
    """A float64 BONN conv with a random positive w (some |w∘k| > 1) and random μ, σ."""
    g = torch.Generator().manual_seed(seed)
    layer = BonnConv2d(cin, cout, 3, padding=1, code_scale=code_scale, sigma_param=sigma_param, **kw).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g, dtype=torch.float64) * 0.5)
        layer.weight_quantizer.recon.copy_(torch.rand(9, generator=g, dtype=torch.float64) * 2 + 0.2)
        layer.prior.set(mu=torch.rand(cout, generator=g, dtype=torch.float64) * 0.5 + 0.1,
                        sigma=torch.rand(cout, generator=g, dtype=torch.float64) * 0.5 + 0.2)
    return layer


def _khat(layer):
    q = layer.weight_quantizer
    k = layer.weight.detach()
    return torch.where(q.recon_matrix().detach() * k >= 0, 1.0, -1.0).to(k.dtype) * q.magnitude(k)


# ------------------------------------------------------------------ the kernel binarizer (§4.5–4.6)

@pytest.mark.parametrize("code_scale", ["one", "mean_w", "mean_abs_k"])
def test_bonn_sign_forward_and_ste_backward_closed_form(code_scale):
    layer = _layer(code_scale=code_scale)
    q, k = layer.weight_quantizer, layer.weight
    w = q.recon_matrix().detach()
    u = (w * k).detach()
    m = {"one": 1.0, "mean_w": float(w.mean()), "mean_abs_k": float(k.detach().abs().mean())}[code_scale]
    c = m / float(w.mean())
    out = q(k)
    assert torch.equal(out, torch.where(u >= 0, 1.0, -1.0).double() * c)  # ±c, never 0
    assert torch.allclose(q.code(k), torch.where(u >= 0, 1.0, -1.0).double() * m)
    assert torch.allclose(q.scale(k), torch.full((k.shape[0],), c, dtype=torch.float64))
    g = torch.randn_like(out)
    gk, gw = torch.autograd.grad((out * g).sum(), [k, q.recon])
    dk_hat = g * c  # ∂L/∂k̂ for the ±1 code: the conv output is scaled by c
    mask = (u.abs() <= 1).double()
    assert torch.allclose(gk, dk_hat * mask * w)  # STE on w∘k (pitfall 2), full w (pitfall 3)
    assert torch.allclose(gw.view(3, 3), (dk_hat * mask * k.detach()).sum((0, 1)))
    assert 0 < mask.mean() < 1  # the test exercises both sides of the STE window


def test_bonn_sign_scale_grad_option_and_registry():
    layer = _layer()
    layer.weight_quantizer.scale_grad = True
    q, k = layer.weight_quantizer, layer.weight
    out = q(k)
    g = torch.randn_like(out)
    (gw,) = torch.autograd.grad((out * g).sum(), [q.recon])
    layer.weight_quantizer.scale_grad = False
    (gw0,) = torch.autograd.grad((q(k) * g).sum(), [q.recon])
    wbar = float(q.recon.detach().mean())
    extra = -(g * torch.where(q.recon_matrix() * k >= 0, 1.0, -1.0)).sum() / wbar ** 2 / 9  # d(1/w̄)/dw_p
    assert torch.allclose(gw, gw0 + extra.detach())
    q2 = quant.get("bonn_sign")
    assert "bonn_sign" in quant.names() and q2.binary and q2.scaled and q2.export_as == "sign"
    assert q2.kernel_size == (3, 3) and q2.config()["code_scale"] == "one"
    with pytest.raises(ValueError, match="code_scale"):
        quant.get("bonn_sign", code_scale="bogus")
    with pytest.raises(ValueError, match="kernels got a weight"):
        quant.get("bonn_sign", kernel_size=5)(torch.randn(2, 2, 3, 3))


def test_recon_vector_kept_positive_and_export_refuses_negative_w():
    layer = BonnConv2d(2, 3, 3, padding=1)
    q = layer.weight_quantizer
    assert q.recon.dim() == 1 and torch.equal(q.recon, torch.ones(9))  # rank 1: never weight-decayed
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    constraints.attach(opt, layer)
    q.recon.grad = torch.full((9,), 5.0)
    opt.step()
    assert torch.all(q.recon == 1e-3)  # clamped to recon_min after the step
    free = BonnKernelSign(3, recon_min=None)
    with torch.no_grad():
        free.recon[0] = -0.5
    with pytest.raises(ValueError, match="entries <= 0"):
        free.scale(torch.randn(2, 2, 3, 3))


def test_binary_conv_then_inverse_mean_w_equals_float_conv():
    # §4.10 check 6: binary conv followed by the scalar 1/w̄ = float conv with kernel sign(k)/w̄ on ±1 inputs
    layer = _layer(cin=5, cout=6).eval()
    x = torch.randn(2, 5, 7, 9, dtype=torch.float64)
    xb = torch.where(x >= 0, 1.0, -1.0).double()
    wbar = layer.weight_quantizer.recon.mean()
    want = F.conv2d(xb, torch.where(layer.weight >= 0, 1.0, -1.0).double() / wbar, padding=1)
    assert torch.allclose(layer(x), want)
    acc = F.conv2d(xb, torch.where(layer.weight >= 0, 1.0, -1.0).double(), padding=1)
    assert torch.equal(acc, acc.round())  # integer XNOR-popcount accumulators, then one scalar multiply
    assert torch.allclose(layer(x), acc / wbar)


def test_untrained_bonn_conv_is_a_plain_sign_conv():
    torch.manual_seed(1)
    bonn = BonnConv2d(4, 5, 3, padding=1, stride=2)
    plain = BinaryConv2d(4, 5, 3, padding=1, stride=2, input_quantizer="ste_sign", weight_quantizer="ste_sign")
    plain.weight.data.copy_(bonn.weight.data)
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    yb, yp = bonn(x), plain(x2)
    assert torch.equal(yb, yp)
    g = torch.randn_like(yb)
    yb.backward(g)
    yp.backward(g)
    assert torch.equal(x.grad, x2.grad) and torch.equal(bonn.weight.grad, plain.weight.grad)


# ------------------------------------------------------------------ kernel loss vs closed forms (§4.10 checks 1–4)

@pytest.mark.parametrize("code_scale", ["one", "mean_abs_k"])
def test_kernel_loss_gradients_k_and_w_closed_form(code_scale):
    layer = _layer(cin=3, cout=4, code_scale=code_scale)
    lam, nu = 1e-4, 0.7
    q, k = layer.weight_quantizer, layer.weight
    loss = 0.5 * lam * layer.kernel_loss(nu)
    gk, gw = torch.autograd.grad(loss, [k, q.recon])
    w = q.recon_matrix().detach()
    kd, khat = k.detach(), _khat(layer)
    mu = layer.prior.mu.detach().view(-1, 1, 1, 1)
    s2 = layer.prior.sigma.detach().view(-1, 1, 1, 1) ** 2
    prior = torch.where(kd >= 0, (kd - mu) / s2, (kd + mu) / s2)
    want_k = lam * (w * (w * kd - khat) + nu * prior)  # §4.6 ∂L_B/∂k (k̂ constant: pitfall 1)
    want_w = lam * ((w * kd - khat) * kd).sum((0, 1))  # §4.6 ∂L_B/∂w
    assert _rel(gk, want_k) < 1e-6
    assert _rel(gw.view(3, 3), want_w) < 1e-6


def test_kernel_loss_value_is_summed_over_layers_channels_and_entries():
    layer = _layer(cin=2, cout=3)
    nu = 0.5
    k, khat = layer.weight.detach(), _khat(layer)
    w = layer.weight_quantizer.recon_matrix().detach()
    mu, s = layer.prior.mu.detach(), layer.prior.sigma.detach()
    want = 0.0
    for i in range(3):
        for n in range(2):
            kern, code = k[i, n].reshape(-1), khat[i, n].reshape(-1)
            want += float(((code - w.reshape(-1) * kern) ** 2).sum())
            for v in kern.tolist():
                want += nu * ((v - mu[i]) ** 2 if v >= 0 else (v + mu[i]) ** 2) / s[i] ** 2
            want += nu * math.log(float(s[i]) ** 2) * 9  # log det(σ²I) over the H·W entries
    assert math.isclose(float(layer.kernel_loss(nu).detach()), float(want), rel_tol=1e-10)
    model = nn.Sequential(layer, copy.deepcopy(layer))
    assert math.isclose(float(model_kernel_loss(model, 1e-4, nu).detach()), 1e-4 * float(want), rel_tol=1e-10)


@pytest.mark.parametrize("sigma_param", ["direct", "log", "softplus"])
def test_mu_sigma_gradients_normalised_by_cin_h_w(sigma_param):
    layer = _layer(cin=3, cout=4, sigma_param=sigma_param)
    lam, nu = 1e-4, 2.0
    prior = layer.prior
    loss = 0.5 * lam * layer.kernel_loss(nu)
    gmu, graw = torch.autograd.grad(loss, [prior.mu, prior.sigma_raw])
    k = layer.weight.detach().flatten(1)
    mu, s = prior.mu.detach()[:, None], prior.sigma.detach()[:, None]
    n = k.shape[1]  # C_in·H·W
    dmu = lam * nu / n * torch.where(k >= 0, (mu - k) / s ** 2, (mu + k) / s ** 2).sum(1)
    dsig = lam * nu / n * torch.where(k >= 0, -(k - mu) ** 2 / s ** 3 + 1 / s,
                                      -(k + mu) ** 2 / s ** 3 + 1 / s).sum(1)
    dsig_draw = {"direct": torch.ones_like(s[:, 0]), "log": s[:, 0],
                 "softplus": torch.sigmoid(prior.sigma_raw.detach())}[sigma_param]
    assert _rel(gmu, dmu) < 1e-6
    assert _rel(graw, dsig * dsig_draw) < 1e-6
    # without the normalisation: the plain autograd gradient, C_in·H·W times larger; k's gradient unchanged
    gk_norm = torch.autograd.grad(0.5 * lam * layer.kernel_loss(nu), layer.weight)[0]
    loss_raw = 0.5 * lam * layer.kernel_loss(nu, normalize_prior_grad=False)
    gmu_raw, graw_raw, gk_raw = torch.autograd.grad(loss_raw, [prior.mu, prior.sigma_raw, layer.weight])
    assert _rel(gmu_raw, n * dmu) < 1e-6 and _rel(graw_raw, n * dsig * dsig_draw) < 1e-6
    assert torch.equal(gk_norm, gk_raw)


def test_degenerate_kernels_leave_only_log_det():
    # §4.10 check 3: entries at ±μ → no prior quadratic terms; plus w∘k = k̂ → only ν log det Ψ remains
    cout, cin, mu = 3, 2, 0.25
    layer = BonnConv2d(cin, cout, 3, sigma_param="direct").double()
    signs = torch.where(torch.randn(cout, cin, 3, 3) >= 0, 1.0, -1.0).double()
    with torch.no_grad():
        layer.weight.copy_(mu * signs)
        layer.prior.set(mu=mu, sigma=torch.tensor([0.5, 1.0, 2.0]))
        layer.weight_quantizer.recon.fill_(2.0)  # w∘k = ±0.5 ≠ k̂: the reconstruction term is on
    nu = 0.3
    recon = ((signs - 2.0 * layer.weight.detach()) ** 2).sum()
    logdet = nu * cin * 9 * torch.log(torch.tensor([0.25, 1.0, 4.0], dtype=torch.float64)).sum()
    assert torch.allclose(layer.kernel_loss(nu), recon + logdet)  # no prior quadratic
    with torch.no_grad():
        layer.weight_quantizer.recon.fill_(1 / mu)  # now w∘k = k̂ exactly
    assert torch.allclose(layer.kernel_loss(nu), logdet)


def test_sigma_stationary_point_is_mean_squared_deviation():
    # §4.10 check 4 (kernels): for fixed k, minimising the σ terms drives σ² to mean (|k| − μ)²
    layer = _layer(cin=4, cout=3, sigma_param="log")
    k = layer.weight.detach().flatten(1)
    mu = layer.prior.mu.detach()[:, None]
    target = (k.abs() - mu).pow(2).mean(1)
    layer.prior.set(sigma=target.sqrt())
    (gs,) = torch.autograd.grad(layer.kernel_loss(1.0), layer.prior.sigma_raw)
    assert gs.abs().max() < 1e-9  # stationary exactly there
    layer.prior.set(sigma=1.0)
    opt = torch.optim.Adam([layer.prior.sigma_raw], lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        layer.kernel_loss(1.0).backward()
        opt.step()
    assert torch.allclose(layer.prior.sigma.detach() ** 2, target, rtol=1e-4)
    # prior_init="abs" starts at the maximum-likelihood fit (μ = mean|k|, σ = std|k|): zero μ/σ gradients
    layer.reset_prior("abs")
    gmu, gs = torch.autograd.grad(layer.kernel_loss(1.0), [layer.prior.mu, layer.prior.sigma_raw])
    assert gmu.abs().max() < 1e-9 and gs.abs().max() < 1e-9


def test_kernel_prior_init_and_positivity():
    conv = BonnConv2d(3, 4, 3)
    k = conv.weight.detach().flatten(1)
    assert torch.allclose(conv.prior.mu, k.abs().mean(1))
    assert torch.allclose(conv.prior.sigma, k.abs().std(1, unbiased=False), rtol=1e-5)
    conv.reset_prior("moments")
    assert torch.allclose(conv.prior.sigma, k.std(1, unbiased=False), rtol=1e-5)
    with pytest.raises(ValueError, match="prior init"):
        conv.reset_prior("bogus")
    conv = BonnConv2d(3, 8, 3)
    with torch.no_grad():  # a constant and a zero channel: σ would be 0 (the prior's stiffness ν/σ² infinite)
        conv.weight[0] = 0.1
        conv.weight[1] = 0.0
    conv.reset_prior()
    spread = conv.weight.detach().flatten(1).abs().std(1, unbiased=False)
    floor = 0.1 * float(spread.median())  # a tenth of the layer's median spread (6 of its 8 channels ordinary)
    assert floor > 1e-3
    assert torch.allclose(conv.prior.sigma[:2], torch.full((2,), floor), rtol=1e-5, atol=0)
    assert torch.allclose(conv.prior.sigma[2:], spread[2:], rtol=1e-5, atol=0)  # the ordinary channels untouched
    direct = KernelPrior(2, sigma_param="direct")
    opt = torch.optim.SGD(direct.parameters(), lr=10.0)
    constraints.attach(opt, direct)
    direct.mu.grad, direct.sigma_raw.grad = torch.ones(2), torch.ones(2)
    opt.step()
    assert (direct.mu > 0).all() and (direct.sigma > 0).all()  # pitfall 7
    assert {id(p) for p in loss_only_parameters(direct)} == {id(p) for p in direct.parameters()}


# ------------------------------------------------------------------ feature loss and centers (§4.10 checks 4, 7)

def test_feature_loss_gradients_closed_form():
    g = torch.Generator().manual_seed(3)
    f = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2, 2, 1, 0, 2])
    c = torch.randn(3, 4, generator=g, dtype=torch.float64)
    s = (torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    theta = 1e-2
    loss = 0.5 * theta * bayes_feature_loss(f, y, c, s, reduction="sum")
    gf, gs = torch.autograd.grad(loss, [f, s])
    d = f.detach() - c[y]
    assert _rel(gf, theta * (d + d / s.detach()[y] ** 2)) < 1e-10
    per = theta * (-d ** 2 / s.detach()[y] ** 3 + 1 / s.detach()[y])
    assert _rel(gs, torch.zeros_like(c).index_add_(0, y, per)) < 1e-10
    mean = 0.5 * theta * bayes_feature_loss(f, y, c, s, reduction="mean")
    assert torch.allclose(mean * 6, loss)
    sd = s.detach()
    want = 0.5 * theta * sum(float((d[m] ** 2).sum() + (d[m] ** 2 / sd[y[m]] ** 2 + torch.log(sd[y[m]] ** 2)).sum())
                             for m in range(6))
    assert math.isclose(float(loss.detach()), want, rel_tol=1e-12)


def test_feature_sigma_stationary_point_is_class_variance():
    g = torch.Generator().manual_seed(4)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2])
    f = torch.randn(9, 5, generator=g, dtype=torch.float64)
    c = torch.randn(3, 5, generator=g, dtype=torch.float64)
    var = torch.zeros(3, 5, dtype=torch.float64).index_add_(0, y, (f - c[y]) ** 2) / torch.bincount(y)[:, None]
    prior = FeaturePrior(3, 5).double()
    prior.centers.copy_(c)
    prior.set_sigma(var.sqrt())
    (gs,) = torch.autograd.grad(prior.loss(f, y), prior.sigma_raw)
    assert gs.abs().max() < 1e-12
    prior.set_sigma(1.0)
    opt = torch.optim.Adam([prior.sigma_raw], lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        prior.loss(f, y).backward()
        opt.step()
    assert torch.allclose(prior.sigma.detach() ** 2, var, rtol=1e-4)


def test_center_update_matches_center_loss_formula():
    centers = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, -5.0]])
    f = torch.tensor([[1.0, 2.0], [3.0, 0.0], [2.0, 2.0], [0.0, 4.0]])
    y = torch.tensor([0, 0, 1, 0])
    alpha = 0.5
    new = center_update(centers, f, y, alpha)
    want = centers.clone()
    for j in range(3):
        idx = [i for i in range(4) if y[i] == j]
        delta = sum((centers[j] - f[i] for i in idx), torch.zeros(2)) / (1 + len(idx))
        want[j] = centers[j] - alpha * delta
    assert torch.allclose(new, want)
    assert torch.allclose(new[0], torch.tensor([0.5, 0.75]))  # Δc = (0 − (4, 6))/4, c − 0.5Δc
    assert torch.equal(new[2], centers[2])  # absent class unchanged
    prior = FeaturePrior(3, 2)
    prior.centers.copy_(centers)
    prior.update_centers(f.requires_grad_(True), y, alpha)
    assert torch.allclose(prior.centers, want) and not prior.centers.requires_grad


# ------------------------------------------------------------------ models

@pytest.mark.parametrize("name", BONN_MODELS)
def test_bonn_models_forward_backward_step_with_losses(name):
    kw, shape = _small(name)
    model = models.create(name, num_classes=10, in_channels=shape[0], image_size=shape[1], **kw)
    model.bayes = BayesConfig(lam=1e-2, theta=1e-2)
    for _, conv in model.bonn_convs():  # move the priors off their init (the ML fit: zero gradients there)
        conv.prior.set(mu=conv.prior.mu * 1.5, sigma=conv.prior.sigma * 2)
    hook = hook_for(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    constraints.attach(opt, model)
    x, y = torch.randn(4, *shape), torch.randint(0, 10, (4,))
    out, f = model(x, return_features=True)
    assert out.shape == (4, 10) and f.shape == (4, model.fc.in_features)
    assert torch.equal(hook.features, f)  # captured on the way into fc
    loss = F.cross_entropy(out, y) + hook.extra_loss(y, epoch=0)
    assert hook.last["kernel"] != 0 and hook.last["feature"] != 0  # log σ² terms can make them negative
    assert math.isclose(hook.last["kernel"], float(model_kernel_loss(model, 1e-2, 1.0).detach()), rel_tol=1e-5)
    want_f = 0.5e-2 * float(model.fc.prior.loss(f, y).detach())
    assert math.isclose(hook.last["feature"], want_f, rel_tol=1e-6)
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())  # incl. μ, σ, feature σ, w
    before = [p.detach().clone() for p in model.parameters()]
    centers = model.fc.prior.centers.clone()
    opt.step()
    hook.after_step(y)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert not torch.equal(centers, model.fc.prior.centers) and hook.features is None
    for _, conv in model.bonn_convs():
        assert conv.weight_quantizer.recon.min() >= 1e-3
        assert (conv.prior.mu > 0).all() and (conv.prior.sigma > 0).all()
    model.eval()
    assert torch.equal(model(x), model(x))
    assert hook.features is None  # no capture in eval mode


@pytest.mark.parametrize("name", BONN_MODELS)
def test_bonn_models_real_layers(name):
    kw, shape = _small(name)
    model = models.create(name, in_channels=shape[0], image_size=shape[1], **kw)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (BinaryConv2d, BinaryLinear))}
    real = {n for n, m in layers.items() if not quant.is_binary(m.weight_quantizer)}
    assert real == set(model.real_weight_layers) == set(model.real_input_layers)
    assert "conv1" in real and "fc" in real
    assert all(".shortcut." in n for n in real - {"conv1", "fc"})  # 1×1 down-sampling convs only
    assert all(isinstance(m, BonnConv2d) for n, m in layers.items() if n not in real)
    assert all(m.kernel_size == (1, 1) for n, m in layers.items() if ".shortcut." in n)


def test_wrn_structure_depths_and_widths():
    for depth, n in [(22, 3), (40, 6)]:
        m = models.create(f"bonn-wrn{depth}", **SMALL_WRN)
        assert isinstance(m, WideResNet)
        assert [len(getattr(m, f"layer{i}")) for i in (1, 2, 3)] == [n, n, n]
        assert len(m.bonn_convs()) == 6 * n  # depth − 4 binary 3×3 convs
    m = models.create("bonn-wrn22")
    assert [m.conv1.out_channels, m.layer1[0].conv1.out_channels, m.layer2[0].conv1.out_channels,
            m.layer3[0].conv1.out_channels] == [16, 16, 32, 64]
    wide = models.create("bonn-wrn22", widths=[64, 64, 128, 256])  # a list too (JSON configs)
    assert wide.fc.in_features == 256 and wide.layer2[0].conv1.stride == (2, 2)
    assert isinstance(models.create("bonn-resnet18", width=4), BonnResNet)
    with pytest.raises(ValueError, match="WRN depth"):
        models.create("bonn-wrn22", depth=28)
    with pytest.raises(ValueError, match="widths"):
        models.create("bonn-wrn22", widths=(16, 32, 64))
    with pytest.raises(ValueError, match="lam"):
        models.create("bonn-wrn22", lam=-1.0)


def test_lambda_theta_zero_reduces_to_plain_network():
    # §4.10 check 5: λ = θ = 0 → exactly the plain 1-bit net (sign weights, scale 1/w̄ = 1 untrained)
    torch.manual_seed(5)
    model = models.create("bonn-wrn22", lam=0.0, theta=0.0, **SMALL_WRN)
    plain = copy.deepcopy(model)
    for name, conv in list(plain.named_modules()):
        for cname, child in list(conv.named_children()):
            if isinstance(child, BonnConv2d):
                twin = BinaryConv2d(child.in_channels, child.out_channels, 3, stride=child.stride, padding=1,
                                    input_quantizer="ste_sign", weight_quantizer="ste_sign")
                twin.weight.data.copy_(child.weight.data)
                setattr(conv, cname, twin)
    hook = hook_for(model)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    out, out_p = model(x), plain(x)
    assert torch.equal(out, out_p)
    extra = hook.extra_loss(y, epoch=5)
    assert float(extra) == 0.0 and not extra.requires_grad
    (F.cross_entropy(out, y) + extra).backward()
    F.cross_entropy(out_p, y).backward()
    grads = dict(plain.named_parameters())
    loss_only = {id(p) for p in loss_only_parameters(model)}
    for n, p in model.named_parameters():
        if n in grads and id(p) not in loss_only:
            assert torch.equal(p.grad, grads[n].grad), n
    assert all(p.grad is None for p in loss_only_parameters(model))  # no prior is touched
    hook.after_step(y)
    assert torch.equal(model.fc.prior.centers, torch.zeros_like(model.fc.prior.centers))


def test_hook_schedule_switches_and_errors():
    model = models.create("bonn-wrn22", theta=1e-2, feature_start_epoch=3, **SMALL_WRN)
    hook = hook_for(model)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    model(x)
    hook.extra_loss(y, epoch=2)
    assert hook.last["feature"] == 0.0 and hook.last["kernel"] != 0
    hook.extra_loss(y, epoch=3)
    assert hook.last["feature"] != 0
    hook.after_step(y)  # centers are updated before the loss starts too
    assert model.fc.prior.centers.abs().sum() > 0
    with pytest.raises(RuntimeError, match="no features"):
        hook.extra_loss(y, epoch=3)
    f = torch.randn(4, 32)
    hook.extra_loss(y, epoch=3, features=f)
    off = models.create("bonn-wrn22", kernel_loss=False, feature_loss=False, **SMALL_WRN)
    h = hook_for(off)
    assert float(h.extra_loss(y)) == 0.0 and h._handle is None
    assert hook_for(models.create("bireal-resnet18-cifar", width=4)) is None
    with pytest.raises(ValueError, match="BONN model"):
        BonnHook(nn.Linear(2, 2))
    hook.remove()
    model.train()(x)
    assert hook.features is None


def test_param_groups_never_decay_bonn_extras_and_centers_are_buffers():
    model = models.create("bonn-wrn22", **SMALL_WRN)
    groups = param_groups(model, 0.1, weight_decay=5e-4)
    decayed = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    extras = [c.weight_quantizer.recon for _, c in model.bonn_convs()] + loss_only_parameters(model)
    assert extras and not any(id(p) in decayed for p in extras)
    assert not any(id(c.weight) in decayed for _, c in model.bonn_convs())
    assert "fc.prior.centers" in dict(model.named_buffers())
    assert not any(p is model.fc.prior.centers for p in model.parameters())
    assert set(loss_only_parameters(model)) == {p for n, p in model.named_parameters() if ".prior." in n}
    sd = model.state_dict()
    clone = models.create("bonn-wrn22", **SMALL_WRN)
    clone.load_state_dict(sd)  # checkpoints hold w, μ, σ, centers, feature σ
    assert torch.equal(clone.fc.prior.centers, model.fc.prior.centers)


def test_recon_vector_has_its_own_learning_rate():
    """PCNN's η₂: w is stepped at recon_lr_scale × the recipe's lr (default 0.01); 1 = joint SGD."""
    model = models.create("bonn-wrn22", **SMALL_WRN)
    recons = {id(c.weight_quantizer.recon) for _, c in model.bonn_convs()}
    groups = param_groups(model, 0.1, weight_decay=5e-4)
    (g,) = [g for g in groups if any(id(p) in recons for p in g["params"])]
    assert {id(p) for p in g["params"]} == recons and g["lr"] == pytest.approx(1e-3) and g["weight_decay"] == 0
    joint = models.create("bonn-wrn22", **SMALL_WRN, recon_lr_scale=1.0)
    jrecons = {id(c.weight_quantizer.recon) for _, c in joint.bonn_convs()}
    for g in param_groups(joint, 0.1, weight_decay=5e-4):
        if any(id(p) in jrecons for p in g["params"]):
            assert g["lr"] == 0.1
    with pytest.raises(ValueError, match="recon_lr_scale"):
        BonnKernelSign(3, recon_lr_scale=-1.0)


def test_resnet18_accounting_matches_xnor_convention():
    # §4.10 check 8 / §0.6: ≈ 11.1× compression with BONN's real layers; priors and w are not deployed
    from onebit.analysis.summary import summary

    model = models.create("bonn-resnet18", num_classes=1000)
    s = summary(model, (3, 224, 224))
    assert abs(s.compression - 11.1) / 11.1 < 0.01
    assert abs(s.memory_bits / 1e6 - 33.64) < 0.05
    assert s.params == 11_689_512
    assert abs(s.ops / 1.64e8 - 1) < 0.01


def test_export_engine_equals_pytorch():
    pytest.importorskip("onebit.kernels")
    import numpy as np

    from onebit.deploy import Engine, export

    torch.manual_seed(7)
    model = models.create("bonn-wrn22", **SMALL_WRN)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, conv in model.bonn_convs():  # a trained-looking w (w̄ ≠ 1), positive
            conv.weight_quantizer.recon.copy_(torch.rand(9, generator=g) * 3 + 0.1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        export(model, Path(d) / "m.onebit", x)
        y = Engine(Path(d) / "m.onebit").run(x.numpy())
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double()).numpy()
    assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max() + 1e-6


# ------------------------------------------------------------------ recipes

def test_recipes_are_registered_and_build():
    names = [n for n in recipe_names() if n.startswith("bonn-")]
    assert {"bonn-wrn22", "bonn-wrn22-baseline", "bonn-wrn40", "bonn-resnet18"} <= set(names)
    for n in names:
        r = get_recipe(n)
        assert r.model in BONN_MODELS and r.optimizer == "sgd" and r.loss == "ce"
        small = SMALL_WRN if models.entry(r.model).family == "wrn" else {"width": 4}
        m = models.create(r.model, **{**r.model_kwargs, **small})
        assert m.bayes.lam == r.model_kwargs["lam"] and m.bayes.theta == r.model_kwargs["theta"]
        if "wrn" in n:
            assert r.epochs == 200 and (m.bayes.lam, m.bayes.theta) in PAPER_TABLE1
    assert get_recipe("bonn-wrn22").model_kwargs["lam"] == 1e-4
    assert get_recipe("bonn-wrn22-baseline").model_kwargs["theta"] == 0.0
    assert PAPER_TABLE1[(1e-4, 1e-2)]["wrn22-cifar10"] == 87.34


def test_bonn_conv_is_exported_by_onebit_nn_in_a_fresh_interpreter():
    """``from onebit.nn import BonnConv2d`` (as the README lists it) works first thing, without the
    circular import onebit.nn → nn.bonn → losses → nn.constraints biting."""
    import subprocess
    import sys

    code = "from onebit.nn import BonnConv2d; import onebit.nn.bonn as b; assert BonnConv2d is b.BonnConv2d"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)  # generous: a loaded machine, not a hang
    assert r.returncode == 0, r.stderr


def test_degenerate_reconstruction_and_prior_weights_are_refused():
    for init in (0.0, -1.0, math.nan):  # w̄ divides the codes: 0 would make every output NaN
        with pytest.raises(ValueError, match="recon_init must be a finite number > 0"):
            BonnConv2d(2, 2, 3, recon_init=init, recon_min=None)
    conv = BonnConv2d(2, 2, 3)
    for nu in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="nu must be a finite number >= 0"):
            conv.kernel_loss(nu)
    assert torch.isfinite(conv.kernel_loss(0.0))
