"""Data-parallel training on several processes (``torchrun``, or SLURM through submitit).

One training run is spread over ``world_size`` processes (one per GPU), launched by
``torchrun --nproc-per-node=N -m rs_lib train ...`` or by submitit's
``submitit.helpers.TorchDistributedEnvironment().export()``; both set the variables read here:
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.

What each rank does (:mod:`rs_lib.train` uses these pieces):

* **Data**: every rank builds the same global batch (same permutation and augmentation draws,
  ``data.batches(..., shard=(rank, world))``) and keeps its contiguous part, so the global batch
  is the configuration's ``batch_size`` and per-rank batch = ``batch_size / world_size``.
* **Gradients**: after the backward pass, one ``all_reduce`` over all gradients packed in one
  flat buffer (:func:`average_gradients`): the data-parallel step of DDP.  We do not wrap the
  model in ``DistributedDataParallel``: the objectives call the model many times per step (attack
  iterations, some with a data-dependent number of steps, input gradients, GradAlign's double
  backward), and DDP's per-forward hooks and buffer broadcasts are collectives that must then
  match across ranks.  One collective per optimiser step cannot be mismatched.
* **BatchNorm**: per-rank batch statistics, as the references (``nn.DataParallel``) do, not
  SyncBatchNorm; the running statistics are rank 0's, broadcast to every rank after each step
  (:func:`broadcast_buffers`), exactly as ``DataParallel`` uses device 0's buffers on every
  replica.  A BatchNorm model therefore sees batch statistics over ``batch_size / world_size``
  examples, as with the references' multi-GPU runs.
* **The methods' randomness** (``StepContext.generator``) is split-invariant: under
  :class:`SplitDraws` every draw from the method generator is made at the *global* batch's shape
  and the rank keeps its slice, so each example gets the same noise / random start as in a
  1-process run and the generators of all ranks stay in step (cheaper than per-example seeding:
  drawing noise is negligible beside the forward passes).  The global RNG (dropout) is seeded per
  rank and checkpointed per rank.
"""

from __future__ import annotations

import datetime
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.overrides import TorchFunctionMode

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# A collective waits this long for a slow rank (rank 0 writing a checkpoint, a long validation).
TIMEOUT = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank ``rank`` of ``size`` processes, GPU ``local_rank``."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env(environ: Mapping[str, str] | None = None) -> World:
    """The :class:`World` described by ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (1 process if unset).

    In a submitit SLURM job of several tasks (``tasks_per_node`` > 1 or several nodes) that has not
    exported them yet, they are exported first by ``submitit.helpers.TorchDistributedEnvironment``
    (one task per GPU; all tasks of the job train the one run).

    Raises ValueError for values that are not integers or a rank outside [0, WORLD_SIZE).
    """
    env = os.environ if environ is None else environ
    if environ is None and "WORLD_SIZE" not in env and _submitit_slurm_tasks(env) > 1:
        import submitit.helpers

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if "WORLD_SIZE" not in env:
        return World()
    values = {}
    for name, default in (("RANK", None), ("WORLD_SIZE", None), ("LOCAL_RANK", "0")):
        text = env.get(name, default)
        try:
            values[name] = int(text)
        except (TypeError, ValueError):
            raise ValueError(f"environment variable {name}={text!r} must be an integer "
                             f"(set by torchrun or submitit's TorchDistributedEnvironment)") from None
    rank, size, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={size}, LOCAL_RANK={local}: need WORLD_SIZE >= 1 "
                         f"and 0 <= RANK < WORLD_SIZE")
    if size > 1:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not env.get(v)]
        if missing:
            raise ValueError(f"WORLD_SIZE={size} but {', '.join(missing)} unset: launch with torchrun "
                             f"or submitit's TorchDistributedEnvironment().export()")
    return World(rank, size, local)


def _submitit_slurm_tasks(env: Mapping[str, str]) -> int:
    """Tasks of the SLURM job this process runs in as a submitit job (0 outside one)."""
    if env.get("SUBMITIT_EXECUTOR") != "slurm":
        return 0
    try:
        return int(env.get("SLURM_NTASKS", "0"))
    except ValueError:
        return 0


def check_batch(world: World, batch_size: int, n_train: int | None = None) -> None:
    """A clear error when the world size does not divide the global batch, or (given the
    training-set size ``n_train``) leaves a rank without examples in an epoch's last batch."""
    if batch_size % world.size:
        raise ValueError(f"batch_size={batch_size} is not divisible by the world size {world.size} "
                         f"(per-rank batch = batch_size / world size): choose a batch size that is a "
                         f"multiple of {world.size}, or run on {_divisors(batch_size, world.size)} processes")
    last = 0 if n_train is None else n_train % batch_size
    if 0 < last < world.size:
        raise ValueError(f"the last batch of each epoch holds {last} of {n_train} training images, fewer "
                         f"than the world size {world.size}: change n_train so that n_train % batch_size "
                         f"is 0 or at least {world.size}")


def _divisors(n: int, below: int) -> str:
    return " or ".join(str(d) for d in range(below, 0, -1) if n % d == 0)


def device_for(world: World, device: torch.device) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` when training on CUDA with several processes (or
    ``cuda:0`` when the process sees a single GPU)."""
    if world.distributed and device.type == "cuda":
        visible = torch.cuda.device_count()
        if world.local_rank < visible:
            return torch.device("cuda", world.local_rank)
        if visible == 1:   # one GPU per process (submitit's export sets CUDA_VISIBLE_DEVICES)
            return torch.device("cuda", 0)
        raise ValueError(f"LOCAL_RANK={world.local_rank} but only {visible} GPUs are visible: start "
                         f"at most that many processes per node")
    return device


def init(world: World, device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU), once per process."""
    if not world.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank,
                            world_size=world.size, timeout=TIMEOUT)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def broadcast_object(world: World, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(world: World, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def _flat_by_dtype(tensors: list[torch.Tensor]) -> dict[torch.dtype, list[torch.Tensor]]:
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    return groups


def broadcast_buffers(world: World, model: nn.Module) -> None:
    """Copy rank 0's parameters-free state (BatchNorm running statistics) to every rank."""
    _broadcast(world, [b for b in model.buffers()])


def broadcast_parameters(world: World, model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (the start of training)."""
    _broadcast(world, [p.data for p in model.parameters()] + [b for b in model.buffers()])


def _broadcast(world: World, tensors: list[torch.Tensor]) -> None:
    if not world.distributed or not tensors:
        return
    for group in _flat_by_dtype(tensors).values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.broadcast(flat, src=0)
        offset = 0
        for t in group:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def average_gradients(world: World, model: nn.Module, scalars: torch.Tensor) -> torch.Tensor:
    """Sum the (already weighted) gradients and ``scalars`` over ranks, in one ``all_reduce``.

    Each rank back-propagated its loss times ``n_rank / n_global``, so the sum is the gradient of
    the global batch's mean loss, also when the last batch splits unevenly.  A parameter keeps
    ``grad = None`` (skipped by the optimiser, as in one process) only if no rank gave it a
    gradient.  Returns the summed ``scalars`` (the weighted loss and statistics).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device = scalars.device
    pieces = [p.grad.reshape(-1).float() if p.grad is not None else torch.zeros(p.numel(), device=device)
              for p in params]
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    flat = torch.cat([*pieces, has_grad, scalars.float()])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        grad = flat[offset:offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
        p.grad = grad if p.grad is None else p.grad.copy_(grad)
    counts = flat[offset:offset + len(params)]
    for p, count in zip(params, counts.tolist()):
        if count == 0:
            p.grad = None
    return flat[offset + len(params):]


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """[start, stop) of rank ``rank``'s contiguous part of ``n`` items split over ``size`` ranks
    (the first ``n % size`` ranks hold one more, as ``torch.tensor_split``)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


_DRAWS = {torch.rand, torch.randn, torch.randint}


class SplitDraws(TorchFunctionMode):
    """Draws from ``generator`` made at the global batch's shape, of which this rank keeps its part.

    Inside this mode, ``torch.rand`` / ``randn`` / ``randint`` called with ``generator=generator``
    and a shape with an axis of the rank's batch size ``stop - start`` draw that axis at
    ``n_global`` and return ``[start:stop]`` along it (the first such axis: the batch axis of
    ``(N, ...)``, ``(N, m, ...)`` noise and ``(k, N, C)`` psi draws when ``k`` differs from N).
    Draws without such an axis are made as they are (the same on every rank, as in one process).
    A draw whose count depends on the rank's data (e.g. only if some gradient vanishes) cannot be
    made split-invariant: it stays valid randomness, only the bit-equality with one process is lost.
    """

    def __init__(self, generator: torch.Generator, *, start: int, stop: int, n_global: int) -> None:
        super().__init__()
        self.generator, self.start, self.stop, self.n_global = generator, start, stop, n_global
        self._warned: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if kwargs.get("generator") is not self.generator:
            return func(*args, **kwargs)
        if func in _DRAWS:
            return self._split(func, args, kwargs)
        name = getattr(func, "__name__", str(func))
        if name not in self._warned:
            self._warned.add(name)
            warnings.warn(f"{name} with the method generator is drawn per rank in distributed training "
                          f"(only rand, randn and randint are split-invariant)", stacklevel=2)
        return func(*args, **kwargs)

    def _split(self, func, args, kwargs):
        args, kwargs = list(args), dict(kwargs)
        if "size" in kwargs:
            shape = tuple(kwargs.pop("size"))
        elif func is torch.randint:
            shape = tuple(args.pop())
        elif len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
            shape = tuple(args.pop())
        else:  # torch.rand(2, 3, ...)
            shape, args = tuple(args), []
        local = self.stop - self.start
        axis = next((i for i, s in enumerate(shape) if s == local), None)
        if axis is None or local == self.n_global:
            return func(*args, shape, **kwargs)
        full = list(shape)
        full[axis] = self.n_global
        return func(*args, tuple(full), **kwargs).narrow(axis, self.start, local).contiguous()


def seed_rank_rng(world: World, seed: int) -> None:
    """Rank-specific global RNG (dropout masks) for ranks > 0; rank 0 keeps one process's stream."""
    if world.rank > 0:
        torch.manual_seed((seed * 1_000_003 + 7919 * world.rank) % (2**63 - 1))
