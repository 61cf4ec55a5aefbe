"""Gaussian randomized smoothing: Cohen et al.'s PREDICT and CERTIFY, dataset certification, analysis.

The smoothed classifier of a base classifier f at noise level sigma is
``g(x) = argmax_c P(f(x + delta) = c)`` with ``delta ~ N(0, sigma^2 I)`` (Cohen et al. 2019, eq. 1).
If the top class c_A has probability at least p_A >= 1/2, g is constant on the l2 ball of radius
``sigma * Phi^-1(p_A)`` around x (Cohen et al. 2019, Thm. 1, with p_B bounded by 1 - p_A).
``Smooth`` estimates g by Monte Carlo exactly as the reference ``core.py`` does (same API, same
statistics; the reference's removed ``scipy.stats.binom_test`` is replaced by ``binomtest``), and
differs only in how the samples are evaluated:

* noise is drawn on the model's device, added to the broadcast input (no ``repeat``), in batches
  that may hold the samples of several inputs; counts are exact int64 tallies kept on the device
  and read back once per finished input (not once per batch);
* under a fixed ``torch.Generator`` the noise of an input does not depend on ``batch_size`` or on
  which other inputs share its batches (it is drawn in blocks whose size depends only on the
  input's shape), so the one-input and the many-input paths give identical certificates;
* the forward runs in ``torch.inference_mode``, optionally on ``channels_last`` batches (same
  predictions); ``autocast_dtype=torch.bfloat16`` is an explicit opt-in that certifies a
  *different*, reduced-precision classifier: never use it for reported certified numbers.

``certify`` keeps the reference return value, the pair ``(prediction, radius)``, so that code
written against ``core.py`` runs unchanged; ``certify_detailed`` returns a ``Certificate`` that also
holds the Clopper-Pearson bound and the counts.  Radii are l2 distances in pixel units of [0, 1]
inputs (normalisation is the model's first layer).

Dataset level: ``certify_dataset`` writes the reference TSV (``idx label predict radius correct
time``) plus ``p_lower count n`` at full precision, is resumable and shardable, and seeds the noise
of example ``idx`` from ``(seed, idx)``.  Analysis: ``read_certify_tsv``, ``certified_accuracy``,
``acr``, ``abstention_rate``, ``upper_envelope``, ``l2_to_linf``, ``high_prob_accuracy``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn
from tqdm.auto import tqdm

from rs_lib import _record
from rs_lib import _validate as check
from rs_lib import lock
from rs_lib import models

ABSTAIN = -1
TSV_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
EXTRA_COLUMNS = ("p_lower", "count", "n")
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


class Certificate(NamedTuple):
    """Outcome of CERTIFY for one input.

    ``prediction`` is the certified class or ``ABSTAIN`` (-1); ``radius`` the certified l2 radius
    (0.0 on abstention); ``p_lower`` the one-sided (1 - alpha) Clopper-Pearson lower bound on the
    probability of the selected class; ``count`` its count among the ``n`` estimation samples.
    """

    prediction: int
    radius: float
    p_lower: float
    count: int
    n: int


# --------------------------------------------------------------------------------------------
# Statistics (pure functions of the counts)
# --------------------------------------------------------------------------------------------

def lower_confidence_bound(count: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion.

    Equals ``statsmodels.stats.proportion.proportion_confint(count, n, alpha=2 * alpha,
    method="beta")[0]``, the bound of the reference ``core.py``; it is ``0`` for ``count = 0`` and
    ``alpha ** (1 / n)`` for ``count = n``.  P(bound > true proportion) <= alpha.
    """
    check.integer("n", n, low=1)
    check.integer("count", count, low=0, high=n)
    check.probability("alpha", alpha)
    if count == 0:
        return 0.0
    return float(stats.beta.ppf(alpha, count, n - count + 1))


def prediction_from_counts(counts: Sequence[int] | np.ndarray, alpha: float) -> int:
    """PREDICT's decision (Cohen et al. 2019, Prop. 1) from the class counts of n noise samples.

    Returns the top class if the two-sided exact binomial test of its count against the
    runner-up's (p = 1/2, Hung & Fithian 2016) rejects at level alpha, else ``ABSTAIN``.  Ties for
    the top never reject, so they abstain whatever the order of the tied classes.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or counts.size < 2 or (counts < 0).any() or counts.sum() == 0:
        raise ValueError(f"counts must be a 1-D array of >= 2 non-negative counts with a positive "
                         f"sum, got {counts!r}")
    check.probability("alpha", alpha)
    top2 = np.argsort(-counts, kind="stable")[:2]
    count1, count2 = int(counts[top2[0]]), int(counts[top2[1]])
    if stats.binomtest(count1, count1 + count2, 0.5).pvalue > alpha:
        return ABSTAIN
    return int(top2[0])


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


# --------------------------------------------------------------------------------------------
# The smoothed classifier
# --------------------------------------------------------------------------------------------

class _Job(NamedTuple):
    key: Any
    x: torch.Tensor            # (C, H, W) on the model's device
    generator: torch.Generator | None
    sizes: tuple[int, ...]     # samples per phase, e.g. (n0, n)


class Smooth:
    """Gaussian smoothing of ``base_classifier`` at noise level ``sigma`` (Cohen et al. 2019).

    ``base_classifier`` maps a batch of [0, 1] images (B, C, H, W) to logits (B, num_classes);
    it is put in eval mode by ``predict`` and ``certify``.  ``sigma`` is the noise standard
    deviation in pixel units.  Keyword options change speed only: ``channels_last`` feeds
    channels-last batches (same predictions; ``"auto"``, the default, uses them when the model is
    on the CPU); ``compile=True`` runs full batches through ``torch.compile(base_classifier)``
    (the same fp32 classifier up to the rounding order of fused kernels; the first batch pays the
    compilation, tens of seconds on a CPU, so it pays off at n = 100,000 over many inputs, not for
    a few hundred samples; a last partial batch runs eagerly rather than recompiling); ``autocast_dtype`` (bfloat16 or float16) runs the
    forward under autocast, which certifies the reduced-precision classifier, not the fp32 one.
    On a CPU, ``channels_last`` about doubles the throughput of small CNNs such as LeNet.
    """

    ABSTAIN = ABSTAIN

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
                          stacklevel=2)
        self.base_classifier = base_classifier
        self.num_classes = num_classes
        self.sigma = float(sigma)
        self._channels_last = channels_last
        self.compile = compile
        self._compiled: nn.Module | None = None
        self.autocast_dtype = autocast_dtype

    @property
    def channels_last(self) -> bool:
        """Whether batches are fed channels-last (resolved from ``"auto"`` by the model's device)."""
        if self._channels_last == "auto":
            return self.device.type == "cpu"
        return self._channels_last

    @property
    def device(self) -> torch.device:
        """The device of the base classifier's parameters (CPU for a parameter-free model)."""
        for tensor in self.base_classifier.parameters():
            return tensor.device
        for tensor in self.base_classifier.buffers():
            return tensor.device
        return torch.device("cpu")

    def forward_model(self, full_batch: bool) -> nn.Module:
        """The module that classifies a batch: the compiled classifier for full batches when
        ``compile`` is set (compiled on first use), else ``base_classifier``."""
        if not (self.compile and full_batch):
            return self.base_classifier
        if self._compiled is None:
            self._compiled = torch.compile(self.base_classifier, dynamic=False)
        return self._compiled

    def lower_confidence_bound(self, count: int, n: int, alpha: float) -> float:
        """The (1 - alpha) lower bound on p_A used by CERTIFY; override only to study unsound bounds."""
        return lower_confidence_bound(count, n, alpha)

    # ---- PREDICT -----------------------------------------------------------------------------

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int, *,
                generator: torch.Generator | None = None) -> int:
        """PREDICT (Cohen et al. 2019, Prop. 1): g(x) for one input x (C, H, W) in [0, 1], or ABSTAIN.

        With probability at least 1 - alpha over the noise, the returned class is g(x) (or the call
        abstains).  Uses n noise samples; the test is two-sided binomial on the top-2 counts.
        """
        return self.predict_batch(_one_input("x", x), n, alpha, batch_size,
                                  generators=None if generator is None else [generator])[0]

    def predict_batch(self, xs: torch.Tensor, n: int, alpha: float, batch_size: int, *,
                      generators: Sequence[torch.Generator] | None = None) -> list[int]:
        """PREDICT for each input of ``xs`` (K, C, H, W), each with its own guarantee as in
        ``predict``; samples of several inputs share forward batches.  ``generators``, one per
        input, make the result identical to ``predict(xs[k], ..., generator=generators[k])``."""
        check.positive_int("n", n)
        check.probability("alpha", alpha)
        check.positive_int("batch_size", batch_size)
        jobs = self._jobs(xs, generators, (n,))
        return [prediction_from_counts(counts[0], alpha)
                for group in self._count_groups(jobs, batch_size, total=len(jobs) * n)
                for _, counts in group]

    # ---- CERTIFY -----------------------------------------------------------------------------

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int, *,
                generator: torch.Generator | None = None) -> tuple[int, float]:
        """CERTIFY (Cohen et al. 2019, Prop. 2) for one input x (C, H, W) in [0, 1].

        Returns ``(prediction, radius)`` as the reference does.  With probability at least
        1 - alpha over the noise, either ``prediction`` is ABSTAIN or g(x + d) = prediction for every
        ||d||_2 < radius.  ``n0`` samples select the class and are discarded; ``n`` independent
        samples bound its probability.  ``certify_detailed`` also returns the bound and counts.
        """
        certificate = self.certify_detailed(x, n0, n, alpha, batch_size, generator=generator)
        return certificate.prediction, certificate.radius

    def certify_detailed(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int, *,
                         generator: torch.Generator | None = None) -> Certificate:
        """``certify`` returning the full ``Certificate`` (prediction, radius, p_lower, count, n)."""
        return self.certify_batch(_one_input("x", x), n0, n, alpha, batch_size,
                                  generators=None if generator is None else [generator])[0]

    def certify_batch(self, xs: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int, *,
                      generators: Sequence[torch.Generator] | None = None) -> list[Certificate]:
        """CERTIFY for each input of ``xs`` (K, C, H, W), each with the guarantee of ``certify``.

        Samples of several inputs share forward batches; with ``generators`` (one per input) the
        result equals ``certify_detailed(xs[k], ..., generator=generators[k])`` for every k.
        """
        _check_certify_args(n0, n, alpha, batch_size)
        jobs = self._jobs(xs, generators, (n0, n))
        return [self._certificate(counts, alpha)
                for group in self._count_groups(jobs, batch_size, total=len(jobs) * (n0 + n))
                for _, counts in group]

    def _certify_groups(self, items: Iterable[tuple[Any, torch.Tensor, torch.Generator | None]],
                        n0: int, n: int, alpha: float, batch_size: int, *, total: int | None = None
                        ) -> Iterator[list[tuple[Any, Certificate]]]:
        """Certificates for (key, x, generator) items, yielded in groups that finished together."""
        jobs = (_Job(key, self._to_device(x), self._checked_generator(g), (n0, n))
                for key, x, g in items)
        for group in self._count_groups(jobs, batch_size, total=total):
            yield [(key, self._certificate(counts, alpha)) for key, counts in group]

    def _certificate(self, counts: np.ndarray, alpha: float) -> Certificate:
        """CERTIFY's decision from the (selection, estimation) counts, shape (2, num_classes)."""
        selection, estimation = counts
        c_hat = int(np.argmax(selection))
        count, n = int(estimation[c_hat]), int(estimation.sum())
        p_lower = float(self.lower_confidence_bound(count, n, alpha))
        if p_lower < 0.5:
            return Certificate(ABSTAIN, 0.0, p_lower, count, n)
        return Certificate(c_hat, self.sigma * float(stats.norm.ppf(p_lower)), p_lower, count, n)

    # ---- sampling engine ---------------------------------------------------------------------

    def _jobs(self, xs: torch.Tensor, generators: Sequence[torch.Generator] | None,
              sizes: tuple[int, ...]) -> list[_Job]:
        _check_inputs("xs", xs, batched=True)
        if generators is not None:
            if len(generators) != len(xs):
                raise ValueError(f"generators must hold one generator per input ({len(xs)}), "
                                 f"got {len(generators)}")
            generators = [self._checked_generator(g) for g in generators]
        xs = xs.to(self.device)
        return [_Job(k, xs[k], None if generators is None else generators[k], sizes)
                for k in range(len(xs))]

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        _check_inputs("x", x, batched=False)
        return x.to(self.device)

    def _checked_generator(self, generator: torch.Generator | None) -> torch.Generator | None:
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

    def _count_groups(self, jobs: Iterable[_Job], batch_size: int, *, total: int | None = None
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

    def __init__(self, smooth: Smooth, batch_size: int) -> None:
        self.smooth = smooth
        self.batch_size = batch_size
        self.device = smooth.device
        self.buffer: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None    # scratch for one noise block, reused
        self.fill = 0
        self.pieces: list[tuple[torch.Tensor, int, int]] = []   # (count row, start, stop)
        with torch.inference_mode():
            self.ones = torch.ones(batch_size, dtype=torch.int64, device=self.device)

    @torch.inference_mode()
    def new_counts(self, phases: int) -> torch.Tensor:
        return torch.zeros((phases, self.smooth.num_classes), dtype=torch.int64, device=self.device)

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
            torch.add(x, noise[offset:offset + take], alpha=self.smooth.sigma,
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
        memory_format = torch.channels_last if self.smooth.channels_last else torch.contiguous_format
        self.buffer = torch.empty((self.batch_size, *x.shape), dtype=x.dtype, device=self.device,
                                  memory_format=memory_format)
        self.noise = torch.empty((noise_block(x), *x.shape), dtype=x.dtype, device=self.device)

    @torch.inference_mode()
    def flush(self) -> None:
        """Classify the filled part of the buffer and add the predictions to the count rows."""
        if self.fill == 0:
            return
        smooth = self.smooth
        autocast = (torch.autocast(self.device.type, dtype=smooth.autocast_dtype)
                    if smooth.autocast_dtype is not None else contextlib.nullcontext())
        with autocast:
            logits = smooth.forward_model(self.fill == self.batch_size)(self.buffer[:self.fill])
        if logits.ndim != 2 or logits.shape != (self.fill, smooth.num_classes):
            raise ValueError(f"base_classifier must return logits of shape (batch, num_classes="
                             f"{smooth.num_classes}), got {tuple(logits.shape)}")
        predictions = logits.argmax(1)   # ties -> lowest class index, as the reference
        # index_add_ rather than bincount: CUDA bincount reads the maximum back to the host.
        for counts, start, stop in self.pieces:
            counts.index_add_(0, predictions[start:stop], self.ones[:stop - start])
        self.pieces = []
        self.fill = 0


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------

def _check_certify_args(n0: int, n: int, alpha: float, batch_size: int) -> None:
    check.positive_int("n0", n0)
    check.positive_int("n", n)
    check.probability("alpha", alpha)
    check.positive_int("batch_size", batch_size)


def _check_inputs(name: str, x: Any, *, batched: bool) -> None:
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


def _one_input(name: str, x: Any) -> torch.Tensor:
    _check_inputs(name, x, batched=False)
    return x.unsqueeze(0)


# --------------------------------------------------------------------------------------------
# Dataset-level certification: the reference TSV, resumable and shardable
# --------------------------------------------------------------------------------------------

_HEADER = "\t".join(TSV_COLUMNS + EXTRA_COLUMNS)


def certify_dataset(smooth: Smooth, images: Any, labels: Any = None, *, n0: int, n: int,
                    alpha: float, batch_size: int, out_path: str | Path,
                    indices: Iterable[int] | None = None, start: int = 0, stop: int | None = None,
                    skip: int = 1, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """CERTIFY every selected example and write one TSV row per example; return the whole file.

    ``images[idx]`` is an input (C, H, W) in [0, 1] and ``labels[idx]`` its class; with
    ``labels=None``, ``images[idx]`` is an ``(x, y)`` pair (a torchvision-style dataset).  The
    examples are ``indices`` or ``range(start, stop, skip)`` (the reference's ``--skip``; use
    disjoint ranges and one ``out_path`` each to shard a run over processes).  Each row carries the
    guarantee of ``Smooth.certify`` at level alpha for that example.

    Rows are the reference columns ``idx label predict radius correct time`` (time in the
    reference's ``H:MM:SS.ffffff`` form, the batch's wall time shared among the inputs it finished)
    followed by ``p_lower count n``; floats are written at full precision, one flushed line per
    example.  Re-running with the same ``out_path`` resumes: finished ``idx`` are skipped and a torn
    last line is dropped.  The noise of example idx comes from ``example_generator(seed, idx,
    smooth.device)``, so a resumed run writes the same rows (``time`` aside) as an uninterrupted
    one, whatever ``batch_size``.  The settings are kept in ``<out_path>.meta.json`` and a resume
    with different ones is refused.
    """
    _check_certify_args(n0, n, alpha, batch_size)
    check.integer("seed", seed, low=0)
    if not (hasattr(images, "__len__") and hasattr(images, "__getitem__")):
        raise ValueError(f"images must be indexable with a length (a tensor, list or dataset), "
                         f"got {type(images)!r}")
    order = _selected_indices(len(images), indices, start, stop, skip)
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"labels must have one entry per image ({len(images)}), got {len(labels)}")
    if labels is not None:
        check.labels("labels", torch.as_tensor(labels), smooth.num_classes)
    path = Path(out_path)
    check.directory("out_path's folder", path.parent if str(path.parent) else Path("."))
    settings = {"sigma": smooth.sigma, "num_classes": smooth.num_classes, "n0": n0, "n": n,
                "alpha": alpha, "seed": seed, "autocast_dtype": str(smooth.autocast_dtype)}
    with lock.hold(path.with_name(path.name + ".lock"), what=f"certification {path}"):
        _certify_into(smooth, images, labels, path, settings, order, n0=n0, n=n, alpha=alpha,
                      batch_size=batch_size, seed=seed, progress=progress)
    return read_certify_tsv(path)


def _certify_into(smooth: Smooth, images: Any, labels: Any, path: Path, settings: dict[str, Any],
                  order: list[int], *, n0: int, n: int, alpha: float, batch_size: int, seed: int,
                  progress: bool) -> None:
    """The rows of ``order`` not yet in ``path`` (the caller holds the file's lock)."""
    done = _prepare_output(path, settings, smooth.device)
    todo = [idx for idx in order if idx not in done]
    device = smooth.device
    meta = _read_meta(path)
    if todo and meta.pop("complete", None) is not None:
        _write_meta(path, meta)  # appending: the file is no longer the completed one

    def items() -> Iterator[tuple[tuple[int, int], torch.Tensor, torch.Generator]]:
        for idx in todo:
            x, label = (images[idx], labels[idx]) if labels is not None else images[idx]
            yield (idx, int(label)), x, example_generator(seed, idx, device)

    with path.open("a", encoding="utf-8") as out, tqdm(
            total=len(order), initial=len(order) - len(todo), desc=f"certify {path.name}",
            disable=None if progress else True, unit="input") as bar:
        last = time.perf_counter()
        for group in smooth._certify_groups(items(), n0, n, alpha, batch_size,
                                            total=len(todo) * (n0 + n)):
            now = time.perf_counter()
            seconds, last = (now - last) / len(group), now
            for (idx, label), certificate in group:
                out.write(_tsv_row(idx, label, certificate, seconds))
                out.flush()
                bar.update(1)
    _write_meta(path, {**meta, "complete": _tsv_digest(path)})


def _selected_indices(size: int, indices: Iterable[int] | None, start: int, stop: int | None,
                      skip: int) -> list[int]:
    check.integer("start", start, low=0)
    check.positive_int("skip", skip)
    if stop is not None:
        check.integer("stop", stop, low=0)
    if indices is None:
        return list(range(start, size if stop is None else min(stop, size), skip))
    if (start, stop, skip) != (0, None, 1):
        raise ValueError("give either indices or start/stop/skip, not both")
    order = list(indices)
    for idx in order:
        check.integer("indices[i]", idx, low=0, high=size - 1)
    if len(set(order)) != len(order):
        raise ValueError("indices must not repeat an index")
    return order


def _tsv_row(idx: int, label: int, certificate: Certificate, seconds: float) -> str:
    correct = int(certificate.prediction == label)
    fields = (idx, label, certificate.prediction, repr(float(certificate.radius)), correct,
              str(datetime.timedelta(seconds=seconds)), repr(float(certificate.p_lower)),
              certificate.count, certificate.n)
    return "\t".join(map(str, fields)) + "\n"


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def _read_meta(path: Path) -> dict[str, Any]:
    """The sidecar of certify TSV ``path``; a torn or foreign sidecar is a damaged file."""
    from . import store

    meta_path = _meta_path(path)
    if not meta_path.is_file():
        raise store.DamagedFileError(path, f"its settings file {meta_path.name} is missing")
    try:
        meta = store.read_json(meta_path)
    except store.CorruptFileError as err:
        raise store.DamagedFileError(path, f"its settings file {meta_path.name} does not parse ({err})") from None
    if not isinstance(meta, dict) or "n" not in meta or "sigma" not in meta:
        raise store.DamagedFileError(path, f"its settings file {meta_path.name} holds no certify settings")
    return meta


def _write_meta(path: Path, meta: Mapping[str, Any]) -> None:
    from . import store

    store.atomic_write_bytes(_meta_path(path), json.dumps(dict(meta), indent=1).encode())


def _tsv_digest(path: Path) -> dict[str, Any]:
    from . import store

    return {"size": path.stat().st_size, "sha256": store.sha256_file(path)}


def check_certify_output(path: str | Path) -> None:
    """A certify TSV that was completed must still be what was written (size and digest kept in
    its sidecar's ``complete`` entry); raises :class:`rs_lib.store.DamagedFileError` if not."""
    from . import store

    path = Path(path)
    meta = _read_meta(path)
    complete = meta.get("complete")
    if complete is not None and _tsv_digest(path) != complete:
        raise store.DamagedFileError(path, f"differs from the file completed earlier ({complete['size']} "
                                     f"bytes, now {path.stat().st_size}): truncated or edited")


def _prepare_output(path: Path, settings: dict[str, Any], device: torch.device) -> set[int]:
    """Create the TSV and its settings file, or check them for a resume; return the finished idx.

    A file that is not this tool's (no certify header, or no settings file beside it) is refused
    before it is opened for writing, and left byte-identical."""
    meta = {**settings, "device_type": device.type}
    if path.is_dir():
        raise ValueError(f"out_path {str(path)!r} is a directory; give a file path for the TSV")
    if not path.exists():
        if _meta_path(path).exists():  # only ever overwrite our own (orphaned) sidecar
            try:
                _read_meta(path)
            except ValueError:
                raise ValueError(f"{_meta_path(path)} exists and is not a certify settings file; it was left "
                                 "untouched: choose another out_path") from None
        _write_meta(path, meta)
        from . import store
        store.atomic_write_bytes(path, (_HEADER + "\n").encode())
        return set()
    with path.open("rb") as handle:
        head = handle.read(len(_HEADER) + 1)
    if head != (_HEADER + "\n").encode():
        raise ValueError(f"out_path {str(path)!r} exists but is not a certify TSV (its first line is not "
                         f"{_HEADER!r}); it was left untouched: choose another out_path")
    if not _meta_path(path).exists():
        raise ValueError(f"out_path {str(path)!r} has no settings file {_meta_path(path).name!r}, so a "
                         "resume cannot be checked; it was left untouched: move the TSV away or choose "
                         "another out_path")
    previous = _read_meta(path)
    changed = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
    if changed:
        raise ValueError(f"out_path {str(path)!r} was written with other settings "
                         f"(previous, now): {changed}; choose another out_path")
    check_certify_output(path)
    if previous.get("device_type") != device.type:
        warnings.warn(f"resuming {path.name} on {device.type} (started on "
                      f"{previous.get('device_type')}): rows stay valid but differ from an "
                      "uninterrupted run", stacklevel=3)
    lines = _drop_torn_line(path).splitlines()
    done = set()
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(TSV_COLUMNS) + len(EXTRA_COLUMNS):
            raise ValueError(f"{str(path)!r} line {number} is malformed: {line!r}; it was left as is: "
                             f"move it away (python -m rs_lib discard {path}) and certify again")
        done.add(int(fields[0]))
    return done


def _drop_torn_line(path: Path) -> str:
    """Cut a last line left without its newline by a kill mid-write (of our own, checked TSV);
    return the remaining text."""
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        keep = text.rfind("\n") + 1
        with path.open("r+b") as handle:
            handle.truncate(len(text[:keep].encode("utf-8")))
        text = text[:keep]
    return text


# --------------------------------------------------------------------------------------------
# Reading and analysing certify TSVs
# --------------------------------------------------------------------------------------------

def read_certify_tsv(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """Read one or several certify TSVs (ours or the reference's) into one frame sorted by idx.

    The reference columns are required; ``p_lower``, ``count`` and ``n`` are kept when present.
    ``time`` becomes float seconds whether written as seconds or as ``H:MM:SS.ffffff``.  A last
    line torn by a kill is ignored; an idx present in two files (overlapping shards) is an error.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = [_read_one_tsv(Path(p)) for p in paths]
    if not frames:
        raise ValueError("paths must name at least one certify TSV")
    frame = pd.concat(frames, ignore_index=True)
    repeated = frame["idx"][frame["idx"].duplicated()].unique()
    if len(repeated):
        raise ValueError(f"idx {list(repeated[:10])} appear in more than one row; "
                         "shards must be disjoint")
    return frame.sort_values("idx", kind="stable").reset_index(drop=True)


def _read_one_tsv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"certify TSV {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    header_width = len(lines[0].split("\t"))
    if not text.endswith("\n") and len(lines) > 1 and len(lines[-1].split("\t")) < header_width:
        text = "\n".join(lines[:-1]) + "\n"          # torn last line of a killed run
    frame = pd.read_csv(io.StringIO(text), sep="\t")
    missing = [c for c in TSV_COLUMNS if c != "time" and c not in frame.columns]
    if missing:
        raise ValueError(f"{str(path)!r} lacks the certify columns {missing}")
    if "time" in frame.columns and not pd.api.types.is_numeric_dtype(frame["time"]):
        frame["time"] = pd.to_timedelta(frame["time"]).dt.total_seconds()
    frame["radius"] = frame["radius"].astype(float)
    return frame


def merge_certify_tsv(paths: Iterable[str | Path], out_path: str | Path) -> pd.DataFrame:
    """Merge shard TSVs into one file at ``out_path`` (sorted by idx, full precision); return it.

    The merged file is for reading; it has no settings file, so resumes go to the shard files.
    An existing ``out_path`` is replaced only if it is an earlier merge (a certify TSV without a
    settings file); anything else is refused and left untouched.  The write is atomic.
    """
    from . import store

    target = Path(out_path)
    if target.is_dir():
        raise ValueError(f"out_path {str(target)!r} is a directory; give a file path for the merged TSV")
    if target.exists():
        with target.open("rb") as handle:
            ours = handle.read(len(_HEADER) + 1) == (_HEADER + "\n").encode()
        if not ours or _meta_path(target).exists():
            what = "a certify shard with its settings file" if ours else "not a certify TSV"
            raise ValueError(f"out_path {str(target)!r} exists and is {what}; it was left untouched: "
                             "choose another out_path")
    frame = read_certify_tsv(list(paths))
    times = frame["time"].map(lambda s: str(datetime.timedelta(seconds=float(s)))) \
        if "time" in frame.columns else None
    out = frame.copy()
    if times is not None:
        out["time"] = times
    text = out.to_csv(sep="\t", index=False, float_format=lambda v: repr(float(v)))
    store.atomic_write_bytes(target, text.encode("utf-8"))
    return frame


def _curve_columns(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(df, pd.DataFrame) or not {"correct", "radius"} <= set(df.columns):
        raise ValueError("df must be a DataFrame with 'correct' and 'radius' columns "
                         "(see read_certify_tsv)")
    if len(df) == 0:
        raise ValueError("df must hold at least one certified example")
    return df["correct"].to_numpy().astype(bool), df["radius"].to_numpy(dtype=float)


def certified_accuracy(df: pd.DataFrame, radii: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Fraction of all rows that are correct with certified radius >= r, for each r in ``radii``.

    Abstentions and wrong predictions count as failures (Cohen et al.'s ``ApproximateAccuracy``).
    Returns an array of ``radii``'s shape.
    """
    correct, radius = _curve_columns(df)
    radii = np.asarray(radii, dtype=float)
    return (correct[:, None] & (radius[:, None] >= radii.reshape(1, -1))).mean(0).reshape(radii.shape)


def acr(df: pd.DataFrame) -> float:
    """Average certified radius: mean of correct * radius over all rows (SmoothMix, Sec. 4)."""
    correct, radius = _curve_columns(df)
    return float((correct * radius).mean())


def abstention_rate(df: pd.DataFrame) -> float:
    """Fraction of rows where CERTIFY (or PREDICT) abstained (SmoothAdv, Table 4)."""
    if not isinstance(df, pd.DataFrame) or "predict" not in df.columns or len(df) == 0:
        raise ValueError("df must be a non-empty DataFrame with a 'predict' column")
    return float((df["predict"].to_numpy() == ABSTAIN).mean())


def upper_envelope(curves: Mapping[Any, Any] | Iterable[Any],
                   radii: Sequence[float] | np.ndarray) -> np.ndarray:
    """Best certified accuracy over models at each radius (SmoothAdv, Fig. 1 envelopes).

    ``curves`` holds certify frames (evaluated at ``radii``) or accuracy arrays already evaluated
    at ``radii``; a mapping's values are used.
    """
    radii = np.asarray(radii, dtype=float).reshape(-1)
    values = curves.values() if isinstance(curves, Mapping) else curves
    rows = [certified_accuracy(c, radii) if isinstance(c, pd.DataFrame) else np.asarray(c, dtype=float)
            for c in values]
    if not rows:
        raise ValueError("curves must hold at least one model")
    for row in rows:
        if row.shape != radii.shape:
            raise ValueError(f"each curve must have one value per radius ({radii.size}), "
                             f"got {row.shape}")
    return np.max(np.stack(rows), axis=0)


def l2_to_linf(radius_l2: float | np.ndarray, dim: int) -> float | np.ndarray:
    """The l-inf radius implied by an l2 certificate in dimension ``dim``: r / sqrt(dim).

    An l-inf ball of radius e lies inside the l2 ball of radius e * sqrt(dim) (SmoothAdv, Sec. 4,
    Table 3: 2/255 on CIFAR-10 needs an l2 radius of 0.435).
    """
    check.positive_int("dim", dim)
    radius = np.asarray(radius_l2, dtype=float)
    if (radius < 0).any() or not np.isfinite(radius).all():
        raise ValueError(f"radius_l2 must be finite and >= 0, got {radius_l2!r}")
    result = radius / math.sqrt(dim)
    return float(result) if result.ndim == 0 else result


def high_prob_accuracy(df: pd.DataFrame, radii: float | Sequence[float] | np.ndarray, *,
                       alpha: float, rho: float) -> np.ndarray:
    """A (1 - rho) lower bound on the true certified accuracy of g (Cohen et al.'s HighProbAccuracy).

    Each of the N rows is wrong with probability <= alpha (CERTIFY's failure rate, independent
    across rows since each draws its own noise), so the approximate accuracy minus alpha minus a
    Bernstein deviation term, ``sqrt(alpha (1 - alpha) ln(1/rho) / N) + ln(1/rho) / (3N)``, bounds
    it.  Not clipped at 0, as the reference.
    """
    check.probability("alpha", alpha)
    check.probability("rho", rho)
    accuracy = certified_accuracy(df, radii)
    count = len(df)
    log_term = math.log(1 / rho)
    return accuracy - alpha - math.sqrt(alpha * (1 - alpha) * log_term / count) - log_term / (3 * count)


# --------------------------------------------------------------------------------------------
# Certifying stored runs (cached in the run's directory) and summary tables for the book
# --------------------------------------------------------------------------------------------

def certify_params(*, split: str = "test", n_points: int, n0: int, n: int, alpha: float, sigma: float,
                   seed: int = 0, which: str = "last") -> dict[str, Any]:
    """What a stored run's certification file depends on (validated): the basis of its name."""
    from . import data as data_mod

    check.choice("split", split, data_mod.SPLITS)
    check.positive_int("n_points", n_points)
    check.positive_int("n0", n0)
    check.positive_int("n", n)
    check.probability("alpha", alpha)
    check.positive("sigma", sigma)
    check.integer("seed", seed, low=0)
    check.choice("which", which, ("last", "best"))
    return {"split": split, "n_points": n_points, "n0": n0, "n": n, "alpha": alpha,
            "sigma": float(sigma), "seed": seed, "which": which}


def certify_file_name(params: Mapping[str, Any], shard: tuple[int, int] | None = None) -> str:
    """``certify-<hash of params>.tsv`` (the file the notebooks read), or the name of shard
    ``(k, shards)`` of it, ``certify-<hash>.shard<k>-of-<shards>.tsv``."""
    from . import store

    stem = f"certify-{store.config_hash(dict(params))}"
    if shard is None:
        return f"{stem}.tsv"
    k, shards = _check_shard(shard)
    return f"{stem}.shard{k}-of-{shards}.tsv"


def _check_shard(shard: Any) -> tuple[int, int]:
    if not isinstance(shard, (tuple, list)) or len(shard) != 2:
        raise ValueError(f"shard must be a pair (k, shards) with 0 <= k < shards, got {shard!r}")
    shards = check.positive_int("shard count", shard[1])
    k = check.integer("shard index", shard[0], low=0, high=shards - 1)
    return k, shards


def certify_indices(size: int, n_points: int, shard: tuple[int, int] | None = None) -> list[int]:
    """The examples a run certifies: every ``size // n_points``-th of a split of ``size`` from 0
    (the reference's ``--skip``); with ``shard=(k, shards)``, the k-th of ``shards`` contiguous
    ranges of that list (equal up to one example)."""
    if n_points > size:
        raise ValueError(f"n_points must be <= {size} (the size of the split), got {n_points}")
    indices = list(range(0, size, size // n_points))[:n_points]
    if shard is None:
        return indices
    k, shards = _check_shard(shard)
    return indices[k * n_points // shards:(k + 1) * n_points // shards]


def certify_run(run: Any, *, split: str = "test", n_points: int, n0: int, n: int, alpha: float,
                sigma: float, batch_size: int, seed: int = 0, which: str = "last",
                device: str | torch.device = "auto", compile: bool = False,
                progress: bool = True, shard: tuple[int, int] | None = None) -> pd.DataFrame:
    """CERTIFY ``n_points`` examples of ``split`` with a stored run's model; cached in the run.

    ``run`` is a :class:`rs_lib.train.Run`; its ``which`` checkpoint ('last', as the references
    certify the final model, or 'best') is smoothed at ``sigma``.  The examples are every
    ``len(split) // n_points``-th one from index 0 (the reference's ``--skip``), so the same test
    points serve every model.  Rows go to ``<run>/certify-<hash>.tsv``, the hash covering
    (split, n_points, n0, n, alpha, sigma, seed, which) but not ``batch_size``, the device or
    ``compile`` (``Smooth``'s speed option for large n), which do not change what is certified; ``certify_dataset``'s resume makes a re-run (or a re-render of a
    notebook) read the finished file and finish a killed one.  Each row carries CERTIFY's guarantee
    at level ``alpha``; returns ``read_certify_tsv`` of the file (column ``idx`` = dataset index).

    ``shard=(k, shards)`` certifies only the k-th contiguous range of those examples into its own
    file (:func:`certify_file_name`); :func:`merge_certify_run` then writes the run's file from all
    shards.  The noise of each example depends on ``(seed, idx)`` alone, so the merged file equals a
    single-process one row for row (``time`` aside).
    """
    from . import data as data_mod

    params = certify_params(split=split, n_points=n_points, n0=n0, n=n, alpha=alpha, sigma=sigma,
                            seed=seed, which=which)
    _check_certify_args(n0, n, alpha, batch_size)
    if not hasattr(run, "dir") or not hasattr(run, "load_model"):
        raise ValueError(f"run must be a rs_lib.train.Run (from run_training), got {type(run).__name__}")
    whole = run.dir.file(certify_file_name(params))
    if shard is None:
        _record.lookup(run.dir.path.parent.name, f"{run.dir.path.name}/{whole.name}")
    if whole.exists():
        check_certify_output(whole)
        finished = read_certify_tsv(whole)
        if len(finished) == n_points:
            if shard is None:
                return finished
            k, shards = _check_shard(shard)   # the indices ascend, so shard k is this slice of rows
            return finished.iloc[k * n_points // shards:(k + 1) * n_points // shards].reset_index(drop=True)
    path = whole if shard is None else run.dir.file(certify_file_name(params, shard))
    lock.check_writable(f"certification {path.name!r} ({n_points} points, n {n}, sigma {sigma}) of run "
                        f"{run.dir.path}")
    dataset = data_mod.load(run.config.dataset, split)
    try:
        indices = certify_indices(len(dataset), n_points, shard)
    except ValueError:
        raise ValueError(f"n_points must be <= {len(dataset)} (the size of {run.config.dataset} "
                         f"'{split}'), got {n_points}") from None
    model = run.load_model(which, device=device)
    smooth = Smooth(model, data_mod.dataset_info(run.config.dataset).num_classes, sigma, compile=compile)
    images, labels = dataset.tensors("cpu")
    return certify_dataset(smooth, images, labels, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                           out_path=path, indices=indices, seed=seed, progress=progress)


def merge_certify_run(run: Any, *, shards: int, split: str = "test", n_points: int, n0: int, n: int,
                      alpha: float, sigma: float, seed: int = 0, which: str = "last") -> pd.DataFrame:
    """Write a run's certification file (the one :func:`certify_run` reads) from its ``shards``
    shard files, each complete, atomically; return it.  A missing or unfinished shard is a
    ValueError naming it, before anything is written."""
    from . import store

    params = certify_params(split=split, n_points=n_points, n0=n0, n=n, alpha=alpha, sigma=sigma,
                            seed=seed, which=which)
    check.positive_int("shards", shards)
    paths = [run.dir.file(certify_file_name(params, (k, shards))) for k in range(shards)]
    expected = [len(range(k * n_points // shards, (k + 1) * n_points // shards)) for k in range(shards)]
    for path, rows in zip(paths, expected):
        done = len(read_certify_tsv(path)) if path.is_file() else 0
        if done != rows:
            raise ValueError(f"certify shard {str(path)!r} has {done} of its {rows} rows; run its "
                             "certify_shard job first")
    settings = []
    for path in paths:
        check_certify_output(path)
        settings.append({k: v for k, v in _read_meta(path).items() if k not in ("complete", "device_type")})
    if any(other != settings[0] for other in settings[1:]):
        raise ValueError(f"the shards of {certify_file_name(params)} were certified with different settings; "
                         "discard them (python -m rs_lib discard FILE) and re-run their certify_shard jobs")
    whole = run.dir.file(certify_file_name(params))
    if certify_complete(whole, n_points):
        return read_certify_tsv(whole)            # merged before
    lock.check_writable(f"certification {whole.name!r} (the merge of {shards} shards) of run {run.dir.path}")
    tmp = whole.with_name(f".{whole.name}.merge.tmp")
    with lock.hold(whole.with_name(whole.name + ".lock"), what=f"merge into {whole}"):
        try:
            merge_certify_tsv(paths, tmp)
            merged = tmp.read_bytes()
            # verified like a file certified in one process: the shards' settings and its digest;
            # the sidecar first, so that a kill before the TSV is replaced leaves a sidecar that is ours
            _write_meta(whole, {**settings[0], "shards": shards, "merged_from": [p.name for p in paths],
                                "complete": {"size": len(merged), "sha256": hashlib.sha256(merged).hexdigest()}})
            store.atomic_write_bytes(whole, merged)
        finally:
            tmp.unlink(missing_ok=True)
    return read_certify_tsv(whole)


def certify_complete(path: str | Path, rows: int) -> bool:
    """Whether ``path`` is a finished certify TSV of ``rows`` rows, as written (its settings file
    says so and its digest matches)."""
    path = Path(path)
    if not path.is_file() or not _meta_path(path).is_file():
        return False
    try:
        check_certify_output(path)
        return _read_meta(path).get("complete") is not None and len(read_certify_tsv(path)) == rows
    except ValueError:
        return False


model_device = models.device_of  # re-exported: the one device helper lives in rs_lib.models


def summary_table(frames: Mapping[Any, pd.DataFrame], radii: Sequence[float]) -> pd.DataFrame:
    """One row per certify frame: ``acr``, ``abstain`` (rate) and the certified accuracy at each
    radius in columns ``r0.00``, ``r0.25``, ... (fractions; SmoothMix Tables 1-3 / SmoothAdv
    Table 2 layout).  The index holds the keys of ``frames``."""
    radii = np.asarray(radii, dtype=float).reshape(-1)
    if radii.size == 0 or (radii < 0).any():
        raise ValueError(f"radii must be a non-empty list of radii >= 0, got {list(radii)}")
    rows = {}
    for key, df in frames.items():
        row = {"acr": acr(df), "abstain": abstention_rate(df)}
        row.update({f"r{r:.2f}": a for r, a in zip(radii, certified_accuracy(df, radii))})
        rows[key] = row
    if not rows:
        raise ValueError("frames must hold at least one certify frame")
    return pd.DataFrame.from_dict(rows, orient="index")


def interpolation_confidence(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, *, sigma: float,
                             num_noise: int, ratios: Sequence[float] | np.ndarray,
                             generator: torch.Generator | None = None) -> np.ndarray:
    """Soft smoothed prediction F̂ along x(λ) = (1 − λ)·x + λ·x_adv (SmoothMix Fig. 2, eq. 9).

    F̂(z) = (1/m) Σ_i softmax(f(z + δ_i)) with the same m = ``num_noise`` noise vectors for every λ
    of an example (drawn from ``generator``), so each path is a deterministic curve.  Returns an
    array (N, len(ratios), C); the model runs in eval mode (restored after), without gradients.
    """
    from . import attacks

    _check_inputs("x", x, batched=True)
    _check_inputs("x_adv", x_adv, batched=True)
    if x.shape != x_adv.shape:
        raise ValueError(f"x_adv must have x's shape {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    check.positive("sigma", sigma)
    check.positive_int("num_noise", num_noise)
    ratios = np.asarray(ratios, dtype=float).reshape(-1)
    if ratios.size == 0 or (ratios < 0).any() or (ratios > 1).any():
        raise ValueError(f"ratios must be mixing ratios in [0, 1], got {list(ratios)}")
    device = model_device(model)
    x, x_adv = x.to(device), x_adv.to(device)
    noise = attacks.draw_noise(x, sigma=sigma, num_noise=num_noise, generator=generator)
    with models.mode(model, train=False), torch.inference_mode():
        path = [attacks.smoothed_softmax(model, (1 - lam) * x + lam * x_adv, noise) for lam in ratios]
    return torch.stack(path, dim=1).cpu().numpy()


def equal_confidence_ratio(confidence: np.ndarray, labels: Sequence[int] | np.ndarray,
                           ratios: Sequence[float] | np.ndarray) -> np.ndarray:
    """The smallest mixing ratio at which F̂_y stops being the largest (SmoothMix Fig. 5).

    ``confidence`` (N, K, C) from ``interpolation_confidence`` on the ratios (K, increasing).  The
    margin F̂_y − max_{c≠y} F̂_c is interpolated linearly between grid points to its first zero.
    NaN where the clean point is already misclassified or the path never changes the prediction.
    """
    confidence = np.asarray(confidence, dtype=float)
    ratios = np.asarray(ratios, dtype=float).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if confidence.ndim != 3 or confidence.shape[:2] != (labels.size, ratios.size):
        raise ValueError(f"confidence must have shape (N={labels.size}, K={ratios.size}, C), "
                         f"got {confidence.shape}")
    if (np.diff(ratios) <= 0).any():
        raise ValueError("ratios must be increasing")
    rows = np.arange(labels.size)
    true = confidence[rows, :, labels]
    other = confidence.copy()
    other[rows, :, labels] = -np.inf
    margin = true - other.max(axis=2)                       # (N, K)
    out = np.full(labels.size, np.nan)
    for i in range(labels.size):
        if margin[i, 0] <= 0:
            continue
        crossing = np.flatnonzero(margin[i] <= 0)
        if crossing.size == 0:
            continue
        k = crossing[0]
        m0, m1 = margin[i, k - 1], margin[i, k]
        out[i] = ratios[k - 1] + (ratios[k] - ratios[k - 1]) * m0 / (m0 - m1)
    return out


def radius_cap(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can return with n samples: sigma * Phi^-1(alpha^(1/n)), reached
    when all n samples vote for the class (2.70 sigma at n = 2,000, 3.81 sigma at n = 100,000)."""
    check.positive("sigma", sigma)
    check.positive_int("n", n)
    check.probability("alpha", alpha)
    return float(sigma * stats.norm.ppf(lower_confidence_bound(n, n, alpha)))


def adversarial_interpolation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float,
                              step_size: float, steps: int, num_noise: int,
                              ratios: Sequence[float] | np.ndarray,
                              generator: torch.Generator | None = None) -> dict[str, np.ndarray]:
    """SmoothMix Fig. 2 and 5 for a batch: attack, then follow F̂ from x to the adversarial point.

    x̃ comes from SmoothMix's unrestricted ascent (``attacks.smoothmix_attack``: ``steps`` normalised
    steps of ``step_size`` on −log F̂_y with ``num_noise`` noise vectors), then F̂ is evaluated along
    (1 − λ)x + λx̃ (``interpolation_confidence``, fresh noise shared by all λ).  Returns ``true``
    (N, K): F̂_y; ``other`` (N, K): F̂ of the class c* most confident at x̃ besides y;
    ``other_class`` (N,): c*; ``ratio`` (N,): the equal-confidence mixing ratio (NaN if none).
    The model must be in eval mode for the attack (as the reference); it is left as it was.
    """
    from . import attacks

    _check_inputs("x", x, batched=True)
    if not isinstance(y, torch.Tensor) or y.shape != x.shape[:1]:
        raise ValueError(f"y must be a tensor of {x.shape[0]} labels, got {getattr(y, 'shape', y)!r}")
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    adversary = attacks.SmoothMix(step_size, steps, sigma, num_noise)
    x_adv = attacks.smoothmix_attack(model, x, y, adversary, generator=generator).x_adv
    conf = interpolation_confidence(model, x, x_adv, sigma=sigma, num_noise=num_noise, ratios=ratios,
                                    generator=generator)
    labels = y.cpu().numpy()
    rows = np.arange(labels.size)
    at_adv = conf[:, -1].copy()
    at_adv[rows, labels] = -np.inf
    other = at_adv.argmax(1)
    return {"true": conf[rows, :, labels], "other": conf[rows, :, other], "other_class": other,
            "ratio": equal_confidence_ratio(conf, labels, ratios)}
