"""BWNH (Hu, Wang, Cheng, AAAI 2018): the hashing solver (methods.md §3.7 checks), sampling, whole-network
hashing, the VGG-9 family and the pipeline on a tiny CIFAR-10 written by the test."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from onebit import models, quant
from onebit.methods import bwnh, get_recipe
from onebit.nn import BinaryConv2d, BinaryLinear, constraints


def _problem(d=24, c=6, m=80, rank=None, relu=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    if rank is None:
        X = torch.randn(d, m, generator=g, dtype=torch.float64)
    else:  # low rank: Q singular
        X = (torch.randn(d, rank, generator=g, dtype=torch.float64)
             @ torch.randn(rank, m, generator=g, dtype=torch.float64))
    X = X + 0.5 * torch.randn(d, 1, generator=g, dtype=torch.float64)  # correlated (shared mean)
    if relu:
        X = X.relu()
    W = 0.1 * torch.randn(d, c, generator=g, dtype=torch.float64)
    return X, W


def _parts(X, W):
    Q = X @ X.T
    P = Q @ W
    return Q, P, float((W * P).sum())


# ------------------------------------------------------------------ §3.7 acceptance checks of the solver


def test_a_step_equals_per_filter_least_squares():
    X, W = _problem()
    Q, P, _ = _parts(X, W)
    B = quant.sign(torch.randn(W.shape, dtype=torch.float64))
    alpha = bwnh.a_step(P, B, Q @ B)
    for i in range(W.shape[1]):
        xb, xw = (X.T @ B[:, i]).unsqueeze(1), (X.T @ W[:, i]).unsqueeze(1)
        ls = torch.linalg.lstsq(xb, xw).solution.item()
        assert alpha[i].item() == pytest.approx(ls, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("rank", [None, 3])
def test_every_dcc_row_update_does_not_increase_the_objective(rank):
    X, W = _problem(rank=rank)
    Q, P, const = _parts(X, W)
    B = quant.sign(torch.randn(W.shape, dtype=torch.float64))
    R = Q @ B
    alpha = bwnh.a_step(P, B, R)
    alpha[0] = -abs(alpha[0]) - 0.05  # the general rule must hold for negative scales too (pitfall 4)
    alpha[1] = 0.0
    prev = bwnh.objective_direct(X, W, B, alpha)
    flips = 0
    for _ in range(3):
        for j in range(B.shape[0]):
            f = bwnh.dcc_row(Q, P, B, R, alpha, j)
            cur = bwnh.objective_direct(X, W, B, alpha)
            assert cur <= prev + 1e-9 * abs(prev)
            if f:
                assert cur < prev  # a flip is a strict improvement
            flips += f
            prev = cur
    assert flips > 0
    assert torch.allclose(R, Q @ B)  # the R = QB bookkeeping stays exact
    assert set(B.unique().tolist()) <= {-1.0, 1.0}


@pytest.mark.parametrize("rank", [None, 4])
def test_alternating_loop_is_monotone_and_terminates(rank):
    X, W = _problem(d=30, c=8, m=120, rank=rank)
    Q, P, const = _parts(X, W)
    B0, a0 = bwnh.init_codes(W, "sign")
    B, alpha, hist, info = bwnh.solve_gram(Q, P, const, B0, alpha0=a0, iters=200, dcc_sweeps=1, tol=0.0)
    assert all(b <= a + 1e-10 * abs(a) for a, b in zip(hist, hist[1:]))
    assert info["stop"] == "converged" and info["iterations"] < 200 and info["flips"][-1] == 0
    assert hist[-1] < hist[0]  # better than BWN on correlated inputs
    assert bool((alpha >= 0).all())
    # solve_layer gives the same and ends on an A-step: α is optimal for the returned B
    B2, a2, h2 = bwnh.solve_layer(X, W, iters=200, dcc_sweeps=1, tol=0.0)
    assert torch.equal(B2, B) and torch.allclose(a2, alpha) and h2 == pytest.approx(hist)
    assert torch.allclose(alpha, bwnh.a_step(P, B, Q @ B))


@pytest.mark.parametrize("c", [1.0, 3.5])
def test_white_inputs_give_the_bwn_solution(c):
    d = 20
    W = torch.randn(d, 7, dtype=torch.float64)
    W[3, 2] = 0.0  # sign(0) = +1
    orth = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))[0]
    for X in (torch.eye(d, dtype=torch.float64) * c ** 0.5, orth * c ** 0.5):  # Q = c·I
        B, alpha, hist = bwnh.solve_layer(X, W, iters=20, dcc_sweeps=3)
        if X[0, 0] == c ** 0.5:  # exact Q = c·I: even the tie at w = 0 keeps sign(0) = +1
            assert torch.equal(B, quant.sign(W))
        else:  # Q = c·I up to rounding: the bit of a zero weight is arbitrary (same ℒ)
            assert torch.equal(B[W != 0], quant.sign(W)[W != 0])
        assert torch.allclose(alpha, W.abs().mean(0))
        assert hist[-1] == pytest.approx(hist[0], rel=1e-12)


def test_trace_form_equals_direct_form():
    X, W = _problem(d=16, c=5, m=40)
    Q, P, const = _parts(X, W)
    B = quant.sign(torch.randn(W.shape, dtype=torch.float64))
    alpha = torch.randn(5, dtype=torch.float64)
    assert bwnh.objective(P, B, alpha, Q @ B, const) == pytest.approx(bwnh.objective_direct(X, W, B, alpha), rel=1e-10)
    # the compensating form: ‖T − XᵀBA‖² with P = XT and constant ‖T‖²
    T = torch.randn(40, 5, dtype=torch.float64)
    got = bwnh.objective(X @ T, B, alpha, Q @ B, float((T * T).sum()))
    assert got == pytest.approx(bwnh.objective_direct(X, W, B, alpha, target=T), rel=1e-10)


def test_negative_scales_are_flipped_into_the_codes():
    X, W = _problem(d=12, c=4, m=50, relu=False)
    B, alpha, hist = bwnh.solve_layer(X, W, iters=0, init=-quant.sign(W))  # A-step only: α < 0
    assert bool((alpha > 0).all())
    assert torch.equal(B, quant.sign(W))
    assert bwnh.objective_direct(X, W, B, alpha) == pytest.approx(hist[-1], rel=1e-10)


def test_solve_layer_float32_inputs_and_target():
    X, W = _problem(d=18, c=4, m=60)
    T = (X.T @ W) * 1.1
    B, alpha, hist = bwnh.solve_layer(X.float(), W.float(), target=T.float(), iters=10)
    assert B.dtype == torch.float64 and all(b <= a * (1 + 1e-9) for a, b in zip(hist, hist[1:]))
    assert hist[-1] == pytest.approx(bwnh.objective_direct(X, W, B, alpha, target=T), rel=1e-5)
    with pytest.raises(ValueError, match="d×M"):
        bwnh.solve_layer(X, W[:-1])


# ------------------------------------------------------------------ sampling and writing codes


def _tiny_stack():
    return torch.nn.Sequential(
        BinaryConv2d(3, 5, 3, stride=2, padding=1, input_quantizer=None, weight_quantizer="xnor_weight",
                     clip_weights=False),
        torch.nn.ReLU(), torch.nn.Flatten(),
        BinaryLinear(5 * 4 * 4, 6, input_quantizer=None, weight_quantizer="xnor_weight", clip_weights=False))


def test_sampled_inputs_are_exactly_what_the_layer_multiplies():
    model = _tiny_stack().eval()
    x = torch.randn(3, 3, 8, 8)
    conv, fc = model[0], model[3]
    X = bwnh.sample_inputs(model, conv, [(x, None)], n=3 * 16, per_image=16)
    assert X.shape == (27, 48)
    assert bwnh.layer_matrix(conv).shape == (27, 5)
    # with every position kept (16 per image), XᵀW is the layer's output, border pixels included
    y = conv(x).detach()  # (3, 5, 4, 4)
    got = bwnh.layer_matrix(conv.eval()).T @ X  # latent weights: the float layer's output
    ref = F.conv2d(x, conv.weight, None, 2, 1)
    assert torch.allclose(got, ref.permute(1, 0, 2, 3).reshape(5, -1), atol=1e-5)
    wq = conv.quantized_weight().detach().reshape(5, -1)
    assert torch.allclose(wq @ X, y.permute(1, 0, 2, 3).reshape(5, -1), atol=1e-5)
    Xf = bwnh.sample_inputs(model, "3", [x], n=3)
    assert torch.allclose(Xf, model[:3](x).T)
    # subsampling: columns are a subset of the patches
    Xs = bwnh.sample_inputs(model, conv, [(x, None)], n=10, per_image=4)
    assert Xs.shape == (27, 10)
    assert all(any(torch.equal(Xs[:, k], X[:, j]) for j in range(48)) for k in range(10))
    assert model[0].training is False


def test_written_codes_make_the_layer_compute_XtBA():
    model = _tiny_stack().eval()
    x = torch.randn(4, 3, 8, 8)
    conv = model[0]
    X = bwnh.sample_inputs(model, conv, [x], n=64, per_image=16)
    B, alpha, _ = bwnh.solve_layer(X, bwnh.layer_matrix(conv), iters=5)
    bwnh.write_codes(conv, B, alpha)
    wq = conv.quantized_weight().reshape(5, -1).T.double()
    assert torch.allclose(wq, B * alpha, rtol=1e-6, atol=0)
    assert torch.allclose(conv(x).permute(1, 0, 2, 3).reshape(5, -1).T.double(), X.double().T @ (B * alpha),
                          rtol=1e-4, atol=1e-5)
    plain = BinaryConv2d(3, 5, 3, input_quantizer=None, weight_quantizer="identity_ste_sign")
    with pytest.raises(ValueError, match="cannot compute B·A"):
        bwnh.write_codes(plain, B, alpha)
    assert bwnh.represents_scaled_codes(BinaryConv2d(3, 5, 3, input_quantizer=None,
                                                     weight_quantizer="identity_ste_sign", scale="mean_abs"))


# ------------------------------------------------------------------ the VGG-9 family

VGG = [n for n in models.names() if n.startswith("vgg9")]


def test_vgg_family_registered():
    assert set(VGG) == {"vgg9-float", "vgg9-bwn", "vgg9-bwnh", "vgg9-binaryconnect"}
    assert {"resnet18-bwn", "resnet18-cifar-bwn"} <= set(models.names())
    m = models.create("vgg9-float")
    convs = [x for x in m if isinstance(x, BinaryConv2d)]
    fcs = [x for x in m if isinstance(x, BinaryLinear)]
    assert [c.out_channels for c in convs] == [128, 128, 256, 256, 512, 512]
    assert [f.out_features for f in fcs] == [1024, 1024, 10] and fcs[0].in_features == 8192
    assert sum(x.weight.numel() for x in convs + fcs) == 4_574_592 + 9_447_424  # §1.10 weight count
    assert sum(isinstance(x, torch.nn.MaxPool2d) for x in m) == 3
    assert sum(isinstance(x, torch.nn.ReLU) for x in m) == 8


@pytest.mark.parametrize("name", VGG + ["resnet18-cifar-bwn"])
def test_vgg_models_forward_backward_and_state_real_layers(name):
    kw = {"width": 16} if "resnet" in name else {"width": 0.125}
    model = models.create(name, **kw)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    constraints.attach(opt, model)
    F.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (BinaryConv2d, BinaryLinear))}
    assert set(model.real_input_layers) == {n for n, m in layers.items() if not quant.is_binary(m.input_quantizer)}
    assert set(model.real_weight_layers) == {n for n, m in layers.items() if not quant.is_binary(m.weight_quantizer)}
    if name.startswith("vgg9"):
        assert set(model.real_input_layers) == set(layers)  # binary weights, real activations
        first, last = list(layers)[0], list(layers)[-1]
        expect = {"vgg9-float": set(layers), "vgg9-binaryconnect": set(),
                  "vgg9-bwn": {first, last}, "vgg9-bwnh": {first, last}}[name]
        assert set(model.real_weight_layers) == expect


def test_vgg_options():
    m = models.create("vgg9-bwnh", width=0.125, binary_first=True, last_bn=False, freeze_binary=True,
                      image_size=8, num_classes=4)
    layers = m.weight_layers()
    assert m.real_weight_layers == (layers[-1][0],)
    assert layers[-1][1].bias is not None and not isinstance(m[-1], torch.nn.BatchNorm1d)
    assert all(not l.weight.requires_grad for _, l in layers[:-1]) and layers[-1][1].weight.requires_grad
    assert m(torch.randn(2, 3, 8, 8)).shape == (2, 4)
    q = layers[1][1].weight_quantizer
    assert q.name == "xnor_weight" and q is not layers[2][1].weight_quantizer
    with pytest.raises(ValueError, match="divisible by 8"):
        models.create("vgg9-float", image_size=28)


def test_hashed_vgg_exports_and_the_engine_reproduces_it(tmp_path):
    from onebit.deploy import Engine, export

    model = models.create("vgg9-bwnh", width=0.0625, image_size=8).eval()
    x = torch.randn(3, 3, 8, 8)
    for _, layer in model.weight_layers()[1:-1]:
        W = bwnh.layer_matrix(layer)
        bwnh.write_codes(layer, quant.sign(torch.randn(W.shape)), torch.rand(W.shape[1]) + 0.1)
    export(model, tmp_path / "m.onebit", x)
    y = Engine(tmp_path / "m.onebit", threads=1).run(x.numpy())
    ref = model.double()(x.double()).detach().numpy()
    assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max() + 1e-6


# ------------------------------------------------------------------ whole network (§3.4)


def _batches(n=4, b=16, s=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 3, s, s, generator=g)
    return [(base + torch.randn(b, 3, s, s, generator=g), torch.randint(0, 10, (b,), generator=g)) for _ in range(n)]


def _trained_like_float(width=0.0625, s=8):
    torch.manual_seed(3)
    m = models.create("vgg9-float", width=width, image_size=s)
    for bn in m.modules():  # BN running statistics of the data, as a trained net would have
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average
    m.train()
    with torch.no_grad():
        for x, _ in _batches():
            m(x)
    return m.eval()


@pytest.mark.parametrize("source,target", [("binarized", "float"), ("binarized", "own"), ("float", "float")])
def test_hash_network_reduces_every_layer_objective(source, target):
    fm = _trained_like_float()
    hm = models.create("vgg9-bwnh", width=0.0625, image_size=8)
    rep = bwnh.hash_network(fm, hm, _batches(), samples=64, source=source, target=target, iters=5, progress=False)
    names = [r["name"] for r in rep["layers"]]
    assert names == [n for n, m in hm.weight_layers() if quant.is_binary(m.weight_quantizer)]  # forward order
    assert len(names) == 7  # 5 convs + 2 FCs: first conv and classifier stay real
    for r in rep["layers"]:
        assert r["objective"] < r["objective_bwn"] and r["relative"] < r["relative_bwn"]
    layers = dict(hm.named_modules())
    for r in rep["layers"]:  # hashed layers compute α·B with α ≥ 0 per filter
        wq = layers[r["name"]].quantized_weight().reshape(r["c"], -1)
        a = wq.abs().amax(1, keepdim=True)
        assert torch.allclose(wq.abs(), a.expand_as(wq), rtol=1e-5)
    fl = dict(fm.named_modules())
    for n in hm.real_weight_layers:  # real layers keep the float weights
        assert torch.equal(layers[n].weight, fl[n].weight)
    assert hm(_batches()[0][0]).shape == (16, 10)


@pytest.mark.parametrize("source", ["binarized", "float"])
def test_each_layer_is_solved_on_inputs_from_the_source_network(source, monkeypatch):
    """§3.4: with source="binarized" a layer's Gram matrix Q = XXᵀ comes from the network whose
    earlier layers are already hashed; with "float", from the float network. A silent fall-back to
    the other network would give the other Q."""
    fm = _trained_like_float()
    hm = models.create("vgg9-bwnh", width=0.0625, image_size=8)
    names = [n for n, m in hm.weight_layers() if quant.is_binary(m.weight_quantizer)][:2]
    seen = []
    real_solve = bwnh.solve_gram

    def spy(Q, *a, **kw):
        seen.append(Q.clone())
        return real_solve(Q, *a, **kw)

    monkeypatch.setattr(bwnh, "solve_gram", spy)
    data = _batches()
    bwnh.hash_network(fm, hm, data, samples=64, source=source, target="float", iters=3, layers=names,
                      progress=False)
    assert len(seen) == 2
    second_h = dict(hm.named_modules())[names[1]]
    second_f = dict(fm.named_modules())[names[1]]
    (xh,) = bwnh.sample_paired([(hm, second_h)], data, 64)   # the first layer is hashed in hm now
    (xf,) = bwnh.sample_paired([(fm, second_f)], data, 64)
    qh, qf = bwnh.gram(xh), bwnh.gram(xf)
    assert not torch.allclose(qh, qf, rtol=1e-3)  # the two sources differ, so the check below can tell
    assert torch.allclose(seen[1], qh if source == "binarized" else qf, rtol=1e-6, atol=1e-6)


def test_hash_network_matches_solve_layer_and_reports_bwn_objective():
    fm = _trained_like_float()
    hm = models.create("vgg9-bwnh", width=0.0625, image_size=8)
    data = _batches()
    rep = bwnh.hash_network(fm, hm, data, samples=80, source="float", iters=4, layers=["7"], progress=False)
    (row,) = rep["layers"]
    X = bwnh.sample_inputs(fm, "7", data, 80)
    W = bwnh.layer_matrix(dict(fm.named_modules())["7"]).double()
    B, alpha, hist = bwnh.solve_layer(X, W, iters=4)
    assert row["objective_bwn"] == pytest.approx(hist[0], rel=1e-9)
    assert row["objective"] == pytest.approx(hist[-1], rel=1e-9)
    bwn_alpha = W.abs().mean(0)
    assert hist[0] == pytest.approx(bwnh.objective_direct(X, W, quant.sign(W), bwn_alpha), rel=1e-6)
    wq = dict(hm.named_modules())["7"].quantized_weight().reshape(W.shape[1], -1).T.double()
    assert torch.allclose(wq, B * alpha, rtol=1e-6)
    with pytest.raises(ValueError, match="cannot hold hashed weights"):
        bwnh.hash_network(fm, models.create("vgg9-binaryconnect", width=0.0625, image_size=8), data,
                          samples=8, progress=False)


def test_hash_network_on_a_binary_weight_resnet():
    torch.manual_seed(4)
    fm = models.create("resnet18-cifar-float", width=4).eval()
    hm = bwnh.binary_twin(fm, "resnet18-cifar-bwn")
    assert hm.onebit_config["activation"] == "htanh" and hm.onebit_config["weight"] == "xnor_weight"
    rep = bwnh.hash_network(fm, hm, _batches(n=2, b=8), samples=64, iters=3, progress=False)
    names = [r["name"] for r in rep["layers"]]
    assert len(names) == 16 and names[0] == "layer1.0.conv" and names[-1] == "layer4.3.conv"
    assert all(r["objective"] <= r["objective_bwn"] for r in rep["layers"])
    assert "conv1" in hm.real_weight_layers and "fc" in hm.real_weight_layers


def test_binary_twin_is_the_bwn_of_the_float_weights():
    fm = _trained_like_float()
    bwn = bwnh.binary_twin(fm, "vgg9-bwn")
    assert bwn.onebit_config["name"] == "vgg9-bwn" and bwn.onebit_config["width"] == 0.0625
    layer, fl = bwn[7], fm[7]
    a = fl.weight.abs().mean((1, 2, 3), keepdim=True)
    assert torch.allclose(layer.quantized_weight(), quant.sign(fl.weight) * a)


# ------------------------------------------------------------------ recipes, pipeline and command


def test_recipes_are_data():
    for name in ["vgg9-float", "vgg9-bwn", "vgg9-binaryconnect", "vgg9-bwnh-finetune-a", "vgg9-bwnh-finetune-b"]:
        r = get_recipe(name)
        assert r.data == "cifar10"
        models.create(r.model, **{**r.model_kwargs, "width": 0.0625})
    assert get_recipe("vgg9-bwnh-finetune-a").model_kwargs == {"freeze_binary": True}
    assert "B·A" in get_recipe("vgg9-bwnh-finetune-b").description


def test_finetune_recipe_follows_the_float_run_then_overrides():
    from onebit.methods import Recipe

    float_recipe = Recipe(model="vgg9-float", data="cifar10", bf16=True, channels_last=True, seed=3,
                          val_size=1000, normalize="meanstd")
    hashed = models.create("vgg9-bwnh", width=0.0625)
    r = bwnh.get_finetune_recipe("b", hashed, float_recipe, "cifar10", 4)
    assert (r.bf16, r.channels_last, r.seed, r.val_size, r.epochs) == (True, True, 3, 1000, 4)
    assert r.lr == get_recipe("vgg9-bwnh-finetune-b").lr and r.model_kwargs["width"] == 0.0625
    r = bwnh.get_finetune_recipe("a", hashed, float_recipe, "cifar10", None,
                                 {"lr": 3e-4, "bf16": False, "model_kwargs": {"clip_weights": False}})
    assert (r.lr, r.bf16, r.channels_last, r.epochs) == (3e-4, False, True, get_recipe("vgg9-bwnh-finetune-a").epochs)
    assert r.model_kwargs["freeze_binary"] and r.model_kwargs["clip_weights"] is False
    with pytest.raises(ValueError, match="unknown fine-tuning recipe field"):
        bwnh.get_finetune_recipe("b", hashed, float_recipe, "cifar10", None, {"learning_rate": 1.0})
    with pytest.raises(ValueError, match="fixed by the hashed network"):
        bwnh.get_finetune_recipe("b", hashed, float_recipe, "cifar10", None, {"model": "vgg9-float"})


@pytest.fixture
def tiny_cifar(tmp_path_factory):
    """A learnable 10-class 'CIFAR-10' (binary version): 200 + 40 images, class k brightens band k."""
    root = tmp_path_factory.mktemp("tiny-cifar") / "cifar-10-batches-bin"
    root.mkdir()
    rng = np.random.default_rng(0)

    def write(path, n):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 80, (n, 3, 32, 32)).astype(np.uint8)
        for i, k in enumerate(y):
            x[i, :, 3 * k: 3 * k + 3, :] = 240
        path.write_bytes(np.concatenate([y[:, None], x.reshape(n, -1)], 1).tobytes())

    for i in range(1, 6):
        write(root / f"data_batch_{i}.bin", 40)
    write(root / "test_batch.bin", 40)
    return root.parent


def test_pipeline_hashes_evaluates_and_finetunes(tiny_cifar, tmp_path, caplog):
    from onebit.methods import Recipe
    from onebit.train import load_for_eval, train

    float_recipe = Recipe(model="vgg9-float", data="cifar10", model_kwargs={"width": 0.0625}, loss="ce",
                          optimizer="adam", lr=3e-3, lr_schedule="const", epochs=1, batch_size=40, val_size=40,
                          normalize="meanstd")
    train(float_recipe, tmp_path / "float", data_root=str(tiny_cifar), progress=False)
    with caplog.at_level("INFO", logger="onebit"):
        rep = bwnh.bwnh_pipeline(tmp_path / "float" / "best.safetensors", None, tmp_path / "bwnh", samples=64,
                                 iters=2, protocol="a", finetune_epochs=1, data_root=str(tiny_cifar),
                                 batch_size=40, progress=False)
    said = [r.getMessage() for r in caplog.records]
    assert f"starting {tmp_path / 'bwnh' / 'finetune'} from the BWNH weights in last.safetensors" in said
    assert not any(m.startswith("resumed ") for m in said)  # a fresh fine-tuning is no resume
    assert [r["name"] for r in rep["layers"]] == ["3", "7", "10", "14", "17", "22", "25"]
    assert all(r["objective"] <= r["objective_bwn"] for r in rep["layers"])
    assert set(rep["accuracy"]) == {"float", "bwn", "bwnh"} and rep["finetune"]["epochs"] == 1
    saved = json.loads((tmp_path / "bwnh" / "report.json").read_text())
    assert saved["bwnh_model"] == "vgg9-bwnh" and saved["protocol"] == "a"
    hashed, meta = load_for_eval(tmp_path / "bwnh" / "hashed.safetensors")
    tuned, tmeta = load_for_eval(tmp_path / "bwnh" / "finetune" / "last.safetensors")
    assert tmeta["recipe"]["model_kwargs"]["freeze_binary"] and tmeta["epoch"] == 0
    # protocol (a): the hashed codes (and scales) did not move; BN did
    assert torch.equal(hashed[7].weight, tuned[7].weight)
    assert not torch.equal(hashed[8].running_mean, tuned[8].running_mean)


def test_command_prints_layers_and_accuracies(tiny_cifar, tmp_path):
    import typer
    from typer.testing import CliRunner

    from onebit.cli import bwnh_cmd
    from onebit.methods import Recipe
    from onebit.train import train

    r = Recipe(model="vgg9-float", data="cifar10", model_kwargs={"width": 0.0625}, loss="ce", lr=3e-3,
               lr_schedule="const", epochs=1, batch_size=40, val_size=40, normalize="meanstd")
    train(r, tmp_path / "float", data_root=str(tiny_cifar), progress=False)
    app = typer.Typer()
    app.command("bwnh")(bwnh_cmd.bwnh)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["bwnh", str(tmp_path / "float" / "best.safetensors"), "--samples", "32",
                                   "--iters", "1", "--source", "float", "--finetune-epochs", "0",
                                   "--data-root", str(tiny_cifar), "--batch-size", "40", "--no-progress",
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "BWN α·sign(W)" in res.output and "BWNH" in res.output and "source=float" in res.output
    assert len([ln for ln in res.output.splitlines() if " conv " in ln]) == 5
    assert (tmp_path / "out" / "hashed.safetensors").exists() and not (tmp_path / "out" / "finetune").exists()
    # --set / --bf16 reach the fine-tuning recipe stored beside the hashed weights
    res = CliRunner().invoke(app, ["bwnh", str(tmp_path / "float" / "best.safetensors"), "--samples", "32",
                                   "--iters", "1", "--finetune-epochs", "0", "--bf16", "--set", "lr=2e-4",
                                   "--data-root", str(tiny_cifar), "--batch-size", "40", "--no-progress",
                                   "--out", str(tmp_path / "out2")])
    assert res.exit_code == 0, res.output
    from onebit.train.checkpoint import read_meta

    ft = read_meta(tmp_path / "out2" / "hashed.safetensors")["recipe"]
    assert ft["lr"] == 2e-4 and ft["bf16"] is True and ft["model"] == "vgg9-bwnh"
    # a mistyped override is refused before any hashing, and nothing is written
    res = CliRunner().invoke(app, ["bwnh", str(tmp_path / "float" / "best.safetensors"), "--set", "learnig_rate=1",
                                   "--data-root", str(tiny_cifar), "--no-progress", "--out", str(tmp_path / "out3")])
    assert res.exit_code != 0 and "learnig_rate" in str(res.exception) + res.output
    assert not (tmp_path / "out3").exists()
    # the hashed checkpoint (which carries no data_info) exports at the model's own input size
    from onebit.cli.main import app as main_app

    res = CliRunner().invoke(main_app, ["export", str(tmp_path / "out" / "hashed.safetensors"), "-o",
                                        str(tmp_path / "hashed.onebit")])
    assert res.exit_code == 0, res.output
    from onebit.deploy import Engine

    assert Engine(tmp_path / "hashed.onebit").input_shape == (3, 32, 32)
