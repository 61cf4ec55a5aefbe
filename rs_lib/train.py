"""One training loop for every method.

The loop owns what all methods share: data order and augmentation, the optimiser and its
per-iteration learning-rate schedule, AMP, the hyperparameter warm-up factor, per-iteration
metrics, per-epoch validation metrics, wall time per epoch (training only), a full-state
checkpoint every epoch, resume, and best-on-validation selection.  What differs between methods
is the objective (:mod:`rs_lib.methods`), looked up by name.

Determinism: the data order and the method's randomness of epoch ``e`` come from generators
seeded with ``(seed, e)``, and the global RNG state (dropout) is checkpointed, so a run killed
after epoch k and resumed ends with the same weights and metrics as an uninterrupted run (CPU).

Several processes (``torchrun``, or a submitit SLURM job with several tasks) train one run data
parallel (:mod:`rs_lib.distributed`): each rank takes its part of every global batch of
``batch_size``, gradients are summed over ranks once per step, rank 0 alone writes the store.
BatchNorm keeps per-rank batch statistics, as the references' ``nn.DataParallel`` (no
SyncBatchNorm), with rank 0's running statistics on every rank; the methods' draws are made for the
whole global batch on every rank, so N processes give the 1-process weights up to float rounding
for BatchNorm-free models.  ``Control(max_iterations=...)`` cuts a run short for the paper-path
smoke tests.

Public names: :class:`TrainConfig` (every field with its help: the CLI's ``train`` flags),
:func:`run_training` and its :class:`Control`, :class:`Run` (``Run.open(path_or_checkpoint)``,
``load_model(which)`` with one default, :data:`DEFAULT_CHECKPOINT`, and ``cached``, the cached
evaluation of :meth:`rs_lib.store.RunDir.cached`), :func:`run_dir_for` (a configuration's store key),
:func:`cached_name`, :func:`config_from_json`, :func:`build_model_for`, :func:`lr_factor` (the
warm-up factor is :func:`rs_lib.methods.warmup_factor`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from . import _record
from . import _validate as check
from . import data as data_mod
from . import distributed
from . import evaluate as evaluate_mod
from . import lock
from . import methods as methods_mod
from . import models as models_mod
from . import store

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "piecewise", "cyclic", "cosine")
WARMUP_BY = ("iteration", "epoch")


#: The model's normalisation layer per ``TrainConfig.normalization``: (mean, std), or None for the
#: dataset's own statistics (`data.DatasetInfo`). The references' constants: Cohen et al.'s
#: ``datasets.py`` (also SmoothAdv's and SmoothMix's) for CIFAR-10; SmoothMix's MNIST LeNet has none.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "dataset": None,
    "none": ((0.0,), (1.0,)),
    "cohen_cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}


#: Key of a field's help text in its metadata (the CLI's ``train`` flags are made from the fields).
HELP = "help"


def _option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
            added: bool = False) -> Any:
    """A :class:`TrainConfig` field with its ``help`` (shown by ``python -m rs_lib train --help``);
    ``added``: an option added later, left out of the stored config at its default
    (:func:`rs_lib.methods.added_option`)."""
    metadata = {HELP: help, **({methods_mod.OMIT_DEFAULT: True} if added else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's result (and so its store hash).

    Each field's help (its unit, its range) is in its metadata (:data:`HELP`), which the CLI's
    ``train`` flags show; the fields are the only place their defaults are written.  Backward
    Smoothing's ``stage`` schedule is ``schedule="piecewise"`` with ``milestones=(0.5, 0.75)``
    (epochs 50 and 75 of 100); Wong et al.'s one-cycle is ``"cyclic"`` peaking at ``peak``;
    SmoothAdv's warm-up is ``warmup_by="epoch"``.  The randomized-smoothing references train on the
    whole training split and take the last epoch (``full_train_set=True``): the per-epoch validation
    then measures images the model trains on, a progress log rather than a model selection.
    """

    method: str = _option("standard", "training objective (see `python -m rs_lib list`)")
    method_params: Mapping[str, Any] = _option(factory=dict, help="the method's hyperparameters over its paper "
                                               "defaults, e.g. sigma=0.5")
    dataset: str = _option("fashion-mnist", "dataset (see `python -m rs_lib list`)")
    model: str = _option("small_cnn", "architecture (see `python -m rs_lib list`)")
    epochs: int = _option(10, "training epochs")
    batch_size: int = _option(128, "global batch size (shared out among torchrun's processes)")
    n_train: int | None = _option(None, "first N training images (default: all)")
    val_size: int | None = _option(None, "validation images held out of the training split (default: "
                                   "the dataset's, rs_lib.data)")
    n_val: int | None = _option(1000, "size of the fixed validation subset measured after every epoch "
                                "(None: all held-out images)")
    augment: bool = _option(True, "the dataset's augmentation (random crop / flip)")
    optimizer: str = _option("sgd", "sgd or adam")
    lr: float = _option(0.1, "base learning rate (piecewise, cosine, constant) or peak one (cyclic)")
    momentum: float = _option(0.9, "SGD momentum, in [0, 1)")
    nesterov: bool = _option(False, "Nesterov momentum (SGD)")
    weight_decay: float = _option(5e-4, "L2 weight decay")
    schedule: str = _option("piecewise", "learning-rate schedule: constant, piecewise, cyclic or cosine")
    milestones: tuple[float, ...] = _option((0.5, 0.75), "piecewise: increasing fractions of all iterations "
                                            "at which the lr is multiplied by lr_decay")
    lr_decay: float = _option(0.1, "piecewise: the lr multiplier at each milestone")
    peak: float = _option(0.4, "cyclic: fraction of iterations at which the triangular 0 -> lr -> 0 "
                          "schedule peaks, in [0, 1) (0: decay from the start)")
    warmup_epochs: float = _option(0.0, "epochs over which the methods' warm-up factor (e.g. of eps) "
                                   "ramps linearly from 0 to 1 (0: none)")
    warmup_by: str = _option("iteration", "warm-up per 'iteration', or per 'epoch' as (epoch + 1) / "
                             "warmup_epochs (SmoothAdv's rule)")
    amp: bool = _option(False, "mixed precision (CUDA only)")
    val_metrics: tuple[str, ...] = _option(("clean",), "per-epoch validation metrics (rs_lib.evaluate)")
    eval_params: Mapping[str, Any] = _option(factory=dict, help="validation metrics' parameters, e.g. eps=0.03")
    select_on: str = _option("clean", "validation metric that picks the best epoch")
    seed: int = _option(0, "seed of the initialisation, the data order and the methods' draws")
    keep_epochs: tuple[int, ...] = _option((), "0-based epochs whose weights are kept as "
                                           "checkpoint_epoch<e>.pt besides the best and last ones")
    full_train_set: bool = _option(False, "train on the whole training split, validation images included "
                                   "(the randomized-smoothing references)", added=True)
    normalization: str = _option("dataset", "the model's first layer (NORMALIZATIONS): 'dataset' (its "
                                 "statistics), 'none' (SmoothMix's MNIST LeNet) or 'cohen_cifar10' (Cohen "
                                 "et al.'s and SmoothAdv's constants)", added=True)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("milestones", tuple(self.milestones))
        set_("val_metrics", tuple(self.val_metrics))
        set_("keep_epochs", tuple(self.keep_epochs))
        set_("method_params", dict(self.method_params))
        set_("eval_params", dict(self.eval_params))
        check.choice("method", self.method, sorted(methods_mod.METHODS))
        methods_mod.method_config(self.method, self.method_params)
        check.choice("dataset", self.dataset, data_mod.DATASETS)
        check.choice("model", self.model, models_mod.MODELS)
        check.positive_int("epochs", self.epochs)
        check.positive_int("batch_size", self.batch_size)
        for name in ("n_train", "val_size", "n_val"):
            if getattr(self, name) is not None:
                check.positive_int(name, getattr(self, name))
        check.choice("optimizer", self.optimizer, OPTIMIZERS)
        check.positive("lr", self.lr)
        check.number("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        check.non_negative("weight_decay", self.weight_decay)
        check.choice("schedule", self.schedule, SCHEDULES)
        for m in self.milestones:
            check.probability("milestones", m)
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing fractions of training, got {self.milestones}")
        check.probability("lr_decay", self.lr_decay)
        check.number("peak", self.peak, low=0.0, high=1.0, high_open=True)   # 0: decay from the start
        check.non_negative("warmup_epochs", self.warmup_epochs)
        check.choice("warmup_by", self.warmup_by, WARMUP_BY)
        if not self.val_metrics:
            raise ValueError("val_metrics must name at least one validation metric")
        evaluate_mod.metric_params(self.val_metrics, self.eval_params)
        check.choice("select_on", self.select_on, self.val_metrics)
        check.integer("seed", self.seed, low=0, high=2**63 - 1)
        for e in self.keep_epochs:
            check.integer("keep_epochs", e, low=0, high=self.epochs - 1)
        check.choice("normalization", self.normalization, sorted(NORMALIZATIONS))
        if self.full_train_set and self.n_train is not None:
            raise ValueError("full_train_set=True trains on every training image: leave n_train unset (None)")
        for name in ("augment", "nesterov", "amp", "full_train_set"):
            check.flag(name, getattr(self, name))

    @property
    def method_cfg(self) -> Any:
        return methods_mod.method_config(self.method, self.method_params)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration: method parameters with their defaults filled in (options added
        later only when set: `methods.resolved_params`)."""
        out = methods_mod.resolved_params(self)
        out["method_params"] = methods_mod.resolved_params(self.method_cfg)
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def lr_factor(cfg: TrainConfig, iteration: int, total: int) -> float:
    """Learning-rate multiplier at ``iteration`` (0-based) of ``total`` iterations."""
    t = iteration / total
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "piecewise":
        return cfg.lr_decay ** sum(t >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    # cyclic: triangular 0 -> 1 at `peak` -> 0 at the end (Wong et al.'s one-cycle)
    return t / cfg.peak if t < cfg.peak else max(0.0, (1.0 - t) / (1.0 - cfg.peak))


def _seed(seed: int, epoch: int, stream: int) -> int:
    return (seed * 1_000_003 + epoch * 101 + stream) % (2**63 - 1)


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_model_for(cfg: TrainConfig, info: data_mod.DatasetInfo) -> nn.Module:
    mean, std = NORMALIZATIONS[cfg.normalization] or (info.mean, info.std)
    return models_mod.build_model(cfg.model, in_channels=info.shape[0], num_classes=info.num_classes,
                                  mean=mean, std=std, image_size=tuple(info.shape[1:]))


#: The checkpoints every finished run holds: the best epoch on validation and the last one.
CHECKPOINTS = ("best", "last")

#: The checkpoint a stored run's model is read from when the caller names none (:meth:`Run.load_model`,
#: ``python -m rs_lib certify/evaluate --which``): the last epoch's, because the randomized-smoothing
#: papers certify the final model (Cohen et al., SmoothAdv, SmoothMix train on the whole training
#: set, with no model selection).  Backward Smoothing's tables report both 'best' and 'last'; its
#: callers name the one they read.
DEFAULT_CHECKPOINT = "last"


@dataclass
class Run:
    """A finished (or loaded) run: its directory, config, summary and checkpoints.

    ``checkpoint``: the file a Run opened from a checkpoint file (:meth:`open`) reads its model
    from; None for a run of the store, whose model is one of :data:`CHECKPOINTS` or a kept epoch."""

    dir: store.RunDir
    config: TrainConfig
    checkpoint: str | None = None

    @classmethod
    def open(cls, path_or_checkpoint: str | Path, *, name: str = "path") -> Run:
        """The stored run of a run directory ``results/<experiment>/<hash>/`` (verified as a
        finished run), or the run of a checkpoint file ``checkpoint_*.pt`` (its configuration inside
        the file or in ``config.json`` beside it; its digest checked if it sits in a run folder).
        Every problem is a ValueError naming ``name`` and the path, before any model is built."""
        path = Path(path_or_checkpoint)
        if not path.is_file() and path.suffix != ".pt":
            rd = store.open_run_dir(path, name)
            return cls(rd, _config_of(rd.read_json(store.CONFIG), rd.path / store.CONFIG))
        state = _read_checkpoint(path, name)
        config_path = path.parent / store.CONFIG
        if isinstance(state.get("config"), dict):
            config = state["config"]
        elif config_path.is_file():
            config = store.read_json(config_path)
        else:
            raise ValueError(f"no configuration for {name} {str(path)!r}: expected {store.CONFIG} "
                             "beside it (keep the checkpoint in its run folder)")
        return cls(store.RunDir(path.parent, dict(config)), _config_of(config, config_path), checkpoint=path.name)

    @property
    def summary(self) -> dict:
        return self.dir.summary

    def load_model(self, which: str | int | None = None, *, device: str | torch.device = "cpu") -> nn.Module:
        """The model of the ``which`` checkpoint in eval mode: 'best' (on validation), 'last', or a
        kept epoch number; None: the opened checkpoint file, else :data:`DEFAULT_CHECKPOINT`.  The
        checkpoint's digest is checked first (:class:`store.DamagedRunError` if not whole)."""
        name = self._checkpoint_name(which)
        device = check.resolve_device("device", device)
        model = build_model_for(self.config, data_mod.dataset_info(self.config.dataset))
        state = self.dir.load_torch(name) if self.checkpoint is None else _read_checkpoint(self.dir.file(name))
        try:
            model.load_state_dict(state["model"])
        except (KeyError, TypeError, RuntimeError, AttributeError) as err:
            problem = (f"does not hold weights of a {self.config.model} for {self.config.dataset} "
                       f"({str(err).splitlines()[0].strip()})")
            if self.checkpoint is None:
                raise store.DamagedRunError(self.dir.path, name, problem) from None
            raise ValueError(f"{self.dir.file(name)} {problem}; give the checkpoint of this run") from None
        return model.to(device).eval()

    def _checkpoint_name(self, which: str | int | None) -> str:
        if self.checkpoint is not None:
            if which is not None:
                raise ValueError(f"which={which!r}: this run was opened from the checkpoint file "
                                 f"{self.dir.file(self.checkpoint)}, which is the model it reads")
            return self.checkpoint
        which = DEFAULT_CHECKPOINT if which is None else which
        if isinstance(which, int) and not isinstance(which, bool):
            check.choice("which", which, self.config.keep_epochs)
            return f"checkpoint_epoch{which}.pt"
        check.choice("which", which, CHECKPOINTS)
        return f"checkpoint_{which}.pt"

    def cached(self, name: str, params: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
        """``compute()`` cached in the run's folder as ``<name>-<hash of params>.json``
        (:meth:`store.RunDir.cached`, the one mechanism for results computed from a stored run)."""
        return self.dir.cached(name, params, compute)

    def iterations(self):
        """Per-iteration metrics as a DataFrame."""
        import pandas as pd

        return pd.DataFrame([r for r in self.dir.read_jsonl("metrics.jsonl") if r["kind"] == "iter"])

    def epochs(self):
        """Per-epoch metrics (training time, validation metrics) as a DataFrame."""
        import pandas as pd

        return pd.DataFrame([r for r in self.dir.read_jsonl("metrics.jsonl") if r["kind"] == "epoch"])


def _read_checkpoint(path: Path, name: str = "checkpoint") -> dict[str, Any]:
    """The content of a checkpoint file of a run: verified against its run's manifest if it sits in
    a run folder; a file that is not an rs_lib checkpoint is a ValueError naming it."""
    if not path.is_file():
        raise ValueError(f"{name} {str(path)!r} does not exist or is not a file; give a "
                         "checkpoint_*.pt of a run")
    if (path.parent / store.MANIFEST).is_file():   # inside a run: check its recorded digest
        rd = store.RunDir(path.parent, {})
        rd.verify_config()
        rd.verified_file(path.name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - pickle/zip errors have no common base
        raise ValueError(f"{name} {str(path)!r} is not a PyTorch checkpoint ({str(err).splitlines()[0]}); "
                         "give a checkpoint_*.pt of a run") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{name} {str(path)!r} is not an rs_lib checkpoint (no 'model' entry); "
                         "give a checkpoint_*.pt of a run")
    return state


def _config_of(config: Any, where: Path) -> TrainConfig:
    try:
        return config_from_json(config)
    except TypeError as err:
        raise ValueError(f"{where} is not a training configuration ({err})") from None


EpochCallback = Callable[[int, dict], None]


DATA_FINGERPRINT = "data_fingerprint"


#: The file name of :meth:`Run.cached`'s result ``name`` at ``params`` in a run's directory.
cached_name = store.cached_name


def run_dir_for(cfg: TrainConfig, *, experiment: str = "adhoc", root: str | Path | None = None,
                data_root: str | Path | None = None) -> store.RunDir:
    """The store directory of ``cfg``: the one place that maps a configuration to its run's key
    (the notebooks, the CLI and the sweep's plan all find a run through it).

    The key is the hash of the resolved configuration plus the fingerprint of the training data
    (:func:`rs_lib.data.fingerprint`), so a run trained on other data is another run.  Raises
    :class:`rs_lib.data.DatasetNotFoundError` if the data are not there to fingerprint."""
    if data_root is not None:
        check.directory("data_root", data_root)
    fingerprint = data_mod.fingerprint(cfg.dataset, root=data_root)
    return store.run_dir(experiment, {**cfg.to_dict(), DATA_FINGERPRINT: fingerprint}, root=root)


def config_from_json(config: Mapping[str, Any]) -> TrainConfig:
    """The TrainConfig of a stored ``config.json`` (its data fingerprint set aside)."""
    return TrainConfig(**{k: v for k, v in config.items() if k != DATA_FINGERPRINT})


@dataclass(frozen=True)
class Control:
    """How a caller steers one training beyond its configuration (neither changes the run's key).

    ``on_epoch_end(epoch, row)``: called after every epoch's checkpoint with its metrics row (the
    tests kill a run there).  ``max_iterations``: stop after that many optimiser steps, the
    paper-path smoke test (see :func:`run_training`)."""

    on_epoch_end: EpochCallback | None = None
    max_iterations: int | None = None

    def __post_init__(self) -> None:
        if self.on_epoch_end is not None and not callable(self.on_epoch_end):
            raise ValueError(f"on_epoch_end must be a callable (epoch, row) -> None, got {self.on_epoch_end!r}")
        if self.max_iterations is not None:
            check.positive_int("max_iterations", self.max_iterations)


def run_training(cfg: TrainConfig, *, experiment: str = "adhoc", root: str | Path | None = None,
                 data_root: str | Path | None = None, device: str | torch.device = "auto",
                 threads: int | None = None, progress: bool = True, control: Control = Control()) -> Run:
    """Train ``cfg`` into the run store, or return the stored run if it already finished.

    Every argument is validated and the data are loaded before anything is written, so bad input
    leaves the store untouched.  An unfinished run directory is resumed from its last checkpoint.
    Training holds the run's lock (:mod:`rs_lib.lock`): a second process on the same run waits and
    then returns the finished run; in read-only mode a missing run raises ``MissingResultError``.

    Several processes: started by ``torchrun`` (or submitit's ``TorchDistributedEnvironment``),
    which set ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT``, the
    processes train one run data-parallel (:mod:`rs_lib.distributed`): the global batch is
    ``cfg.batch_size``, each rank takes ``batch_size / world_size`` of it, rank 0 alone writes the
    store.  The key does not depend on the number of processes; ``env.json`` records it.

    ``control.max_iterations`` (:class:`Control`): stop after that many optimiser steps (counted
    from the start of training) and validate on one batch: the paper-path smoke test of every code path (``plan.run_job(job,
    max_iterations=2)``).  It is only allowed with an explicit scratch ``root`` that is not the
    configured store (``$RS_RESULTS`` or ``results/``), so a cut-short run never sits under the real
    store's key; its summary and checkpoints say ``"max_iterations"``, and a run asked for without
    the same ``max_iterations`` refuses such a directory instead of taking it as finished.
    """
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if not isinstance(control, Control):
        raise ValueError(f"control must be a rs_lib.train.Control, got {type(control).__name__}")
    max_iterations = control.max_iterations
    world = distributed.world_from_env()
    device = distributed.device_for(world, check.resolve_device("device", device))
    if threads is not None:
        check.positive_int("threads", threads)
    if cfg.amp and device.type != "cuda":
        raise ValueError("amp=True needs a CUDA device (mixed precision is not used on CPU)")
    distributed.check_batch(world, cfg.batch_size)
    if max_iterations is not None:
        _check_scratch_root(root)
    run_dir = run_dir_for(cfg, experiment=experiment, root=root, data_root=data_root)
    _record.lookup(experiment, run_dir.path.name)
    run = Run(run_dir, cfg)
    run_dir.verify_config()
    if run_dir.finished:
        run_dir.verify()
        _check_same_cut(run_dir.path, run_dir.summary.get("max_iterations"), max_iterations)
        return run
    lock.check_writable(f"training run {run_dir.path} ({cfg.method} {cfg.model} on {cfg.dataset}, seed {cfg.seed})")
    store.ensure_writable(run_dir.path)
    if threads is not None:
        torch.set_num_threads(threads)
    n_val = cfg.n_val if max_iterations is None else min(cfg.n_val or cfg.batch_size, cfg.batch_size)
    train_data = data_mod.load(cfg.dataset, "train", root=data_root, n=cfg.n_train, val_size=cfg.val_size)
    val_data = data_mod.load(cfg.dataset, "val", root=data_root, n=n_val, val_size=cfg.val_size)
    if cfg.full_train_set:
        held_out = data_mod.load(cfg.dataset, "val", root=data_root, val_size=cfg.val_size)
        train_data = data_mod.ImageData(torch.cat([train_data.images, held_out.images]),
                                        torch.cat([train_data.labels, held_out.labels]), train_data.info)
    distributed.check_batch(world, cfg.batch_size, len(train_data))
    distributed.init(world, device)
    # Rank 0 holds the run's lock for all ranks; after waiting for it, every rank learns whether
    # another process finished the run meanwhile.
    held = lock.hold(run_dir.path / lock.RUN_LOCK, what=f"run {run_dir.path}") if world.is_main \
        else contextlib.nullcontext()
    with held:
        if distributed.broadcast_object(world, run_dir.finished):   # trained by another process meanwhile
            run_dir.verify()
            _check_same_cut(run_dir.path, run_dir.summary.get("max_iterations"), max_iterations)
            return run
        if world.is_main:
            run_dir.create()
            run_dir.write_json("env.json", {**store.environment(device, torch.get_num_threads(),
                                                                data_fingerprint=run_dir.config[DATA_FINGERPRINT]),
                                            "world_size": world.size})
        _Trainer(cfg, run_dir, (train_data, val_data), device, progress, control, world=world).fit()
    return run


def _check_scratch_root(root: str | Path | None) -> None:
    """``max_iterations`` runs go to an explicit root other than the configured store."""
    if root is None or store.results_root(root).resolve() == store.results_root(None).resolve():
        raise ValueError(f"max_iterations (a smoke run cut short) needs an explicit scratch root= other than "
                         f"the run store {store.results_root(None)}, so that it never stands in the store "
                         f"for the finished run of its configuration")


def _check_same_cut(path: Path, stored: int | None, wanted: int | None) -> None:
    if stored is not None and stored != wanted:
        raise ValueError(f"{path} holds a smoke run cut short at max_iterations={stored}, not a finished "
                         f"run of this configuration: train into another root, or delete that directory")


class _Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: store.RunDir,
                 data: tuple[data_mod.ImageData, data_mod.ImageData], device: torch.device, progress: bool,
                 control: Control, *, world: distributed.World = distributed.World()):
        self.cfg, self.dir, self.device = cfg, run_dir, device
        self.train_data, self.val_data = data
        self.world, self.max_iterations = world, control.max_iterations
        self.progress, self.on_epoch_end = progress and world.is_main, control.on_epoch_end
        self.method = methods_mod.get_method(cfg.method)
        self.method_cfg = cfg.method_cfg
        self.info = self.train_data.info
        torch.manual_seed(cfg.seed)
        self.model = build_model_for(cfg, self.info).to(device)
        distributed.seed_rank_rng(world, cfg.seed)   # after the (identical) initialisation
        self.optimizer = build_optimizer(cfg, self.model)
        self.iters_per_epoch = data_mod.num_batches(len(self.train_data), cfg.batch_size, drop_last=False)
        self.total_iters = self.iters_per_epoch * cfg.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: lr_factor(cfg, it, self.total_iters))
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp)
        self.start_epoch, self.best = 0, {"value": -math.inf, "epoch": None}
        self.stopped = False
        self._resume()
        distributed.broadcast_parameters(world, self.model)

    # -- checkpoints -------------------------------------------------------------------------
    def _resume(self) -> None:
        path = self.dir.file("checkpoint_last.pt")
        if not path.exists():
            if self.world.is_main:
                self.dir.write_jsonl("metrics.jsonl", [])
            return
        state = self.dir.load_torch("checkpoint_last.pt", verify=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _check_same_cut(path, state.get("max_iterations"), self.max_iterations)
        self._set_rng(state["rng"])
        self.start_epoch, self.best = state["epoch"] + 1, state["best"]
        if self.world.is_main:
            # Lines logged after the last checkpoint belong to an epoch that will be redone.
            rows = [r for r in self.dir.read_jsonl("metrics.jsonl", drop_torn_tail=True)
                    if r["epoch"] < self.start_epoch]
            self.dir.write_jsonl("metrics.jsonl", rows)

    def _rng_state(self) -> dict[str, Any]:
        """The global RNG state (dropout) of every rank; the top level is rank 0's."""
        mine = {"cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        if not self.world.distributed:
            return {"cpu": mine["cpu"],
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None}
        ranks = distributed.gather_objects(self.world, mine)
        return {**ranks[0], "ranks": ranks}

    def _set_rng(self, rng: Mapping[str, Any]) -> None:
        ranks = rng.get("ranks")
        if self.world.distributed:
            # The same world size continues each rank's stream; another keeps the fresh per-rank seeds.
            if ranks is not None and len(ranks) == self.world.size:
                torch.set_rng_state(ranks[self.world.rank]["cpu"].cpu())
                if ranks[self.world.rank]["cuda"] is not None and self.device.type == "cuda":
                    torch.cuda.set_rng_state(ranks[self.world.rank]["cuda"].cpu(), self.device)
            return
        torch.set_rng_state(rng["cpu"].cpu())
        if rng.get("cuda") is not None and torch.cuda.is_available() and ranks is None:
            torch.cuda.set_rng_state_all(rng["cuda"])

    def _checkpoint(self, epoch: int, improved: bool) -> None:
        rng = self._rng_state()   # a collective: every rank takes part
        if not self.world.is_main:
            return
        if epoch in self.cfg.keep_epochs:
            self.dir.save_torch(f"checkpoint_epoch{epoch}.pt", {"model": self.model.state_dict(), "epoch": epoch})
        if improved:
            self.dir.save_torch("checkpoint_best.pt",
                                {"model": self.model.state_dict(), "epoch": epoch, "best": self.best})
        self.dir.save_torch("checkpoint_last.pt", {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": rng, "epoch": epoch, "best": self.best, "config": dict(self.dir.config),
            "max_iterations": self.max_iterations})

    # -- one epoch ---------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        cfg, model, world = self.cfg, self.model, self.world
        data_gen = torch.Generator().manual_seed(_seed(cfg.seed, epoch, 0))
        method_gen = torch.Generator(device=self.device).manual_seed(_seed(cfg.seed, epoch, 1))
        batches = data_mod.batches(self.train_data, cfg.batch_size, shuffle=True, augment=cfg.augment,
                                   generator=data_gen, device=self.device,
                                   shard=(world.rank, world.size) if world.distributed else None)
        rows, loss_sum = [], 0.0
        model.train()
        self._sync()
        start = time.perf_counter()
        bar = tqdm(batches, total=self.iters_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not self.progress, leave=False, file=sys.stderr, mininterval=1.0)
        for i, (x, y) in enumerate(bar):
            it = epoch * self.iters_per_epoch + i
            if self.max_iterations is not None and it >= self.max_iterations:
                self.stopped = True
                break
            progress = it / self.iters_per_epoch
            ctx = methods_mod.StepContext(epoch=epoch, iteration=it, progress=progress, generator=method_gen,
                                          num_classes=self.info.num_classes,
                                          warmup=methods_mod.warmup_factor(cfg.warmup_epochs, epoch, progress,
                                                                       by=cfg.warmup_by))
            n_global = min(cfg.batch_size, len(self.train_data) - i * cfg.batch_size)
            loss, stats = self._step(x, y, ctx, n_global)
            if not math.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss} at epoch {epoch}, iteration {i}")
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            row = {"kind": "iter", "epoch": epoch, "iter": it, "loss": loss, "lr": lr, "warmup": ctx.warmup}
            row.update(stats)
            rows.append(row)
            loss_sum += row["loss"]
        if self.max_iterations is not None and (epoch + 1) * self.iters_per_epoch >= self.max_iterations:
            self.stopped = True
        self._sync()
        elapsed = time.perf_counter() - start
        if world.is_main:
            self.dir.append_jsonl("metrics.jsonl", rows)
        return elapsed, loss_sum / max(1, len(rows))

    def _step(self, x: torch.Tensor, y: torch.Tensor, ctx: methods_mod.StepContext,
              n_global: int) -> tuple[float, dict[str, float]]:
        """One optimiser step on this rank's part of a global batch of ``n_global`` examples;
        returns the global batch's loss and statistics (one process: this batch's)."""
        model, world = self.model, self.world
        if world.distributed:
            start, stop = distributed.shard_bounds(n_global, world.rank, world.size)
            draws = distributed.SplitDraws(ctx.generator, start=start, stop=stop, n_global=n_global)
        else:
            draws = contextlib.nullcontext()
        with draws, torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.cfg.amp):
            out = self.method.objective(model, x, y, self.method_cfg, ctx)
        if not model.training:
            raise RuntimeError(f"method {self.cfg.method!r} left the model in eval mode")
        loss = out.loss
        if not world.distributed and not torch.isfinite(loss):
            return loss.item(), {}   # the caller raises; nothing stepped
        self.optimizer.zero_grad(set_to_none=True)
        if not world.distributed:
            self.scaler.scale(loss).backward()
            self._optimizer_step()
            return loss.item(), {k: float(v) for k, v in out.stats.items()}
        # Weighted by this rank's share, the ranks' gradients sum to the global batch's mean loss.
        weight = len(y) / n_global
        self.scaler.scale(loss * weight).backward()
        names = list(out.stats)
        local = torch.stack([loss.detach().float(), *(torch.as_tensor(out.stats[k], dtype=torch.float32,
                                                                      device=loss.device) for k in names)])
        values = distributed.average_gradients(world, model, local * weight).tolist()
        if math.isfinite(values[0]):
            self._optimizer_step()
            distributed.broadcast_buffers(world, model)
        return values[0], dict(zip(names, values[1:]))

    def _optimizer_step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _validate(self) -> dict[str, float]:
        batches = data_mod.batches(self.val_data, 500, shuffle=False, augment=False, device=self.device)
        return evaluate_mod.evaluate(self.model, batches, self.cfg.val_metrics, params=self.cfg.eval_params,
                                     seed=self.cfg.seed)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def fit(self) -> None:
        """Every epoch: train, validate (every rank, on identical weights: no rank waits on a
        collective through a long validation), checkpoint (rank 0 writes)."""
        cfg = self.cfg
        for epoch in range(self.start_epoch, cfg.epochs):
            if self.stopped:
                break
            train_time, train_loss = self._train_epoch(epoch)
            val = {f"val_{k}": v for k, v in self._validate().items()}
            score = val[f"val_{cfg.select_on}_acc"]
            improved = score > self.best["value"]
            if improved:
                self.best = {"value": score, "epoch": epoch}
            row = {"kind": "epoch", "epoch": epoch, "train_time": train_time, "train_loss": train_loss, **val}
            if self.world.is_main:
                self.dir.append_jsonl("metrics.jsonl", [row])
            self._checkpoint(epoch, improved)
            if self.progress:
                shown = ", ".join(f"{k} {v:.3f}" for k, v in val.items())
                print(f"epoch {epoch + 1}/{cfg.epochs}: loss {train_loss:.3f}, {shown}, {train_time:.1f}s",
                      file=sys.stderr)
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch, row)
        if self.world.is_main:
            if self.stopped:
                self._keep_uncovered_epochs()
            self._write_summary()
        distributed.barrier(self.world)   # every rank returns a finished run

    def _keep_uncovered_epochs(self) -> None:
        """A run cut short by ``max_iterations`` keeps its last weights as the kept epochs it did not
        reach, so that the analyses along training (e.g. the Hessian figure) run on it too."""
        reached = self.best["epoch"] if self.best["epoch"] is not None else -1
        last = max([reached, *[r["epoch"] for r in self.dir.read_jsonl("metrics.jsonl") if r["kind"] == "epoch"]])
        for epoch in self.cfg.keep_epochs:
            if epoch > last:
                self.dir.save_torch(f"checkpoint_epoch{epoch}.pt", {"model": self.model.state_dict(), "epoch": last,
                                                                    "max_iterations": self.max_iterations})

    def _write_summary(self) -> None:
        epochs = [r for r in self.dir.read_jsonl("metrics.jsonl") if r["kind"] == "epoch"]
        best = next(r for r in epochs if r["epoch"] == self.best["epoch"])
        passes = self.method.passes(self.method_cfg)
        self.dir.record("metrics.jsonl")
        summary = {
            "finished": True,
            "epochs": len(epochs),
            "best_epoch": self.best["epoch"],
            "select_on": cfg_key(self.cfg),
            "best": {k: v for k, v in best.items() if k.startswith("val_")},
            "last": {k: v for k, v in epochs[-1].items() if k.startswith("val_")},
            "train_time_per_epoch": [r["train_time"] for r in epochs],
            "train_time_total": sum(r["train_time"] for r in epochs),
            "passes_per_iteration": dataclasses.asdict(passes),
            "num_params": sum(p.numel() for p in self.model.parameters()),
            "world_size": self.world.size,
        }
        if self.max_iterations is not None:
            summary["max_iterations"] = self.max_iterations   # a smoke run, not the configuration's result
        self.dir.write_json(store.SUMMARY, summary)


def cfg_key(cfg: TrainConfig) -> str:
    return f"val_{cfg.select_on}_acc"
