"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo); not a test module itself.

Each check first computes a one-process reference on the *global* batch (before the process group
exists, so nothing is synchronised), then the same thing data-parallel with the trainer's pieces
(:class:`StepModule`, :func:`wrap_ddp`, :func:`sync_batchnorm`, the BONN hook's ``reduce``), and
compares. Exits non-zero with a message on the first mismatch; rank 0 writes ``OK`` to argv[1].
"""

import copy
import sys

import torch
import torch.distributed as dist
from torch import nn

from onebit import losses, models
from onebit.methods.recipe import Recipe
from onebit.nn import ShiftBatchNorm1d, constraints
from onebit.train import distributed as distrib
from onebit.train.trainer import StepModule, TrainingError, build_optimizer, method_hook

torch.set_num_threads(1)
RANK, WORLD = distrib.env_world()


def _close(a: torch.Tensor, b: torch.Tensor, tol: float, what: str) -> None:
    err = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    if not err <= tol:
        sys.exit(f"rank {RANK}: {what} differs from the one-process reference by {err:.3g} (tol {tol:g})")


def _reference_bn(make):
    """BN forward/backward on the global batch; the distributed version on the strided shards."""
    g = torch.Generator().manual_seed(1)
    x, r = torch.randn(12, 6, generator=g) * 3 + 1, torch.randn(12, 6, generator=g)
    bn = make()
    x1 = x.clone().requires_grad_()
    (bn(x1) * r).sum().backward()
    return bn, x, r, x1.grad


def _distributed_bn(ref, make, x, r, xgrad):
    bn = distrib.sync_batchnorm(nn.Sequential(make()))[0]
    xl = x[RANK::WORLD].clone().requires_grad_()
    (bn(xl) * r[RANK::WORLD]).sum().backward()
    _close(xl.grad, xgrad[RANK::WORLD], 1e-5, f"{type(bn).__name__} input gradient")
    for (n, p), q in zip(bn.named_parameters(), ref.parameters()):
        gsum = p.grad.clone()
        dist.all_reduce(gsum)
        _close(gsum, q.grad, 1e-4, f"{type(bn).__name__} {n} gradient")
    for (n, b), c in zip(bn.named_buffers(), ref.buffers()):
        _close(b.float(), c.float(), 1e-5, f"{type(bn).__name__} {n}")


def _steps(model, recipe, xs, ys, ddp: bool):
    """A few training steps as the trainer does them; returns the model."""
    hook = method_hook(model)
    opt = build_optimizer(recipe, model)
    constraints.attach(opt, model)
    step = StepModule(model, hook, False)
    if ddp:
        distrib.sync_batchnorm(model)
        if hook is not None:
            hook.reduce, hook.world_size = distrib.all_reduce_tensor, WORLD
        step = distrib.wrap_ddp(step, find_unused_parameters=hook is not None)
    loss_fn = losses.get(recipe.loss)
    step.train()
    for x, y in zip(xs, ys):
        if ddp:
            x, y = x[RANK::WORLD], y[RANK::WORLD]
        out, extra = step(x, y, 0)
        loss = loss_fn(out.float(), y) + (extra if extra is not None else 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if hook is not None:
            hook.after_step(y)
    return model, opt


def _train_check(name: str, recipe: Recipe, shape, kw, model_name: str | None = None) -> None:
    torch.manual_seed(0)
    model = models.create(model_name or name, num_classes=10, in_channels=shape[0], image_size=shape[1], **kw)
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(8, *shape, generator=g) for _ in range(3)]
    ys = [torch.randint(0, 10, (8,), generator=g) for _ in range(3)]
    ref, _ = _steps(copy.deepcopy(model), recipe, xs, ys, ddp=False)
    REFS[name] = (model, recipe, xs, ys, ref)


REFS: dict = {}


def main() -> None:
    out = sys.argv[1]
    # one-process references first, before any process group exists
    bn_refs = {}
    for label, make in (("bn", lambda: nn.BatchNorm1d(6, momentum=0.3)),
                        ("shift", lambda: ShiftBatchNorm1d(6)),
                        ("cma", lambda: nn.BatchNorm1d(6, momentum=None))):
        bn_refs[label] = (make, *_reference_bn(make))
    mlp_kw = {"hidden": 16, "bn": "shift", "dropout": 0.0, "input_dropout": 0.0}
    sgd = Recipe(model="bnn-mlp", data="mnist", loss="sqhinge", optimizer="sgd", lr=0.05, glorot_lr_scale=True)
    _train_check("bnn-mlp", sgd, (1, 8, 8), mlp_kw)
    # shift-AdaMax (like Adam) divides by |g|: an entry whose gradient is pure rounding noise (terms
    # that cancel) gets a full-size step of either sign, so it is compared for rank consistency only
    shift = Recipe(model="bnn-mlp", data="mnist", loss="sqhinge", optimizer="shift_adamax", lr=2.0 ** -6,
                   glorot_lr_scale=True)
    _train_check("bnn-mlp-shift-adamax", shift, (1, 8, 8), mlp_kw, model_name="bnn-mlp")
    bonn = Recipe(model="bonn-wrn22", data="cifar10", loss="ce", optimizer="sgd", lr=0.1, momentum=0.9,
                  weight_decay=5e-4)
    _train_check("bonn-wrn22", bonn, (3, 8, 8), {"widths": (4, 4, 8, 8), "lam": 1e-2, "theta": 1e-1})

    d = distrib.setup()
    assert d.active and d.world_size == WORLD == 2, d
    for label, (make, ref, x, r, xgrad) in bn_refs.items():
        _distributed_bn(ref, make, x, r, xgrad)

    for name, (model, recipe, xs, ys, ref) in REFS.items():
        got, opt = _steps(copy.deepcopy(model), recipe, xs, ys, ddp=True)
        distrib.check_consistent(d, got, opt, what=name)  # every rank holds the same state
        if recipe.optimizer == "shift_adamax":
            continue
        for (k, a), b in zip(got.state_dict().items(), ref.state_dict().values()):
            if a.is_floating_point():
                _close(a, b, 1e-4, f"{name} {k} after 3 DDP steps")
        if name == "bonn-wrn22":
            centers = got.fc.prior.centers
            _close(centers, ref.fc.prior.centers, 1e-5, "BONN class centers")
            if not float(centers.abs().sum()) > 0:
                sys.exit("BONN centers never moved: the feature loss was off")

    # the divergence check fires when one rank's state differs
    m = nn.Linear(3, 2)
    nn.init.constant_(m.weight, 0.5)
    distrib.check_consistent(d, m)
    if RANK == 1:
        with torch.no_grad():
            m.weight[0, 0] += 1e-7
    try:
        distrib.check_consistent(d, m, what="(planted)")
    except TrainingError as e:
        if "rank(s) [1]" not in str(e):
            sys.exit(f"unexpected message: {e}")
    else:
        sys.exit("check_consistent missed a planted difference")
    distrib.teardown(d, finished=True)
    if RANK == 0:
        with open(out, "w") as f:
            f.write("OK")


if __name__ == "__main__":
    main()
    distrib.end_worker_process(0)  # as `python -m onebit.cli.main` ends a worker
