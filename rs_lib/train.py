"""One training loop for every method.

The loop owns what all methods share: data order and augmentation, the optimiser and its
per-iteration learning-rate schedule, AMP, the hyperparameter warm-up factor, per-iteration
metrics, per-epoch validation metrics, wall time per epoch (training only), a full-state
checkpoint every epoch, resume, and best-on-validation selection.  What differs between methods
is the objective (:mod:`rs_lib.methods`), looked up by name.

Determinism: the data order and the method's randomness of epoch ``e`` come from generators
seeded with ``(seed, e)``, and the global RNG state (dropout) is checkpointed, so a run killed
after epoch k and resumed ends with the same weights and metrics as an uninterrupted run (CPU).
"""

from __future__ import annotations

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
from . import evaluate as evaluate_mod
from . import methods as methods_mod
from . import models as models_mod
from . import store

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "piecewise", "cyclic", "cosine")
WARMUP_BY = ("iteration", "epoch")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's result (and so its store hash).

    Units: ``lr`` is the base (piecewise, cosine, constant) or peak (cyclic) learning rate;
    ``milestones`` are fractions of all iterations at which the lr is multiplied by ``lr_decay``
    (0.5, 0.75 = epochs 50 and 75 of 100, Backward Smoothing's ``stage`` schedule); ``peak`` is
    the fraction of iterations at which the cyclic (triangular 0 → lr → 0) schedule peaks;
    ``warmup_epochs`` ramps the methods' warm-up factor linearly from 0 to 1 (per iteration, or
    per epoch as (epoch + 1) / warmup_epochs with ``warmup_by="epoch"``, SmoothAdv's rule).
    ``n_val`` is the size of the fixed validation subset used after every epoch.
    ``keep_epochs`` lists the (0-based) epochs whose weights are kept as ``checkpoint_epoch<e>.pt``
    besides the best and last ones (for analyses along training, e.g. the Hessian figure).
    """

    method: str = "standard"
    method_params: Mapping[str, Any] = field(default_factory=dict)
    dataset: str = "fashion-mnist"
    model: str = "small_cnn"
    epochs: int = 10
    batch_size: int = 128
    n_train: int | None = None
    val_size: int | None = None
    n_val: int | None = 1000
    augment: bool = True
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "piecewise"
    milestones: tuple[float, ...] = (0.5, 0.75)
    lr_decay: float = 0.1
    peak: float = 0.4
    warmup_epochs: float = 0.0
    warmup_by: str = "iteration"
    amp: bool = False
    val_metrics: tuple[str, ...] = ("clean",)
    eval_params: Mapping[str, Any] = field(default_factory=dict)
    select_on: str = "clean"
    seed: int = 0
    keep_epochs: tuple[int, ...] = ()

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
        for name in ("augment", "nesterov", "amp"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def method_cfg(self) -> Any:
        return methods_mod.method_config(self.method, self.method_params)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration: method parameters with their defaults filled in."""
        out = dataclasses.asdict(self)
        out["method_params"] = dataclasses.asdict(self.method_cfg)
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


def warmup_factor(cfg: TrainConfig, epoch: int, progress: float) -> float:
    if cfg.warmup_epochs == 0:
        return 1.0
    if cfg.warmup_by == "epoch":
        return min(1.0, (epoch + 1) / cfg.warmup_epochs)
    return min(1.0, progress / cfg.warmup_epochs)


def _seed(seed: int, epoch: int, stream: int) -> int:
    return (seed * 1_000_003 + epoch * 101 + stream) % (2**63 - 1)


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_model_for(cfg: TrainConfig, info: data_mod.DatasetInfo) -> nn.Module:
    return models_mod.build_model(cfg.model, in_channels=info.shape[0], num_classes=info.num_classes,
                                  mean=info.mean, std=info.std, image_size=tuple(info.shape[1:]))


@dataclass
class Run:
    """A finished (or loaded) run: its directory, config, summary and checkpoints."""

    dir: store.RunDir
    config: TrainConfig

    @property
    def summary(self) -> dict:
        return self.dir.summary

    def load_model(self, which: str | int = "best", *, device: str | torch.device = "cpu") -> nn.Module:
        """The model of the best-on-validation or last epoch (or of a kept epoch number), in eval
        mode; the checkpoint's digest is checked first (:class:`store.DamagedRunError` if not whole)."""
        if isinstance(which, int) and not isinstance(which, bool):
            check.choice("which", which, self.config.keep_epochs)
            name = f"checkpoint_epoch{which}.pt"
        else:
            check.choice("which", which, ("best", "last"))
            name = f"checkpoint_{which}.pt"
        device = check.resolve_device("device", device)
        info = data_mod.dataset_info(self.config.dataset)
        model = build_model_for(self.config, info)
        state = self.dir.load_torch(name)
        try:
            model.load_state_dict(state["model"])
        except (KeyError, TypeError, RuntimeError) as err:
            raise store.DamagedRunError(self.dir.path, name, f"does not hold weights of the run's "
                                        f"{self.config.model} ({str(err).splitlines()[0]})") from None
        return model.to(device).eval()

    def cached(self, name: str, params: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
        """``compute()`` stored as ``<run>/<name>-<hash of params>.json``: evaluated once per run
        and parameters, so that re-rendering a notebook reads it back."""
        path = self.dir.file(cached_name(name, params))
        _record.lookup(self.dir.path.parent.name, f"{self.dir.path.name}/{path.name}")
        if path.exists():
            try:
                return self.dir.read_json(path.name)["result"]
            except (store.CorruptFileError, KeyError, TypeError) as err:
                raise store.DamagedRunError(self.dir.path, path.name, f"is not a cached result ({err})") from None
        result = compute()
        store.atomic_write_json(path, {"params": dict(params), "result": result})
        return result

    def iterations(self):
        """Per-iteration metrics as a DataFrame."""
        import pandas as pd

        return pd.DataFrame([r for r in self.dir.read_jsonl("metrics.jsonl") if r["kind"] == "iter"])

    def epochs(self):
        """Per-epoch metrics (training time, validation metrics) as a DataFrame."""
        import pandas as pd

        return pd.DataFrame([r for r in self.dir.read_jsonl("metrics.jsonl") if r["kind"] == "epoch"])


EpochCallback = Callable[[int, dict], None]


DATA_FINGERPRINT = "data_fingerprint"


def cached_name(name: str, params: Mapping[str, Any]) -> str:
    """The file name of :meth:`Run.cached`'s result ``name`` at ``params`` in a run's directory."""
    return f"{name}-{store.config_hash(dict(params))}.json"


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


def run_training(cfg: TrainConfig, *, experiment: str = "adhoc", root: str | Path | None = None,
                 data_root: str | Path | None = None, device: str | torch.device = "auto",
                 threads: int | None = None, progress: bool = True,
                 on_epoch_end: EpochCallback | None = None) -> Run:
    """Train ``cfg`` into the run store, or return the stored run if it already finished.

    Every argument is validated and the data are loaded before anything is written, so bad input
    leaves the store untouched.  An unfinished run directory is resumed from its last checkpoint.
    """
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    device = check.resolve_device("device", device)
    if threads is not None:
        check.positive_int("threads", threads)
    if cfg.amp and device.type != "cuda":
        raise ValueError("amp=True needs a CUDA device (mixed precision is not used on CPU)")
    run_dir = run_dir_for(cfg, experiment=experiment, root=root, data_root=data_root)
    _record.lookup(experiment, run_dir.path.name)
    run = Run(run_dir, cfg)
    run_dir.verify_config()
    if run_dir.finished:
        run_dir.verify()
        return run
    store.ensure_writable(run_dir.path)
    if threads is not None:
        torch.set_num_threads(threads)
    train_data = data_mod.load(cfg.dataset, "train", root=data_root, n=cfg.n_train, val_size=cfg.val_size)
    val_data = data_mod.load(cfg.dataset, "val", root=data_root, n=cfg.n_val, val_size=cfg.val_size)
    run_dir.create()
    run_dir.write_json("env.json", store.environment(device, torch.get_num_threads(),
                                                     data_fingerprint=run_dir.config[DATA_FINGERPRINT]))
    _Trainer(cfg, run_dir, train_data, val_data, device, progress, on_epoch_end).fit()
    return run


class _Trainer:
    def __init__(self, cfg, run_dir, train_data, val_data, device, progress, on_epoch_end):
        self.cfg, self.dir, self.device = cfg, run_dir, device
        self.train_data, self.val_data = train_data, val_data
        self.progress, self.on_epoch_end = progress, on_epoch_end
        self.method = methods_mod.get_method(cfg.method)
        self.method_cfg = cfg.method_cfg
        self.info = train_data.info
        torch.manual_seed(cfg.seed)
        self.model = build_model_for(cfg, self.info).to(device)
        self.optimizer = build_optimizer(cfg, self.model)
        self.iters_per_epoch = data_mod.num_batches(len(train_data), cfg.batch_size, drop_last=False)
        self.total_iters = self.iters_per_epoch * cfg.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: lr_factor(cfg, it, self.total_iters))
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp)
        self.start_epoch, self.best = 0, {"value": -math.inf, "epoch": None}
        self._resume()

    # -- checkpoints -------------------------------------------------------------------------
    def _resume(self) -> None:
        path = self.dir.file("checkpoint_last.pt")
        if not path.exists():
            self.dir.write_jsonl("metrics.jsonl", [])
            return
        state = self.dir.load_torch("checkpoint_last.pt", verify=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["cpu"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.start_epoch, self.best = state["epoch"] + 1, state["best"]
        # Lines logged after the last checkpoint belong to an epoch that will be redone.
        rows = [r for r in self.dir.read_jsonl("metrics.jsonl", drop_torn_tail=True)
                if r["epoch"] < self.start_epoch]
        self.dir.write_jsonl("metrics.jsonl", rows)

    def _checkpoint(self, epoch: int, improved: bool) -> None:
        if epoch in self.cfg.keep_epochs:
            self.dir.save_torch(f"checkpoint_epoch{epoch}.pt", {"model": self.model.state_dict(), "epoch": epoch})
        if improved:
            self.dir.save_torch("checkpoint_best.pt",
                                {"model": self.model.state_dict(), "epoch": epoch, "best": self.best})
        rng = {"cpu": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None}
        self.dir.save_torch("checkpoint_last.pt", {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": rng, "epoch": epoch, "best": self.best, "config": dict(self.dir.config)})

    # -- one epoch ---------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        cfg, model = self.cfg, self.model
        data_gen = torch.Generator().manual_seed(_seed(cfg.seed, epoch, 0))
        method_gen = torch.Generator(device=self.device).manual_seed(_seed(cfg.seed, epoch, 1))
        batches = data_mod.batches(self.train_data, cfg.batch_size, shuffle=True, augment=cfg.augment,
                                   generator=data_gen, device=self.device)
        rows, loss_sum = [], 0.0
        model.train()
        self._sync()
        start = time.perf_counter()
        bar = tqdm(batches, total=self.iters_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not self.progress, leave=False, file=sys.stderr, mininterval=1.0)
        for i, (x, y) in enumerate(bar):
            it = epoch * self.iters_per_epoch + i
            progress = it / self.iters_per_epoch
            ctx = methods_mod.StepContext(epoch=epoch, iteration=it, progress=progress, generator=method_gen,
                                          num_classes=self.info.num_classes,
                                          warmup=warmup_factor(cfg, epoch, progress))
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=cfg.amp):
                out = self.method.objective(model, x, y, self.method_cfg, ctx)
            if not model.training:
                raise RuntimeError(f"method {cfg.method!r} left the model in eval mode")
            loss = out.loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch}, iteration {i}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            row = {"kind": "iter", "epoch": epoch, "iter": it, "loss": loss.item(), "lr": lr,
                   "warmup": ctx.warmup}
            row.update({k: float(v) for k, v in out.stats.items()})
            rows.append(row)
            loss_sum += row["loss"]
        self._sync()
        elapsed = time.perf_counter() - start
        self.dir.append_jsonl("metrics.jsonl", rows)
        return elapsed, loss_sum / max(1, len(rows))

    def _validate(self) -> dict[str, float]:
        batches = data_mod.batches(self.val_data, 500, shuffle=False, augment=False, device=self.device)
        return evaluate_mod.evaluate(self.model, batches, self.cfg.val_metrics, params=self.cfg.eval_params,
                                     seed=self.cfg.seed)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def fit(self) -> None:
        cfg = self.cfg
        for epoch in range(self.start_epoch, cfg.epochs):
            train_time, train_loss = self._train_epoch(epoch)
            val = {f"val_{k}": v for k, v in self._validate().items()}
            score = val[f"val_{cfg.select_on}_acc"]
            improved = score > self.best["value"]
            if improved:
                self.best = {"value": score, "epoch": epoch}
            row = {"kind": "epoch", "epoch": epoch, "train_time": train_time, "train_loss": train_loss, **val}
            self.dir.append_jsonl("metrics.jsonl", [row])
            self._checkpoint(epoch, improved)
            if self.progress:
                shown = ", ".join(f"{k} {v:.3f}" for k, v in val.items())
                print(f"epoch {epoch + 1}/{cfg.epochs}: loss {train_loss:.3f}, {shown}, {train_time:.1f}s",
                      file=sys.stderr)
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch, row)
        self._write_summary()

    def _write_summary(self) -> None:
        epochs = [r for r in self.dir.read_jsonl("metrics.jsonl") if r["kind"] == "epoch"]
        best = next(r for r in epochs if r["epoch"] == self.best["epoch"])
        passes = self.method.passes(self.method_cfg)
        self.dir.record("metrics.jsonl")
        self.dir.write_json(store.SUMMARY, {
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
        })


def cfg_key(cfg: TrainConfig) -> str:
    return f"val_{cfg.select_on}_acc"
