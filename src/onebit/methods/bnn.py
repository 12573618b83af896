"""BinaryNet recipes (methods.md §1.10), as data.

* ``bnn-mlp``: Theano reference — Adam, lr 3e-3 decayed exponentially to 3e-7 over the run,
  batch 100, squared hinge, Glorot lr scale, last 10k of train for validation.
* ``bnn-mlp-shift``: the Torch7 multiplication-free variant — 3×2048, shift-based BN and
  shift-based AdaMax, lr 2^-6 halved every 10 epochs (paper text), batch 100, squared hinge, the
  Glorot lr scale on the binary weights (not rounded: the Torch7 MNIST model file does not; the
  optimizer rounds only the base rate, ``AP2(α/(1-β1^t))·γ``). Activations are the deterministic
  sign (the paper's choice); the Torch7 code's default, stochastic neurons at train time, is
  ``--set model.activation=stochastic_sign``.
* ``bnn-mlp-exact``: the same as ``bnn-mlp-shift`` with exact BN and exact AdaMax (the control).
* ``bnn-convnet``: Theano CIFAR-10 — Adam 1e-3 → 3e-7, batch 50, squared hinge, Glorot scale,
  45k/5k split, pixels scaled to [-1, 1], no augmentation (the paper's setting).
* ``bnn-convnet-svhn``: Theano SVHN — the half-width ConvNet, Adam 1e-3 → 1e-6 over 200 epochs,
  batch 50, squared hinge, Glorot scale; validation: the last 6 000 training images (the Theano
  code's pylearn2 split also draws on SVHN's ``extra`` set, which onebit does not load).
"""

from __future__ import annotations

from .recipe import Recipe, register_recipe

register_recipe("bnn-mlp", Recipe(
    model="bnn-mlp", data="fashion-mnist", loss="sqhinge", optimizer="adam", lr=3e-3,
    lr_schedule="exp", lr_final=3e-7, epochs=1000, batch_size=100, val_size=10000,
    glorot_lr_scale=True, description="BinaryNet MLP, Theano recipe (paper: 0.96 % MNIST error at 1000 epochs)"))
register_recipe("bnn-mlp-2048", Recipe(
    model="bnn-mlp-2048", data="fashion-mnist", loss="sqhinge", optimizer="adam", lr=3e-3,
    lr_schedule="exp", lr_final=3e-7, epochs=1000, batch_size=100, val_size=10000,
    glorot_lr_scale=True, description="BinaryNet MLP 3×2048 with the Theano optimizer"))
register_recipe("bnn-mlp-float", Recipe(
    model="bnn-mlp-float", data="fashion-mnist", loss="sqhinge", optimizer="adam", lr=3e-3,
    lr_schedule="exp", lr_final=3e-7, epochs=1000, batch_size=100, val_size=10000,
    description="float twin of bnn-mlp, same optimizer and schedule (no Glorot scale, no clipping)"))
register_recipe("bnn-mlp-shift", Recipe(
    model="bnn-mlp-2048", model_kwargs={"bn": "shift", "last_bn": "standard"}, data="fashion-mnist",
    loss="sqhinge", optimizer="shift_adamax", lr=2.0 ** -6, lr_schedule="shift", lr_every=10,
    epochs=100, batch_size=100, val_size=10000, glorot_lr_scale=True,
    description="BinaryNet Torch7 variant: shift-based BN + shift-based AdaMax, 3×2048, Glorot lr scale, "
                "deterministic sign (Torch7's stochastic neurons: --set model.activation=stochastic_sign)"))
register_recipe("bnn-mlp-exact", Recipe(
    model="bnn-mlp-2048", model_kwargs={"bn": "standard"}, data="fashion-mnist",
    loss="sqhinge", optimizer="adamax", lr=2.0 ** -6, lr_schedule="shift", lr_every=10,
    epochs=100, batch_size=100, val_size=10000, glorot_lr_scale=True,
    description="control for bnn-mlp-shift: exact BN + exact AdaMax, otherwise identical"))
register_recipe("bnn-convnet", Recipe(
    model="bnn-convnet", data="cifar10", loss="sqhinge", optimizer="adam", lr=1e-3,
    lr_schedule="exp", lr_final=3e-7, epochs=500, batch_size=50, val_size=5000,
    glorot_lr_scale=True, description="BinaryNet CIFAR-10 ConvNet, Theano recipe (paper: 11.40 % error)"))
register_recipe("bnn-convnet-float", Recipe(
    model="bnn-convnet-float", data="cifar10", loss="sqhinge", optimizer="adam", lr=1e-3,
    lr_schedule="exp", lr_final=3e-7, epochs=500, batch_size=50, val_size=5000,
    description="float twin of bnn-convnet"))
register_recipe("bnn-convnet-svhn", Recipe(
    model="bnn-convnet-svhn", data="svhn", loss="sqhinge", optimizer="adam", lr=1e-3,
    lr_schedule="exp", lr_final=1e-6, epochs=200, batch_size=50, val_size=6000,
    glorot_lr_scale=True, description="BinaryNet SVHN ConvNet (half conv widths), Theano recipe (paper: 2.80 % error)"))
