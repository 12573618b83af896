"""Trained-model inference on the XNOR kernels: converted PyTorch models and the GPU engine.

Runs on the CPU through the reference twins and, where a CUDA GPU is present, on the GPU.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from onebit import models
from onebit.deploy import Engine, export
from onebit.deploy.gpu import GPUEngine
from onebit.kernels import cuda as ck
from onebit.kernels.cuda.layers import XnorConv2d, XnorLinear, convert, xnor_linear
from onebit.nn import BinaryConv2d, BinaryLinear

HAS_CUDA = ck.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU with nvcc"))]

import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("export_engine_tests",
                                               __file__.replace("gpu/test_gpu_models.py", "deploy/test_export_engine.py"))
_ee = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ee)
_small, _randomize_bn = _ee._small, _ee._randomize_bn


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["bnn-mlp", "bnn-convnet"])
def test_converted_bnn_equals_pytorch_bit_for_bit(device, name):
    kw, shape = _small(name)
    torch.manual_seed(3)
    model = models.create(name, in_channels=shape[0], image_size=shape[1], **kw)
    _randomize_bn(model)
    model.eval()
    x = torch.randn(5, *shape).to(device)
    model.to(device)  # the same device: real layers (the first one) round alike
    with torch.no_grad():
        ref = model(x)
        fast = convert(copy.deepcopy(model))
        y = fast(x)
    n_xnor = sum(isinstance(m, (XnorLinear, XnorConv2d)) for m in fast.modules())
    n_bin = sum(isinstance(m, (BinaryLinear, BinaryConv2d)) and m.binary_input for m in model.modules())
    assert n_xnor == n_bin > 0
    assert torch.equal(y, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_converted_scaled_binary_resnet_matches_within_float_rounding(device):
    name = "bireal-resnet18-cifar"
    kw, shape = _small(name)
    torch.manual_seed(4)
    model = models.create(name, in_channels=shape[0], image_size=shape[1], **kw)
    _randomize_bn(model)
    model.eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        ref = model.double()(x.double()).float()
        model.float()
        y = convert(copy.deepcopy(model)).to(device)(x.to(device)).cpu()
    assert torch.allclose(y, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_convert_refuses_training_mode_and_real_inputs_stay():
    model = models.create("bnn-mlp", hidden=32)
    with pytest.raises(ValueError, match="eval"):
        convert(model)
    model.eval()
    convert(model)
    first = [m for m in model.modules() if isinstance(m, (BinaryLinear, XnorLinear))][0]
    assert isinstance(first, BinaryLinear)  # real input: not an XNOR layer


@pytest.mark.parametrize("device", DEVICES)
def test_xnor_linear_forward_and_gradients_equal_f_linear(device):
    g = torch.Generator().manual_seed(5)
    xb = torch.where(torch.randn(6, 133, generator=g) < 0, -1.0, 1.0).to(device).requires_grad_()
    wb = torch.where(torch.randn(21, 133, generator=g) < 0, -1.0, 1.0).to(device).requires_grad_()
    bias = torch.randn(21, generator=g).to(device)
    y = xnor_linear(xb, wb, bias)
    ref = F.linear(xb, wb, bias)
    assert torch.equal(y, ref)
    gy = torch.randn(6, 21, generator=g).to(device)
    gx, gw = torch.autograd.grad(y, (xb, wb), gy)
    rx, rw = torch.autograd.grad(ref, (xb, wb), gy)
    assert torch.allclose(gx, rx) and torch.allclose(gw, rw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", models.names())
def test_gpu_engine_equals_cpu_engine(device, name, tmp_path):
    kw, shape = _small(name)
    torch.manual_seed(6)
    model = models.create(name, in_channels=shape[0], image_size=shape[1], **kw)
    _randomize_bn(model)
    model.eval()
    x = torch.randn(4, *shape)
    path = tmp_path / "m.onebit"
    export(model, path, x)
    cpu = Engine(path, threads=1).run(x.numpy())
    gpu = GPUEngine(path, device=device).run(x.numpy()).cpu().numpy()
    assert np.abs(gpu - cpu).max() <= 1e-4 * np.abs(cpu).max() + 1e-6
    assert (gpu.argmax(1) == cpu.argmax(1)).all()


@pytest.mark.parametrize("device", DEVICES)
def test_gpu_engine_uint8_input_equals_cpu_engine_exactly(device, tmp_path):
    kw, shape = _small("bnn-convnet")
    torch.manual_seed(7)
    model = models.create("bnn-convnet", in_channels=shape[0], image_size=shape[1], **kw)
    _randomize_bn(model)
    model.eval()
    x8 = torch.randint(0, 256, (3, *shape), dtype=torch.uint8)
    path = tmp_path / "m.onebit"
    export(model, path, x8.float() / 127.5 - 1, preprocess={"normalize": "pm1"})
    cpu = Engine(path, threads=1).run(x8.numpy())
    gpu = GPUEngine(path, device=device).run(x8.numpy()).cpu().numpy()
    assert np.abs(gpu - cpu).max() <= 1e-5 * np.abs(cpu).max()


def test_gpu_engine_validates_input(tmp_path):
    model = models.create("bnn-mlp", hidden=16).eval()
    path = tmp_path / "m.onebit"
    export(model, path, torch.randn(2, 1, 28, 28))
    eng = GPUEngine(path, device="cpu")
    with pytest.raises(ValueError, match="takes"):
        eng.run(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        eng.run(np.full((1, 1, 28, 28), np.nan, np.float32))
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        eng.run([1, 2])
    with pytest.raises(ValueError, match="empty"):
        eng.run(np.zeros((0, 1, 28, 28), np.float32))
