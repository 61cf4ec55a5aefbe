"""Every chapter's runs as data: the jobs an experiment's notebook needs, keyed as the store keys them.

:func:`plan` lists, for one experiment and profile, every unit of work its notebook asks the run
store for: each training run (a resolved :class:`~rs_lib.train.TrainConfig`), and each result the
notebook computes from a stored run through a cached function (robust accuracy, certification,
empirical accuracy, curvature, ...).  A job's ``key`` is what the notebook looks up: the run's
folder name (:func:`rs_lib.train.run_dir_for`) for training, ``"<run folder>/<result file>"`` for a
result.  The plan builds its configurations with the same preset functions as the notebook (the
presets of :mod:`rs_lib.presets`), and the tests check that, for every experiment, the keys its
notebook looks up are exactly its plan's: in the smoke profile by executing the notebook with
``$RS_RECORD_KEYS`` set (:mod:`rs_lib._record`, ``tests/test_notebooks.py``), in the cpu and paper
profiles by running the notebook's code with the store's heavy calls recorded (``tests/test_plan.py``).
``python -m rs_lib.plan EXPERIMENT --profile P`` prints a plan and which of its jobs are done.

:func:`run_job` executes one job by calling the function the notebook calls (so a job done by a
sweep is a cache hit for the notebook); :func:`job_done` says whether the store holds its result.
Certification with many noise samples (paper: n = 100,000 on 10,000 images) is split by index range
into ``certify_shard`` jobs and one ``certify_merge`` job writing the file the notebook reads.

A run's key covers the fingerprint of its training data (:func:`rs_lib.train.run_dir_for`): where
those data are missing, the plan still lists the run and what needs it, costed, under the key
``nodata-<config hash>`` (:data:`NO_DATA`); such a job is never done and :func:`run_job` refuses it.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import _validate as check
from . import data, profiles, smoothing, store, train
from .presets import backward_smoothing as bs
from .presets import foundations as fd
from .presets import smoothing as sp
from .train import TrainConfig

KINDS = ("train", "evaluate", "certify_shard", "certify_merge")

#: Noise samples (images x (n0 + n)) per certification shard: a certification above this is split
#: into ceil(samples / CERTIFY_SHARD_SAMPLES) index ranges, e.g. the paper's 10,000 CIFAR-10 images
#: at n0 + n = 100,100 into 11 shards of about 910 images (~1 h each on one GPU for ResNet-110).
CERTIFY_SHARD_SAMPLES = 100_000_000

#: Images in the full training split (before the validation images are held out, rs_lib.data).
_TRAIN_SIZE = {"mnist": 60_000, "fashion-mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000,
               "tiny-imagenet": 100_000}


@dataclass(frozen=True)
class Job:
    """One unit of work of an experiment's plan (picklable, JSON-describable with :meth:`as_dict`).

    ``kind``: 'train' | 'evaluate' | 'certify_shard' | 'certify_merge'; ``experiment``: the notebook's
    experiment; ``store``: the run-store experiment folder; ``key``: the store key (the run's folder
    name for 'train', ``"<run folder>/<result file>"`` otherwise); ``needs``: keys of the jobs that
    must be done first; ``spec``: what :func:`run_job` needs (JSON); ``cost``: the inputs of a
    GPU-hour estimate: ``model``, ``dataset``, ``method`` (the training method of a 'train' job, the
    evaluation's name otherwise: 'robustness', 'certify', 'empirical', ...), ``iterations`` (train:
    epochs x batches), ``batch_size``, ``amp``, ``images`` (evaluated) and ``samples`` (forward
    passes of noisy copies: certification images x (n0 + n)), plus ``protocol`` for a robust-accuracy
    evaluation (rs_lib.robustness.PROTOCOLS).  Jobs hash by their identity fields.
    """

    kind: str
    experiment: str
    store: str
    key: str
    needs: tuple[str, ...]
    label: str
    spec: Mapping[str, Any] = field(repr=False, hash=False)
    cost: Mapping[str, Any] = field(repr=False, hash=False)

    @property
    def run_key(self) -> str:
        """The key of the training run this job belongs to (its own key for a 'train' job)."""
        return self.key.split("/", 1)[0]

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "experiment": self.experiment, "store": self.store, "key": self.key,
                "needs": list(self.needs), "label": self.label, "spec": _plain(self.spec),
                "cost": _plain(self.cost)}


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


# ------------------------------------------------------------------------------ evaluations


@dataclass(frozen=True)
class _Evaluation:
    """A cached function of a stored run that a notebook calls: ``call(run, settings, device,
    progress, **kwargs)`` computes (or reads) it, ``file(config, settings, **kwargs)`` names its result."""

    call: Callable[..., Any]
    file: Callable[..., str]


def _certification(kwargs: Mapping[str, Any]) -> smoothing.RunCertification:
    """The certification of a job's ``kwargs`` (n_points, n0, n, alpha, sigma, batch_size, seed)."""
    settings = smoothing.CertifySettings(n0=kwargs["n0"], n=kwargs["n"], alpha=kwargs["alpha"],
                                         batch_size=kwargs["batch_size"])
    return smoothing.RunCertification(settings=settings, n_points=kwargs["n_points"], sigma=kwargs["sigma"],
                                      seed=kwargs["seed"])


def _certify_call(run, settings, device, progress, **kwargs):
    return smoothing.certify_run(run, _certification(kwargs), device=device, progress=progress)


def _certify_file(config, settings, **kwargs):
    kwargs = {k: v for k, v in kwargs.items() if k != "batch_size"}
    return smoothing.certify_file_name(smoothing.certify_params(**kwargs))


EVALUATIONS: Mapping[str, _Evaluation] = MappingProxyType({
    "robustness": _Evaluation(
        lambda run, s, device, progress, **kw: bs.robustness(run, device=device, **kw),
        lambda config, s, **kw: train.cached_name("robustness", bs.robustness_params(config, **kw))),
    "curvature": _Evaluation(
        lambda run, s, device, progress: bs.curvature(run, s, device=device),
        lambda config, s: train.cached_name("curvature", bs.curvature_params(config, s))),
    "noisy_accuracy": _Evaluation(
        lambda run, s, device, progress: fd.noisy_accuracy(run, s, device=device),
        lambda config, s: train.cached_name("noisy_accuracy", fd.noisy_accuracy_params(s))),
    "empirical": _Evaluation(
        lambda run, s, device, progress, **kw: sp.empirical(run, s, device=device, **kw),
        lambda config, s, **kw: train.cached_name("empirical", sp.empirical_params(s, **kw))),
    "interpolation": _Evaluation(
        lambda run, s, device, progress: sp.interpolation(run, s, device=device),
        lambda config, s: train.cached_name("interpolation", sp.interpolation_params(s))),
    "certify": _Evaluation(_certify_call, _certify_file),
})


# ------------------------------------------------------------------------------ building a plan


class _Plan:
    """The jobs of one (experiment, profile, overrides), in request order, one per key."""

    def __init__(self, experiment: str, profile: str, overrides: Mapping[str, Any], store: str) -> None:
        self.experiment, self.profile, self.store = experiment, profile, store
        self.overrides = {k: v for k, v in overrides.items() if v is not None}
        self.settings = profiles.resolve(experiment, profile, **self.overrides)
        self.jobs: dict[str, Job] = {}

    def _add(self, job: Job) -> Job:
        return self.jobs.setdefault(job.key, job)

    def _settings_spec(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "profile": self.profile, "overrides": _plain(self.overrides)}

    def train(self, cfg: TrainConfig, label: str) -> str:
        """Add the training run of ``cfg``; return its key."""
        key = _run_key(cfg, self.store)
        batches = math.ceil(_train_images(cfg) / cfg.batch_size)
        self._add(Job("train", self.experiment, self.store, key, (), f"train {self.store} {label}",
                      {"config": cfg.to_dict()},
                      {"model": cfg.model, "method": cfg.method, "dataset": cfg.dataset,
                       "iterations": cfg.epochs * batches, "batch_size": cfg.batch_size, "amp": cfg.amp,
                       "images": 0, "samples": 0}))
        return key

    def evaluate(self, cfg: TrainConfig, label: str, function: str, *, images: int, samples: int = 0,
                 **kwargs: Any) -> str:
        """Add the training run of ``cfg`` and the cached result ``function(run, **kwargs)``."""
        run_key = self.train(cfg, label)
        name = EVALUATIONS[function].file(cfg, self.settings, **kwargs)
        key = f"{run_key}/{name}"
        self._add(Job("evaluate", self.experiment, self.store, key, (run_key,), f"{function} {label}",
                      {"config": cfg.to_dict(), "function": function, "kwargs": _plain(kwargs),
                       "settings": self._settings_spec()},
                      {"model": cfg.model, "method": function, "dataset": cfg.dataset, "iterations": 0,
                       "batch_size": kwargs.get("batch_size", 0), "amp": False, "images": images,
                       "samples": samples, **({"protocol": kwargs["protocol"]} if "protocol" in kwargs else {})}))
        return key

    def certify(self, cfg: TrainConfig, label: str, *, sigma: float, cert: Mapping[str, Any]) -> str:
        """Add the training run of ``cfg`` and its certification at ``sigma`` with the settings
        ``cert`` (n_points, n0, n, alpha, batch_size, seed: :func:`_cert`) as
        ``smoothing.certify_run`` does it: one 'evaluate' job, or above
        :data:`CERTIFY_SHARD_SAMPLES` shards plus a merge."""
        n_points, n0, n, alpha, batch_size, seed = (cert[k] for k in _CERT_KEYS)
        kwargs = dict(n_points=n_points, n0=n0, n=n, alpha=alpha, sigma=float(sigma), batch_size=batch_size,
                      seed=seed)
        samples = n_points * (n0 + n)
        shards = min(n_points, math.ceil(samples / CERTIFY_SHARD_SAMPLES))
        if shards <= 1:
            return self.evaluate(cfg, label, "certify", images=n_points, samples=samples, **kwargs)
        run_key = self.train(cfg, label)
        params = smoothing.certify_params(n_points=n_points, n0=n0, n=n, alpha=alpha, sigma=sigma, seed=seed)
        cost = {"model": cfg.model, "method": "certify", "dataset": cfg.dataset, "iterations": 0,
                "batch_size": batch_size, "amp": False}
        spec = {"config": cfg.to_dict(), "kwargs": kwargs, "shards": shards}
        shard_keys = []
        for k in range(shards):
            images = len(range(k * n_points // shards, (k + 1) * n_points // shards))
            key = f"{run_key}/{smoothing.certify_file_name(params, (k, shards))}"
            shard_keys.append(self._add(Job(
                "certify_shard", self.experiment, self.store, key, (run_key,),
                f"certify {label} shard {k + 1}/{shards}", {**spec, "shard": k},
                {**cost, "images": images, "samples": images * (n0 + n)})).key)
        key = f"{run_key}/{smoothing.certify_file_name(params)}"
        return self._add(Job("certify_merge", self.experiment, self.store, key, tuple(shard_keys),
                             f"merge certify {label} ({shards} shards)", spec,
                             {**cost, "images": 0, "samples": 0})).key


#: Prefix of the key of a run whose training data were missing where the plan was made: the store
#: key covers the data's fingerprint, so such a job is listed (and costed) but cannot run.
NO_DATA = "nodata-"


def _run_key(cfg: TrainConfig, store_name: str) -> str:
    try:
        return train.run_dir_for(cfg, experiment=store_name).path.name
    except data.DatasetNotFoundError:
        return NO_DATA + store.config_hash(cfg.to_dict())


def _train_images(cfg: TrainConfig) -> int:
    if cfg.n_train is not None:
        return cfg.n_train
    total = _TRAIN_SIZE.get(cfg.dataset)
    if total is None:          # generated or folder datasets: their size is only known on load
        return cfg.batch_size
    val = cfg.val_size if cfg.val_size is not None else (5000 if total >= 50_000 else round(total / 10))
    return total - val


# ------------------------------------------------------------------------------ the experiments


def _noise_training(p: _Plan) -> None:
    s = p.settings
    for label, cfg in fd.noise_runs(s).items():
        p.evaluate(cfg, label, "noisy_accuracy", images=s.n_test, samples=s.n_test * len(s.eval_sigmas))


def _robust(p: _Plan, cfg: TrainConfig, label: str, protocol: str, n_test: int, which: str = bs.REPORTED_CHECKPOINT,
            eps: float | None = None) -> None:
    extra = {} if eps is None else {"eps": eps}
    p.evaluate(cfg, label, "robustness", images=n_test, protocol=protocol, n_test=n_test, which=which, **extra)


def _bs_loss_increment(p: _Plan) -> None:
    for label, cfg in bs.loss_increment_runs(p.settings).items():
        p.train(cfg, label)


def _bs_hessian(p: _Plan) -> None:
    s = p.settings
    for method in s.hessian_methods:
        p.evaluate(bs.train_config(s, method), bs.LABELS[method], "curvature", images=s.hessian_n)


def _bs_comparison(p: _Plan) -> None:
    s = p.settings
    runs = bs.comparison_runs(s)
    protocols = list(s.test_protocols)
    first = protocols[0]
    rob = "pgd100_bs" if "pgd100_bs" in protocols else first   # the notebook's "rob" column

    def table_row(cfg: TrainConfig, label: str, extra: tuple[str, ...] = ()) -> None:
        for protocol in (first, rob, *extra):
            _robust(p, cfg, label, protocol, s.test_protocols[protocol])

    for method, cfg in runs["compare"].items():           # Tables 1-4, every protocol, best and last
        table_row(cfg, bs.LABELS[method], tuple(protocols))
        _robust(p, cfg, bs.LABELS[method], first, s.test_protocols[first], "last")
    for (method, seed), cfg in runs["pairs"].items():      # over seeds, best and last
        label = f"{bs.LABELS[method]} seed {seed}"
        _robust(p, cfg, label, first, s.test_protocols[first])
        _robust(p, cfg, label, first, s.test_protocols[first], "last")
    for method, cfg in runs["aa"].items():                 # Table 5: AutoAttack, PGD and RayS on aa_n_test
        _robust(p, cfg, bs.LABELS[method], s.aa_protocol, s.aa_n_test, eps=s.aa_eps)  # paper: at 8/255
        for protocol in (first, *([s.rays_protocol] if s.rays_protocol else [])):
            _robust(p, cfg, bs.LABELS[method], protocol, s.aa_n_test)
    for (eps, method), cfg in runs["extra_eps"].items():   # Tables 13-14
        table_row(cfg, f"{bs.LABELS[method]} eps {eps:.4g}")
    for method, cfg in runs["accel"].items():              # Table 6
        table_row(cfg, f"{bs.LABELS[method]} accelerated")


def _bs_beta_tradeoff(p: _Plan) -> None:
    s = p.settings
    runs = bs.tradeoff_runs(s)
    for (method, beta), cfg in runs["swept"].items():
        _robust(p, cfg, f"{bs.LABELS[method]} beta {beta:g}", s.test_protocol, s.n_test)
    for method, cfg in runs["points"].items():
        _robust(p, cfg, bs.LABELS[method], s.test_protocol, s.n_test)


def _bs_stability(p: _Plan) -> None:
    s = p.settings
    for (name, seed), cfg in bs.stability_runs(s).items():
        for which in ("best", "last"):
            _robust(p, cfg, f"{name} seed {seed}", s.test_protocol, s.n_test, which)


def _bs_ablations(p: _Plan) -> None:
    s = p.settings
    name = bs.LABELS["backward_smoothing"]
    labels = {"step": f"{name} step {{:g}} eps", "gamma": f"{name} gamma {{:g}}", "points": f"{name} {{}} points",
              "literal": "{} literal target"}
    for table, runs in bs.ablation_runs(s).items():
        for value, cfg in runs.items():
            label = bs.LABELS[value] if table == "variants" else labels[table].format(
                bs.LABELS[value] if table == "literal" else value)
            _robust(p, cfg, label, s.test_protocol, s.n_test)


def _certify(p: _Plan, cfg: TrainConfig, label: str, sigma: float) -> None:
    p.certify(cfg, label, sigma=sigma, cert=_cert(p.settings))


#: The certification settings a plan takes from a chapter's ``cert_kwargs``.
_CERT_KEYS = ("n_points", "n0", "n", "alpha", "batch_size", "seed")


def _cert(s: Any) -> dict[str, Any]:
    c = sp.certification(s)
    return {"n_points": c.n_points, "n0": c.settings.n0, "n": c.settings.n, "alpha": c.settings.alpha,
            "batch_size": c.settings.batch_size, "seed": c.seed}


def _gaussian(p: _Plan) -> dict[float, TrainConfig]:
    s = p.settings
    spec = s.models["Gaussian"]
    configs = {sigma: sp.model_config(s, spec, sigma) for sigma in s.train_sigmas}
    for sigma, cfg in configs.items():
        _certify(p, cfg, f"Gaussian sigma {sigma}", sigma)
    return configs


def _rs_certified_curves(p: _Plan) -> None:
    _gaussian(p)


def _rs_comparison(p: _Plan) -> None:
    for row in sp.comparison_runs(p.settings):
        _certify(p, row["config"], f"{row['label']} sigma {row['sigma']}", row["sigma"])


def _rs_smoothadv_attacks(p: _Plan) -> None:
    s = p.settings
    gaussian = _gaussian(p)
    points = s.attack_points
    for sigma, eps, attack, m, n, estimator in _empirical_requests(s):
        n_used = int(n or s.predict_n)
        p.evaluate(gaussian[sigma], f"Gaussian sigma {sigma}", "empirical", images=points,
                   samples=points * (n_used + m * s.attack_steps), eps=eps, attack=attack, m=m,
                   n=n, estimator=estimator)
    for row in sp.vanilla_runs(s):
        _certify(p, row["config"], f"{row['label']} sigma {row['sigma']} eps {row['eps']}", row["sigma"])


def _empirical_requests(s: Any) -> list[tuple[float, float, str, int, int | None, str]]:
    """(sigma, eps, attack, m, n, estimator) of each empirical accuracy the notebook shows: the
    attack table (SmoothAdv Fig. 3/7), PREDICT's n (Fig. 8) and the Stein estimator (Fig. 9)."""
    radii = [0.0, *s.attack_eps]
    attacks = [("pgd", m) for m in s.m_test] + [("base_pgd", 1)]
    out = [(sigma, eps, attack, m, None, "plugin") for sigma in s.train_sigmas for eps in radii
           for attack, m in (attacks if eps > 0 else [("pgd", 1)])]
    top = max(s.m_test)
    out += [(s.study_sigma, eps, "pgd", top if eps > 0 else 1, n, "plugin") for n in s.predict_ns for eps in radii]
    out += [(s.study_sigma, eps, "pgd", m, None, est) for est in ("plugin", "stein") for m in s.stein_m_test
            for eps in s.attack_eps]
    return out


def _rs_smoothmix_ablations(p: _Plan) -> None:
    s = p.settings
    sigma = s.ablation_sigma
    gauss = sp.model_config(s, s.models["Gaussian"], sigma)
    rows = sp.ablation_runs(s)
    p.train(gauss, f"Gaussian sigma {sigma}")
    for r in rows:
        p.train(r["config"], f"SmoothMix {r['setting']}")
    _certify(p, gauss, f"Gaussian sigma {sigma}", sigma)
    for r in rows:
        _certify(p, r["config"], f"SmoothMix {r['setting']}", sigma)
    default = next(r["config"] for r in rows if r["default"])
    for cfg, label in ((gauss, f"Gaussian sigma {sigma}"), (default, "SmoothMix default")):
        p.evaluate(cfg, label, "interpolation", images=s.interp_points,
                   samples=s.interp_points * s.interp_num_noise * (s.interp_steps + s.interp_ratios))


#: experiment -> (chapter, run store, planner).
_PLANNERS: Mapping[str, tuple[str, str, Callable[[_Plan], None]]] = MappingProxyType({
    "noise_training": ("foundations", fd.STORE, _noise_training),
    "bs_loss_increment": ("backward_smoothing", bs.STORE, _bs_loss_increment),
    "bs_hessian": ("backward_smoothing", bs.STORE, _bs_hessian),
    "bs_comparison": ("backward_smoothing", bs.STORE, _bs_comparison),
    "bs_beta_tradeoff": ("backward_smoothing", bs.STORE, _bs_beta_tradeoff),
    "bs_stability": ("backward_smoothing", bs.STORE, _bs_stability),
    "bs_ablations": ("backward_smoothing", bs.STORE, _bs_ablations),
    "rs_certified_curves": ("smoothing", sp.STORE, _rs_certified_curves),
    "rs_comparison": ("smoothing", sp.STORE, _rs_comparison),
    "rs_smoothadv_attacks": ("smoothing", sp.STORE, _rs_smoothadv_attacks),
    "rs_smoothmix_ablations": ("smoothing", sp.STORE, _rs_smoothmix_ablations),
})


def experiments(chapter: str | None = None) -> tuple[str, ...]:
    """Every experiment with a plan (in book order), or those of ``chapter``
    ('foundations', 'backward_smoothing', 'smoothing')."""
    if chapter is None:
        return tuple(_PLANNERS)
    check.choice("chapter", chapter, sorted({c for c, _, _ in _PLANNERS.values()}))
    return tuple(e for e, (c, _, _) in _PLANNERS.items() if c == chapter)


def plan(experiment: str, profile: str, **overrides: Any) -> list[Job]:
    """Every job the notebook of ``experiment`` needs in ``profile`` with the notebook parameters
    ``overrides`` (``None`` = the profile's value), in an order where each job follows its needs.

    Raises ValueError for an unknown experiment or profile, a knob the experiment does not have
    (naming its knobs) or an invalid value, before anything is computed.
    """
    check.choice("experiment", experiment, list(_PLANNERS))
    _, store, planner = _PLANNERS[experiment]
    p = _Plan(experiment, profile, overrides, store)
    planner(p)
    return list(p.jobs.values())


# ------------------------------------------------------------------------------ running a job


def _config(job: Job) -> TrainConfig:
    cfg = TrainConfig(**job.spec["config"])
    if job.run_key.startswith(NO_DATA):
        train.run_dir_for(cfg, experiment=job.store)   # raises DatasetNotFoundError (how to get them) if still missing
        raise ValueError(f"job {job.label!r} was planned where {cfg.dataset} was missing, so its store key "
                         "was unknown; plan again where the data are")
    key = train.run_dir_for(cfg, experiment=job.store).path.name
    if key != job.run_key:
        raise ValueError(f"job {job.label!r}: its config hashes to {key}, not to its key {job.run_key}; "
                         "the plan was made by another version of rs_lib, make it again")
    return cfg


#: Whether train keys a run cut short by ``max_iterations`` apart (the DDP / max_iterations work):
#: then the evaluations of a ``max_iterations`` check read that run, else the configuration's own.
_CUT_RUNS = "max_iterations" in inspect.signature(train.run_dir_for).parameters


def _stored_run(job: Job, root: str | Path | None, max_iterations: int | None = None) -> train.Run:
    cfg = _config(job)
    cut = {"max_iterations": max_iterations} if max_iterations is not None and _CUT_RUNS else {}
    run_dir = train.run_dir_for(cfg, experiment=job.store, root=root, **cut)
    if not run_dir.finished:
        raise ValueError(f"job {job.label!r} needs the finished training run {job.run_key} in "
                         f"{run_dir.path.parent}; run its train job first")
    return train.Run(run_dir, cfg)


def _settings_of(job: Job, *, small: bool = False) -> Any:
    s = job.spec["settings"]
    overrides = dict(s["overrides"])
    if small:
        known = profiles.knobs(s["experiment"])
        overrides.update({k: v for k, v in _SMALL_KNOBS.items() if k in known})
    return profiles.resolve(s["experiment"], s["profile"], **overrides)


def run_job(job: Job, *, device: str = "auto", root: str | Path | None = None,
            max_iterations: int | None = None, progress: bool = True) -> None:
    """Execute ``job`` into the store at ``root`` (default: ``$RS_RESULTS``) with the function the
    notebook calls: ``train.run_training`` (which resumes an interrupted run), the cached evaluation,
    ``smoothing.certify_run`` on the shard's index range, or ``smoothing.merge_certify_run``.
    ``max_iterations`` (paper-path smoke tests only, into a scratch ``root``) is passed to
    ``train.run_training``; with it an evaluation runs on a couple of images (certification: one
    image per shard at n = 16), so that a paper job's code path runs in seconds on the CPU."""
    if not isinstance(job, Job):
        raise ValueError(f"job must be a rs_lib.plan.Job, got {type(job).__name__}")
    check.choice("job kind", job.kind, KINDS)
    if max_iterations is not None:
        check.positive_int("max_iterations", max_iterations)
    if job.kind == "train":
        train.run_training(_config(job), experiment=job.store, root=root, device=device, progress=progress,
                           control=train.Control(max_iterations=max_iterations))
        return
    run = _stored_run(job, root, max_iterations)
    kwargs = dict(job.spec["kwargs"])
    if max_iterations is not None:
        kwargs = _one_batch(kwargs, job.spec.get("shards", 1))
    if job.kind == "evaluate":
        settings = _settings_of(job, small=max_iterations is not None)
        EVALUATIONS[job.spec["function"]].call(run, settings, device, progress, **kwargs)
    elif job.kind == "certify_shard":
        smoothing.certify_run(run, _certification(kwargs), shard=(job.spec["shard"], job.spec["shards"]),
                              device=device, progress=progress)
    else:
        smoothing.merge_certify_run(run, _certification(kwargs), shards=job.spec["shards"])


#: With ``max_iterations`` (the paper-path smoke test), evaluations run on this few images and
#: certification at this few samples: the code path of the paper job, not its numbers.
_SMALL_KNOBS = {"n_test": 2, "hessian_n": 2, "hessian_iters": 2, "attack_points": 1, "attack_steps": 1,
                "predict_n": 16, "interp_points": 1, "interp_steps": 1, "interp_num_noise": 2, "cert_points": 1,
                "cert_n0": 4, "cert_n": 16, "cert_batch": 16}


def _one_batch(kwargs: dict[str, Any], shards: int) -> dict[str, Any]:
    caps = {"n_test": 2, "n_points": shards, "n0": 4, "n": 16, "batch_size": 16, "m": 2}
    return {k: min(v, caps[k]) if k in caps and isinstance(v, int) and v is not None else v
            for k, v in kwargs.items()}


def job_done(job: Job, *, root: str | Path | None = None) -> bool:
    """Whether the store at ``root`` holds ``job``'s result, whole: a finished run, a result file,
    a certification file (or shard) with all its rows (never for a job planned without its data)."""
    if job.run_key.startswith(NO_DATA):
        return False
    run_dir = train.run_dir_for(_config(job), experiment=job.store, root=root)
    if job.kind == "train":
        return run_dir.finished
    path = run_dir.path / job.key.split("/", 1)[1]
    if not path.is_file():
        return False
    if job.kind == "evaluate" and job.spec["function"] != "certify":
        return True
    rows = job.spec["kwargs"]["n_points"]
    if job.kind == "certify_shard":
        k, shards = job.spec["shard"], job.spec["shards"]
        rows = len(range(k * rows // shards, (k + 1) * rows // shards))
    return smoothing.certify_complete(path, rows)


def iter_plans(experiments_: tuple[str, ...], profile: str, **overrides: Any) -> Iterator[Job]:
    """The jobs of several experiments' plans, each key once (runs shared between notebooks of a
    chapter are one job, listed under the first experiment that needs it).  Each override goes to
    the experiments that have that knob; one that none of them has is a ValueError naming theirs."""
    known_any = {k for e in experiments_ for k in profiles.knobs(e)}
    unknown = sorted(set(overrides) - known_any)
    if unknown:
        raise ValueError(f"{', '.join(map(repr, unknown))} is not a parameter of any of {', '.join(experiments_)} "
                         f"(allowed: {', '.join(sorted(known_any))})")
    seen: set[tuple[str, str]] = set()
    for experiment in experiments_:
        known = profiles.knobs(experiment)
        for job in plan(experiment, profile, **{k: v for k, v in overrides.items() if k in known}):
            if (job.store, job.key) not in seen:
                seen.add((job.store, job.key))
                yield job


def describe(jobs: list[Job], *, root: str | Path | None = None) -> str:
    """One line per job: kind, store key, whether the store at ``root`` holds it, label."""
    lines = [f"{'kind':14s} {'done':5s} {'key':60s} label"]
    for job in jobs:
        done = "yes" if job_done(job, root=root) else "no"
        lines.append(f"{job.kind:14s} {done:5s} {job.store + '/' + job.key:60s} {job.label}")
    counts = {kind: sum(j.kind == kind for j in jobs) for kind in KINDS}
    lines.append(f"{len(jobs)} jobs: " + ", ".join(f"{n} {kind}" for kind, n in counts.items() if n))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m rs_lib.plan EXPERIMENT|CHAPTER|all [--profile P] [--root DIR]``: print the plan."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m rs_lib.plan", description=main.__doc__)
    parser.add_argument("what", help="an experiment, a chapter (foundations, backward_smoothing, smoothing) or all")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--root", default=None, help="the run store (default: $RS_RESULTS, else results/)")
    args = parser.parse_args(argv)
    try:
        chapters = {c for c, _, _ in _PLANNERS.values()}
        names = (experiments() if args.what == "all" else experiments(args.what) if args.what in chapters
                 else (check.choice("experiment", args.what, list(_PLANNERS)),))
        print(describe(list(iter_plans(names, args.profile)), root=args.root))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
