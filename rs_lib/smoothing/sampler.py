"""The noise sampler: class counts of a base classifier under Gaussian noise, fast and reproducibly.

``NoiseSampler(base_classifier, num_classes, sigma, ...)`` turns inputs into exact int64 class
counts of ``f(x + delta)``, ``delta ~ N(0, sigma^2 I)``: the one quantity Cohen et al.'s PREDICT and
CERTIFY need.  It owns everything about *how* the samples are evaluated, none of which changes the
counts (so none of which the statistics in :mod:`.classifier` need to know):

* the device (the model's: :func:`model_device`), batching (samples of several inputs share forward
  batches of ``batch_size``; counts stay on the device and are read back once per finished group);
* noise drawn in blocks whose size depends only on the input's shape (:func:`noise_block`), so that
  under a fixed generator (:func:`example_generator`) the noise of an input does not depend on
  ``batch_size`` or on which inputs share its batches;
* ``channels_last`` batches (same predictions; about 2x for small CNNs on a CPU), ``compile``
  (``torch.compile`` of full batches; the same fp32 classifier up to fused-kernel rounding, tens of
  seconds to compile on a CPU) and ``autocast_dtype`` (bfloat16 / float16: a *different*,
  reduced-precision classifier: never for reported certified numbers).

Cost: ``n`` forward passes per input and phase, in ``ceil(total / batch_size)`` batches; one host
sync per group of inputs finished together.

Public names: ``NoiseSampler``, ``Job``, ``noise_block``, ``NOISE_BLOCK_VALUES``,
``example_generator``, ``model_device``, ``check_inputs``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from rs_lib import _validate as check
from rs_lib import models

# Noise is drawn in blocks of about this many values: the block size depends only on the input's
# shape and the device type, which is what makes results independent of batch_size and batch packing.
# On a CPU a 256 KiB block stays in cache between being drawn and being added to the forward buffer
# (16 MiB blocks cost ~10 % of LeNet's certify throughput in allocation and memory traffic); on a GPU
# large blocks mean few kernel launches.
NOISE_BLOCK_VALUES = {"cpu": 1 << 16, "other": 1 << 22}


def noise_block(x: torch.Tensor) -> int:
    """Noise samples drawn per call for input ``x`` on its device (at least one)."""
    values = NOISE_BLOCK_VALUES["cpu" if x.device.type == "cpu" else "other"]
    return max(1, values // x.numel())


def example_generator(seed: int, idx: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator that ``certify_dataset`` uses for example ``idx`` of a run with ``seed``.

    Seeds are mixed by ``numpy.random.SeedSequence([seed, idx])`` so that examples get independent
    noise.  CPU and CUDA generators give different streams from the same seed.
    """
    check.integer("seed", seed, low=0)
    check.integer("idx", idx, low=0)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(np.random.SeedSequence([seed, idx]).generate_state(1, np.uint64)[0]))
    return generator


model_device = models.device_of  # re-exported: the one device helper lives in rs_lib.models


def check_inputs(name: str, x: Any, *, batched: bool) -> None:
    """x must be a floating tensor of shape (C, H, W) (or (K, C, H, W)) with values in [0, 1]."""
    want = "(K, C, H, W)" if batched else "(C, H, W)"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {want}, got {type(x)!r}")
    if x.ndim != (4 if batched else 3) or x.numel() == 0:
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    low, high = (float(v) for v in torch.aminmax(x.detach()))
    if not (0.0 <= low and high <= 1.0):
        raise ValueError(f"{name} must hold images in [0, 1] (normalisation belongs inside the "
                         f"model), got values in [{low}, {high}]")


class Job(NamedTuple):
    """One input to count: ``key`` (returned with its counts), ``x`` (C, H, W) on the sampler's
    device, its ``generator`` (None: the global RNG) and the samples per phase, e.g. (n0, n)."""

    key: Any
    x: torch.Tensor
    generator: torch.Generator | None
    sizes: tuple[int, ...]


class NoiseSampler:
    """Class counts of ``base_classifier`` on ``x + sigma * noise`` (see the module docstring).

    ``base_classifier`` maps a batch of [0, 1] images (B, C, H, W) to logits (B, num_classes) and is
    put in eval mode when counting.  ``channels_last``: ``"auto"`` (the default) uses it when the
    model is on the CPU.  ``compile=True`` classifies full batches with ``torch.compile`` (compiled
    on first use; a last partial batch runs eagerly rather than recompiling).
    """

    def __init__(self, base_classifier: nn.Module, num_classes: int, sigma: float, *,
                 channels_last: bool | str = "auto", compile: bool = False,
                 autocast_dtype: torch.dtype | None = None) -> None:
        if not isinstance(base_classifier, nn.Module):
            raise ValueError(f"base_classifier must be a torch.nn.Module, "
                             f"got {type(base_classifier)!r}")
        check.integer("num_classes", num_classes, low=2)
        check.positive("sigma", sigma)
        check.choice("channels_last", channels_last, [False, True, "auto"])
        check.flag("compile", compile)
        check.choice("autocast_dtype", autocast_dtype, [None, torch.bfloat16, torch.float16])
        if autocast_dtype is not None:
            warnings.warn(f"Smooth(autocast_dtype={autocast_dtype}) certifies the reduced-precision "
                          "base classifier; use the default fp32 path for reported certified numbers",
                          stacklevel=3)
        self.base_classifier = base_classifier
        self.num_classes = num_classes
        self.sigma = float(sigma)
        self._channels_last = channels_last
        self.compile = compile
        self._compiled: nn.Module | None = None
        self.autocast_dtype = autocast_dtype

    @property
    def device(self) -> torch.device:
        """The device of the base classifier (:func:`model_device`); noise is drawn there."""
        return models.device_of(self.base_classifier)

    @property
    def channels_last(self) -> bool:
        """Whether batches are fed channels-last (resolved from ``"auto"`` by the model's device)."""
        if self._channels_last == "auto":
            return self.device.type == "cpu"
        return self._channels_last

    def forward_model(self, full_batch: bool) -> nn.Module:
        """The module that classifies a batch: the compiled classifier for full batches when
        ``compile`` is set (compiled on first use), else ``base_classifier``."""
        if not (self.compile and full_batch):
            return self.base_classifier
        if self._compiled is None:
            self._compiled = torch.compile(self.base_classifier, dynamic=False)
        return self._compiled

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of a forward (a no-op unless ``autocast_dtype`` is set)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # ---- jobs --------------------------------------------------------------------------------

    def jobs(self, xs: torch.Tensor, generators: Sequence[torch.Generator] | None,
             sizes: tuple[int, ...]) -> list[Job]:
        """One job per input of ``xs`` (K, C, H, W), keyed by its position, with ``generators[k]``."""
        check_inputs("xs", xs, batched=True)
        if generators is not None:
            if len(generators) != len(xs):
                raise ValueError(f"generators must hold one generator per input ({len(xs)}), "
                                 f"got {len(generators)}")
            generators = [self.checked_generator(g) for g in generators]
        xs = xs.to(self.device)
        return [Job(k, xs[k], None if generators is None else generators[k], sizes)
                for k in range(len(xs))]

    def job(self, key: Any, x: torch.Tensor, generator: torch.Generator | None,
            sizes: tuple[int, ...]) -> Job:
        """The job of one input x (C, H, W), checked and moved to the device."""
        check_inputs("x", x, batched=False)
        return Job(key, x.to(self.device), self.checked_generator(generator), sizes)

    def checked_generator(self, generator: torch.Generator | None) -> torch.Generator | None:
        """``generator`` if it draws on the model's device (or None); else a ValueError."""
        if generator is None:
            return None
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator)!r}")
        device = self.device
        if generator.device.type != device.type or (
                device.type != "cpu" and (generator.device.index or 0) != (device.index or 0)):
            raise ValueError(f"generator is on {generator.device} but the noise is drawn on the "
                             f"model's device {device}; create it with "
                             f"torch.Generator(device={str(device)!r})")
        return generator

    # ---- counting ----------------------------------------------------------------------------

    def count_groups(self, jobs: Iterable[Job], batch_size: int, *, total: int | None = None
                     ) -> Iterator[list[tuple[Any, np.ndarray]]]:
        """Class counts (phases, num_classes) per job, yielded as groups of jobs finished together.

        The samples of consecutive jobs are packed into forward batches of ``batch_size`` (no
        larger than ``total``, the number of samples of all jobs, when known); a job is read back
        (one host sync for the whole group) after the batch holding its last sample.
        """
        self.base_classifier.eval()
        packer = _BatchPacker(self, batch_size if total is None else max(1, min(batch_size, total)))
        finished: list[tuple[Any, torch.Tensor]] = []
        for job in jobs:
            counts = packer.new_counts(len(job.sizes))
            block = noise_block(job.x)
            for phase, size in enumerate(job.sizes):
                for start in range(0, size, block):
                    forwarded = packer.add(job.x, job.generator, min(block, size - start),
                                           counts[phase])
                    if forwarded and finished:
                        yield _to_host(finished)
                        finished = []
            finished.append((job.key, counts))
        packer.flush()
        if finished:
            yield _to_host(finished)


def _to_host(finished: list[tuple[Any, torch.Tensor]]) -> list[tuple[Any, np.ndarray]]:
    with torch.inference_mode():
        host = torch.stack([counts for _, counts in finished]).cpu().numpy()
    return [(key, host[k]) for k, (key, _) in enumerate(finished)]


class _BatchPacker:
    """Fills a forward buffer with noisy copies x + sigma * noise and tallies argmax predictions
    into per-(input, phase) int64 count rows on the device; no host synchronisation."""

    def __init__(self, sampler: NoiseSampler, batch_size: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.device = sampler.device
        self.buffer: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None    # scratch for one noise block, reused
        self.fill = 0
        self.pieces: list[tuple[torch.Tensor, int, int]] = []   # (count row, start, stop)
        with torch.inference_mode():
            self.ones = torch.ones(batch_size, dtype=torch.int64, device=self.device)

    @torch.inference_mode()
    def new_counts(self, phases: int) -> torch.Tensor:
        return torch.zeros((phases, self.sampler.num_classes), dtype=torch.int64, device=self.device)

    @torch.inference_mode()
    def add(self, x: torch.Tensor, generator: torch.Generator | None, size: int,
            counts: torch.Tensor) -> bool:
        """Draw ``size`` noise samples for x, tally them into ``counts``; True if a batch ran."""
        self._ensure_buffer(x)
        noise = torch.randn((size, *x.shape), generator=generator, device=self.device, dtype=x.dtype,
                            out=self.noise[:size])
        forwarded, offset = False, 0
        while offset < size:
            take = min(size - offset, self.batch_size - self.fill)
            torch.add(x, noise[offset:offset + take], alpha=self.sampler.sigma,
                      out=self.buffer[self.fill:self.fill + take])
            self.pieces.append((counts, self.fill, self.fill + take))
            self.fill += take
            offset += take
            if self.fill == self.batch_size:
                self.flush()
                forwarded = True
        return forwarded

    def _ensure_buffer(self, x: torch.Tensor) -> None:
        buffer = self.buffer
        if buffer is not None and buffer.shape[1:] == x.shape and buffer.dtype == x.dtype:
            return
        self.flush()
        memory_format = torch.channels_last if self.sampler.channels_last else torch.contiguous_format
        self.buffer = torch.empty((self.batch_size, *x.shape), dtype=x.dtype, device=self.device,
                                  memory_format=memory_format)
        self.noise = torch.empty((noise_block(x), *x.shape), dtype=x.dtype, device=self.device)

    @torch.inference_mode()
    def flush(self) -> None:
        """Classify the filled part of the buffer and add the predictions to the count rows."""
        if self.fill == 0:
            return
        sampler = self.sampler
        with sampler.autocast():
            logits = sampler.forward_model(self.fill == self.batch_size)(self.buffer[:self.fill])
        if logits.ndim != 2 or logits.shape != (self.fill, sampler.num_classes):
            raise ValueError(f"base_classifier must return logits of shape (batch, num_classes="
                             f"{sampler.num_classes}), got {tuple(logits.shape)}")
        predictions = logits.argmax(1)   # ties -> lowest class index, as the reference
        # index_add_ rather than bincount: CUDA bincount reads the maximum back to the host.
        for counts, start, stop in self.pieces:
            counts.index_add_(0, predictions[start:stop], self.ones[:stop - start])
        self.pieces = []
        self.fill = 0
