"""Training objectives for Gaussian-smoothed classifiers: SmoothAdv, SmoothMix and the baselines.

| method | paper | loss per example |
|---|---|---|
| ``stability`` | Li et al. 2019 (as SmoothMix's ``train_stab.py``) | CE(f(x), y) + λ·soft-CE(s(f(x)) → f(x+δ)) |
| ``smoothadv_pgd`` / ``_ddn`` | Salman et al. 2019, Pseudocode 1 | mean_i CE(f(x̂ + δ_i), y), x̂ = SmoothAdv attack |
| ``vanilla_pgd`` / ``_noise`` | Salman et al. 2019, App. C.1 | CE(f(x̂), y) / CE(f(x̂ + δ), y), x̂ = PGD on f |
| ``macer`` | Zhai et al. 2020 (their ``macer.py``) | −log F̂_y + λ·σ/2·hinge(γ − Φ⁻¹ gap) |
| ``consistency`` | Jeong & Shin 2020 (``consistency.py``) | mean_i CE + λ·mean_i KL(F̂ ‖ s_i) + η·H(F̂) |
| ``smoothmix`` | Jeong et al. 2021, eq. 12 and Alg. 1 | mean_i CE + η·1[F̂ correct]·KL(y_mix ‖ s(f(x_mix + δ_i))) |

(``gaussian``, Cohen et al.'s noise augmentation, lives in the package with ``standard``.)

Conventions shared by every objective here:

* Noise δ_i ~ N(0, σ² I) is added in pixel space, not clamped (as the references), and drawn with
  ``ctx.generator`` as a tensor (B, m, ...): m noise vectors per example. Where a method attacks,
  the attack's noise is the one reused for the training copies (SmoothAdv footnote 3).
* Attacks run in eval mode (BatchNorm running statistics, as the references' ``model.eval()``);
  every training forward runs in train mode. Attacks take gradients w.r.t. the input only.
* **Deviation from the references (all of them):** the reference scripts split each loader batch
  of B into m chunks of B/m and take one optimiser step per chunk (m steps per loader batch, each on
  B/m examples × m noise copies). We take one optimiser step per loader batch, on all B examples
  × m copies: the same examples and noise copies per epoch, m times fewer (and m times larger)
  steps. Choose ``batch_size`` = reference batch / m to match the reference's step size.
* Warm-ups (SmoothAdv's eps, SmoothMix's η and one-step radius) follow the reference rule
  ``min(1, (epoch + 1) / warmup_epochs)`` from the method's ``warmup_epochs`` (0 = off), multiplied
  by the loop's ``ctx.warmup`` (1 unless ``TrainConfig.warmup_epochs`` is set); use one of the two.
  With the method's default ``warmup_epochs = 10`` the paper setting needs no loop setting.
* Pass counts are per training iteration in batch-equivalents (a forward or backward of the
  m noisy copies of a batch counts m); an attack step costs one forward and one input-gradient
  backward of its m copies. Counts are at full cost (a warm-up factor of exactly 0 skips the attack).
* λ: the regulariser weight of ``stability``, ``macer`` and ``consistency`` is the field ``lbd`` (their
  codes' spelling, a stored run key); SmoothMix's λ is a different quantity, the per-example mixing
  ratio (``SmoothMixTerms.lam``, drawn each step, never stored).

Public names: the objectives and configs of the table above, `SmoothMixTerms`, `smoothmix_terms` and
`mixup_targets` (SmoothMix's loss written out, for the tests and the analysis notebooks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _validate as check
from .. import attacks
from . import Passes, StepContext, StepOutput, added_option, mode, register, scalar, warmup_factor


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _warmup(warmup_epochs: float, ctx: StepContext) -> float:
    """The method's own per-epoch warm-up (the references' ``min(1, (epoch + 1) / warmup_epochs)``,
    `methods.warmup_factor`) times the loop's ``ctx.warmup``: both apply when both are configured."""
    return warmup_factor(warmup_epochs, ctx.epoch) * float(ctx.warmup)


def _noise(x: Tensor, sigma: float, num_noise: int, ctx: StepContext) -> Tensor:
    """sigma·N(0, I) of shape (B, m, ...) from the method's generator, on x's device."""
    return attacks.draw_noise(x, sigma=sigma, num_noise=num_noise, generator=ctx.generator)


def _copies(x: Tensor, noise: Tensor) -> Tensor:
    """The m noisy copies x_b + δ_{b,i} as one batch (B·m, ...), example-major."""
    return (x.unsqueeze(1) + noise).flatten(0, 1)


def _accuracy(logits: Tensor, y: Tensor) -> Tensor:
    return scalar((logits.argmax(1) == y).float().mean())


def _check_sigma_m(sigma: float, num_noise: int) -> None:
    check.positive("sigma", sigma)
    check.positive_int("num_noise", num_noise)


# --------------------------------------------------------------------------------------------
# Stability training (Li et al. 2019)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StabilityConfig:
    """Stability training (Li et al. 2019) as SmoothMix's ``train_stab.py``.

    sigma: noise std (pixel units). lbd: weight λ of the stability term (SmoothMix App. B.1: 2;
    1 for CIFAR-10 at sigma = 1.0).
    """

    sigma: float = 0.25
    lbd: float = 2.0

    def __post_init__(self) -> None:
        check.positive("sigma", self.sigma)
        check.non_negative("lbd", self.lbd)


@register("stability", StabilityConfig, passes=lambda cfg: Passes(forward=2, backward=2))
def stability(model: nn.Module, x: Tensor, y: Tensor, cfg: StabilityConfig,
              ctx: StepContext) -> StepOutput:
    """Stability training (Li et al. 2019): CE(f(x), y) + λ·soft-CE(s(f(x)) → f(x+δ)).

    Loss = CE(f(x), y) − λ·Σ_c s(f(x))_c · log s(f(x+δ))_c, one δ ~ N(0, σ²I) per example, batch
    means. The clean soft target s(f(x)) is **not detached** (as the reference ``train_stab.py``),
    so the stability term also moves the clean prediction (its gradient includes −λ∇H(s(f(x)))).
    Passes: 2 forwards (clean, noisy) + 2 backward (both graphs), train mode for both.
    """
    noise = _noise(x, cfg.sigma, 1, ctx)[:, 0]
    logits_clean = model(x)
    logits_noisy = model(x + noise)
    ce = F.cross_entropy(logits_clean, y)
    stab = -(F.softmax(logits_clean, 1) * F.log_softmax(logits_noisy, 1)).sum(1).mean()
    loss = ce + cfg.lbd * stab
    return StepOutput(loss, {"ce": scalar(ce), "stab": scalar(stab), "acc": _accuracy(logits_clean, y),
                             "acc_noisy": _accuracy(logits_noisy, y)})


# --------------------------------------------------------------------------------------------
# SmoothAdv (Salman et al. 2019)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmoothAdvConfig:
    """SmoothAdv-ersarial training (Salman et al. 2019, §3.2, Pseudocode 1).

    sigma: noise std (pixel units). eps: l2 radius of the attack in pixel units (the reference
    passes /256 units: 255/256 ≈ 1.0). steps: T. num_noise: m_train. warmup_epochs: eps (and DDN's
    start radius) grows as min(1, (epoch+1)/warmup_epochs)·eps (reference ``--warmup``, 10 in the
    paper runs; 0 = off). estimator (PGD only): ``'plugin'`` eq. 6 or ``'stein'`` eq. 7 (the
    reference's ``--no-grad-attack``). gamma, levels: DDN's norm update and quantisation.
    step_order (PGD only): ``'project_clamp'`` (ours) or ``'clamp_renorm'`` (the reference's l2 step
    order, a slightly stronger attack: see `attacks.smoothadv_pgd`). Defaults: SmoothMix App. B.1's SmoothAdv baseline for MNIST (T = 10, eps = 1.0, m = 4,
    10-epoch warm-up; CIFAR-10 uses m = 8); the SmoothAdv paper's grid is m ∈ {1, 2, 4, 8},
    T ∈ {2, 4, 6, 8, 10}, eps ∈ {0.25, 0.5, 1, 2}.
    """

    sigma: float = 0.25
    eps: float = 1.0
    steps: int = 10
    num_noise: int = 4
    warmup_epochs: float = 10.0
    estimator: str = "plugin"
    gamma: float = 0.05
    levels: int | None = 256
    step_order: str = added_option("project_clamp")

    def __post_init__(self) -> None:
        _check_sigma_m(self.sigma, self.num_noise)
        check.choice("step_order", self.step_order, attacks.STEP_ORDERS)
        check.positive("eps", self.eps)
        check.positive_int("steps", self.steps)
        check.non_negative("warmup_epochs", self.warmup_epochs)
        check.choice("estimator", self.estimator, ("plugin", "stein"))
        check.probability("gamma", self.gamma)
        if self.levels is not None:
            check.integer("levels", self.levels, low=2)


def _smoothadv_passes(cfg: SmoothAdvConfig, *, ddn: bool) -> Passes:
    m, t = cfg.num_noise, cfg.steps
    attack_backward = 0 if (cfg.estimator == "stein" and not ddn) else m * t
    return Passes(forward=m * (t + 1), backward=attack_backward + m)


def _smoothadv_step(model: nn.Module, x: Tensor, y: Tensor, cfg: SmoothAdvConfig, ctx: StepContext,
                    *, ddn: bool) -> StepOutput:
    eps = cfg.eps * _warmup(cfg.warmup_epochs, ctx)
    noise = _noise(x, cfg.sigma, cfg.num_noise, ctx)
    if eps > 0:
        with mode(model, train=False):
            if ddn:
                # The reference sets DDN's start radius to the warmed-up eps every epoch
                # (``attacker.init_norm = min(eps, (epoch+1)·eps/warmup)``), overriding --init-norm-DDN.
                ddn = attacks.SmoothAdvDDN(eps, cfg.steps, cfg.sigma, cfg.num_noise, gamma=cfg.gamma,
                                           init_norm=eps, levels=cfg.levels)
                x_adv = attacks.smoothadv_ddn(model, x, y, ddn, noise=noise).x_adv
            else:
                pgd = attacks.SmoothAdvPGD(eps, cfg.steps, cfg.sigma, cfg.num_noise, estimator=cfg.estimator,
                                           step_order=cfg.step_order)
                x_adv = attacks.smoothadv_pgd(model, x, y, pgd, noise=noise, generator=ctx.generator).x_adv
    else:
        x_adv = x
    logits = model(_copies(x_adv, noise))
    targets = y.repeat_interleave(cfg.num_noise)
    loss = F.cross_entropy(logits, targets)
    size = (x_adv - x).flatten(1).norm(dim=1).mean()
    return StepOutput(loss, {"ce": scalar(loss), "acc": _accuracy(logits, targets), "eps": eps,
                             "adv_norm": scalar(size)})


@register("smoothadv_pgd", SmoothAdvConfig, passes=lambda cfg: _smoothadv_passes(cfg, ddn=False))
def smoothadv_pgd(model: nn.Module, x: Tensor, y: Tensor, cfg: SmoothAdvConfig,
                  ctx: StepContext) -> StepOutput:
    """SmoothAdv-PGD training (Salman et al. 2019, Pseudocode 1, objective (S), estimator eq. 6).

    Draw m noise vectors per example; in eval mode, T steps of l2 PGD (zero start, step 2ε/T,
    normalised gradient of −log F̂_y, the same noise every step) within the warmed-up ε ball and
    [0, 1]; then, in train mode, CE(f(x̂ + δ_i), y) on all m copies **with the attack's noise**
    (``--train-multi-noise``), mean over B·m. Nothing to detach (x̂ is a constant).
    Passes: forward m(T+1), backward m·T (input gradients; 0 with ``estimator='stein'``) + m.
    One optimiser step per loader batch (module docstring: the reference takes m, on chunks).
    """
    return _smoothadv_step(model, x, y, cfg, ctx, ddn=False)


@register("smoothadv_ddn", SmoothAdvConfig, passes=lambda cfg: _smoothadv_passes(cfg, ddn=True))
def smoothadv_ddn(model: nn.Module, x: Tensor, y: Tensor, cfg: SmoothAdvConfig,
                  ctx: StepContext) -> StepOutput:
    """SmoothAdv-DDN training (Salman et al. 2019, §3 with DDN, Rony et al. 2019).

    As ``smoothadv_pgd`` with the DDN attack (eval mode, cosine step schedule, per-example radius
    ×(1 ± gamma) from the majority vote of the m noisy predictions, start radius = the warmed-up ε
    as the reference's epoch loop sets it, 8-bit quantisation, smallest adversarial δ kept and
    renormed to ε), then CE on the m copies with the attack's noise, train mode.
    Passes: forward m(T+1), backward m·T + m.
    """
    return _smoothadv_step(model, x, y, cfg, ctx, ddn=True)


# --------------------------------------------------------------------------------------------
# Vanilla PGD baselines (SmoothAdv App. C.1)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VanillaPGDConfig:
    """PGD on the *base* classifier (Salman et al. 2019, App. C.1: T = 2, m_train = 1).

    eps: l2 radius (pixel units; App. C.1 grid 0.25, 0.5, 1, 2). steps: T, step 2·eps/T, zero
    start (the SmoothAdv attacker with zero noise). warmup_epochs: eps warm-up as SmoothAdv.
    """

    eps: float = 1.0
    steps: int = 2
    warmup_epochs: float = 10.0

    def __post_init__(self) -> None:
        check.positive("eps", self.eps)
        check.positive_int("steps", self.steps)
        check.non_negative("warmup_epochs", self.warmup_epochs)


@dataclass(frozen=True)
class VanillaPGDNoiseConfig(VanillaPGDConfig):
    """``VanillaPGDConfig`` plus sigma, the std of the noise added to the adversarial examples."""

    sigma: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        check.positive("sigma", self.sigma)


def _vanilla_attack(model: nn.Module, x: Tensor, y: Tensor, cfg: VanillaPGDConfig,
                    ctx: StepContext) -> tuple[Tensor, float]:
    """l2 PGD on f at the clean point: SmoothAdv's attacker with m = 1 and zero noise (CE of f)."""
    eps = cfg.eps * _warmup(cfg.warmup_epochs, ctx)
    if eps == 0:
        return x, eps
    zero = torch.zeros((x.shape[0], 1, *x.shape[1:]), dtype=x.dtype, device=x.device)
    with mode(model, train=False):
        x_adv = attacks.smoothadv_pgd(model, x, y, attacks.SmoothAdvPGD(eps, cfg.steps, sigma=0.0, num_noise=1),
                                      noise=zero, generator=ctx.generator).x_adv
    return x_adv, eps


@register("vanilla_pgd", VanillaPGDConfig,
          passes=lambda cfg: Passes(forward=cfg.steps + 1, backward=cfg.steps + 1))
def vanilla_pgd(model: nn.Module, x: Tensor, y: Tensor, cfg: VanillaPGDConfig,
                ctx: StepContext) -> StepOutput:
    """Vanilla PGD training (SmoothAdv App. C.1): CE(f(x̂), y), x̂ = l2 PGD on the base classifier.

    Eval-mode attack (T steps of step 2ε/T from x, no noise), train-mode CE on x̂ with **no** noise;
    the smoothed classifier is formed only at certification. Passes: forward T+1, backward T+1.
    """
    x_adv, eps = _vanilla_attack(model, x, y, cfg, ctx)
    logits = model(x_adv)
    loss = F.cross_entropy(logits, y)
    return StepOutput(loss, {"ce": scalar(loss), "acc": _accuracy(logits, y), "eps": eps})


@register("vanilla_pgd_noise", VanillaPGDNoiseConfig,
          passes=lambda cfg: Passes(forward=cfg.steps + 1, backward=cfg.steps + 1))
def vanilla_pgd_noise(model: nn.Module, x: Tensor, y: Tensor, cfg: VanillaPGDNoiseConfig,
                      ctx: StepContext) -> StepOutput:
    """Vanilla PGD + noise (SmoothAdv App. C.1): CE(f(x̂ + δ), y), x̂ = l2 PGD on the base classifier.

    The attack (eval mode) sees no noise; one δ ~ N(0, σ²I) per example is added to x̂ afterwards
    and the CE is taken in train mode. Passes: forward T+1, backward T+1.
    """
    x_adv, eps = _vanilla_attack(model, x, y, cfg, ctx)
    logits = model(x_adv + _noise(x, cfg.sigma, 1, ctx)[:, 0])
    loss = F.cross_entropy(logits, y)
    return StepOutput(loss, {"ce": scalar(loss), "acc": _accuracy(logits, y), "eps": eps})


# --------------------------------------------------------------------------------------------
# MACER (Zhai et al. 2020)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MacerConfig:
    """MACER (Zhai et al. 2020), settings as used by SmoothMix (App. B.1).

    sigma: noise std. num_noise: m = 16. beta: inverse temperature of the robustness term's
    softmax, 16. gamma: hinge margin on the Φ⁻¹ gap, 8. lbd: weight λ of the robustness term:
    16 (SmoothMix's MNIST runs; 6 at sigma = 1.0); MACER's CIFAR-10 models use 12 (σ = 0.25),
    4 (σ = 0.5), and 12 deferred to after the first lr decay at σ = 1.0. deferred_epochs: λ = 0 for
    the first ``deferred_epochs`` epochs (the reference's ``--deferred``; 0 = off).
    """

    sigma: float = 0.25
    num_noise: int = 16
    beta: float = 16.0
    gamma: float = 8.0
    lbd: float = 16.0
    deferred_epochs: int = 0

    def __post_init__(self) -> None:
        _check_sigma_m(self.sigma, self.num_noise)
        check.positive("beta", self.beta)
        check.positive("gamma", self.gamma)
        check.non_negative("lbd", self.lbd)
        check.integer("deferred_epochs", self.deferred_epochs, low=0)


@register("macer", MacerConfig, passes=lambda cfg: Passes(forward=cfg.num_noise, backward=cfg.num_noise))
def macer(model: nn.Module, x: Tensor, y: Tensor, cfg: MacerConfig, ctx: StepContext) -> StepOutput:
    """MACER (Zhai et al. 2020, eq. 5-7): −log F̂_y + λ·σ/2·Σ hinge over the Φ⁻¹ gap of the top two.

    One train-mode forward of the m noisy copies. Classification: −log(F̂_y + 1e-10) with
    F̂ = mean_i s(f(x+δ_i)). Robustness, on examples whose top class of G = mean_i s(β·f(x+δ_i)) is y
    and whose gap d = Φ⁻¹(G_top1) − Φ⁻¹(G_top2) is finite and ≤ γ: (σ/2)·(γ − d). Loss =
    (Σ classification + λ·Σ robustness) / B (reference ``macer.py``). Nothing detached.
    Passes: forward m, backward m.
    """
    noise = _noise(x, cfg.sigma, cfg.num_noise, ctx)
    logits = model(_copies(x, noise)).view(x.shape[0], cfg.num_noise, -1)
    f_hat = F.softmax(logits, 2).mean(1)
    classification = F.nll_loss((f_hat + 1e-10).log(), y, reduction="sum")
    top2_scores, top2_idx = F.softmax(cfg.beta * logits, 2).mean(1).topk(2, dim=1)
    p1, p2 = top2_scores[:, 0], top2_scores[:, 1]
    with torch.no_grad():
        gap = torch.special.ndtri(p1) - torch.special.ndtri(p2)
        keep = (top2_idx[:, 0] == y) & torch.isfinite(gap) & (gap <= cfg.gamma)
    # Φ⁻¹ is evaluated with gradients only where it is finite, so no NaN reaches the backward.
    hinge = cfg.gamma - (torch.special.ndtri(p1[keep]) - torch.special.ndtri(p2[keep]))
    robustness = hinge.sum() * cfg.sigma / 2
    lbd = 0.0 if ctx.epoch < cfg.deferred_epochs else cfg.lbd
    loss = (classification + lbd * robustness) / x.shape[0]
    return StepOutput(loss, {"ce": scalar(classification / x.shape[0]),
                             "robustness": scalar(robustness / x.shape[0]),
                             "acc": _accuracy(f_hat, y), "hinge_frac": scalar(keep.float().mean())})


# --------------------------------------------------------------------------------------------
# Consistency regularisation (Jeong & Shin 2020)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsistencyConfig:
    """Consistency regularisation (Jeong & Shin 2020), settings as SmoothMix App. B.1.

    sigma: noise std. num_noise: m = 2. lbd: weight λ of the KL term (10 for CIFAR-10, 5 for MNIST,
    doubled at sigma = 0.25). eta: weight η of the entropy term, 0.5.
    """

    sigma: float = 0.25
    num_noise: int = 2
    lbd: float = 10.0
    eta: float = 0.5

    def __post_init__(self) -> None:
        _check_sigma_m(self.sigma, self.num_noise)
        check.non_negative("lbd", self.lbd)
        check.non_negative("eta", self.eta)


@register("consistency", ConsistencyConfig,
          passes=lambda cfg: Passes(forward=cfg.num_noise, backward=cfg.num_noise))
def consistency(model: nn.Module, x: Tensor, y: Tensor, cfg: ConsistencyConfig,
                ctx: StepContext) -> StepOutput:
    """Consistency regularisation (Jeong & Shin 2020, eq. 8-9): CE + λ·KL(F̂ ‖ s_i) + η·H(F̂).

    One train-mode forward of the m noisy copies; loss = mean over B·m of CE(f(x+δ_i), y) +
    mean over B of [λ·(1/m)Σ_i KL(F̂ ‖ s(f(x+δ_i))) + η·H(F̂)], F̂ = mean_i s(f(x+δ_i)) **not
    detached** (reference ``consistency.py``, loss='default'). Passes: forward m, backward m.
    """
    noise = _noise(x, cfg.sigma, cfg.num_noise, ctx)
    logits = model(_copies(x, noise))
    targets = y.repeat_interleave(cfg.num_noise)
    ce = F.cross_entropy(logits, targets)
    log_probs = F.log_softmax(logits, 1).view(x.shape[0], cfg.num_noise, -1)
    f_hat = log_probs.exp().mean(1)
    kl = F.kl_div(log_probs, f_hat.unsqueeze(1).expand_as(log_probs), reduction="none").sum(2).mean(1)
    entropy = -(f_hat * f_hat.clamp_min(1e-20).log()).sum(1)
    loss = ce + (cfg.lbd * kl + cfg.eta * entropy).mean()
    return StepOutput(loss, {"ce": scalar(ce), "kl": scalar(kl.mean()), "entropy": scalar(entropy.mean()),
                             "acc": _accuracy(logits, targets)})


# --------------------------------------------------------------------------------------------
# SmoothMix (Jeong et al. 2021)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmoothMixConfig:
    """SmoothMix (Jeong et al. 2021, §3.2, Alg. 1); defaults: the paper's MNIST run at σ = 0.25 with
    η = 5 (reference EXPERIMENTS.MD: m = 4, α = 1, T = 2; T = 4 at σ = 0.5 and 8 at σ = 1.0; with
    η = 1, T = 3 at σ = 0.25). CIFAR-10: m = 2, T = 4, η = 5, α = 0.5 / 1 / 2 at σ = 0.25 / 0.5 / 1.

    sigma: noise std. eta: weight η of the mixup loss (1 or 5 on MNIST, 5 on CIFAR-10). step_size:
    α, the absolute l2 step of the unrestricted ascent (CIFAR-10: 0.5, 1, 2 at σ = 0.25, 0.5, 1).
    steps: T. num_noise: m. mix_step: 0 (clean side = x) or 1 (one-step adversary: clean side =
    x̃⁽¹⁾ projected onto the ball of radius ``maxnorm_s``). maxnorm_s: that radius (None = α·mix_step,
    the reference default). maxnorm: optional l2 ball for the whole ascent (None = unrestricted).
    warmup_epochs: η and maxnorm_s are scaled by min(1, (epoch+1)/warmup_epochs) (reference 10).
    """

    sigma: float = 0.25
    eta: float = 5.0
    step_size: float = 1.0
    steps: int = 2
    num_noise: int = 4
    mix_step: int = 0
    maxnorm_s: float | None = None
    maxnorm: float | None = None
    warmup_epochs: float = 10.0

    def __post_init__(self) -> None:
        _check_sigma_m(self.sigma, self.num_noise)
        check.non_negative("eta", self.eta)
        check.positive("step_size", self.step_size)
        check.positive_int("steps", self.steps)
        check.integer("mix_step", self.mix_step, low=0, high=self.steps)
        if self.maxnorm_s is not None:
            check.non_negative("maxnorm_s", self.maxnorm_s)
        if self.maxnorm is not None:
            check.positive("maxnorm", self.maxnorm)
        check.non_negative("warmup_epochs", self.warmup_epochs)


class SmoothMixTerms(NamedTuple):
    """The pieces of the SmoothMix loss for one batch (B examples, m noise copies, C classes).

    ``f_hat`` (B, C) = F̂(x₁) = mean_i s(f(x₁ + δ_i)), differentiable; ``lam`` (B,) the mixing
    ratios; ``targets`` (B, C) = (1 − λ)·F̂ + λ/C; ``mask`` (B,) bool, argmax F̂ = y; ``ce`` (B·m,)
    and ``mix`` (B·m,) the per-copy natural CE and (unmasked) mixup KL; ``logits_clean`` (B·m, C).
    """

    loss_nat: Tensor
    loss_mix: Tensor
    ce: Tensor
    mix: Tensor
    f_hat: Tensor
    lam: Tensor
    targets: Tensor
    mask: Tensor
    logits_clean: Tensor


def mixup_targets(f_hat: Tensor, lam: Tensor) -> Tensor:
    """SmoothMix eq. 10: y_mix = (1 − λ)·F̂(x) + λ·(1/C)·1, per example; F̂ (B, C), λ (B,)."""
    return (1 - lam).unsqueeze(1) * f_hat + lam.unsqueeze(1) / f_hat.shape[1]


def smoothmix_terms(model: nn.Module, x_init: Tensor, x_adv: Tensor, y: Tensor, noise: Tensor,
                    lam: Tensor) -> SmoothMixTerms:
    """SmoothMix's natural and mixup losses (Jeong et al. 2021, eq. 9-12; reference ``train.py``).

    Two forwards in the model's current mode (train mode in training), each of the m copies:
    clean side x₁ + δ_i (CE with y; F̂(x₁) = mean of their softmaxes, **not detached**, so the mixup
    loss also trains through F̂ as the reference does) and x_mix + δ_i with x_mix = (1−λ)x₁ + λx̃,
    the same noise. Mixup loss per copy: KL(y_mix ‖ s(f(x_mix + δ_i))) (the reference's ``kl_div``;
    the paper writes CE, which differs by H(y_mix), a term that matters since y_mix has gradients).
    ``loss_nat`` = mean CE over B·m; ``loss_mix`` = mean over B·m of mask·KL (mask: argmax F̂ = y).
    """
    batch, m = x_init.shape[0], noise.shape[1]
    logits_clean = model(_copies(x_init, noise))
    targets_copies = y.repeat_interleave(m)
    ce = F.cross_entropy(logits_clean, targets_copies, reduction="none")
    f_hat = F.softmax(logits_clean, 1).view(batch, m, -1).mean(1)
    shape = (-1, *([1] * (x_init.dim() - 1)))
    x_mix = (1 - lam).view(shape) * x_init + lam.view(shape) * x_adv
    targets = mixup_targets(f_hat, lam)
    log_probs = F.log_softmax(model(_copies(x_mix, noise)), 1)
    mix = F.kl_div(log_probs, targets.repeat_interleave(m, dim=0), reduction="none").sum(1)
    mask = f_hat.argmax(1) == y
    loss_mix = (mask.repeat_interleave(m).to(mix.dtype) * mix).mean()
    return SmoothMixTerms(ce.mean(), loss_mix, ce, mix, f_hat, lam, targets, mask, logits_clean)


def _smoothmix_passes(cfg: SmoothMixConfig) -> Passes:
    m, t = cfg.num_noise, cfg.steps
    return Passes(forward=m * (t + 2), backward=m * (t + 2))


@register("smoothmix", SmoothMixConfig, passes=_smoothmix_passes)
def smoothmix(model: nn.Module, x: Tensor, y: Tensor, cfg: SmoothMixConfig,
              ctx: StepContext) -> StepOutput:
    """SmoothMix (Jeong et al. 2021, eq. 12, Alg. 1): mean_i CE + η·mean_i mask·KL(y_mix ‖ s(f(x_mix+δ_i))).

    1. m noise vectors per example and λ ~ U[0, ½] per example, from ``ctx.generator``.
    2. Eval mode: T steps x̃ ← clamp(x̃ + α·∇J/‖∇J‖), J = −log F̂_y (eq. 7-8), unrestricted unless
       ``maxnorm``; with ``mix_step = 1`` the clean side x₁ is the first iterate projected onto the
       ball of radius w·maxnorm_s (one-step adversary), else x₁ = x.
    3. Train mode, the attack's noise: CE on x₁ + δ_i; F̂(x₁) not detached; x_mix, y_mix (eq. 9-10);
       KL on x_mix + δ_i; mask = [argmax F̂(x₁) = y]. Loss = CE.mean() + η·w·mean(mask·KL), where w
       is the warm-up factor (``warmup_epochs``, reference 10). See ``smoothmix_terms``.
    Passes: forward m(T+2) (T attack steps, clean, mix), backward m(T+2) (T input-gradient
    backwards, then one backward through both training graphs). One optimiser step per loader batch
    (module docstring: the reference takes m, on B/m-chunks).
    """
    warm = _warmup(cfg.warmup_epochs, ctx)
    noise = _noise(x, cfg.sigma, cfg.num_noise, ctx)
    gen = ctx.generator
    lam = torch.rand((x.shape[0],), generator=gen, device=gen.device).to(x.device, x.dtype) / 2
    radius = cfg.step_size * cfg.mix_step if cfg.maxnorm_s is None else cfg.maxnorm_s
    with mode(model, train=False):
        adversary = attacks.SmoothMix(cfg.step_size, cfg.steps, cfg.sigma, cfg.num_noise, mix_step=cfg.mix_step,
                                      maxnorm=cfg.maxnorm, maxnorm_s=warm * radius)
        x_init, x_adv, _ = attacks.smoothmix_attack(model, x, y, adversary, noise=noise)
    terms = smoothmix_terms(model, x_init, x_adv, y, noise, lam)
    loss = terms.loss_nat + cfg.eta * warm * terms.loss_mix
    return StepOutput(loss, {
        "ce": scalar(terms.loss_nat), "mix": scalar(terms.loss_mix), "warmup_factor": warm,
        "acc": _accuracy(terms.f_hat, y), "mask_frac": scalar(terms.mask.float().mean()),
        "adv_norm": scalar((x_adv - x).flatten(1).norm(dim=1).mean())})
