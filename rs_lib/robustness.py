"""Robust accuracy of a (deterministic) classifier under a named l-inf attack protocol.

One path: ``robust_accuracy(model, data, *, protocol, eps)``, where ``protocol`` is a `Protocol` or
the name of one in :data:`PROTOCOLS`, and ``eps`` the l-inf radius in pixel units ([0, 1] images; a
stored run's radius is `threat_eps` of its config). Every result carries its protocol's label;
show it with the number.

The named protocols, what they cost (model passes per image) and what they guarantee:

* ``pgd20_bs`` / ``pgd100_bs``: PGD-20 / PGD-100 on CE, no random start, step ε/4 (the Backward
  Smoothing code's 0.0078 at 0.031); 20 / 100 forward-backward passes. An upper bound on the true
  robust accuracy, comparable with the BS paper's tables.
* ``pgd20_rs`` / ``pgd100_rs``: the same with a uniform random start (sees through the gradient
  masking of a collapsed model); same cost.
* ``autoattack_standard``: AutoAttack's standard version (Croce & Hein 2020: APGD-CE, APGD-T,
  FAB-T with 100 iterations, Square with 5000 queries, seed 0), torchattacks' attacks run in turn
  on the points still correct as fra31's ``run_standard_evaluation``; about 10^4 passes per robust
  image. The paper's protocol: comparable with RobustBench and the BS tables.
* ``autoattack_fast``: AutoAttack at 10 iterations and 500 Square queries (CI-sized); its label
  says it is NOT the standard protocol and its numbers are not comparable with the papers'.
* ``autoattack_original``: the standard version from Croce & Hein's own code (PyPI
  ``pyautoattack`` 0.2.0), a cross-check of ``autoattack_standard``; same cost.
* ``rays`` / ``rays_fast``: RayS (Chen & Gu 2020), a hard-label attack, 10,000 (the leaderboard's,
  BS Table 5) / 300 queries per image; also gives each image's boundary distance (ADBD). A
  hard-label attack is not fooled by masked gradients, but is weaker than AutoAttack on an honest
  model.

Other settings (``Protocol.custom``) label themselves ("PGD-10 (custom: ...)") so that a custom
number is never shown under a named protocol's label.

Public names: `Protocol`, :data:`PROTOCOLS`, :data:`ROBUST_ATTACKS`,
`as_protocol`, `robust_accuracy`, `RobustAccuracy`, `threat_eps`, `autoattack`, :data:`AA_STAGES`,
`sanity_checks`, `square_check`, :data:`SQUARE_TOLERANCE`, `labelled_batches`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm as _tqdm

from . import _validate as check
from . import attacks as _attacks
from . import models as _models

ROBUST_ATTACKS = ("pgd", "fgsm", "autoattack", "autoattack_original", "rays")
#: The stages of AutoAttack's standard version, in order (each attacks the points the earlier ones left).
AA_STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
#: AutoAttack's tolerance for Square lowering the gradient attacks' robust accuracy (fra31 ``check_square_sr``).
SQUARE_TOLERANCE = 0.002


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A named robust-accuracy evaluation and the label shown wherever its numbers appear.

    ``attack``: one of :data:`ROBUST_ATTACKS`; ``steps``: PGD steps, or the iterations of
    AutoAttack's APGD-CE / APGD-T / FAB-T (0 for RayS); PGD's step is ``step_ratio``·eps, or
    ``step_size`` (pixel units) when that is given (custom protocols only; neither: FGSM steps eps);
    ``restarts``: PGD runs from random starts, keeping the worst case; ``queries``: Square's or
    RayS's query budget. Invalid settings raise ValueError on construction.
    """

    name: str
    label: str
    attack: str
    steps: int
    step_ratio: float | None = None
    random_start: bool = False
    restarts: int = 1
    queries: int | None = None
    step_size: float | None = None

    def __post_init__(self) -> None:
        check.choice("attack", self.attack, ROBUST_ATTACKS)
        if self.attack == "rays":
            check.integer("steps", self.steps, low=0)
        else:
            check.positive_int("steps", self.steps)
        check.positive_int("restarts", self.restarts)
        check.flag("random_start", self.random_start)
        for name in ("step_ratio", "step_size"):
            if getattr(self, name) is not None:
                check.positive(name, getattr(self, name))
        if self.attack == "pgd" and self.step_ratio is None and self.step_size is None:
            raise ValueError("a PGD protocol needs its step: step_ratio (x eps) or step_size (pixel units)")
        if self.step_ratio is not None and self.step_size is not None:
            raise ValueError("give a protocol's step as step_ratio (x eps) or step_size (pixel units), not both")
        if self.queries is not None:
            check.positive_int("queries", self.queries)
        if self.restarts > 1 and not (self.attack == "pgd" and self.random_start):
            raise ValueError("restarts > 1 needs attack='pgd' with random_start=True (other restarts repeat the first)")

    def step_at(self, eps: float) -> float | None:
        """PGD / FGSM's step in pixel units at radius ``eps`` (None: the attack's own default)."""
        return self.step_size if self.step_size is not None else \
            None if self.step_ratio is None else self.step_ratio * eps

    @classmethod
    def custom(cls, attack: str = "pgd", *, steps: int | None = None, step_size: float | None = None,
               random_start: bool = False, restarts: int = 1, queries: int | None = None) -> Protocol:
        """A protocol of other settings, named and labelled by what it is (e.g. "PGD-10 (custom: CE,
        no random start, step ε/4, 1 restart)"); settings equal to a named protocol's give that one.

        Defaults: PGD-20 on CE with step ε/4 (``step_size`` in pixel units overrides it), no
        random start, 1 restart; FGSM steps eps; AutoAttack 100 iterations and Square 5000
        queries (the standard); RayS 10,000 queries; ``autoattack_original`` takes no settings.
        """
        check.choice("attack", attack, ROBUST_ATTACKS)
        steps = {"autoattack": 100, "autoattack_original": 100, "rays": 0}.get(attack, 20) if steps is None else steps
        queries = {"autoattack": 5000, "autoattack_original": 5000, "rays": 10_000}.get(attack) \
            if queries is None else queries
        ratio = _attacks.PGD_STEP_RATIO if attack == "pgd" and step_size is None else None
        draft = cls("custom", "custom", attack, steps, ratio, random_start, restarts, queries, step_size)
        for named in PROTOCOLS.values():
            if dataclasses.replace(named, name="custom", label="custom") == draft:
                return named
        if attack == "autoattack_original":
            raise ValueError("attack 'autoattack_original' runs fra31's standard version only: give no steps or "
                             "queries (use attack='autoattack' for other settings)")
        name = _custom_name(draft)
        return dataclasses.replace(draft, name=name, label=name)


def _custom_name(p: Protocol) -> str:
    """The self-describing name of a custom protocol."""
    step = ("ε" if p.attack == "fgsm" else "") if p.step_size is None and p.step_ratio is None else \
        f"{p.step_size:g}" if p.step_size is not None else \
        "ε/4" if p.step_ratio == 0.25 else f"{p.step_ratio:g}ε"
    start = "random start" if p.random_start else "no random start"
    if p.attack == "fgsm":
        return f"FGSM (custom: {start}, step {step})"
    if p.attack == "pgd":
        restarts = f"{p.restarts} restart{'s' if p.restarts > 1 else ''}"
        return f"PGD-{p.steps} (custom: CE, {start}, step {step}, {restarts})"
    if p.attack == "rays":
        return f"RayS-custom (hard-label, {p.queries} queries per example, NOT the leaderboard's 10,000)"
    return f"AutoAttack-custom (NOT the standard protocol: {p.steps} iterations, Square {p.queries} queries)"


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


def as_protocol(value: Protocol | str) -> Protocol:
    """The `Protocol` named ``value`` in :data:`PROTOCOLS`, or ``value`` itself; a `Protocol` that bears
    a named protocol's name must have its settings (ValueError naming the ones that differ)."""
    if isinstance(value, str):
        return PROTOCOLS[check.choice("protocol", value, sorted(PROTOCOLS))]
    if not isinstance(value, Protocol):
        raise ValueError(f"protocol must be a Protocol or one of {sorted(PROTOCOLS)}, got {type(value).__name__}")
    named = PROTOCOLS.get(value.name)
    if named is not None and named != value:
        differ = [f"{f.name} {getattr(value, f.name)!r} (not {getattr(named, f.name)!r})"
                  for f in dataclasses.fields(Protocol) if getattr(value, f.name) != getattr(named, f.name)]
        raise ValueError(f"protocol={value.name!r} fixes the attack, but this one differs in {', '.join(differ)}: "
                         "build other settings with Protocol.custom(...)")
    return value


def threat_eps(config: Any) -> float | None:
    """The l-inf radius a stored run of ``config`` (a TrainConfig) is evaluated at: its validation
    metrics' ``eval_params['eps']``, else its method's ``method_params['eps']`` (None: neither has one).

    A run's config holds eps twice when it has both (the method's training radius and the per-epoch
    validation attack's); read it here only, so that every caller evaluates at the same radius.
    ValueError if the two copies disagree.
    """
    method, validation = config.method_params.get("eps"), config.eval_params.get("eps")
    if method is not None and validation is not None and not math.isclose(method, validation, rel_tol=1e-9):
        raise ValueError(f"the run's method eps {method!r} and validation eps {validation!r} differ: give the "
                         "evaluation radius explicitly")
    return validation if validation is not None else method


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


def labelled_batches(data: Any, batch_size: int, device: torch.device):
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


def robust_accuracy(model: nn.Module, data: Any, *, protocol: Protocol | str, eps: float,
                    n_classes: int | None = None, batch_size: int = 256, seed: int = 0,
                    progress: bool = False) -> RobustAccuracy:
    """Robust accuracy under ``protocol`` (a `Protocol` or a name in :data:`PROTOCOLS`) at l-inf
    radius ``eps`` (pixel units), per example and mean; the module docstring says what each named
    protocol costs and guarantees.

    ``data``: an ImageData, a pair (x, y) or an iterable of (x, y) batches, attacked ``batch_size``
    at a time on the model's device. The model must be in eval mode (ValueError otherwise:
    BatchNorm/dropout in train mode make the result depend on the batch, as RobustBench warns); it is
    left unchanged. Random starts draw from a generator seeded with ``seed``; AutoAttack uses
    ``seed`` and leaves the global RNG as it was.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError("model must be in eval mode for robust evaluation (call model.eval()): BatchNorm and "
                         "dropout in train mode make robust accuracy depend on the batch")
    chosen = as_protocol(protocol)
    check.positive("eps", eps)
    check.positive_int("batch_size", batch_size)
    check.integer("seed", seed, low=0)
    if n_classes is not None:
        check.integer("n_classes", n_classes, low=2)
    settings = {"attack": chosen.attack, "steps": chosen.steps, "random_start": chosen.random_start,
                "restarts": chosen.restarts, "step_size": chosen.step_at(eps), "queries": chosen.queries}
    device = _models.device_of(model)
    run = _Attack(model, eps, settings, n_classes, seed)
    clean_all, robust_all = [], []
    bar = _tqdm(desc=chosen.label.split(" (")[0], unit="img", disable=not progress)
    for x, y in labelled_batches(data, batch_size, device):
        clean, robust = run.batch(x, y)
        clean_all.append(clean.cpu())
        robust_all.append(robust.cpu())
        bar.update(len(y))
    bar.close()
    if not clean_all:
        raise ValueError("data must hold at least one example")
    clean_c, robust_c = torch.cat(clean_all), torch.cat(robust_all)
    stages = run.stages(len(clean_c))
    checks = run.checks + (square_check(stages) if stages is not None else [])
    _warn_all(checks)
    return RobustAccuracy(float(robust_c.float().mean()), robust_c, float(clean_c.float().mean()), clean_c,
                          chosen.label, {"eps": eps, "protocol": chosen.name, "seed": seed, **settings},
                          torch.cat(run.distances) if run.distances else None, tuple(checks), stages)


class _Attack:
    """One protocol's attack over a stream of batches: per-batch correctness, and what it gathers
    across batches (sanity-check messages, RayS distances, AutoAttack's per-stage counts)."""

    def __init__(self, model: nn.Module, eps: float, settings: Mapping[str, Any], n_classes: int | None,
                 seed: int) -> None:
        self.model, self.eps, self.settings, self.n_classes, self.seed = model, eps, settings, n_classes, seed
        self.generator: torch.Generator | None = None
        self.aa: Any = None
        self.checks: list[str] = []
        self.distances: list[torch.Tensor] = []
        self.stage_counts = torch.zeros(len(AA_STAGES), dtype=torch.long)

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clean correct, robust correct) on one batch."""
        model, settings, attack = self.model, self.settings, self.settings["attack"]
        if self.generator is None:
            self.checks += sanity_checks(model, x)
            self.generator = torch.Generator(device=x.device).manual_seed(self.seed)
        check.images("data's x", x)
        with torch.no_grad():
            logits = model(x)
        if self.n_classes is not None:
            check.output_width("model", logits, self.n_classes)
        check.labels("data's y", y, logits.shape[-1])
        clean = logits.argmax(1) == y
        classes = self.n_classes or int(logits.shape[1])
        robust = clean.clone()
        if attack == "rays":
            found = _attacks.rays(model, x, y, query_limit=settings["queries"])
            robust &= found.distance > self.eps
            self.distances.append(found.distance.cpu())
        elif attack == "autoattack":
            if self.aa is None:
                self.aa = autoattack(model, eps=self.eps, n_classes=classes, seed=self.seed, steps=settings["steps"],
                                     queries=settings["queries"])
            stages = _autoattack_stages(model, x, y, self.aa) & clean
            self.stage_counts += stages.sum(1).cpu()
            robust &= stages[-1]
        elif attack == "autoattack_original":
            found, messages = _original_autoattack(model, x, y, eps=self.eps, seed=self.seed, n_classes=classes)
            robust &= found
            self.checks += [m for m in messages if m not in self.checks]
        else:
            for _ in range(settings["restarts"]):
                robust &= _still_correct(model, x, y, self.eps, settings, self.generator)
        return clean, robust

    def stages(self, n: int) -> dict[str, float] | None:
        """AutoAttack's robust accuracy after each stage over ``n`` examples (None for other attacks)."""
        if self.settings["attack"] != "autoattack":
            return None
        return {name: float(c) / n for name, c in zip(AA_STAGES, self.stage_counts)}


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
                   generator: torch.Generator) -> torch.Tensor:
    """Correctness on one PGD / FGSM run's adversarial examples."""
    if settings["attack"] == "pgd":
        pgd = _attacks.PGD(eps, settings["step_size"], settings["steps"], random_start=settings["random_start"])
        x_adv = _attacks.pgd(model, x, y, pgd, generator=generator)
    else:
        fgsm = _attacks.FGSM(eps, settings["step_size"], random_start=settings["random_start"])
        x_adv = _attacks.fgsm(model, x, y, fgsm, generator=generator).x_adv
    with torch.no_grad():
        return model(x_adv).argmax(1) == y
