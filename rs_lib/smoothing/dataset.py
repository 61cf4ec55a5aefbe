"""Certifying a dataset: one CERTIFY per example into a resumable, shardable certify TSV.

``certify_dataset(smooth, images, labels, settings=CertifySettings(n0=, n=, alpha=, batch_size=),
out_path=..., select=Selection(...), seed=...)`` is Cohen et al.'s ``certify.py`` as a function:
each row carries ``Smooth.certify``'s guarantee at level alpha for its example (wrong with
probability <= alpha, independently across rows).  Cost: ``(n0 + n)`` forwards per example, in
batches of ``batch_size`` shared by consecutive examples.

What makes a file trustworthy to resume: the noise of example ``idx`` comes from
``example_generator(seed, idx, device)`` alone, so a resumed or sharded run writes the same rows
(``time`` aside) as one uninterrupted process, whatever ``batch_size``; the settings go to the
sidecar (:mod:`.tsv`) and a resume with other settings is refused; a torn last line is dropped; a
finished file's digest is checked before it is appended to.

Public names: ``CertifySettings`` (CERTIFY's settings, grouped as the reference CLI's ``--N0 --N
--alpha --batch``), ``Selection`` (which examples: explicit indices or the reference's
``--skip`` range), ``certify_dataset``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from rs_lib import _validate as check
from rs_lib import lock, store

from . import tsv
from .classifier import Smooth, check_certify_args
from .sampler import example_generator


@dataclass(frozen=True, kw_only=True)
class CertifySettings:
    """CERTIFY's settings for every input of a run (Cohen et al.'s ``certify.py`` flags): ``n0``
    selection samples, ``n`` estimation samples, failure probability ``alpha`` (each certificate is
    wrong with probability at most alpha) and ``batch_size`` (noisy copies per forward: speed and
    memory only, never the result)."""

    n0: int
    n: int
    alpha: float
    batch_size: int

    def __post_init__(self) -> None:
        check_certify_args(self.n0, self.n, self.alpha, self.batch_size)


@dataclass(frozen=True, kw_only=True)
class Selection:
    """Which examples ``certify_dataset`` certifies: ``indices`` (distinct, in the given order) or
    ``range(start, stop, skip)`` clipped to the data (the reference's ``--skip``; give disjoint
    ranges, one ``out_path`` each, to shard a run over processes).  Not both."""

    indices: tuple[int, ...] | None = None
    start: int = 0
    stop: int | None = None
    skip: int = 1

    def __post_init__(self) -> None:
        check.integer("start", self.start, low=0)
        check.positive_int("skip", self.skip)
        if self.stop is not None:
            check.integer("stop", self.stop, low=0)
        if self.indices is not None:
            if (self.start, self.stop, self.skip) != (0, None, 1):
                raise ValueError("give either indices or start/stop/skip, not both")
            object.__setattr__(self, "indices", tuple(self.indices))

    def resolve(self, size: int) -> list[int]:
        """The selected indices of a dataset of ``size`` examples (indices checked against it)."""
        if self.indices is None:
            return list(range(self.start, size if self.stop is None else min(self.stop, size), self.skip))
        for idx in self.indices:
            check.integer("indices[i]", idx, low=0, high=size - 1)
        if len(set(self.indices)) != len(self.indices):
            raise ValueError("indices must not repeat an index")
        return list(self.indices)


def certify_dataset(smooth: Smooth, images: Any, labels: Any = None, *, settings: CertifySettings,
                    out_path: str | Path, select: Selection = Selection(), seed: int = 0,
                    progress: bool = True) -> pd.DataFrame:
    """CERTIFY every selected example and write one TSV row per example; return the whole file.

    ``images[idx]`` is an input (C, H, W) in [0, 1] and ``labels[idx]`` its class; with
    ``labels=None``, ``images[idx]`` is an ``(x, y)`` pair (a torchvision-style dataset).  Each row
    carries the guarantee of ``Smooth.certify`` at level ``settings.alpha`` for that example.

    Rows are the reference columns ``idx label predict radius correct time`` (time in the
    reference's ``H:MM:SS.ffffff`` form, the batch's wall time shared among the inputs it finished)
    followed by ``p_lower count n``; floats are written at full precision, one flushed line per
    example.  Re-running with the same ``out_path`` resumes: finished ``idx`` are skipped and a torn
    last line is dropped.  The noise of example idx comes from ``example_generator(seed, idx,
    smooth.device)``, so a resumed run writes the same rows (``time`` aside) as an uninterrupted
    one, whatever ``batch_size``.  The settings are kept in ``<out_path>.meta.json`` and a resume
    with different ones is refused.
    """
    if not isinstance(settings, CertifySettings):
        raise ValueError(f"settings must be a CertifySettings, got {type(settings).__name__}")
    check.integer("seed", seed, low=0)
    if not (hasattr(images, "__len__") and hasattr(images, "__getitem__")):
        raise ValueError(f"images must be indexable with a length (a tensor, list or dataset), "
                         f"got {type(images)!r}")
    order = select.resolve(len(images))
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"labels must have one entry per image ({len(images)}), got {len(labels)}")
    if labels is not None:
        check.labels("labels", torch.as_tensor(labels), smooth.num_classes)
    path = Path(out_path)
    check.directory("out_path's folder", path.parent if str(path.parent) else Path("."))

    def example(idx: int) -> tuple[torch.Tensor, Any]:
        return (images[idx], labels[idx]) if labels is not None else images[idx]

    with lock.hold(path.with_name(path.name + ".lock"), what=f"certification {path}"):
        _certify_into(smooth, example, path, order, settings=settings, seed=seed, progress=progress)
    return tsv.read_certify_tsv(path)


def _file_settings(smooth: Smooth, settings: CertifySettings, seed: int) -> dict[str, Any]:
    """What the sidecar records and a resume must match (not batch_size: it changes nothing)."""
    return {"sigma": smooth.sigma, "num_classes": smooth.num_classes, "n0": settings.n0, "n": settings.n,
            "alpha": settings.alpha, "seed": seed, "autocast_dtype": str(smooth.sampler.autocast_dtype)}


def _certify_into(smooth: Smooth, example: Callable[[int], tuple[torch.Tensor, Any]], path: Path,
                  order: list[int], *, settings: CertifySettings, seed: int, progress: bool) -> None:
    """The rows of ``order`` not yet in ``path`` (the caller holds the file's lock)."""
    device = smooth.device
    done = _prepare_output(path, _file_settings(smooth, settings, seed), device)
    todo = [idx for idx in order if idx not in done]
    meta = tsv.read_meta(path)
    if todo and meta.pop("complete", None) is not None:
        tsv.write_meta(path, meta)  # appending: the file is no longer the completed one

    def items() -> Iterator[tuple[tuple[int, int], torch.Tensor, torch.Generator]]:
        for idx in todo:
            x, label = example(idx)
            yield (idx, int(label)), x, example_generator(seed, idx, device)

    with path.open("a", encoding="utf-8") as out, tqdm(
            total=len(order), initial=len(order) - len(todo), desc=f"certify {path.name}",
            disable=None if progress else True, unit="input") as bar:
        last = time.perf_counter()
        for group in smooth.certify_many(items(), settings.n0, settings.n, settings.alpha,
                                         settings.batch_size, total=len(todo) * (settings.n0 + settings.n)):
            now = time.perf_counter()
            seconds, last = (now - last) / len(group), now
            for (idx, label), certificate in group:
                out.write(tsv.tsv_row(idx, label, certificate, seconds))
                out.flush()
                bar.update(1)
    tsv.write_meta(path, {**meta, "complete": tsv.tsv_digest(path)})


def _prepare_output(path: Path, settings: dict[str, Any], device: torch.device) -> set[int]:
    """Create the TSV and its settings file, or check them for a resume; return the finished idx.

    A file that is not this tool's (no certify header, or no settings file beside it) is refused
    before it is opened for writing, and left byte-identical."""
    meta = {**settings, "device_type": device.type}
    if path.is_dir():
        raise ValueError(f"out_path {str(path)!r} is a directory; give a file path for the TSV")
    if not path.exists():
        if tsv.meta_path(path).exists():  # only ever overwrite our own (orphaned) sidecar
            try:
                tsv.read_meta(path)
            except ValueError:
                raise ValueError(f"{tsv.meta_path(path)} exists and is not a certify settings file; it was "
                                 "left untouched: choose another out_path") from None
        tsv.write_meta(path, meta)
        store.atomic_write_bytes(path, (tsv.HEADER + "\n").encode())
        return set()
    if not tsv.is_ours(path):
        raise ValueError(f"out_path {str(path)!r} exists but is not a certify TSV (its first line is not "
                         f"{tsv.HEADER!r}); it was left untouched: choose another out_path")
    if not tsv.meta_path(path).exists():
        raise ValueError(f"out_path {str(path)!r} has no settings file {tsv.meta_path(path).name!r}, so a "
                         "resume cannot be checked; it was left untouched: move the TSV away or choose "
                         "another out_path")
    previous = tsv.read_meta(path)
    changed = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
    if changed:
        raise ValueError(f"out_path {str(path)!r} was written with other settings "
                         f"(previous, now): {changed}; choose another out_path")
    tsv.check_certify_output(path)
    if previous.get("device_type") != device.type:
        warnings.warn(f"resuming {path.name} on {device.type} (started on "
                      f"{previous.get('device_type')}): rows stay valid but differ from an "
                      "uninterrupted run", stacklevel=4)
    return _finished_indices(path)


def _finished_indices(path: Path) -> set[int]:
    lines = tsv.drop_torn_line(path).splitlines()
    done = set()
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(tsv.TSV_COLUMNS) + len(tsv.EXTRA_COLUMNS):
            raise ValueError(f"{str(path)!r} line {number} is malformed: {line!r}; it was left as is: "
                             f"move it away (python -m rs_lib discard {path}) and certify again")
        done.add(int(fields[0]))
    return done
