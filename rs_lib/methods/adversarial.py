"""Backward Smoothing (Chen et al., AAAI 2022) and the l-inf robust-training baselines it compares with.

| method | paper | inner maximisation (attack phase) | outer loss (train mode) |
|---|---|---|---|
| ``pgd_at`` | Madry et al. 2018 | PGD-10 × 2/255 on CE, U(−ε, ε) start | CE(f(x'), y) |
| ``fast_at`` | Wong et al. 2020 | FGSM α = 10/255 on CE, U(−ε, ε) start | CE(f(x'), y) |
| ``fast_at_zero`` | Wong et al. 2020 (BS Fig. 1) | FGSM from x (no random start) | CE(f(x'), y) |
| ``fast_at_2step`` | BS §5 | PGD-2 × 6/255, U(−ε, ε) start | CE(f(x'), y) |
| ``gradalign`` | Andriushchenko & Flammarion 2020 | FGSM α = 10/255, U(−ε, ε) start | CE(f(x'), y) + λ(1 − cos(∇ₓ, ∇ₓ₊η)) |
| ``gradalign_bs`` | the BS repository's "Fast AT (GradAlign)" | FGSM α = 10/255, unclamped U(−ε, ε) start | as GradAlign, λ = 0.3, both gradients differentiated |
| ``trades`` | Zhang et al. 2019 | 10 × 0.007 ascent on KL, x + 0.001·N start | CE(f(x), y) + β·KL(s(f(x)) ‖ s(f(x'))) |
| ``fast_trades`` | BS §4 eq. 4.2 | one KL step α = 6/255, U(−ε, ε) start | as TRADES |
| ``fast_trades_2step`` | BS §5 | two KL steps α = 5/255, U(−ε, ε) start | as TRADES |
| ``backward_smoothing`` | BS Alg. 1, eq. 4.4-4.5 | BS init (one step on −KL to f(x)+γψ), one KL step | as TRADES, β = 10 |
| ``backward_smoothing_pgd`` | BS App. B "PGD based BS" | BS y-logit init, one CE step | CE(f(x'), y) |
| ``bs_alone`` | BS App. B Tables 8-9 | BS init only, no ascent step | as TRADES, β = 10 |
| ``odi_pgd`` / ``odi_trades`` | BS App. B Table 15 (ODI: Tashiro et al. 2020) | ODI init, then one CE / KL step | CE / as TRADES |

Conventions shared by every objective here:

* ε is the l-inf radius in [0, 1] pixel units. Defaults are the BS paper's CIFAR-10 settings (§5 and
  App. B): **ε = 0.031** ("we set ε = 0.031 for all three datasets", ≈ 7.9/255; AutoAttack's 8/255 =
  0.0314 is an evaluation convention), step sizes as the paper states them in /255 units (TRADES:
  0.007 as the TRADES code; the BS text says 2/255 = 0.0078 for AT and TRADES alike).
* BatchNorm/dropout mode per phase: the attack phase runs in ``attack_mode`` (default ``'eval'``, as
  the BS and TRADES reference codes and the BS repository's Fast AT; ``'train'`` is Wong et al.'s and
  GradAlign's own code, where the attack's forwards also update the BN running statistics); every
  training forward runs in train mode, separately for x and x' (TRADES-type: two BN batches); the
  model is left in train mode.
* ε warm-up: ε and every step size are multiplied by ``ctx.warmup`` (``TrainConfig.warmup_epochs``);
  a factor of exactly 0 skips the attack (x' = x; that iteration costs less than the stated count).
* Per-iteration statistics (reference notes §1.4, §7.1): ``inner_start`` = the method's own inner
  objective (CE for AT-type, KL(s(f(x)) ‖ s(f(·))) batchmean for TRADES-type) at the attack's start
  point (free), and, with ``instrument=True`` (default), ``inner_clean`` / ``inner_final`` at x and x',
  ``increment`` = inner_final − inner_start, ``ce_clean``, ``ce_adv`` and ``ce_increment`` =
  CE(f(x')) − CE(f(x)) (the BS paper's Fig. 1 "loss increment", comparable across methods), all in
  the attack's mode, from one or two extra no-grad forwards (listed per method and included in its
  pass count; in train mode they leave BN statistics and the RNG as they were). Plus ``loss`` and
  the outer-loss terms. For a KL objective inner_clean = 0 by construction.
* Pass counts per iteration in batch-equivalents, as measured by module hooks: every forward, every
  input-gradient backward and the loop's weight backward (which goes through each training forward:
  TRADES-type methods back-propagate through two). ``F + B (+k)``: +k no-grad forwards with
  ``instrument=True``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _validate as check
from .. import attacks
from . import Passes, StepContext, StepOutput, added_option, mode, register, scalar

EPS = 0.031  # BS paper §5 (all datasets); the BS and TRADES codes' value
ATTACK_MODES = ("eval", "train")


def _px(value: float) -> float:
    """A step size the paper gives in /255 units, in [0, 1] pixel units."""
    return value / 255


# --------------------------------------------------------------------------------------------
# Configurations (frozen; defaults = the BS paper's CIFAR-10 values)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdversarialConfig:
    """Fields every method of this module has.

    eps: l-inf radius, [0, 1] pixel units (BS §5: 0.031).
    attack_mode: BatchNorm/dropout mode of the attack phase, 'eval' (BS/TRADES codes) or 'train'.
    instrument: log inner_clean/inner_final/ce_* every iteration (extra no-grad forwards, counted).
    """

    eps: float = EPS
    attack_mode: str = "eval"
    instrument: bool = True

    def __post_init__(self) -> None:
        check.positive("eps", self.eps)
        check.choice("attack_mode", self.attack_mode, ATTACK_MODES)
        check.flag("instrument", self.instrument)


@dataclass(frozen=True)
class ATConfig(AdversarialConfig):
    """PGD adversarial training on CE: ``steps`` signed steps of ``step_size`` (pixel units) from a
    U(−eps, eps) start (``random_start``) or from x. clamp_start: clamp the random start to [0, 1]
    before the first gradient (True: Wong et al.'s code; False: the BS repository's ``pgd_fast.py``)."""

    step_size: float = _px(2)
    steps: int = 10
    random_start: bool = True
    clamp_start: bool = added_option(True)

    def __post_init__(self) -> None:
        super().__post_init__()
        check.positive("step_size", self.step_size)
        check.positive_int("steps", self.steps)
        check.flag("random_start", self.random_start)
        check.flag("clamp_start", self.clamp_start)


@dataclass(frozen=True)
class PGDATConfig(ATConfig):
    """PGD-AT (Madry et al.): BS §5, 10 steps of 2/255, random start, ε = 0.031."""


@dataclass(frozen=True)
class FastATConfig(ATConfig):
    """Fast AT (Wong et al.): BS §5, FGSM with random start, α = 10/255, ε = 0.031."""

    step_size: float = _px(10)
    steps: int = 1


@dataclass(frozen=True)
class FastATZeroConfig(FastATConfig):
    """Fast AT without random initialisation (BS Fig. 1): FGSM from x; α = 10/255 is projected to ε."""

    random_start: bool = False


@dataclass(frozen=True)
class FastAT2StepConfig(ATConfig):
    """Fast AT (2-step): BS §5, two steps of 6/255 from a random start, ε = 0.031."""

    step_size: float = _px(6)
    steps: int = 2


@dataclass(frozen=True)
class GradAlignConfig(AdversarialConfig):
    """Fast AT + GradAlign (Andriushchenko & Flammarion 2020).

    step_size: FGSM α, 10/255 (BS §5 "10/255 for Fast AT/GradAlign"); random_start: the BS
    repository's FGSM-RS (GradAlign's own recipe: ``random_start=False, step_size=eps``).
    lam: λ = 0.2, GradAlign's CIFAR-10 value at 8/255; ``lam_rule='log_linear'`` uses their rule
    λ(ε) = 0.02·10^(ε·255/8) instead (`attacks.lambda_gradalign`, from the full ε, not warmed up).
    clamp_start: clamp the FGSM random start to [0, 1] before its gradient (as `ATConfig`).
    backprop_clean: differentiate through the clean input gradient too (`attacks.gradalign_regularizer`;
    False: GradAlign's `train.py`, the clean gradient detached).
    """

    step_size: float = _px(10)
    random_start: bool = True
    lam: float = 0.2
    lam_rule: str = "fixed"
    clamp_start: bool = added_option(True)
    backprop_clean: bool = added_option(False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check.positive("step_size", self.step_size)
        check.flag("random_start", self.random_start)
        check.flag("clamp_start", self.clamp_start)
        check.flag("backprop_clean", self.backprop_clean)
        check.non_negative("lam", self.lam)
        check.choice("lam_rule", self.lam_rule, ("fixed", "log_linear"))

    @property
    def effective_lam(self) -> float:
        return attacks.lambda_gradalign(self.eps) if self.lam_rule == "log_linear" else self.lam


@dataclass(frozen=True)
class GradAlignBSConfig(GradAlignConfig):
    """GradAlign as the Backward Smoothing repository trains it (``pgd_fast_gradalign.py``), the code
    behind the BS paper's "Fast AT (GradAlign)" rows: FGSM-RS with α = 10/255 from x + U(−ε, ε)
    **not clamped** before the gradient, λ = 0.3 (hard-coded there), and ``create_graph`` on both
    input gradients, so the weight gradient flows through the clean gradient as well. The
    regulariser has GradAlign's value; its weight gradient differs (the audit measured a cosine of
    about 0.7 to GradAlign's and, λ counted, about half the magnitude)."""

    lam: float = 0.3
    clamp_start: bool = False
    backprop_clean: bool = True


@dataclass(frozen=True)
class TRADESConfig(AdversarialConfig):
    """TRADES (Zhang et al. 2019): β = 6, 10 KL steps of 0.007 from x + 0.001·N(0, I), ε = 0.031.

    start: 'gaussian' (TRADES), 'uniform' (U(−ε, ε), not clamped: Fast TRADES) or 'zero'.
    beta: weight of the KL term of the outer loss.
    """

    step_size: float = 0.007
    steps: int = 10
    beta: float = 6.0
    start: str = "gaussian"

    def __post_init__(self) -> None:
        super().__post_init__()
        check.positive("step_size", self.step_size)
        check.positive_int("steps", self.steps)
        check.non_negative("beta", self.beta)
        check.choice("start", self.start, ("gaussian", "uniform", "zero"))


@dataclass(frozen=True)
class FastTRADESConfig(TRADESConfig):
    """Fast TRADES (BS §4, eq. 4.2): U(−ε, ε) start, one KL step of 6/255 (BS §5), β = 6 (not stated
    in the paper: TRADES' value and the BS code's default)."""

    step_size: float = _px(6)
    steps: int = 1
    start: str = "uniform"


@dataclass(frozen=True)
class FastTRADES2StepConfig(FastTRADESConfig):
    """Fast TRADES (2-step): two KL steps of 5/255 (BS §5), U(−ε, ε) start, β = 6."""

    step_size: float = _px(5)
    steps: int = 2


@dataclass(frozen=True)
class BSAloneConfig(AdversarialConfig):
    """Backward Smoothing alone (App. B Tables 8-9): the BS initialisation with Backward Smoothing's
    settings (α = 8/255, γ = 1, β = 10, ε = 0.031) and no ascent step.
    num_points: ψ draws averaged by the BS step (App. B Table 10)."""

    step_size: float = _px(8)
    beta: float = 10.0
    gamma: float = 1.0
    num_points: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check.positive("step_size", self.step_size)
        check.non_negative("beta", self.beta)
        check.non_negative("gamma", self.gamma)
        check.positive_int("num_points", self.num_points)


@dataclass(frozen=True)
class BSConfig(BSAloneConfig):
    """Backward Smoothing (BS Alg. 1): β = 10, γ = 1, α = 8/255 for both steps (§5, Tables 7, 11, 12),
    ε = 0.031, one ascent step after the initialisation. num_points: ψ draws averaged by the BS step
    (App. B Table 10)."""

    steps: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check.positive_int("steps", self.steps)


@dataclass(frozen=True)
class BSPGDConfig(AdversarialConfig):
    """PGD-based Backward Smoothing (App. B, Table 15): the y-logit BS init then ``steps`` CE steps.

    The paper gives no step size: we use BS's α = 8/255 for the init and the ascent. target:
    'shifted' (f(x)_y + γψ_y, eq. 4.3's y-component) or 'literal' (γψ_y as the appendix prints it).
    """

    step_size: float = _px(8)
    steps: int = 1
    gamma: float = 1.0
    target: str = "shifted"

    def __post_init__(self) -> None:
        super().__post_init__()
        check.positive("step_size", self.step_size)
        check.positive_int("steps", self.steps)
        check.non_negative("gamma", self.gamma)
        check.choice("target", self.target, ("shifted", "literal"))


@dataclass(frozen=True)
class ODIPGDConfig(AdversarialConfig):
    """ODI initialisation (Tashiro et al. 2020) in place of BS's, then ``steps`` CE steps (Table 15).

    The paper gives no ODI settings: ``odi_steps`` = 1 ODI step (BS's budget: one init step) of
    ``odi_step_size`` = 8/255 from a U(−ε, ε) start (``odi_random_start``, as the ODI code), then
    ``steps`` ascent steps of ``step_size`` = 8/255.
    """

    odi_steps: int = 1
    odi_step_size: float = _px(8)
    odi_random_start: bool = True
    step_size: float = _px(8)
    steps: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check.positive_int("odi_steps", self.odi_steps)
        check.positive("odi_step_size", self.odi_step_size)
        check.flag("odi_random_start", self.odi_random_start)
        check.positive("step_size", self.step_size)
        check.positive_int("steps", self.steps)


@dataclass(frozen=True)
class ODITRADESConfig(ODIPGDConfig):
    """ODI initialisation, then ``steps`` KL steps and the TRADES outer loss with BS's β = 10."""

    beta: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check.non_negative("beta", self.beta)


# --------------------------------------------------------------------------------------------
# Shared machinery: the attack phase, the instrumentation, the two outer losses
# --------------------------------------------------------------------------------------------


@dataclass
class _Inner:
    """What an attack phase hands on: the final point, the inner objective at its start point (batch
    mean; None if not computed), the attack-mode clean logits when the attack had them anyway, and
    whether the start point is x itself."""

    x_adv: Tensor
    start: Tensor | None
    clean_logits: Tensor | None = None
    start_at_clean: bool = False


def _accuracy(logits: Tensor, y: Tensor) -> Tensor:
    return scalar((logits.argmax(1) == y).float().mean())


@contextlib.contextmanager
def _observe(model: nn.Module) -> Iterator[None]:
    """No-grad forwards that change nothing: in train mode the BN buffers and the RNG are restored."""
    if not model.training:
        with torch.no_grad():
            yield
        return
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        yield
    with torch.no_grad():
        for buffer, value in saved:
            buffer.copy_(value)


def _instrument(model: nn.Module, x: Tensor, y: Tensor, inner: _Inner, kind: str) -> dict[str, Tensor]:
    """inner_clean / inner_start / inner_final / increment and CE at x and x' (attack mode, no grad).

    Forwards: one at x' plus one at x unless the attack had the clean logits or started at x.
    """
    with _observe(model):
        clean = inner.clean_logits
        if clean is None and not (inner.start_at_clean and inner.start is not None and kind == "ce"):
            clean = model(x)
        adv = model(inner.x_adv)
    ce_adv = F.cross_entropy(adv, y)
    ce_clean = F.cross_entropy(clean, y) if clean is not None else inner.start
    if kind == "ce":
        inner_clean, inner_final = ce_clean, ce_adv
    else:
        inner_clean, inner_final = torch.zeros_like(ce_adv), attacks.kl(clean, adv).mean()
    start = inner.start if inner.start is not None else inner_clean
    return {"inner_clean": scalar(inner_clean), "inner_start": scalar(start),
            "inner_final": scalar(inner_final), "increment": scalar(inner_final - start),
            "ce_clean": scalar(ce_clean), "ce_adv": scalar(ce_adv), "ce_increment": scalar(ce_adv - ce_clean)}


def _at_outer(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """CE(f(x'), y), one train-mode forward (Madry et al.)."""
    logits = model(x_adv)
    return F.cross_entropy(logits, y), {"acc_adv": _accuracy(logits, y)}


def _trades_outer(beta: float) -> Callable[..., tuple[Tensor, dict[str, Tensor]]]:
    """CE(f(x), y) + β·KL(s(f(x)) ‖ s(f(x'))) batchmean, two train-mode forwards, target not detached
    (TRADES eq. 5 / BS Alg. 1 line 7, as the reference codes)."""

    def outer(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits, logits_adv = model(x), model(x_adv)
        natural, robust = F.cross_entropy(logits, y), attacks.kl(logits, logits_adv).mean()
        return natural + beta * robust, {"loss_natural": scalar(natural), "loss_robust": scalar(robust),
                                         "acc": _accuracy(logits, y), "acc_adv": _accuracy(logits_adv, y)}

    return outer


AttackFn = Callable[[float], _Inner]  # warmed-up scale factor -> attack phase result
OuterFn = Callable[[nn.Module, Tensor, Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]]


def _step(model: nn.Module, x: Tensor, y: Tensor, cfg: AdversarialConfig, ctx: StepContext, *,
          attack: AttackFn, kind: str, outer: OuterFn) -> StepOutput:
    """Attack phase in ``cfg.attack_mode`` (+ instrumentation), then the outer loss in train mode."""
    scale = float(ctx.warmup)
    with mode(model, train=cfg.attack_mode == "train"):
        inner = attack(scale) if scale > 0 else _Inner(x.detach(), None, None, start_at_clean=True)
        stats = _instrument(model, x, y, inner, kind) if cfg.instrument else {}
    model.train()
    loss, extra = outer(model, x, y, inner.x_adv)
    if "inner_start" not in stats:
        start = inner.start if inner.start is not None else (0.0 if kind == "kl" else math.nan)
        stats["inner_start"] = scalar(torch.as_tensor(start))
    stats.update(extra)
    stats["loss"] = scalar(loss)
    return StepOutput(loss, stats)


def _passes(forward: int, backward: int, cfg: AdversarialConfig, instrument_forwards: int) -> Passes:
    return Passes(forward=forward + (instrument_forwards if cfg.instrument else 0), backward=backward)


# --------------------------------------------------------------------------------------------
# Adversarial training on CE: PGD-AT, Fast AT and its variants, GradAlign
# --------------------------------------------------------------------------------------------


def _pgd_phase(model: nn.Module, x: Tensor, y: Tensor, cfg: ATConfig, ctx: StepContext) -> AttackFn:
    def attack(scale: float) -> _Inner:
        pgd = attacks.PGD(cfg.eps * scale, cfg.step_size * scale, cfg.steps, random_start=cfg.random_start,
                          clamp_start=cfg.clamp_start)
        res = attacks.pgd_attack(model, x, y, pgd, generator=ctx.generator)
        return _Inner(res.x_adv, res.loss_start, start_at_clean=not cfg.random_start)
    return attack


def _at(model: nn.Module, x: Tensor, y: Tensor, cfg: ATConfig, ctx: StepContext) -> StepOutput:
    return _step(model, x, y, cfg, ctx, attack=_pgd_phase(model, x, y, cfg, ctx), kind="ce", outer=_at_outer)


def _at_passes(cfg: ATConfig) -> Passes:
    return _passes(cfg.steps + 1, cfg.steps + 1, cfg, 1 + cfg.random_start)


@register("pgd_at", PGDATConfig, passes=_at_passes)
def pgd_at(model: nn.Module, x: Tensor, y: Tensor, cfg: PGDATConfig, ctx: StepContext) -> StepOutput:
    """PGD adversarial training (Madry et al. 2018): PGD-10 × 2/255 from a random start, CE on x'.

    Passes (k = steps): (k + 1) F + (k + 1) B: k attack steps (forward + input backward, attack
    mode, default eval), one training forward of x' (train mode), the weight backward; instrument:
    +2 no-grad forwards (+1 without random start).
    """
    return _at(model, x, y, cfg, ctx)


@register("fast_at", FastATConfig, passes=_at_passes)
def fast_at(model: nn.Module, x: Tensor, y: Tensor, cfg: FastATConfig, ctx: StepContext) -> StepOutput:
    """Fast AT (Wong et al. 2020): FGSM with α = 10/255 from a U(−ε, ε) start, CE on x'.

    Passes: 2 F + 2 B (one attack step in attack mode, default eval as the BS repository's Fast AT;
    ``attack_mode='train'`` is Wong et al.'s code), training forward in train mode; instrument: +2
    forwards (+1 with ``random_start=False``).
    """
    return _at(model, x, y, cfg, ctx)


@register("fast_at_zero", FastATZeroConfig, passes=_at_passes)
def fast_at_zero(model: nn.Module, x: Tensor, y: Tensor, cfg: FastATZeroConfig, ctx: StepContext) -> StepOutput:
    """Fast AT without random initialisation (BS Fig. 1): FGSM from x, CE on x'.

    Same as ``fast_at`` with ``random_start=False``. Passes: 2 F + 2 B (attack step in attack mode,
    default eval; training forward in train mode); instrument: +1 forward (CE at x is the attack's).
    """
    return _at(model, x, y, cfg, ctx)


@register("fast_at_2step", FastAT2StepConfig, passes=_at_passes)
def fast_at_2step(model: nn.Module, x: Tensor, y: Tensor, cfg: FastAT2StepConfig, ctx: StepContext) -> StepOutput:
    """Fast AT (2-step) (BS §5): two PGD steps of 6/255 from a random start, CE on x'.

    Passes: 3 F + 3 B (two attack steps in attack mode, default eval; training forward in train mode);
    instrument: +2 forwards.
    """
    return _at(model, x, y, cfg, ctx)


def _gradalign_passes(cfg: GradAlignConfig) -> Passes:
    passes = _passes(4, 5 + cfg.backprop_clean, cfg, 1 + cfg.random_start)
    return Passes(passes.forward, passes.backward, double_backward=1 + cfg.backprop_clean)


@register("gradalign", GradAlignConfig, passes=_gradalign_passes)
def gradalign(model: nn.Module, x: Tensor, y: Tensor, cfg: GradAlignConfig, ctx: StepContext) -> StepOutput:
    """Fast AT + GradAlign (Andriushchenko & Flammarion 2020): CE on the FGSM point + λ(1 − cos).

    The FGSM step (α = 10/255, random start) runs in attack mode (default eval); the regulariser's
    two input gradients, at x and at x + η, η ~ U(−ε, ε) (the second with ``create_graph``), and the
    training forward run in train mode (as both reference codes). The clean gradient is computed
    apart from the FGSM one (as the BS repository; GradAlign's zero-start recipe could reuse it).
    Passes: 4 F + 5 B as module hooks count them (attack 1+1, regulariser 2+2, training forward 1,
    weight backward through the training forward and through the x + η forward); the double
    backward through the x + η gradient's graph is one more pass that no hook sees (stated as
    ``Passes.double_backward = 1``). With ``backprop_clean`` (``gradalign_bs``) the weight backward
    also goes through the x forward (6 B) and through the clean gradient's graph (double_backward 2).
    Instrument: +2 forwards (+1 with ``random_start=False``).
    """
    return _gradalign(model, x, y, cfg, ctx)


@register("gradalign_bs", GradAlignBSConfig, passes=_gradalign_passes)
def gradalign_bs(model: nn.Module, x: Tensor, y: Tensor, cfg: GradAlignBSConfig, ctx: StepContext) -> StepOutput:
    """Fast AT + GradAlign as the BS repository: λ = 0.3, unclamped FGSM-RS start, both gradients kept.

    The objective of ``gradalign`` with `GradAlignBSConfig`'s values: FGSM (α = 10/255) from
    x + U(−ε, ε) not clamped, in attack mode (default eval, as ``pgd_fast_gradalign.py``); CE on the
    FGSM point plus 0.3·(1 − cos(∇ₓCE(x), ∇ₓCE(x + η))) with ``create_graph`` on both gradients,
    train mode. Passes: 4 F + 6 B as hooks count them, double_backward 2. Instrument: +2 forwards.
    """
    return _gradalign(model, x, y, cfg, ctx)


def _gradalign(model: nn.Module, x: Tensor, y: Tensor, cfg: GradAlignConfig, ctx: StepContext) -> StepOutput:
    lam = cfg.effective_lam

    def attack(scale: float) -> _Inner:
        fgsm = attacks.FGSM(cfg.eps * scale, cfg.step_size * scale, random_start=cfg.random_start,
                            clamp_start=cfg.clamp_start)
        res = attacks.fgsm(model, x, y, fgsm, generator=ctx.generator)
        return _Inner(res.x_adv, res.loss_start, start_at_clean=not cfg.random_start)

    def outer(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        ce, stats = _at_outer(model, x, y, x_adv)
        eps = cfg.eps * float(ctx.warmup)
        reg = attacks.gradalign_regularizer(model, x, y, eps=eps, backprop_clean=cfg.backprop_clean,
                                            generator=ctx.generator) if eps > 0 \
            else ce.new_zeros(())
        stats.update(loss_ce=scalar(ce), reg=scalar(reg))
        return ce + lam * reg, stats

    return _step(model, x, y, cfg, ctx, attack=attack, kind="ce", outer=outer)


# --------------------------------------------------------------------------------------------
# TRADES-type: TRADES, Fast TRADES, Backward Smoothing, BS alone, ODI (TRADES)
# --------------------------------------------------------------------------------------------


def _trades_phase(model: nn.Module, x: Tensor, cfg: TRADESConfig, ctx: StepContext) -> AttackFn:
    def attack(scale: float) -> _Inner:
        with torch.no_grad():
            clean = model(x)
        kl_attack = attacks.TradesKL(cfg.eps * scale, cfg.step_size * scale, cfg.steps, start=cfg.start)
        res = attacks.trades_kl_attack(model, x, kl_attack, logits_clean=clean, generator=ctx.generator)
        return _Inner(res.x_adv, res.loss_start, clean)
    return attack


def _trades(model: nn.Module, x: Tensor, y: Tensor, cfg: TRADESConfig, ctx: StepContext) -> StepOutput:
    return _step(model, x, y, cfg, ctx, attack=_trades_phase(model, x, cfg, ctx), kind="kl",
                 outer=_trades_outer(cfg.beta))


def _trades_passes(cfg: TRADESConfig) -> Passes:
    return _passes(cfg.steps + 3, cfg.steps + 2, cfg, 1)


@register("trades", TRADESConfig, passes=_trades_passes)
def trades(model: nn.Module, x: Tensor, y: Tensor, cfg: TRADESConfig, ctx: StepContext) -> StepOutput:
    """TRADES (Zhang et al. 2019): 10 KL ascent steps of 0.007 from x + 0.001·N, CE + 6·KL.

    Passes (k = steps): (k + 3) F + (k + 2) B: one no-grad clean forward for the KL target and k
    ascent steps (attack mode, default eval, as the TRADES code), two training forwards (x, x') in
    train mode and the weight backward through both. The TRADES code re-runs the clean forward in
    every step (2k + 3 forwards); the target does not change, so we compute it once. Instrument: +1.
    """
    return _trades(model, x, y, cfg, ctx)


@register("fast_trades", FastTRADESConfig, passes=_trades_passes)
def fast_trades(model: nn.Module, x: Tensor, y: Tensor, cfg: FastTRADESConfig, ctx: StepContext) -> StepOutput:
    """Fast TRADES (BS §4, eq. 4.2): one KL step of 6/255 from x + U(−ε, ε), CE + 6·KL.

    Passes: 4 F + 3 B (clean target forward and one ascent step in attack mode, default eval, as the
    BS code; training forwards of x and x' in train mode; weight backward through both). Instrument: +1.
    """
    return _trades(model, x, y, cfg, ctx)


@register("fast_trades_2step", FastTRADES2StepConfig, passes=_trades_passes)
def fast_trades_2step(model: nn.Module, x: Tensor, y: Tensor, cfg: FastTRADES2StepConfig,
                      ctx: StepContext) -> StepOutput:
    """Fast TRADES (2-step) (BS §5): two KL steps of 5/255 from x + U(−ε, ε), CE + 6·KL.

    Passes: 5 F + 4 B (attack mode default eval; training forwards in train mode). Instrument: +1.
    """
    return _trades(model, x, y, cfg, ctx)


def _bs_point(model: nn.Module, x: Tensor, cfg: BSConfig | BSAloneConfig, ctx: StepContext,
              scale: float) -> tuple[Tensor, Tensor]:
    """(x + ξ*, clean logits): the BS initialisation, whose forward at ξ = 0 is the clean forward."""
    init = attacks.BackwardSmoothing(cfg.eps * scale, cfg.step_size * scale, gamma=cfg.gamma,
                                     num_points=cfg.num_points)
    return attacks.backward_smoothing_point(model, x, init, generator=ctx.generator)


def _bs_passes(cfg: BSConfig) -> Passes:
    return _passes(cfg.steps + 3, cfg.steps + 3, cfg, 1)


@register("backward_smoothing", BSConfig, passes=_bs_passes)
def backward_smoothing(model: nn.Module, x: Tensor, y: Tensor, cfg: BSConfig, ctx: StepContext) -> StepOutput:
    """Backward Smoothing (Chen et al., Alg. 1): BS init, one KL step (α = 8/255), CE + 10·KL.

    Attack phase in attack mode (default eval, as ``trades_backward.py``): ψ ~ U(−1, 1)^{N×C} fresh
    each iteration; one signed step from ξ = 0 that lowers KL(s(f(x) + γψ) ‖ s(f(x + ξ))) (eq. 4.4;
    its forward at ξ = 0 also gives the clean target), projected and clamped; ``steps`` KL ascent
    steps towards s(f(x)) projected to the ε-ball around x (eq. 4.5). Outer loss as TRADES (line 7).
    Passes (k = steps): (k + 3) F + (k + 3) B = 4 F + 4 B: BS step 1+1, ascent k+k, training forwards
    of x and x' (train mode), weight backward through both (the reference adds a separate clean
    forward: 5 F). ``num_points`` does not change the count (one KL to the averaged noisy target, see
    `attacks.backward_smoothing_init`; the paper's Table 10 times grow with it). Instrument: +1.
    """
    def attack(scale: float) -> _Inner:
        x_start, clean = _bs_point(model, x, cfg, ctx, scale)
        ascent = attacks.TradesKL(cfg.eps * scale, cfg.step_size * scale, cfg.steps)
        res = attacks.trades_kl_attack(model, x, ascent, x_start=x_start, logits_clean=clean)
        return _Inner(res.x_adv, res.loss_start, clean)

    return _step(model, x, y, cfg, ctx, attack=attack, kind="kl", outer=_trades_outer(cfg.beta))


@register("bs_alone", BSAloneConfig, passes=lambda cfg: _passes(3, 3, cfg, 1))
def bs_alone(model: nn.Module, x: Tensor, y: Tensor, cfg: BSAloneConfig, ctx: StepContext) -> StepOutput:
    """Backward Smoothing alone (BS App. B, Tables 8-9): the BS initialisation, no ascent step.

    "Only use Backward Smoothing initialization but do not perform gradient-based attack at all":
    x' = x + ξ* (one step on −KL(s(f(x) + γψ) ‖ s(f(x + ξ))) from ξ = 0, attack mode, default eval),
    then the TRADES outer loss CE + β·KL(s(f(x)) ‖ s(f(x'))) with BS's β = 10 in train mode. The
    attack's start point is x, so inner_start = KL = 0 and the increment is KL at x + ξ*.
    Passes: 3 F + 3 B (BS step 1+1, two training forwards, weight backward through both). Instrument: +1.
    """
    def attack(scale: float) -> _Inner:
        x_start, clean = _bs_point(model, x, cfg, ctx, scale)
        return _Inner(x_start, torch.zeros((), device=x.device), clean, start_at_clean=True)

    return _step(model, x, y, cfg, ctx, attack=attack, kind="kl", outer=_trades_outer(cfg.beta))


def _odi_start(model: nn.Module, x: Tensor, cfg: ODIPGDConfig, ctx: StepContext, scale: float) -> Tensor:
    odi = attacks.ODI(cfg.eps * scale, cfg.odi_step_size * scale, cfg.odi_steps, cfg.odi_random_start)
    return attacks.odi_init(model, x, odi, generator=ctx.generator)


@register("odi_trades", ODITRADESConfig,
          passes=lambda cfg: _passes(cfg.odi_steps + cfg.steps + 3, cfg.odi_steps + cfg.steps + 2, cfg, 1))
def odi_trades(model: nn.Module, x: Tensor, y: Tensor, cfg: ODITRADESConfig, ctx: StepContext) -> StepOutput:
    """ODI (TRADES) (BS App. B, Table 15): ODI initialisation, one KL step, CE + 10·KL.

    Attack mode (default eval): clean target forward (no grad), ``odi_steps`` steps maximising w·f(x'),
    w ~ U(−1, 1)^{N×C}, from x + U(−ε, ε), then ``steps`` KL ascent steps. Passes (defaults):
    5 F + 4 B = (1 + odi_steps + steps + 2) F + (odi_steps + steps + 2) B. Instrument: +1.
    """
    def attack(scale: float) -> _Inner:
        with torch.no_grad():
            clean = model(x)
        x_start = _odi_start(model, x, cfg, ctx, scale)
        ascent = attacks.TradesKL(cfg.eps * scale, cfg.step_size * scale, cfg.steps)
        res = attacks.trades_kl_attack(model, x, ascent, x_start=x_start, logits_clean=clean)
        return _Inner(res.x_adv, res.loss_start, clean)

    return _step(model, x, y, cfg, ctx, attack=attack, kind="kl", outer=_trades_outer(cfg.beta))


# --------------------------------------------------------------------------------------------
# AT with a non-random initialisation: PGD-based Backward Smoothing, ODI (PGD)
# --------------------------------------------------------------------------------------------


@register("backward_smoothing_pgd", BSPGDConfig, passes=lambda cfg: _passes(cfg.steps + 2, cfg.steps + 2, cfg, 2))
def backward_smoothing_pgd(model: nn.Module, x: Tensor, y: Tensor, cfg: BSPGDConfig,
                           ctx: StepContext) -> StepOutput:
    """PGD-based Backward Smoothing (BS App. B, Table 15): y-logit BS init, one CE step, CE on x'.

    Attack mode (default eval): one signed step from ξ = 0 lowering ([f(x + ξ)]_y − target)² with
    target f(x)_y + γψ_y (``target='shifted'``) or γψ_y (``'literal'``), then ``steps`` CE ascent
    steps. Passes: (steps + 2) F + (steps + 2) B = 3 F + 3 B. Instrument: +2 forwards.
    """
    def attack(scale: float) -> _Inner:
        init = attacks.BackwardSmoothingPGD(cfg.eps * scale, cfg.step_size * scale, cfg.gamma, cfg.target)
        x_start = attacks.backward_smoothing_pgd_init(model, x, y, init, generator=ctx.generator)
        pgd = attacks.PGD(cfg.eps * scale, cfg.step_size * scale, cfg.steps)
        res = attacks.pgd_attack(model, x, y, pgd, x_start=x_start)
        return _Inner(res.x_adv, res.loss_start)

    return _step(model, x, y, cfg, ctx, attack=attack, kind="ce", outer=_at_outer)


@register("odi_pgd", ODIPGDConfig,
          passes=lambda cfg: _passes(cfg.odi_steps + cfg.steps + 1, cfg.odi_steps + cfg.steps + 1, cfg, 2))
def odi_pgd(model: nn.Module, x: Tensor, y: Tensor, cfg: ODIPGDConfig, ctx: StepContext) -> StepOutput:
    """ODI (PGD) (BS App. B, Table 15): ODI initialisation, one CE step, CE on x'.

    Attack mode (default eval): ``odi_steps`` ODI steps from x + U(−ε, ε), then ``steps`` CE steps.
    Passes: (odi_steps + steps + 1) F + (odi_steps + steps + 1) B = 3 F + 3 B. Instrument: +2.
    """
    def attack(scale: float) -> _Inner:
        x_start = _odi_start(model, x, cfg, ctx, scale)
        pgd = attacks.PGD(cfg.eps * scale, cfg.step_size * scale, cfg.steps)
        res = attacks.pgd_attack(model, x, y, pgd, x_start=x_start)
        return _Inner(res.x_adv, res.loss_start)

    return _step(model, x, y, cfg, ctx, attack=attack, kind="ce", outer=_at_outer)
