"""Evaluation: clean and Gaussian-noise accuracy, and the per-epoch validation metrics registry.

A validation metric maps (model, x, y, params, generator) to a boolean tensor "correct" per
example; :func:`evaluate` averages it over a dataset in batches with the model in eval mode
(RobustBench habit: evaluation never runs in train mode).  The training loop computes the
metrics named in its config after every epoch on a fixed validation subset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from . import _validate as check
from . import models as _models

MetricFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, Mapping[str, Any], torch.Generator], torch.Tensor]

VAL_METRICS: dict[str, MetricFn] = {}
_PARAM_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {}


def register_metric(name: str, *, check_params: Callable[[Mapping[str, Any]], None] | None = None):
    """Decorator adding a per-example correctness function to :data:`VAL_METRICS`.

    ``check_params(params)`` validates the ``eval_params`` the metric reads (raises ValueError).
    """

    def wrap(fn: MetricFn) -> MetricFn:
        VAL_METRICS[name] = fn
        if check_params is not None:
            _PARAM_CHECKS[name] = check_params
        return fn

    return wrap


def _needs_sigma(params: Mapping[str, Any]) -> None:
    if "sigma" not in params:
        raise ValueError("eval_params must give 'sigma' for the 'gaussian' validation metric")
    check.positive("eval_params['sigma']", params["sigma"])


@register_metric("clean")
def _clean(model, x, y, params, generator):
    with torch.inference_mode():
        return model(x).argmax(1) == y


@register_metric("gaussian", check_params=_needs_sigma)
def _gaussian(model, x, y, params, generator):
    """Accuracy of the base classifier on x + N(0, sigma² I) (one draw per example)."""
    sigma = params["sigma"]
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    with torch.inference_mode():
        return model(x + sigma * noise).argmax(1) == y


def metric_params(names: Iterable[str], params: Mapping[str, Any]) -> None:
    """Check metric names and the parameters they need, before any training starts."""
    for name in names:
        check.choice("val_metrics", name, sorted(VAL_METRICS))
        if name in _PARAM_CHECKS:
            _PARAM_CHECKS[name](params)


def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], metrics: Iterable[str], *,
             params: Mapping[str, Any] | None = None, seed: int = 0) -> dict[str, float]:
    """Mean of each metric over ``batches`` (model in eval mode, restored after).

    Returns ``{f"{name}_acc": accuracy}``.  Randomised metrics draw from a generator seeded with
    ``seed`` so that repeated evaluations of one model agree.
    """
    metrics = list(metrics)
    params = dict(params or {})
    metric_params(metrics, params)
    correct = {m: 0 for m in metrics}
    total = 0
    generator = None
    with _models.mode(model, train=False):
        for x, y in batches:
            check.images("batches' x", x)
            check.labels("batches' y", y)
            if generator is None:
                generator = torch.Generator(device=x.device).manual_seed(seed)
            for m in metrics:
                correct[m] += int(VAL_METRICS[m](model, x, y, params, generator).sum())
            total += len(y)
    if total == 0:
        raise ValueError("evaluate: no examples in batches")
    return {f"{m}_acc": correct[m] / total for m in metrics}


def accuracy_under_noise(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                         sigmas: Iterable[float], *, seed: int = 0) -> dict[float, float]:
    """Base-classifier accuracy on x + N(0, sigma² I) for each sigma (sigma = 0: clean)."""
    batches = list(batches)
    out = {}
    for sigma in sigmas:
        check.non_negative("sigma", sigma)
        if sigma == 0:
            out[sigma] = evaluate(model, batches, ["clean"], seed=seed)["clean_acc"]
        else:
            out[sigma] = evaluate(model, batches, ["gaussian"], params={"sigma": sigma}, seed=seed)["gaussian_acc"]
    return out


# --------------------------------------------------------------------------------------------
# Adversarial robustness (Backward Smoothing chapter): per-epoch FGSM / PGD metrics, named
# PGD-k and AutoAttack protocols
# --------------------------------------------------------------------------------------------

import dataclasses  # noqa: E402
import warnings  # noqa: E402

from tqdm.auto import tqdm as _tqdm  # noqa: E402

from . import attacks as _attacks  # noqa: E402


def _needs_eps(params: Mapping[str, Any]) -> None:
    if "eps" not in params:
        raise ValueError("eval_params must give 'eps' (l-inf radius, pixel units) for the 'fgsm' and 'pgd' "
                         "validation metrics")
    check.positive("eval_params['eps']", params["eps"])


def _pgd_params(params: Mapping[str, Any]) -> None:
    _needs_eps(params)
    if "pgd_steps" in params:
        check.positive_int("eval_params['pgd_steps']", params["pgd_steps"])
    if "pgd_step_size" in params:
        check.positive("eval_params['pgd_step_size']", params["pgd_step_size"])
    check.flag("eval_params['pgd_random_start']", params.get("pgd_random_start", True))


def pgd_metric_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """The 'pgd' validation metric's settings from ``eval_params``: ``eps``, ``pgd_steps`` (20),
    ``pgd_step_size`` (eps/4, the BS ratio 0.0078/0.031) and ``pgd_random_start`` (True, the
    reference notes' §7 pilot; random starts see through the gradient masking of a collapsed model)."""
    _pgd_params(params)
    eps = params["eps"]
    return {"eps": eps, "steps": params.get("pgd_steps", 20), "step_size": params.get("pgd_step_size", _attacks.pgd_step(eps)),
            "random_start": params.get("pgd_random_start", True)}


@register_metric("fgsm", check_params=_needs_eps)
def _fgsm(model, x, y, params, generator):
    """FGSM from x with step eps (no random start). With 'clean' and 'pgd' it shows catastrophic
    overfitting: FGSM accuracy above clean accuracy while PGD accuracy falls to 0."""
    x_adv = _attacks.fgsm(model, x, y, _attacks.FGSM(params["eps"])).x_adv
    with torch.inference_mode():
        return model(x_adv).argmax(1) == y


@register_metric("pgd", check_params=_pgd_params)
def _pgd(model, x, y, params, generator):
    """PGD-k on CE (settings: `pgd_metric_settings`), random start from ``generator``."""
    x_adv = _attacks.pgd(model, x, y, _attacks.PGD(**pgd_metric_settings(params)), generator=generator)
    with torch.inference_mode():
        return model(x_adv).argmax(1) == y


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A named robust-accuracy evaluation and the label shown wherever its numbers appear.

    ``steps``: PGD steps, or the iterations of AutoAttack's APGD-CE / APGD-T / FAB-T; PGD's step
    size is ``step_ratio``·eps; ``queries``: Square's query budget.
    """

    name: str
    label: str
    attack: str
    steps: int
    step_ratio: float | None = None
    random_start: bool = False
    restarts: int = 1
    queries: int | None = None


_BS_STEP = "(CE, no random start, step ε/4: the BS code's 0.0078 at ε 0.031)"
PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("pgd20_bs", f"PGD-20 {_BS_STEP}", "pgd", 20, _attacks.PGD_STEP_RATIO),
    Protocol("pgd100_bs", f"PGD-100 {_BS_STEP}", "pgd", 100, _attacks.PGD_STEP_RATIO),
    Protocol("pgd20_rs", "PGD-20 (CE, uniform random start, step ε/4, 1 restart)", "pgd", 20,
             _attacks.PGD_STEP_RATIO, True),
    Protocol("pgd100_rs", "PGD-100 (CE, uniform random start, step ε/4, 1 restart)", "pgd", 100,
             _attacks.PGD_STEP_RATIO, True),
    Protocol("autoattack_standard", "AutoAttack, standard protocol (torchattacks re-implementation: APGD-CE, "
             "APGD-T, FAB-T 100 iterations, Square 5000 queries, seed 0)", "autoattack", 100, queries=5000),
    Protocol("autoattack_fast", "AutoAttack-fast (CI-sized, NOT the standard protocol: APGD-CE, APGD-T, FAB-T "
             "10 iterations, Square 500 queries, seed 0)", "autoattack", 10, queries=500),
    # The cross-check: Croce & Hein's own code (fra31/auto-attack, packaged on PyPI as pyautoattack 0.2.0).
    Protocol("autoattack_original", "AutoAttack, standard protocol (the original fra31 code, PyPI pyautoattack "
             "0.2.0: APGD-CE, APGD-T, FAB-T, Square, seed 0)", "autoattack_original", 100, queries=5000),
    # uclaml/RayS README: `attack_robust.py --query 10000` for its robust-model leaderboard (BS Table 5)
    Protocol("rays", "RayS (hard-label, 10,000 queries per example, no early stop; ADBD = mean l-inf "
             "boundary distance of the correctly classified examples)", "rays", 0, queries=10_000),
    Protocol("rays_fast", "RayS-fast (CI-sized, NOT the leaderboard's 10,000: 300 queries per example)",
             "rays", 0, queries=300),
)}
ROBUST_ATTACKS = ("pgd", "fgsm", "autoattack", "autoattack_original", "rays")
#: The stages of AutoAttack's standard version, in order (each attacks the points the earlier ones left).
AA_STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
#: AutoAttack's tolerance for Square lowering the gradient attacks' robust accuracy (fra31 ``check_square_sr``).
SQUARE_TOLERANCE = 0.002


@dataclasses.dataclass(frozen=True)
class RobustAccuracy:
    """Result of `robust_accuracy`: per-example booleans (CPU, dataset order) and their means.

    ``correct[i]``: example i is classified correctly on the clean input *and* under every restart
    of the attack; ``label`` names the protocol (show it with the number); ``settings`` all knobs.
    ``distance`` (RayS only): the l-inf distance to the closest misclassified point found, per
    example; ``adbd`` its mean over the correctly classified ones (Chen & Gu's ADBD).
    ``checks``: the warnings of AutoAttack's sanity checks (`sanity_checks`; for AutoAttack also
    `square_check`), empty when all passed; show them with the number. ``stages`` (AutoAttack
    only): robust accuracy after each of `AA_STAGES`.
    """

    accuracy: float
    correct: torch.Tensor
    clean_accuracy: float
    clean_correct: torch.Tensor
    label: str
    settings: dict[str, Any]
    distance: torch.Tensor | None = None
    checks: tuple[str, ...] = ()
    stages: dict[str, float] | None = None

    @property
    def adbd(self) -> float | None:
        if self.distance is None or not bool(self.clean_correct.any()):
            return None
        return float(self.distance[self.clean_correct].mean())

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for ``Run.cached``)."""
        out = {"accuracy": self.accuracy, "clean_accuracy": self.clean_accuracy, "label": self.label,
               "settings": self.settings, "n": len(self.correct), "correct": self.correct.int().tolist(),
               "checks": list(self.checks), "stages": self.stages}
        if self.distance is not None:
            out.update(adbd=self.adbd, distance=self.distance.tolist())
        return out


def autoattack(model: nn.Module, *, eps: float, n_classes: int, seed: int = 0, steps: int = 100,
               queries: int = 5000) -> Any:
    """AutoAttack (Croce & Hein 2020) 'standard' for l-inf, from torchattacks' four attacks.

    ``torchattacks.MultiAttack([APGD-CE, APGD-T, FAB-T, Square])``: each attack runs on the points
    the previous ones left robust, as fra31's ``run_standard_evaluation``. Standard settings (the
    defaults): 100 iterations for APGD-CE/APGD-T/FAB-T with one restart, 9 target classes (fewer if
    ``n_classes`` ≤ 9), Square with 5000 queries and ``resc_schedule=False``, a fixed ``seed``.
    torchattacks' own ``AutoAttack`` wrapper runs 10 iterations and ``resc_schedule=True`` (TOOLCHAIN.md,
    reference notes §3.2). The attacks seed torch's global RNG: `robust_accuracy` restores it.
    """
    import torchattacks as ta

    check.positive("eps", eps)
    check.integer("n_classes", n_classes, low=2)
    check.integer("seed", seed, low=0)
    check.positive_int("steps", steps)
    check.positive_int("queries", queries)
    apgd = ta.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed)
    apgdt = ta.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, n_classes=n_classes, seed=seed)
    fab = ta.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, multi_targeted=True,
                 n_classes=n_classes, seed=seed)
    for targeted in (apgdt, fab):
        targeted.n_target_classes = min(9, n_classes - 1)  # fra31 standard: 9 targets
    square = ta.Square(model, norm="Linf", eps=eps, n_queries=queries, n_restarts=1, seed=seed,
                       resc_schedule=False)
    return ta.MultiAttack([apgd, apgdt, fab, square])


def _resolve_attack(eps: float, protocol: str | None, given: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(settings, label) of a named protocol, or of explicit attack settings with their defaults."""
    if protocol is not None:
        check.choice("protocol", protocol, sorted(PROTOCOLS))
        clash = [k for k, v in given.items() if v is not None]
        if clash:
            raise ValueError(f"protocol={protocol!r} fixes the attack: do not also give {', '.join(clash)}")
        p = PROTOCOLS[protocol]
        settings = {"attack": p.attack, "steps": p.steps, "random_start": p.random_start, "restarts": p.restarts,
                    "step_size": p.step_ratio * eps if p.step_ratio is not None else None, "queries": p.queries}
        return settings, p.label
    attack = check.choice("attack", given["attack"] or "pgd", ROBUST_ATTACKS)
    defaults = {"steps": {"autoattack": 100, "rays": 0}.get(attack, 20),
                "step_size": _attacks.pgd_step(eps) if attack == "pgd" else None, "random_start": False, "restarts": 1,
                "queries": {"autoattack": 5000, "rays": 10_000}.get(attack)}
    settings = {"attack": attack, **{k: d if given[k] is None else given[k] for k, d in defaults.items()}}
    if attack != "rays":
        check.positive_int("steps", settings["steps"])
    check.positive_int("restarts", settings["restarts"])
    check.flag("random_start", settings["random_start"])
    for name in ("step_size", "queries"):
        if settings[name] is not None:
            (check.positive if name == "step_size" else check.positive_int)(name, settings[name])
    if settings["restarts"] > 1 and not (attack == "pgd" and settings["random_start"]):
        raise ValueError("restarts > 1 needs attack='pgd' with random_start=True (other restarts repeat the first)")
    if attack == "fgsm":
        label = f"FGSM (step {settings['step_size'] or eps:g}{', random start' if settings['random_start'] else ''})"
    elif attack == "rays":
        label = (PROTOCOLS["rays"].label if settings["queries"] == 10_000 else
                 f"RayS-custom (hard-label, {settings['queries']} queries per example, NOT the leaderboard's 10,000)")
    elif attack == "pgd":
        label = (f"PGD-{settings['steps']} (CE, {'random start' if settings['random_start'] else 'no random start'}, "
                 f"step {settings['step_size']:g}, {settings['restarts']} restart(s))")
    elif attack == "autoattack_original":
        label = PROTOCOLS["autoattack_original"].label
    else:
        standard = settings["steps"] == 100 and settings["queries"] == 5000
        label = (PROTOCOLS["autoattack_standard"].label if standard else
                 f"AutoAttack-custom (NOT the standard protocol: {settings['steps']} iterations, "
                 f"Square {settings['queries']} queries)")
    return settings, label


def _labelled_batches(data: Any, batch_size: int, device: torch.device):
    """(x, y) batches on ``device`` from an ImageData, a pair of tensors or an iterable of pairs."""
    from . import data as data_mod

    if isinstance(data, data_mod.ImageData):
        return data_mod.batches(data, batch_size, device=device)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if x.dim() < 2 or y.shape != x.shape[:1]:
            raise ValueError(f"data must be (x (N, ...), y (N,)), got shapes {tuple(x.shape)}, {tuple(y.shape)}")
        return ((x[s:s + batch_size].to(device), y[s:s + batch_size].to(device)) for s in range(0, len(x), batch_size))
    if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
        raise ValueError("data must be an ImageData, a pair (x, y) of tensors or an iterable of (x, y) batches")
    return ((x.to(device), y.to(device)) for x, y in data)


def sanity_checks(model: nn.Module, x: torch.Tensor, *, tol: float = 1e-4) -> list[str]:
    """AutoAttack's checks of the model (Croce & Hein's ``checks.py``) on a batch ``x``, as messages.

    Randomness: two identical forwards must agree (prediction for prediction, and the rows of the
    l2-normalised outputs to within ``tol``), else gradient attacks see a moving target and the
    model needs AutoAttack's 'rand' version (EOT). Softmax outputs: rows in [0, 1] that sum to 1 are
    probabilities, not logits, which flattens the attacks' losses. Returns one message per failed
    check (empty: all passed).
    """
    with torch.no_grad():
        first, second = model(x), model(x)
    unit = lambda t: t / (t.flatten(1).norm(dim=1, keepdim=True) + 1e-10)  # noqa: E731
    messages = []
    if (not torch.equal(first.argmax(1), second.argmax(1))
            or float((unit(first) - unit(second)).flatten(1).norm(dim=1).max()) > tol):
        messages.append("randomness check: two identical forwards differ; robust accuracy of a randomised "
                        "model needs EOT attacks (AutoAttack's 'rand' version)")
    sums_to_one = bool(((first.sum(1) - 1).abs() < 1e-5).all())
    if bool((first > -1e-5).all() and (first < 1 + 1e-5).all()) and sums_to_one:
        messages.append("softmax-output check: the model's rows lie in [0, 1] and sum to 1; the attacks "
                        "expect logits")
    return messages


def square_check(stages: Mapping[str, float], tol: float = SQUARE_TOLERANCE) -> list[str]:
    """AutoAttack's gradient-masking check: Square (black-box, last) should find nothing that APGD-CE,
    APGD-T and FAB-T missed. ``stages``: robust accuracy after each stage (`AA_STAGES`, cumulative);
    if Square lowers the accuracy left by the gradient attacks by more than ``tol`` (fra31's 0.2 %),
    the gradient attacks were fooled (masking) and the number is not reliable. One message or none."""
    if "square" not in stages or len(stages) < 2:
        return []
    gradient = min(v for k, v in stages.items() if k != "square")
    drop = gradient - stages["square"]
    if drop > tol:
        return [f"Square decreased robust accuracy by {100 * drop:.1f}% after the gradient attacks: a sign "
                "of gradient masking; the AutoAttack number is not reliable (run Square with more queries "
                "and restarts, or an adaptive attack)"]
    return []


def _warn_all(messages: Iterable[str]) -> None:
    for message in messages:
        warnings.warn(message, stacklevel=3)


def robust_accuracy(model: nn.Module, data: Any, *, eps: float, protocol: str | None = None,
                    attack: str | None = None, steps: int | None = None, step_size: float | None = None,
                    random_start: bool | None = None, restarts: int | None = None, queries: int | None = None,
                    n_classes: int | None = None, batch_size: int = 256, seed: int = 0,
                    progress: bool = False) -> RobustAccuracy:
    """Robust accuracy under an l-inf attack of radius ``eps`` (pixel units), per example and mean.

    Either a named ``protocol`` (`PROTOCOLS`: ``pgd20_bs``, ``pgd100_bs`` (no random start, step ε/4
    = 0.0078 at 0.031, the BS code's convention), ``pgd20_rs``, ``pgd100_rs`` (uniform random start),
    ``autoattack_standard``, ``autoattack_fast`` (CI-sized; its label says it is not the standard)), or
    explicit settings: ``attack`` 'pgd' (default: 20 steps of eps/4 on CE, no random start, ``restarts``
    random restarts keeping the worst case), 'fgsm' (step ``step_size``, default eps) or 'autoattack'
    (``steps`` iterations, Square ``queries``). ``data``: an ImageData, a pair (x, y) or an iterable of
    (x, y) batches, attacked ``batch_size`` at a time on the model's device.

    The model must be in eval mode (ValueError otherwise: BatchNorm/dropout in train mode make the
    result depend on the batch, as RobustBench warns); it is left unchanged. Random starts draw from
    a generator seeded with ``seed``; AutoAttack uses ``seed`` and leaves the global RNG as it was.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError("model must be in eval mode for robust evaluation (call model.eval()): BatchNorm and "
                         "dropout in train mode make robust accuracy depend on the batch")
    check.positive("eps", eps)
    check.positive_int("batch_size", batch_size)
    check.integer("seed", seed, low=0)
    if n_classes is not None:
        check.integer("n_classes", n_classes, low=2)
    settings, label = _resolve_attack(eps, protocol, dict(attack=attack, steps=steps, step_size=step_size,
                                                          random_start=random_start, restarts=restarts,
                                                          queries=queries))
    device = _models.device_of(model)
    clean_all, robust_all, distance_all = [], [], []
    generator, aa, checks = None, None, []
    stage_counts = torch.zeros(len(AA_STAGES), dtype=torch.long)
    bar = _tqdm(desc=label.split(" (")[0], unit="img", disable=not progress)
    for x, y in _labelled_batches(data, batch_size, device):
        if generator is None:
            checks += sanity_checks(model, x)
            generator = torch.Generator(device=x.device).manual_seed(seed)
        check.images("data's x", x)
        with torch.no_grad():
            logits = model(x)
        if n_classes is not None:
            check.output_width("model", logits, n_classes)
        check.labels("data's y", y, logits.shape[-1])
        clean = logits.argmax(1) == y
        if settings["attack"] == "autoattack" and aa is None:
            classes = n_classes or int(logits.shape[1])
            aa = autoattack(model, eps=eps, n_classes=classes, seed=seed, steps=settings["steps"],
                            queries=settings["queries"])
        robust = clean.clone()
        if settings["attack"] == "rays":
            found = _attacks.rays(model, x, y, query_limit=settings["queries"])
            robust &= found.distance > eps
            distance_all.append(found.distance.cpu())
        if settings["attack"] == "autoattack":
            stages = _autoattack_stages(model, x, y, aa) & clean
            stage_counts += stages.sum(1).cpu()
            robust &= stages[-1]
        elif settings["attack"] == "autoattack_original":
            found, messages = _original_autoattack(model, x, y, eps=eps, seed=seed,
                                                   n_classes=n_classes or int(logits.shape[1]))
            robust &= found
            checks += [m for m in messages if m not in checks]
        for _ in range(settings["restarts"] if settings["attack"] in ("pgd", "fgsm") else 0):
            robust &= _still_correct(model, x, y, eps, settings, generator, aa)
        clean_all.append(clean.cpu())
        robust_all.append(robust.cpu())
        bar.update(len(y))
    bar.close()
    if not clean_all:
        raise ValueError("data must hold at least one example")
    clean_c, robust_c = torch.cat(clean_all), torch.cat(robust_all)
    stages = None
    if settings["attack"] == "autoattack":
        stages = {name: float(c) / len(clean_c) for name, c in zip(AA_STAGES, stage_counts)}
        checks += square_check(stages)
    _warn_all(checks)
    return RobustAccuracy(float(robust_c.float().mean()), robust_c, float(clean_c.float().mean()), clean_c, label,
                          {"eps": eps, "protocol": protocol, "seed": seed, **settings},
                          torch.cat(distance_all) if distance_all else None, tuple(checks), stages)


def _autoattack_stages(model: nn.Module, x: torch.Tensor, y: torch.Tensor, aa: Any) -> torch.Tensor:
    """Correctness after each of AutoAttack's attacks in turn, shape (stages, N), cumulative.

    As ``torchattacks.MultiAttack``: every attack runs on the points all earlier ones left correct
    (starting from all points, as there); the global RNG is restored afterwards.
    """
    correct = torch.ones(len(y), dtype=torch.bool, device=x.device)
    out = []
    cuda = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        for attack in aa.attacks:
            left = correct.nonzero().flatten()
            if len(left) > 0:
                x_adv = attack(x[left], y[left])
                with torch.no_grad():
                    correct[left] = model(x_adv).argmax(1) == y[left]
            out.append(correct.clone())
    return torch.stack(out)


def _original_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                         seed: int, n_classes: int) -> tuple[torch.Tensor, list[str]]:
    """(correct under fra31's AutoAttack standard, its checks' warnings) on one batch.

    ``pyautoattack`` 0.2.0 is Croce & Hein's code packaged for PyPI; it runs its own sanity checks
    (randomness, softmax outputs, dynamic defences, Square after the gradient attacks) and logs
    their warnings to the ``auto-attack`` logger, which we collect. The global RNG is restored.
    Target classes: 9, or ``n_classes − 1`` when fewer exist (as `autoattack`).
    """
    import logging

    from pyautoattack import AutoAttack

    class _Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(f"AutoAttack (original): {record.getMessage()}")

    logger, handler = logging.getLogger("auto-attack"), _Collect()
    logger.addHandler(handler)
    cuda = [x.device.index or 0] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            attack = AutoAttack(model, device=x.device, eps=eps, norm="Linf", seed=seed, version="standard")
            attack.apgd_targeted.n_target_classes = attack.fab.n_target_classes = min(9, n_classes - 1)
            x_adv, _ = attack.run_standard_evaluation(x, y, batch_size=len(x))
    finally:
        logger.removeHandler(handler)
    with torch.no_grad():
        return model(x_adv).argmax(1) == y, handler.messages


def _still_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, settings: Mapping[str, Any],
                   generator: torch.Generator, aa: Any) -> torch.Tensor:
    """Correctness on one attack run's adversarial examples."""
    if settings["attack"] == "pgd":
        pgd = _attacks.PGD(eps, settings["step_size"], settings["steps"], random_start=settings["random_start"])
        x_adv = _attacks.pgd(model, x, y, pgd, generator=generator)
    elif settings["attack"] == "fgsm":
        fgsm = _attacks.FGSM(eps, settings["step_size"], random_start=settings["random_start"])
        x_adv = _attacks.fgsm(model, x, y, fgsm, generator=generator).x_adv
    else:
        raise ValueError(f"attack {settings['attack']!r} has no single-run form here")
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


# --------------------------------------------------------------------------------------------
# Empirical robust accuracy of a smoothed classifier (SmoothAdv §4.3, Fig. 3/7)
# --------------------------------------------------------------------------------------------

from typing import NamedTuple  # noqa: E402

import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

SMOOTHED_ATTACKS = ("pgd", "ddn", "base_pgd")


class EmpiricalAccuracy(NamedTuple):
    """Per-example PREDICT outcome on the attacked inputs: ``predictions`` (int64, -1 = abstain),
    ``labels``, ``correct`` (bool: prediction == label, abstain counts as wrong) and their mean."""

    predictions: np.ndarray
    labels: np.ndarray
    correct: np.ndarray
    accuracy: float

    @property
    def abstain_rate(self) -> float:
        return float((self.predictions == -1).mean())


def empirical_accuracy(model: nn.Module, data: Any, *, sigma: float, eps: float, attack: str = "pgd",
                       steps: int = 20, num_noise: int = 32, n: int = 1000, alpha: float = 0.001,
                       batch_size: int = 1000, estimator: str = "plugin",
                       generator: torch.Generator | None = None, progress: bool = False) -> EmpiricalAccuracy:
    """Empirical l2 robust accuracy of the smoothed classifier g (Salman et al. 2019, §4.3, Fig. 3/7).

    Each input x (label y) is attacked with ``attack``, then classified by Cohen et al.'s PREDICT on
    the adversarial input with ``n`` fresh noise samples at level ``alpha`` (reference ``predict.py``);
    an example counts as correct iff PREDICT returns y (abstentions are wrong). Attacks, all l2 with
    radius ``eps`` (pixel units; ``eps = 0``: no attack, i.e. PREDICT accuracy on clean inputs):

    * ``'pgd'``: SmoothAdv-PGD on −log F̂_y, m_test = ``num_noise`` noise vectors drawn once per
      input and reused by all ``steps`` steps (step 2·eps/steps, zero start); ``estimator='stein'``
      uses the gradient-free estimate (SmoothAdv eq. 7, Fig. 9).
    * ``'ddn'``: SmoothAdv-DDN with the reference's evaluation settings, start radius 1.0 and
      γ = 1 − (3/510/eps)^(1/steps) (needs eps > 3/510).
    * ``'base_pgd'``: the same PGD on the base classifier f (zero noise; the reference's
      ``--base-attack``, "vanilla PGD" in Fig. 3/7).

    ``data``: an ``ImageData``, a pair (x (N, C, H, W) in [0, 1], y (N,)) or an iterable of such
    (x, y) batches. The model is attacked and evaluated in eval mode (its mode is restored after).
    Inputs are attacked in chunks of ``batch_size // num_noise`` so that an attack forward holds about
    ``batch_size`` noisy copies; PREDICT forwards ``batch_size`` samples at a time. Randomness: the attack noise comes from
    ``generator`` (any device; None = the global RNG); PREDICT's noise for example i from
    ``rs_lib.smoothing.example_generator(s, i)`` with one seed s drawn first from ``generator``, so the
    PREDICT noise of an example does not depend on the attack, eps or the chunking.
    """
    from . import attacks
    from . import data as data_mod
    from . import smoothing

    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check.positive("sigma", sigma)
    check.non_negative("eps", eps)
    check.choice("attack", attack, SMOOTHED_ATTACKS)
    check.positive_int("steps", steps)
    check.positive_int("num_noise", num_noise)
    check.positive_int("n", n)
    check.probability("alpha", alpha)
    check.positive_int("batch_size", batch_size)
    check.choice("estimator", estimator, ("plugin", "stein"))
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if attack == "ddn" and eps > 0 and eps <= 3 / 510:
        raise ValueError(f"eps must be > 3/510 for attack='ddn' (its gamma needs it), got {eps!r}")
    device = _models.device_of(model)
    chunk = max(1, batch_size // num_noise)
    chunks = _labelled_batches(data, chunk, device)
    total = len(data) if isinstance(data, data_mod.ImageData) else \
        len(data[0]) if isinstance(data, (tuple, list)) and len(data) == 2 else None
    sample_device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=sample_device))

    predictions: list[int] = []
    labels: list[int] = []
    smooth = None
    with _models.mode(model, train=False):
        with tqdm(total=total, desc=f"empirical {attack} eps={eps:g}", disable=None if progress else True,
                  unit="input") as bar:
            for x_batch, y_batch in chunks:
                for start in range(0, len(x_batch), chunk):
                    x, y = x_batch[start:start + chunk], y_batch[start:start + chunk]
                    if smooth is None:
                        with torch.no_grad():
                            num_classes = model(x[:1]).shape[1]
                        smooth = smoothing.Smooth(model, num_classes, sigma)
                    x_adv = _attack_smoothed(attacks, model, x, y, attack=attack, eps=eps, steps=steps,
                                             sigma=sigma, num_noise=num_noise, estimator=estimator,
                                             generator=generator)
                    first = len(predictions)
                    gens = [smoothing.example_generator(seed, first + k, device) for k in range(len(x))]
                    predictions += smooth.predict_batch(x_adv, n, alpha, batch_size, generators=gens)
                    labels += y.tolist()
                    bar.update(len(x))
    if not predictions:
        raise ValueError("data must hold at least one example")
    pred, lab = np.asarray(predictions, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    correct = pred == lab
    return EmpiricalAccuracy(pred, lab, correct, float(correct.mean()))


def _attack_smoothed(attacks: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: str,
                     eps: float, steps: int, sigma: float, num_noise: int, estimator: str,
                     generator: torch.Generator | None) -> torch.Tensor:
    """The adversarial inputs of one chunk (x itself when eps = 0)."""
    if eps == 0:
        return x
    if attack == "base_pgd":
        zero = torch.zeros((x.shape[0], 1, *x.shape[1:]), dtype=x.dtype, device=x.device)
        return attacks.smoothadv_pgd(model, x, y, attacks.SmoothAdvPGD(eps, steps, sigma=0.0, num_noise=1),
                                     noise=zero, generator=generator).x_adv
    if attack == "ddn":
        gamma = 1 - (3 / 510 / eps) ** (1 / steps)
        ddn = attacks.SmoothAdvDDN(eps, steps, sigma, num_noise, gamma=gamma, init_norm=1.0)
        return attacks.smoothadv_ddn(model, x, y, ddn, generator=generator).x_adv
    pgd = attacks.SmoothAdvPGD(eps, steps, sigma, num_noise, estimator=estimator)
    return attacks.smoothadv_pgd(model, x, y, pgd, generator=generator).x_adv
