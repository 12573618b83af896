"""Shift-based AdaMax, schedules, parameter groups and losses (methods.md §1.4–1.6, §1.14)."""

import math
import pytest
import torch
from torch import nn

from onebit import losses, quant
from onebit.nn import BinaryLinear
from onebit.nn.tags import tag
from onebit.optim import ShiftAdaMax, lr_factor, make_scheduler, param_groups


def _adamax_reference(p, grads, lr, b1, b2, eps):
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = torch.maximum(b2 * v, g.abs())
        p = p - lr / (1 - b1 ** t) * m / (v + eps)
    return p


def _run(opt_cls, p0, grads, **kw):
    p = nn.Parameter(p0.clone())
    opt = opt_cls([p], **kw)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


def test_shift_adamax_without_ap2_is_adamax():
    # methods.md §1.14 check 8
    torch.manual_seed(0)
    p0 = torch.randn(50, dtype=torch.float64)
    grads = [torch.randn(50, dtype=torch.float64) for _ in range(20)]
    got = _run(ShiftAdaMax, p0, grads, lr=0.01, shift=False)
    want = _adamax_reference(p0, grads, 0.01, 1 - 2 ** -3, 1 - 2 ** -10, 2 ** -27)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_shift_adamax_steps_are_ap2_rounded_and_close():
    torch.manual_seed(0)
    p0 = torch.randn(1000, dtype=torch.float64)
    g = torch.randn(1000, dtype=torch.float64)
    got = _run(ShiftAdaMax, p0, [g], lr=2 ** -10)
    # first step: m = (1-b1) g, v = |g|, step = AP2(lr/(1-b1)) * m / AP2(|g|)
    b1 = 1 - 2 ** -3
    lr_hat = quant.ap2(torch.tensor(2 ** -10 / (1 - b1), dtype=torch.float64))
    want = p0 - lr_hat * (1 - b1) * g / (quant.ap2(g.abs()) + 2 ** -27)
    assert torch.allclose(got, want)
    exact = _run(ShiftAdaMax, p0, [g], lr=2 ** -10, shift=False)
    ratio = (got - p0) / (exact - p0)
    assert (ratio > 2 ** -1.01).all() and (ratio < 2 ** 1.01).all()


def test_shift_adamax_lr_scale_and_validation():
    p0, g = torch.ones(3), torch.ones(3)
    a = _run(ShiftAdaMax, p0, [g], lr=2 ** -6)
    p = nn.Parameter(p0.clone())
    opt = ShiftAdaMax([{"params": [p], "lr_scale": 4.0}], lr=2 ** -6)
    p.grad = g.clone()
    opt.step()
    assert torch.allclose(p0 - p.detach(), 4 * (p0 - a))
    with pytest.raises(ValueError):
        ShiftAdaMax([nn.Parameter(torch.ones(1))], lr=-1)


def test_schedules():
    assert lr_factor("exp", 0, epochs=1000, lr=3e-3, lr_final=3e-7) == 1.0
    assert abs(lr_factor("exp", 1000, epochs=1000, lr=3e-3, lr_final=3e-7) - 1e-4) < 1e-12
    assert [lr_factor("shift", e, epochs=50, lr=1, every=10) for e in (0, 9, 10, 25)] == [1, 1, 0.5, 0.25]
    assert lr_factor("step", 30, epochs=50, lr=1, milestones=(10, 20)) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="unknown lr schedule"):
        lr_factor("poly", 0, epochs=1, lr=1)
    p = nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sch = make_scheduler(opt, "shift", epochs=30, lr=1.0, every=10)
    for _ in range(10):
        opt.step()
        sch.step()
    assert opt.param_groups[0]["lr"] == 0.5


def test_param_groups_glorot_and_no_decay_on_binary():
    model = nn.Sequential(BinaryLinear(100, 50, input_quantizer=None), nn.BatchNorm1d(50), nn.Linear(50, 3))
    groups = param_groups(model, 1e-3, glorot=True, weight_decay=1e-4)
    first = groups[0]
    assert first["params"][0] is model[0].weight and first["weight_decay"] == 0
    assert first["lr"] == pytest.approx(1e-3 / (1.5 / 150) ** 0.5)
    decay = [g for g in groups if g["name"] == "decay"][0]
    assert decay["params"] == [model[2].weight]
    n = sum(len(g["params"]) for g in groups)
    assert n == len(list(model.parameters()))
    g2 = param_groups(model, 1.0, glorot=True, pow2=True)
    assert g2[0]["lr_factor"] == 8.0 and g2[0]["lr"] == 8.0  # AP2(12.25)


def test_param_groups_honour_a_parameters_own_lr_scale_without_decay():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    tag(model[1], "weight", lr_scale=0.01)
    groups = param_groups(model, 0.1, weight_decay=5e-4)
    scaled = [g for g in groups if len(g["params"]) == 1 and g["params"][0] is model[1].weight]
    assert len(scaled) == 1 and scaled[0]["lr"] == pytest.approx(1e-3) and scaled[0]["weight_decay"] == 0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_shift_adamax_applies_a_glorot_group_lr_once():
    """param_groups puts the Glorot factor into the group's lr; ShiftAdaMax must not multiply it again."""
    torch.manual_seed(0)
    lin = BinaryLinear(100, 50, input_quantizer=None)
    model = nn.Sequential(lin)
    groups = param_groups(model, 2.0 ** -6, glorot=True, pow2=True)
    w0 = lin.weight.detach().clone()
    lin.weight.grad = torch.ones_like(lin.weight)
    ShiftAdaMax(groups, lr=2.0 ** -6, shift=False).step()
    # first AdaMax step: m = (1-β1)·g, v = |g|, step = lr/(1-β1) → Δ = lr_group · g/(|g|+eps) ≈ lr_group
    delta = (w0 - lin.weight.detach()).abs().mean().item()
    assert delta == pytest.approx(groups[0]["lr"], rel=1e-4)


@pytest.mark.parametrize("pow2", [False, True])
def test_shift_adamax_rounds_the_base_rate_and_keeps_the_glorot_factor_out(pow2):
    """methods.md §1.6: θ -= AP2(α/(1-β1^t)) · γ · m/(AP2(v)+ε), the Glorot γ multiplied after the
    rounding (Torch7: the AP2 step times GLR). γ here is 1/sqrt(1.5/150) = 10, not a power of two:
    rounding α·γ together would give AP2(2^-6·10/(1/8)) = 0.5 instead of AP2(2^-3)·10 = 1.25."""
    lin = BinaryLinear(100, 50, input_quantizer=None)
    groups = param_groups(nn.Sequential(lin), 2.0 ** -6, glorot=True, pow2=pow2)
    gamma = groups[0]["lr_factor"]
    assert gamma == (8.0 if pow2 else pytest.approx(10.0))
    w0 = lin.weight.detach().clone()
    lin.weight.grad = torch.full_like(lin.weight, 0.25)   # a power of two: AP2(v) = v exactly
    ShiftAdaMax(groups, lr=2.0 ** -6, shift=True).step()
    # step 1: m = g/8, v = |g|, AP2(2^-6 / (1/8)) = 2^-3 → Δ = 2^-3 · γ · (1/8)·0.25 / (0.25 + 2^-27)
    want = 2.0 ** -3 * gamma * (0.25 / 8) / (0.25 + 2.0 ** -27)
    delta = (w0 - lin.weight.detach())
    assert torch.allclose(delta, torch.full_like(delta, want), rtol=1e-6, atol=0)


def test_shift_adamax_keeps_the_factor_out_of_the_rounding_after_a_schedule_step():
    """A scheduler scales the group's lr (α·γ → α/2·γ); the rounding still sees α/2 only."""
    p = nn.Parameter(torch.zeros(3))
    opt = ShiftAdaMax([{"params": [p], "lr": 2.0 ** -6 * 3.0, "lr_factor": 3.0}], lr=2.0 ** -6)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    p.grad = torch.ones(3)
    opt.step(); sched.step()
    before = p.detach().clone()
    opt.step()
    # step 2: m = g(1-β1²) ... use the optimizer's own state: Δ = AP2(2^-7/(1-β1²))·3 · m/(AP2(v)+ε)
    b1, b2 = opt.param_groups[0]["betas"]
    m = (1 - b1) * (1 + b1)
    v = 1.0  # max(β2·1, 1)
    rate = 2.0 ** round(math.log2(2.0 ** -7 / (1 - b1 ** 2)))
    want = rate * 3.0 * m / (v + 2.0 ** -27)
    assert torch.allclose(before - p.detach(), torch.full((3,), want), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="lr_factor"):
        ShiftAdaMax([{"params": [p], "lr": 1e-3, "lr_factor": 0.0}]).step()


def test_squared_hinge_matches_definition():
    y = torch.randn(6, 4)
    t = torch.tensor([0, 3, 1, 2, 2, 0])
    tt = -torch.ones(6, 4)
    tt[torch.arange(6), t] = 1
    want = torch.clamp(1 - tt * y, min=0).pow(2).mean()
    assert torch.allclose(losses.squared_hinge(y, t), want)
    assert losses.get("sqhinge")(y, t) == losses.squared_hinge(y, t)
    perfect = tt * 2
    assert losses.squared_hinge(perfect, t) == 0
    with pytest.raises(KeyError, match="unknown loss"):
        losses.get("mse")


@pytest.mark.parametrize("bad", [torch.tensor([[0], [3], [1], [2], [2], [0]]), torch.tensor([0, 3]),
                                 torch.tensor([0., 3, 1, 2, 2, 0]), torch.ones(6, dtype=torch.bool)])
def test_squared_hinge_refuses_targets_that_would_broadcast(bad):
    """(N, 1) targets, a target count other than N, float or bool labels: an error naming both
    shapes, never a silently broadcast loss."""
    with pytest.raises(ValueError, match=r"\(N,\) integer class indices .* \(6, 4\)"):
        losses.squared_hinge(torch.randn(6, 4), bad)


def test_shift_adamax_weight_decay_is_an_l2_term_of_the_gradient():
    """One step from a zero gradient: without decay nothing moves; with λ the gradient is λ·θ and
    the first AdaMax step is lr·sign(λ·θ) (m = (1−β1)·g, v = |g|, bias correction 1/(1−β1))."""
    for wd, want in ((0.0, 0.9), (0.5, 0.9 - 2 ** -6)):
        p = nn.Parameter(torch.full((3,), 0.9))
        opt = ShiftAdaMax([p], lr=2 ** -6, shift=False, weight_decay=wd)
        p.grad = torch.zeros(3)
        opt.step()
        assert torch.allclose(p.detach(), torch.full((3,), want), atol=1e-6), (wd, p)
    with pytest.raises(ValueError, match="weight_decay"):
        ShiftAdaMax([nn.Parameter(torch.ones(1))], weight_decay=-1)


def test_an_exp_schedule_towards_zero_is_refused():
    """lr_final = 0 made the exp schedule's lr 0 from epoch 1 on (0^(e/epochs))."""
    from onebit.methods.recipe import Recipe

    with pytest.raises(ValueError, match="lr_final, which must be > 0"):
        lr_factor("exp", 1, epochs=5, lr=1e-3, lr_final=0.0)
    with pytest.raises(ValueError, match="recipe field lr_final must be > 0 with lr_schedule exp"):
        Recipe(model="bnn-mlp", data="mnist", lr_schedule="exp", lr_final=0.0)
    assert Recipe(model="bnn-mlp", data="mnist", lr_schedule="cosine", lr_final=0.0).lr_final == 0.0


@pytest.mark.parametrize("schedule, epochs, fit, want", [
    (dict(lr_schedule="step", milestones=(30, 31)), 60, 10, dict(milestones=(5, 5))),   # both decays kept
    (dict(lr_schedule="step", milestones=(50, 59)), 60, 10, dict(milestones=(8, 9))),   # the last one inside the run
    (dict(lr_schedule="step", milestones=(30, 60)), 60, 10, dict(milestones=(5, 10))),  # one past the end stays past
    (dict(lr_schedule="shift", lr_every=10), 60, 10, dict(lr_every=2)),
    (dict(lr_schedule="shift", lr_every=3), 60, 10, dict(lr_every=1)),  # whole epochs: as far as it can
])
def test_fit_schedule_stretches_milestones_and_shift_periods(schedule, epochs, fit, want):
    from onebit.methods.recipe import Recipe
    from onebit.train.trainer import fitted_schedule

    r = Recipe(model="bnn-mlp", data="mnist", epochs=epochs, **schedule)
    got = fitted_schedule(r, fit)
    assert {k: got[k] for k in want} == want
    fitted = r.replace(epochs=fit, **got)
    last = lr_factor(r.lr_schedule, fit - 1, epochs=fit, lr=r.lr, every=fitted.lr_every, milestones=fitted.milestones)
    full = lr_factor(r.lr_schedule, epochs - 1, epochs=epochs, lr=r.lr, every=r.lr_every, milestones=r.milestones)
    if r.lr_schedule == "step":  # every decay of the full run happens in the fitted one
        assert last == pytest.approx(full)
    elif fitted.lr_every > 1:  # whole-epoch periods: within one halving of the full run's end
        assert full <= last <= 2 * full
    else:  # a period under one epoch: halve every epoch
        assert last == 2.0 ** -(fit - 1)


def test_shift_adamax_loads_a_state_dict_saved_before_weight_decay():
    p = nn.Parameter(torch.ones(3))
    opt = ShiftAdaMax([p])
    sd = opt.state_dict()
    del sd["param_groups"][0]["weight_decay"]
    opt2 = ShiftAdaMax([p])
    opt2.load_state_dict(sd)
    p.grad = torch.ones(3)
    opt2.step()
    assert (p.detach() < 1).all()
