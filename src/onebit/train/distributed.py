"""Data-parallel training over several processes (PyTorch DDP; gloo on the CPU).

Launch: ``onebit train MODEL ... --nproc N`` re-runs the same command under ``torchrun``
(:func:`launch`), or run ``torchrun --standalone --nproc-per-node N -m onebit.cli.main train MODEL ...``
yourself; the trainer reads ``RANK`` / ``WORLD_SIZE`` from the environment (:func:`setup`).

What keeps N processes equal to one process with the same global batch:

* the recipe's ``batch_size`` is the *global* batch: rank ``r`` trains on the strided slice
  ``perm[r::N]`` of the shared permutation in batches of ``batch_size / N`` — together exactly the
  one-process batches (:mod:`onebit.data.loaders`);
* gradients are averaged by DDP (equal local batch sizes, so the mean of the local means is the
  global mean); every rank then runs the same deterministic optimizer step (Adam, SGD,
  shift-AdaMax) and the same latent-weight clipping on identical numbers, so the weights stay equal;
* BatchNorm normalises with the statistics of the *global* batch (:func:`sync_batchnorm`: the CPU
  counterpart of ``nn.SyncBatchNorm``, which only runs on GPUs), for PyTorch BN and the shift-based BN;
* BONN's class centers are updated from per-class feature sums all-reduced over the ranks;
* :func:`check_consistent` compares a hash of every rank's model and optimizer state after each
  epoch and stops the run if they ever differ.

What differs: dropout masks and stochastic binarization draw from per-rank RNG streams, and
float sums are reduced in another order (last-bit differences), so results match a one-process run
within a tolerance, not bit for bit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger("onebit.train")


@dataclass(frozen=True)
class Dist:
    """This process's place in the run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def env_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment variables ((0, 1) when absent)."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError("RANK and WORLD_SIZE must be integers") from None


def setup() -> Dist:
    """Join the process group torchrun describes (gloo), or return a single-process :class:`Dist`."""
    rank, world = env_world()
    if world <= 1:
        return Dist()
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("gloo")
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), owns)


def teardown(d: Dist, *, finished: bool = False) -> None:
    """Leave the process group if :func:`setup` created it.

    ``finished``: the run ended normally on this rank, so every rank reaches this point; they meet
    at a barrier first and shut the group down together. Without it a rank that finished early
    (rank 1, while rank 0 still writes checkpoints) tore its connections down under a peer still in
    the group, and now and then one of the two aborted at exit inside gloo ("terminate called
    without an active exception", exit −6; see also :func:`end_worker_process`). After an error
    there is no barrier: the other ranks may never arrive.
    """
    if d.owns_group and dist.is_initialized():
        try:
            if finished:
                dist.barrier()
        finally:  # a barrier that failed (a peer died after the last collective) still leaves the group
            dist.destroy_process_group()


def end_worker_process(rc: int | None) -> None:
    """End a torchrun worker at once, skipping the interpreter's and C++ runtime's exit teardown.

    Called by the console entry (``onebit``, ``python -m onebit.cli.main``:
    :func:`onebit.cli.main.console`) after the command returned, in a process that torchrun started
    (``WORLD_SIZE`` > 1) and whose process group :func:`teardown` has already destroyed.
    Every file is closed by then; what is left to tear down is PyTorch's. In that teardown gloo
    now and then aborted a finished rank ("terminate called without an active exception", exit −6,
    no Python frame left on the stack: seen in CI and here), and torchrun then reported the run as
    failed. Streams and logging are flushed first. Elsewhere (one process, a group still open, an
    embedding program) this returns and the process exits the usual way.
    """
    try:
        world = env_world()[1]
    except ValueError:
        return
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it
            pass
    os._exit(rc if isinstance(rc, int) else (0 if rc is None else 1))


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum numbers over all ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_tensor(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks (a new tensor; no gradient)."""
    t = t.detach().clone()
    dist.all_reduce(t)
    return t


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (decisions taken from the clock must agree)."""
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    dist.broadcast(t, 0)
    return bool(t.item())


def barrier() -> None:
    dist.barrier()


def gather_rng(d: Dist) -> dict[str, torch.Tensor]:
    """Every rank's torch RNG state, for rank 0's checkpoint: ``rng.torch.rank<r>`` for r > 0."""
    if not d.active:
        return {}
    mine = torch.get_rng_state()
    parts = [torch.empty_like(mine) for _ in range(d.world_size)]
    dist.all_gather(parts, mine)
    return {f"rng.torch.rank{r}": parts[r] for r in range(1, d.world_size)}


def state_digest(*modules_or_optimizers) -> bytes:
    """A hash of every tensor of the given modules' state_dicts and optimizers' states."""
    h = hashlib.blake2b(digest_size=16)
    for obj in modules_or_optimizers:
        if isinstance(obj, nn.Module):
            items = sorted(obj.state_dict().items())
        else:
            items = [(f"{i}.{k}", v) for i, st in sorted(obj.state_dict()["state"].items())
                     for k, v in sorted(st.items())]
        for k, v in items:
            h.update(k.encode())
            if isinstance(v, torch.Tensor):
                h.update(v.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            else:
                h.update(repr(v).encode())
    return h.digest()


def check_consistent(d: Dist, *objs, what: str = "") -> None:
    """Raise if the model/optimizer state differs between ranks (it never should: see the module doc)."""
    if not d.active:
        return
    mine = torch.frombuffer(bytearray(state_digest(*objs)), dtype=torch.uint8)
    parts = [torch.empty_like(mine) for _ in range(d.world_size)]
    dist.all_gather(parts, mine)
    bad = [r for r in range(d.world_size) if not torch.equal(parts[r], parts[0])]
    if bad:
        from .trainer import TrainingError

        raise TrainingError(f"the state of rank(s) {bad} differs from rank 0 {what}: the ranks diverged")


# ---------------------------------------------------------------------------------------------
# BatchNorm over the global batch


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _AllReduceSum(torch.autograd.Function):
    """``y = Σ_ranks x``; the gradient of a sum over ranks of losses is again a sum over ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        g = g.contiguous().clone()
        dist.all_reduce(g)
        return g


def _global_mean(t: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """Mean over ``dims`` of the global batch (differentiable; the backward all-reduces too)."""
    n_local = t.numel() // t.shape[1]
    both = _AllReduceSum.apply(torch.cat([t.sum(dims), t.new_tensor([float(n_local)])]))
    return both[:-1] / both[-1]


class _SyncBatchNormMixin:
    """Forward of ``nn.BatchNorm1d/2d`` in training with the statistics of all ranks' batches."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        mean = _global_mean(xf, dims)
        c = xf - mean.view(shape)
        var = _global_mean(c * c, dims)  # biased, like BN's normalisation
        y = c * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                n = x.numel() // x.shape[1] * dist.get_world_size()
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
        return y.to(x.dtype)


class SyncBatchNorm1d(_SyncBatchNormMixin, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` normalising with the global batch's statistics under DDP (CPU too)."""


class SyncBatchNorm2d(_SyncBatchNormMixin, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` normalising with the global batch's statistics under DDP (CPU too)."""


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Make every BatchNorm of ``model`` use global-batch statistics in distributed training.

    Swaps the class of ``nn.BatchNorm1d/2d`` modules in place (same parameters, buffers and
    state_dict keys: checkpoints are unchanged) and switches the shift-based BN to all-reduced
    means. Without a process group every module behaves exactly as before.
    """
    from ..nn.shift_bn import _ShiftBatchNorm

    for m in model.modules():
        if type(m) is nn.BatchNorm1d:
            m.__class__ = SyncBatchNorm1d
        elif type(m) is nn.BatchNorm2d:
            m.__class__ = SyncBatchNorm2d
        elif isinstance(m, _ShiftBatchNorm):
            m.batch_mean = _shift_bn_mean
    return model


def _shift_bn_mean(t: torch.Tensor, dims: list[int]) -> torch.Tensor:
    return _global_mean(t, dims) if _distributed() else t.mean(dims)


def wrap_ddp(module: nn.Module, *, find_unused_parameters: bool) -> nn.Module:
    """``DistributedDataParallel`` that averages gradients and leaves buffers alone after the start
    (BatchNorm statistics and BONN centers are kept equal by the global-batch computations above)."""
    import inspect

    ddp = nn.parallel.DistributedDataParallel
    kw = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
          else {"broadcast_buffers": False})
    return ddp(module, find_unused_parameters=find_unused_parameters, **kw)


# ---------------------------------------------------------------------------------------------
# launching


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        out.append(a)
    return out


def check_can_launch() -> None:
    """``--nproc`` is for a command a person typed, not for a worker torchrun already started."""
    if env_world()[1] > 1:
        raise ValueError("--nproc inside a torchrun launch: drop --nproc (torchrun already started the workers)")


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``onebit <argv>`` in ``nproc`` processes under torchrun (standalone, this machine); exit code."""
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    check_can_launch()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "onebit.cli.main", *strip_nproc(argv)]
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)  # a source checkout too
    env.setdefault("OMP_NUM_THREADS", "1")
    log.info("launching %d processes: %s", nproc, " ".join(cmd))
    return subprocess.call(cmd, env=env)
