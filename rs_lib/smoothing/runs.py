"""Certifying stored runs: the certify TSV of a run's checkpoint, cached (and sharded) in its directory.

``certify_run(run, RunCertification(settings=CertifySettings(...), n_points=...))`` CERTIFYs the
same test points (every ``len(split) // n_points``-th) with a stored :class:`rs_lib.train.Run`'s
model, smoothed at the run's *own* training sigma (read from its stored config) unless the
certification names one (methods without a sigma, e.g. vanilla PGD).  The rows go to
``<run>/certify-<hash>.tsv``; a second call reads the file back, a killed one resumes it.  Each row
carries CERTIFY's guarantee at level alpha.  Cost: ``n_points * (n0 + n)`` forwards, once per run
and certification.

Why not ``Run.cached``: ``Run.cached`` computes a JSON result whole and writes it at the end; a
certification at the papers' n = 100,000 is hours per model, so its file must survive a kill row by
row (``certify_dataset``'s resume), be split over processes (``shard``) and merged, and stay in the
reference's TSV format.  What the two share is the naming (``<name>-<store.config_hash(params)>``,
the same hash of the same kind of parameters), the key record (``_record.lookup``) and the store's
write lock; a ``Run.cached_file(name, params, suffix, produce, complete)`` in ``train`` would let
both go through one mechanism (the TSV as a cached file whose completeness is its own check).

Public names: ``RunCertification``, ``run_sigma``, ``certify_run``, ``merge_certify_run``, ``certify_complete``,
``certify_params`` (what the file name depends on), ``certify_file_name``, ``certify_indices``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from rs_lib import _record, lock, store
from rs_lib import _validate as check
from rs_lib import data as data_mod
from rs_lib.train import DEFAULT_CHECKPOINT

from . import dataset, tsv
from .classifier import Smooth
from .dataset import CertifySettings, Selection

WHICH = ("last", "best")


def certify_params(*, split: str = "test", n_points: int, n0: int, n: int, alpha: float, sigma: float,
                   seed: int = 0, which: str = DEFAULT_CHECKPOINT) -> dict[str, Any]:
    """What a stored run's certification file depends on (validated): the basis of its name."""
    check.choice("split", split, data_mod.SPLITS)
    check.positive_int("n_points", n_points)
    check.positive_int("n0", n0)
    check.positive_int("n", n)
    check.probability("alpha", alpha)
    check.positive("sigma", sigma)
    check.integer("seed", seed, low=0)
    check.choice("which", which, WHICH)
    return {"split": split, "n_points": n_points, "n0": n0, "n": n, "alpha": alpha,
            "sigma": float(sigma), "seed": seed, "which": which}


def run_sigma(config: Any) -> float:
    """A run's own noise level: its stored config's ``method_params['sigma']`` (the one place a
    run's sigma is read from); a ValueError for a method trained without one."""
    sigma = config.method_params.get("sigma")
    if sigma is None:
        raise ValueError(f"sigma is required: the run's method {config.method!r} has no training sigma")
    return float(sigma)


@dataclass(frozen=True, kw_only=True)
class RunCertification:
    """One certification of a stored run: CERTIFY ``settings`` on ``n_points`` examples of ``split``
    (:func:`certify_indices`), noise from ``seed``, of checkpoint ``which`` ('last', as the
    references certify the final model, or 'best'), at noise level ``sigma`` (None: the run's own
    training sigma).  Everything but ``settings.batch_size`` goes into the file name."""

    settings: CertifySettings
    n_points: int
    sigma: float | None = None
    seed: int = 0
    split: str = "test"
    which: str = DEFAULT_CHECKPOINT

    def __post_init__(self) -> None:
        if not isinstance(self.settings, CertifySettings):
            raise ValueError(f"settings must be a CertifySettings, got {type(self.settings).__name__}")
        check.positive_int("n_points", self.n_points)
        if self.sigma is not None:
            check.positive("sigma", self.sigma)
        check.integer("seed", self.seed, low=0)
        check.choice("split", self.split, data_mod.SPLITS)
        check.choice("which", self.which, WHICH)

    def sigma_of(self, config: Any) -> float:
        """The noise level certified for a run of ``config``: ``sigma``, else :func:`run_sigma`."""
        return float(self.sigma) if self.sigma is not None else run_sigma(config)

    def params(self, config: Any) -> dict[str, Any]:
        """:func:`certify_params` of this certification of a run of ``config``."""
        s = self.settings
        return certify_params(split=self.split, n_points=self.n_points, n0=s.n0, n=s.n, alpha=s.alpha,
                              sigma=self.sigma_of(config), seed=self.seed, which=self.which)


def certify_file_name(params: Mapping[str, Any], shard: tuple[int, int] | None = None) -> str:
    """``certify-<hash of params>.tsv`` (the file the notebooks read), or the name of shard
    ``(k, shards)`` of it, ``certify-<hash>.shard<k>-of-<shards>.tsv``."""
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


def _shard_slice(n_points: int, k: int, shards: int) -> slice:
    return slice(k * n_points // shards, (k + 1) * n_points // shards)


def certify_indices(size: int, n_points: int, shard: tuple[int, int] | None = None) -> list[int]:
    """The examples a run certifies: every ``size // n_points``-th of a split of ``size`` from 0
    (the reference's ``--skip``); with ``shard=(k, shards)``, the k-th of ``shards`` contiguous
    ranges of that list (equal up to one example)."""
    if n_points > size:
        raise ValueError(f"n_points must be <= {size} (the size of the split), got {n_points}")
    indices = list(range(0, size, size // n_points))[:n_points]
    if shard is None:
        return indices
    return indices[_shard_slice(n_points, *_check_shard(shard))]


def _check_run(run: Any, certification: Any) -> None:
    if not hasattr(run, "dir") or not hasattr(run, "load_model"):
        raise ValueError(f"run must be a rs_lib.train.Run (from run_training), got {type(run).__name__}")
    if not isinstance(certification, RunCertification):
        raise ValueError(f"certification must be a RunCertification, got {type(certification).__name__}")


def certify_run(run: Any, certification: RunCertification, *, shard: tuple[int, int] | None = None,
                device: str | torch.device = "auto", compile: bool = False, progress: bool = True
                ) -> pd.DataFrame:
    """CERTIFY a stored run's model as ``certification`` says; cached in the run's directory.

    Returns ``read_certify_tsv`` of ``<run>/certify-<hash>.tsv`` (column ``idx`` = dataset index),
    the hash covering :func:`certify_params` but not ``batch_size``, the device or ``compile``
    (``Smooth``'s speed option for large n), which do not change what is certified.  A finished file
    is read back (a re-render of a notebook), a killed one finished (``certify_dataset``'s resume).

    ``shard=(k, shards)`` certifies only the k-th contiguous range of the examples into its own
    file (:func:`certify_file_name`); :func:`merge_certify_run` then writes the run's file from all
    shards.  The noise of each example depends on ``(seed, idx)`` alone, so the merged file equals a
    single-process one row for row (``time`` aside).
    """
    _check_run(run, certification)
    params = certification.params(run.config)
    n_points = certification.n_points
    whole = run.dir.file(certify_file_name(params))
    if shard is None:
        _record.lookup(run.dir.path.parent.name, f"{run.dir.path.name}/{whole.name}")
    if whole.exists():
        tsv.check_certify_output(whole)
        finished = tsv.read_certify_tsv(whole)
        if len(finished) == n_points:
            if shard is None:
                return finished
            # the indices ascend, so shard k is this slice of rows
            return finished.iloc[_shard_slice(n_points, *_check_shard(shard))].reset_index(drop=True)
    path = whole if shard is None else run.dir.file(certify_file_name(params, shard))
    lock.check_writable(f"certification {path.name!r} ({n_points} points, n {params['n']}, sigma "
                        f"{params['sigma']}) of run {run.dir.path}")
    return _certify_file(run, certification, params, path, shard=shard, device=device, compile=compile,
                         progress=progress)


def _certify_file(run: Any, certification: RunCertification, params: dict[str, Any], path: Path, *,
                  shard: tuple[int, int] | None, device: str | torch.device, compile: bool,
                  progress: bool) -> pd.DataFrame:
    dataset_name = run.config.dataset
    split = data_mod.load(dataset_name, params["split"])
    try:
        indices = certify_indices(len(split), params["n_points"], shard)
    except ValueError:
        raise ValueError(f"n_points must be <= {len(split)} (the size of {dataset_name} "
                         f"'{params['split']}'), got {params['n_points']}") from None
    model = run.load_model(params["which"], device=device)
    smooth = Smooth(model, data_mod.dataset_info(dataset_name).num_classes, params["sigma"], compile=compile)
    images, labels = split.tensors("cpu")
    return dataset.certify_dataset(smooth, images, labels, settings=certification.settings, out_path=path,
                                   select=Selection(indices=indices), seed=params["seed"], progress=progress)


def merge_certify_run(run: Any, certification: RunCertification, *, shards: int) -> pd.DataFrame:
    """Write a run's certification file (the one :func:`certify_run` reads) from its ``shards``
    shard files, each complete, atomically; return it.  A missing or unfinished shard is a
    ValueError naming it, before anything is written."""
    _check_run(run, certification)
    check.positive_int("shards", shards)
    params = certification.params(run.config)
    n_points = params["n_points"]
    paths = [run.dir.file(certify_file_name(params, (k, shards))) for k in range(shards)]
    for k, path in enumerate(paths):
        rows = len(range(n_points)[_shard_slice(n_points, k, shards)])
        done = len(tsv.read_certify_tsv(path)) if path.is_file() else 0
        if done != rows:
            raise ValueError(f"certify shard {str(path)!r} has {done} of its {rows} rows; run its "
                             "certify_shard job first")
    settings = []
    for path in paths:
        tsv.check_certify_output(path)
        settings.append({k: v for k, v in tsv.read_meta(path).items() if k not in ("complete", "device_type")})
    if any(other != settings[0] for other in settings[1:]):
        raise ValueError(f"the shards of {certify_file_name(params)} were certified with different settings; "
                         "discard them (python -m rs_lib discard FILE) and re-run their certify_shard jobs")
    whole = run.dir.file(certify_file_name(params))
    if certify_complete(whole, n_points):
        return tsv.read_certify_tsv(whole)            # merged before
    lock.check_writable(f"certification {whole.name!r} (the merge of {shards} shards) of run {run.dir.path}")
    tmp = whole.with_name(f".{whole.name}.merge.tmp")
    with lock.hold(whole.with_name(whole.name + ".lock"), what=f"merge into {whole}"):
        try:
            tsv.merge_certify_tsv(paths, tmp)
            merged = tmp.read_bytes()
            # verified like a file certified in one process: the shards' settings and its digest;
            # the sidecar first, so that a kill before the TSV is replaced leaves a sidecar that is ours
            tsv.write_meta(whole, {**settings[0], "shards": shards, "merged_from": [p.name for p in paths],
                                   "complete": {"size": len(merged), "sha256": hashlib.sha256(merged).hexdigest()}})
            store.atomic_write_bytes(whole, merged)
        finally:
            tmp.unlink(missing_ok=True)
    return tsv.read_certify_tsv(whole)


def certify_complete(path: str | Path, rows: int) -> bool:
    """Whether ``path`` is a finished certify TSV of ``rows`` rows, as written (its settings file
    says so and its digest matches)."""
    path = Path(path)
    if not path.is_file() or not tsv.meta_path(path).is_file():
        return False
    try:
        tsv.check_certify_output(path)
        return tsv.read_meta(path).get("complete") is not None and len(tsv.read_certify_tsv(path)) == rows
    except ValueError:
        return False
