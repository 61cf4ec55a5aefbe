"""Every attack of the book: one projected steepest-ascent template, many objectives.

Each attack is a function ``attack_fn(model, x[, y], config, *, <per-call state>)``: the *config* is a
small frozen dataclass holding the attack's hyperparameters (the numbers a paper's table states: radius,
norm, step size and count, start, ...), built once and reused for every batch, like a torchattacks
attack object; the keyword-only rest is what changes per call (given start points, clean logits, the
noise, ψ, the generator, ``track_loss``).

| function | config | paper | objective maximised |
|---|---|---|---|
| `pgd`, `pgd_attack` | `PGD` | Madry et al. 2018 | CE (or any ``loss_fn``) |
| `fgsm` | `FGSM` | Wong et al. 2020 (Fast AT) | CE |
| `trades_kl_attack` | `TradesKL` | Zhang et al. 2019 (TRADES), BS paper eq. 4.1-4.2 | KL(s(f(x)) ‖ s(f(x'))) |
| `backward_smoothing_init` / `_attack` | `BackwardSmoothing` | Chen et al. (Backward Smoothing) eq. 4.4-4.5 | −KL to f(x)+γψ; KL |
| `backward_smoothing_pgd_init` | `BackwardSmoothingPGD` | BS paper, appendix "PGD based Backward Smoothing" | −(y-logit mismatch)² |
| `odi_init` | `ODI` | Tashiro et al. 2020 (ODI) | w·f(x'), w ~ U(−1, 1)^C |
| `gradalign_regularizer` | (keywords) | Andriushchenko & Flammarion 2020 | (a regulariser, not an attack) |
| `rays` | (keywords) | Chen & Gu 2020 (RayS), BS paper Table 5 | hard-label: l-inf distance to the decision boundary |
| `smoothadv_pgd`, `smoothadv_ddn` | `SmoothAdvPGD`, `SmoothAdvDDN` | Salman et al. 2019 (SmoothAdv) §3, App. | −log F̂_y (smoothed) |
| `stein_gradient` | (keywords) | SmoothAdv eq. 7 | (a gradient estimate) |
| `smoothmix_attack` | `SmoothMix` | Jeong et al. 2021 (SmoothMix) §3 | −log F̂_y, unrestricted |

Also: `Ball` (the threat model ‖x' − x‖ ≤ eps, with its projection), `pgd_step` (the BS code's PGD step
eps/4, `PGD_STEP_RATIO`), `lambda_gradalign`, `draw_noise`, `smoothed_softmax`, `smoothed_nll`, the
result tuples `AttackResult`, `SmoothAdvResult`, `SmoothMixResult`, `RaySResult`.

Cost: a k-step attack costs k forwards and k input-gradient backwards of the batch (m noisy copies
each for the smoothed attacks: ×m); ``track_loss`` adds one no-grad forward; `rays` costs at most
``query_limit`` label queries per example; `stein_gradient` needs no backward.
Guarantee: every output lies in the threat model's ball (when it has one) and in [0, 1].

Conventions: ``x`` is a batch of images in [0, 1], shape (N, ...), ``y`` integer labels (N,);
``eps`` and ``step_size`` are in pixel units, per coordinate (``'linf'``) or as the Euclidean norm of
one example (``'l2'``). The model's train/eval mode is never changed (the caller chooses; the
reference attacks run in eval mode); gradients come from ``torch.autograd.grad`` w.r.t. the input
only, so no parameter ``.grad`` appears. Every iterate is projected onto the ball, then clamped to
[0, 1] (clamping only shrinks each coordinate of the perturbation, so it stays in the ball). Outputs
are detached, with x's dtype and device. Per-example losses are summed for the gradient, so an
example's (sign or normalised) step does not depend on the batch; reported statistics are batch
means. Randomness comes only from ``generator`` (any device; draws move to x's device), else from
the global RNG of x's device. Configs are not validated when built but when an attack runs, with
the same one-line errors as the keyword arguments they replace.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rs_lib import _validate as V

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")
STEP_ORDERS: tuple[str, ...] = ("project_clamp", "clamp_renorm")  # SmoothAdv l2 PGD: ours, the reference's
GradFn = Callable[[Tensor], tuple[Tensor, Tensor]]  # point -> (per-example loss, gradient)
LossFn = Callable[[Tensor, Tensor], Tensor]  # (logits, y) -> scalar or per-example loss
_TINY = 1e-12

#: PGD step / eps of the Backward Smoothing code's evaluation PGD (0.0078 at eps 0.031, ≈ 2/255 at 8/255).
PGD_STEP_RATIO = 0.25


def pgd_step(eps: float) -> float:
    """The evaluation PGD's step size for radius ``eps``: eps/4 (`PGD_STEP_RATIO`, the BS code's ratio)."""
    return eps / 4


class AttackResult(NamedTuple):
    """What a training objective needs from its attack.

    ``loss_start``: the attack's own inner objective (batch mean, detached 0-d tensor) at its start
    point, free (it is the forward of the first step). ``loss_final``: the same at ``x_adv``, only with
    ``track_loss=True`` (one extra forward without graph), else ``None``.
    """
    x_adv: Tensor
    loss_start: Tensor
    loss_final: Tensor | None


class SmoothAdvResult(NamedTuple):
    """``x_adv`` (N, ...) and the noise (N, m, ...), already scaled by sigma, used by every step."""
    x_adv: Tensor
    noise: Tensor


class SmoothMixResult(NamedTuple):
    """SmoothMix's (x_init, x_adv, noise): x_init = x, or the ``mix_step``-step point (one-step adversary)."""
    x_init: Tensor
    x_adv: Tensor
    noise: Tensor


# ------------------------------------------------------------------------------ configs
@dataclass(frozen=True)
class Ball:
    """The threat model: ‖x' − x‖_norm ≤ eps (``eps=None``: no ball, only the [0, 1] box)."""

    eps: float | None
    norm: Norm = "linf"

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """x_adv projected onto the ball around x, then clamped to [0, 1] (`_project`)."""
        return _project(x_adv, x, self.eps, self.norm)


@dataclass(frozen=True)
class PGD:
    """PGD (Madry et al. 2018): ``steps`` steps of ``step_size`` in the ``norm`` ball of radius ``eps``.

    random_start: start from a uniform point of the ball, clamped to [0, 1] before the first
    gradient (``clamp_start=True``) or not. loss_fn: ``loss_fn(logits, y)`` in place of per-example CE.
    """

    eps: float
    step_size: float
    steps: int
    norm: Norm = "linf"
    random_start: bool = False
    clamp_start: bool = True
    loss_fn: LossFn | None = None

    @property
    def ball(self) -> Ball:
        return Ball(self.eps, self.norm)


@dataclass(frozen=True)
class FGSM:
    """FGSM / Fast AT's attack: one CE step of ``step_size`` (α, default ``eps``), optional uniform start."""

    eps: float
    step_size: float | None = None
    norm: Norm = "linf"
    random_start: bool = False
    clamp_start: bool = True

    def as_pgd(self) -> PGD:
        """The same attack as a one-step `PGD`."""
        step_size = self.eps if self.step_size is None else self.step_size
        return PGD(self.eps, step_size, 1, self.norm, self.random_start, self.clamp_start)


@dataclass(frozen=True)
class TradesKL:
    """TRADES' inner maximisation: ``steps`` KL ascent steps of ``step_size`` in the ``eps``-ball.

    start: ``'gaussian'`` x + 0.001·N(0, I) (TRADES), ``'uniform'`` x + U(ball) (Fast TRADES), ``'zero'`` x.
    """

    eps: float
    step_size: float
    steps: int
    norm: Norm = "linf"
    start: Literal["gaussian", "uniform", "zero"] = "gaussian"

    @property
    def ball(self) -> Ball:
        return Ball(self.eps, self.norm)


@dataclass(frozen=True)
class BackwardSmoothing:
    """Backward Smoothing (BS Alg. 1): one init step of ``step_size`` towards f(x) + γψ averaged over
    ``num_points`` ψ draws, then ``steps`` TRADES KL steps (the same ``step_size``, the reference's α)."""

    eps: float
    step_size: float
    steps: int = 1
    gamma: float = 1.0
    num_points: int = 1
    norm: Norm = "linf"

    @property
    def ball(self) -> Ball:
        return Ball(self.eps, self.norm)


@dataclass(frozen=True)
class BackwardSmoothingPGD:
    """PGD-based Backward Smoothing's init: one descent step on the y-logit mismatch.

    target: ``'shifted'`` (f(x)_y + γψ_y, eq. 4.3's y-component) or ``'literal'`` (γψ_y, as printed).
    """

    eps: float
    step_size: float
    gamma: float = 1.0
    target: Literal["shifted", "literal"] = "shifted"
    norm: Norm = "linf"

    @property
    def ball(self) -> Ball:
        return Ball(self.eps, self.norm)


@dataclass(frozen=True)
class ODI:
    """Output Diversified Initialisation: ``steps`` steps of ``step_size`` (default eps) on w·f(x')."""

    eps: float
    step_size: float | None = None
    steps: int = 2
    random_start: bool = True
    norm: Norm = "linf"


@dataclass(frozen=True)
class SmoothAdvPGD:
    """SmoothAdv's l2 PGD on −log F̂_y with ``num_noise`` noise vectors of std ``sigma``.

    step_size: default 2·eps/steps. estimator: ``'plugin'`` (autograd of eq. 6) or ``'stein'``.
    step_order: ``'project_clamp'`` (ours) or ``'clamp_renorm'`` (the reference's).
    """

    eps: float
    steps: int
    sigma: float
    num_noise: int
    step_size: float | None = None
    estimator: Literal["plugin", "stein"] = "plugin"
    step_order: Literal["project_clamp", "clamp_renorm"] = "project_clamp"


@dataclass(frozen=True)
class SmoothAdvDDN:
    """SmoothAdv's DDN: radius starts at ``init_norm``, × (1 ∓ gamma) per step; ``levels`` grey levels."""

    eps: float
    steps: int
    sigma: float
    num_noise: int
    gamma: float = 0.05
    init_norm: float = 1.0
    levels: int | None = 256


@dataclass(frozen=True)
class SmoothMix:
    """SmoothMix's adversary: ``steps`` unrestricted l2 steps of ``step_size`` (ball of ``maxnorm`` if
    given); ``mix_step`` > 0 also returns the one-step point, projected to radius ``maxnorm_s``."""

    step_size: float
    steps: int
    sigma: float
    num_noise: int
    mix_step: int = 0
    maxnorm: float | None = None
    maxnorm_s: float | None = None


# ----------------------------------------------------------------------------------- checks
def _shape(t: object) -> object:
    return getattr(t, "shape", type(t).__name__)


def _check_x(x: Tensor, y: Tensor | None = None) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty floating tensor of shape (N, ...), got {_shape(x)}")
    V.images("x", x)
    if y is not None and (not isinstance(y, Tensor) or y.is_floating_point() or y.is_complex()
                          or tuple(y.shape) != (x.shape[0],)):
        raise ValueError(f"y must be an integer tensor of shape ({x.shape[0]},), got {_shape(y)}")
    if y is not None:
        V.labels("y", y)


def _check_fit(logits: Tensor, y: Tensor) -> None:
    """Labels must index the model's outputs (else cross-entropy fails far from the cause)."""
    if y.numel() and int(y.max()) >= logits.shape[-1]:
        raise ValueError(f"y holds label {int(y.max())} but the model has {logits.shape[-1]} outputs; "
                         f"labels must lie in [0, {logits.shape[-1] - 1}]")


def _check_options(*, norm: str = "linf", generator: torch.Generator | None = None,
                   **numbers: float | None) -> None:
    """Validate the common options; ``numbers`` maps a name to a value that must be > 0 (or None)."""
    for name, value in numbers.items():
        if value is not None:
            (V.positive_int if name in ("steps", "num_points", "num_noise") else V.positive)(name, value)
    V.choice("norm", norm, NORMS)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _check_like(name: str, t: Tensor | None, shape: tuple[int, ...]) -> None:
    if t is not None and (not isinstance(t, Tensor) or tuple(t.shape) != tuple(shape)):
        raise ValueError(f"{name} must be a tensor of shape {tuple(shape)}, got {_shape(t)}")


# ------------------------------------------------------------------------------ norm hooks
def _draw(kind: str, shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """U[0, 1) or N(0, 1) draws of ``shape`` from ``generator`` (any device), on ``like``'s device/dtype."""
    device = generator.device if generator is not None else like.device
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    sample = torch.rand if kind == "uniform" else torch.randn
    return sample(shape, generator=generator, device=device, dtype=dtype).to(like.device, like.dtype)


def _flat_norm(t: Tensor) -> Tensor:
    """Per-example l2 norm, shaped (N, 1, ..., 1) to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _l2_direction(grad: Tensor, generator: torch.Generator | None = None,
                  random_if_zero: bool = False) -> Tensor:
    """grad/‖grad‖₂ per example; a vanishing gradient gives no step, or (SmoothAdv) a random unit one."""
    norm = _flat_norm(grad)
    if random_if_zero and bool((norm == 0).any()):
        grad = torch.where(norm == 0, _draw("normal", tuple(grad.shape), grad, generator), grad)
        norm = _flat_norm(grad)
    return grad / norm.clamp_min(_TINY)


def _random_in_ball(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """Uniform in the ball: U(−eps, eps)^d (linf); normal direction, radius eps·U^(1/d) (l2)."""
    if norm == "linf":
        return (2 * _draw("uniform", tuple(x.shape), x, generator) - 1) * eps
    direction = _l2_direction(_draw("normal", tuple(x.shape), x, generator))
    d = x[0].numel()
    radius = eps * _draw("uniform", (x.shape[0],), x, generator) ** (1.0 / d)
    return direction * radius.view(-1, *([1] * (x.dim() - 1)))


def _project(x_adv: Tensor, x: Tensor, eps: float | None, norm: str) -> Tensor:
    """Project x_adv onto the eps-ball around x (skipped for eps=None), then clamp to [0, 1]."""
    if eps is not None:
        delta = x_adv - x
        if norm == "linf":
            delta = delta.clamp(-eps, eps)
        else:
            delta = delta * (eps / _flat_norm(delta).clamp_min(_TINY)).clamp(max=1.0)
        x_adv = x + delta
    return x_adv.clamp(0.0, 1.0)


def _clamp_renorm(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """The SmoothAdv reference's l2 order: clamp x_adv to [0, 1], then renorm δ to ‖δ‖₂ ≤ eps.

    As ``δ.renorm_(p=2, dim=0, maxnorm=eps)``: a row with ‖δ‖ > eps is scaled by eps/(‖δ‖ + 1e-7),
    so it ends just inside the ball; scaling a box-feasible δ towards 0 keeps x + δ in [0, 1].
    """
    delta = x_adv.clamp(0.0, 1.0) - x
    norm = _flat_norm(delta)
    return x + torch.where(norm > eps, delta * (eps / (norm + 1e-7)), delta)


# -------------------------------------------------------------------------------- template
def _autograd(objective: Callable[[Tensor], Tensor]) -> GradFn:
    """``objective(point) -> loss`` (per example or scalar) as ``point -> (loss, d loss / d point)``."""
    def grad_fn(point: Tensor) -> tuple[Tensor, Tensor]:
        point = point.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = objective(point)
            (grad,) = torch.autograd.grad(loss.sum(), point)
        return loss.detach(), grad
    return grad_fn


def _ascend(x: Tensor, x_start: Tensor, grad_fn: GradFn, ball: Ball, *, step_size: float, steps: int,
            direction: Callable[[Tensor], Tensor] | None = None,
            project: Callable[[Tensor, Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
    """The one loop (foolbox-style): ``steps`` × [gradient, unit step, project to the ball, clamp].

    ``project(x_adv, x)`` replaces the last two (default `Ball.project`). Returns the final point and
    the objective's batch mean at the start point.
    """
    direction = direction or (torch.sign if ball.norm == "linf" else _l2_direction)  # steepest-ascent unit step
    project = project or ball.project
    x_adv, loss_start = x_start.detach(), None
    for _ in range(steps):
        loss, grad = grad_fn(x_adv)
        if loss_start is None:
            loss_start = loss.mean()
        x_adv = project(x_adv + step_size * direction(grad), x).detach()
    return x_adv, loss_start


def _result(x: Tensor, x_start: Tensor, objective: Callable[[Tensor], Tensor], ball: Ball, *,
            step_size: float, steps: int, track_loss: bool) -> AttackResult:
    x_adv, loss_start = _ascend(x, x_start, _autograd(objective), ball, step_size=step_size, steps=steps)
    loss_final = None
    if track_loss:
        with torch.no_grad():
            loss_final = objective(x_adv).mean().detach()
    return AttackResult(x_adv, loss_start, loss_final)


def _ce(logits: Tensor, y: Tensor) -> Tensor:
    _check_fit(logits, y)
    return F.cross_entropy(logits, y, reduction="none")


def kl(target_logits: Tensor, logits: Tensor) -> Tensor:
    """Per-example KL(s(target) ‖ s(logits)), summed over classes (batch mean = 'batchmean').

    Differentiable in both arguments (TRADES' outer loss does not detach its target)."""
    return F.kl_div(F.log_softmax(logits, dim=-1), F.log_softmax(target_logits, dim=-1),
                    reduction="none", log_target=True).sum(-1)


def _clean_logits(model: nn.Module, x: Tensor, logits_clean: Tensor | None) -> Tensor:
    if logits_clean is None:
        with torch.no_grad():
            return model(x).detach()
    if not isinstance(logits_clean, Tensor) or logits_clean.dim() != 2 or logits_clean.shape[0] != x.shape[0]:
        raise ValueError(f"logits_clean must have shape ({x.shape[0]}, C), got {_shape(logits_clean)}")
    return logits_clean.detach()


# ------------------------------------------------------------------------- l-inf / l2 PGD
def pgd_attack(model: nn.Module, x: Tensor, y: Tensor, attack: PGD, *, x_start: Tensor | None = None,
               generator: torch.Generator | None = None, track_loss: bool = False) -> AttackResult:
    """PGD (Madry et al. 2018), returning an `AttackResult` for training objectives.

    Start: ``x_start`` if given (e.g. a backward-smoothing or ODI point), else a uniform point of the
    ball (``attack.random_start``), clamped to [0, 1] before the first gradient (``clamp_start=True``,
    as Wong et al. and torchattacks) or not (``clamp_start=False``, as the Backward Smoothing
    repository's ``pgd_fast.py`` / ``pgd_fast_gradalign.py``, whose first gradient is taken at
    x + U(−ε, ε) even outside the box), else x. Each of the
    ``steps`` steps moves by ``step_size`` along sign(∇) (linf) or ∇/‖∇‖₂ (l2), projects, clamps.
    Loss: per-example CE, or ``loss_fn(logits, y)`` (a scalar or per-example tensor).
    Cost: ``steps`` forwards + input backwards (+1 forward with ``track_loss``).
    """
    eps, norm = attack.eps, attack.norm
    _check_x(x, y)
    _check_options(norm=norm, generator=generator, eps=eps, step_size=attack.step_size, steps=attack.steps)
    _check_like("x_start", x_start, tuple(x.shape))
    if attack.loss_fn is not None and not callable(attack.loss_fn):
        raise ValueError("loss_fn must be a callable loss_fn(logits, y) -> tensor")
    V.flag("clamp_start", attack.clamp_start)
    loss = attack.loss_fn or _ce
    if x_start is None and attack.random_start:
        x_start = x + _random_in_ball(x, eps, norm, generator)
        x_start = x_start.clamp(0.0, 1.0) if attack.clamp_start else x_start
    elif x_start is None:
        x_start = x
    return _result(x, x_start, lambda z: loss(model(z), y), attack.ball, step_size=attack.step_size,
                   steps=attack.steps, track_loss=track_loss)


def pgd(model: nn.Module, x: Tensor, y: Tensor, attack: PGD, *,
        generator: torch.Generator | None = None) -> Tensor:
    """PGD-k adversarial examples (see `pgd_attack`); for ``'linf'`` the same steps as
    ``torchattacks.PGD(model, eps, alpha=step_size, steps, random_start)`` (mean CE, same sign)."""
    return pgd_attack(model, x, y, attack, generator=generator).x_adv


def fgsm(model: nn.Module, x: Tensor, y: Tensor, attack: FGSM, *, generator: torch.Generator | None = None,
         track_loss: bool = False) -> AttackResult:
    """FGSM / Fast AT's attack (Wong et al. 2020, Alg. 3): optional uniform start (clamped to [0, 1]
    unless ``clamp_start=False``, see `pgd_attack`), one CE step of ``step_size`` (α, default eps),
    project, clamp. ``loss_start`` is CE at the start point, so ``loss_final − loss_start`` is the
    paper's loss increment (Fig. 1; needs ``track_loss``). Cost: 1 forward + 1 input backward."""
    return pgd_attack(model, x, y, attack.as_pgd(), generator=generator, track_loss=track_loss)


# -------------------------------------------------------------------------------- TRADES
def trades_kl_attack(model: nn.Module, x: Tensor, attack: TradesKL, *, x_start: Tensor | None = None,
                     logits_clean: Tensor | None = None, generator: torch.Generator | None = None,
                     track_loss: bool = False) -> AttackResult:
    """TRADES inner maximisation of KL(s(f(x)) ‖ s(f(x'))) (Zhang et al. 2019; BS paper eq. 4.1).

    Start (``x_start`` overrides): ``'gaussian'`` x + 0.001·N(0, I) (TRADES), ``'uniform'`` x + U(ball)
    (Fast TRADES, BS eq. 4.2), ``'zero'`` x. As in both reference codes the random start is *not*
    clamped to [0, 1] before the first gradient (every later iterate is). The target s(f(x)) uses
    ``logits_clean`` if given, else one no-grad forward of x in the model's current mode; it is fixed
    for all steps (the TRADES code recomputes it per step, which changes nothing for the gradient).
    Cost: ``steps`` forwards + input backwards (+1 forward without ``logits_clean``, +1 with ``track_loss``).
    """
    eps, norm, start = attack.eps, attack.norm, attack.start
    _check_x(x)
    _check_options(norm=norm, generator=generator, eps=eps, step_size=attack.step_size, steps=attack.steps)
    V.choice("start", start, ("gaussian", "uniform", "zero"))
    _check_like("x_start", x_start, tuple(x.shape))
    clean = _clean_logits(model, x, logits_clean)
    if x_start is None and start == "gaussian":
        x_start = x + 0.001 * _draw("normal", tuple(x.shape), x, generator)
    elif x_start is None:
        x_start = x + _random_in_ball(x, eps, norm, generator) if start == "uniform" else x
    return _result(x, x_start, lambda z: kl(clean, model(z)), attack.ball, step_size=attack.step_size,
                   steps=attack.steps, track_loss=track_loss)


# ---------------------------------------------------------------------- Backward Smoothing
def _descend_once(model: nn.Module, x: Tensor, mismatch: Callable[[Tensor], Tensor], ball: Ball, *,
                  step_size: float) -> Tensor:
    """One projected signed (linf) / normalised (l2) *descent* step from ξ = 0 on mismatch(f(x+ξ))."""
    x_start, _ = _ascend(x, x, _autograd(lambda z: -mismatch(model(z))), ball, step_size=step_size, steps=1)
    return x_start


def _draw_psi(psi: Tensor | None, logits: Tensor, num_points: int,
              generator: torch.Generator | None) -> Tensor:
    """ψ ~ U(−1, 1) of shape (k, N, C), fresh per call, or the given ψ ((N, C) or (k, N, C))."""
    shape = (num_points, *logits.shape)
    if psi is None:
        return 2 * _draw("uniform", shape, logits, generator) - 1
    psi = psi if psi.dim() == 3 else psi.unsqueeze(0)
    _check_like("psi", psi, shape)
    return psi.to(logits)


def backward_smoothing_point(model: nn.Module, x: Tensor, attack: BackwardSmoothing, *,
                             logits_clean: Tensor | None = None, psi: Tensor | None = None,
                             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(`backward_smoothing_init`'s x + ξ*, the clean logits): the forward at ξ = 0 doubles as the
    clean forward when no ``logits_clean`` is given, so a caller gets the TRADES target for free."""
    eps, norm, gamma, num_points = attack.eps, attack.norm, attack.gamma, attack.num_points
    _check_x(x)
    _check_options(norm=norm, generator=generator, eps=eps, step_size=attack.step_size, num_points=num_points)
    V.non_negative("gamma", gamma)
    allowed = [(num_points, len(x))] + ([(len(x),)] if num_points == 1 else [])  # shapes without C
    if psi is not None and (not isinstance(psi, Tensor) or tuple(psi.shape[:-1]) not in allowed):
        raise ValueError(f"psi must have shape {' or '.join(str((*a, 'C')) for a in allowed)}, "
                         f"got {_shape(psi)}")
    logits_clean = None if logits_clean is None else _clean_logits(model, x, logits_clean)
    seen: dict[str, Tensor] = {}

    def mismatch(logits: Tensor) -> Tensor:  # mean over the k points of KL(s(f(x)+γψ_j) ‖ s(f(x+ξ)))
        seen["clean"] = logits.detach() if logits_clean is None else logits_clean
        target = seen["clean"].unsqueeze(0) + gamma * _draw_psi(psi, logits, num_points, generator)
        return kl(target, logits.unsqueeze(0)).mean(0)

    x_start = _descend_once(model, x, mismatch, attack.ball, step_size=attack.step_size)
    return x_start, seen["clean"]


def backward_smoothing_init(model: nn.Module, x: Tensor, attack: BackwardSmoothing, *,
                            logits_clean: Tensor | None = None, psi: Tensor | None = None,
                            generator: torch.Generator | None = None) -> Tensor:
    """Backward-smoothing initialisation x + ξ* (BS eq. 4.3-4.4, Alg. 1 line 5); ``attack.steps`` unused.

    ψ ~ U(−1, 1) per example and class (shape of the logits), fresh each call (or ``psi`` for tests);
    one signed step of ``step_size`` from ξ = 0 that *decreases* KL(s(f(x) + γψ) ‖ s(f(x + ξ))), then
    projection to the eps-ball and clamp to [0, 1] (reference `trades_backward.py`).

    ``num_points = k > 1`` (BS appendix Table 10, "random points"): k independent ψ draws, and the step
    follows the gradient of the *mean* of the k KL terms — a k-sample Monte-Carlo estimate of the
    smoothed objective E_ψ KL, i.e. of "randomized smoothing with k random points". Since the mean of
    KL(p_j ‖ q) equals KL(p̄ ‖ q) plus a constant, this is one KL to the averaged noisy softmax p̄ and
    costs one forward-backward for any k; the paper's time column (about one extra forward-backward
    per point) suggests its unreleased code looped over the points.
    """
    return backward_smoothing_point(model, x, attack, logits_clean=logits_clean, psi=psi,
                                    generator=generator)[0]


def backward_smoothing_attack(model: nn.Module, x: Tensor, attack: BackwardSmoothing, *,
                              logits_clean: Tensor | None = None, psi: Tensor | None = None,
                              generator: torch.Generator | None = None, track_loss: bool = False) -> AttackResult:
    """Backward Smoothing's inner maximisation (BS Alg. 1 lines 5-6; reference §1.1 steps 3-8).

    `backward_smoothing_init`, then ``steps`` TRADES KL ascent steps (eq. 4.5) to the clean target
    s(f(x)), each followed by projection to the eps-ball *around x* and clamp. Both phases use
    ``step_size`` (the reference's single α). ``loss_start`` is KL at the backward-smoothed point.
    Passes: 2 forwards + 2 input-backwards (the reference adds a third, separate clean forward);
    ``track_loss`` adds one forward.
    """
    V.positive_int("steps", attack.steps)
    x_start, clean = backward_smoothing_point(model, x, attack, logits_clean=logits_clean, psi=psi,
                                              generator=generator)
    ascent = TradesKL(attack.eps, attack.step_size, attack.steps, attack.norm)
    return trades_kl_attack(model, x, ascent, x_start=x_start, logits_clean=clean, track_loss=track_loss)


def backward_smoothing_pgd_init(model: nn.Module, x: Tensor, y: Tensor, attack: BackwardSmoothingPGD, *,
                                logits_clean: Tensor | None = None, psi: Tensor | None = None,
                                generator: torch.Generator | None = None) -> Tensor:
    """Backward smoothing for AT (BS appendix, "PGD based Backward Smoothing", Table 15).

    One signed descent step from ξ = 0 on the squared y-logit mismatch, then project and clamp. The
    appendix writes ξ* = argmin ([f(x+ξ) − γψ]_y)²; read literally (``target='literal'``) that pulls
    the y-logit towards the small number γψ_y, i.e. it always lowers the true-class logit. The default
    ``'shifted'`` uses the target f(x)_y + γψ_y, the y-component of eq. 4.3 (f(x+ξ) = f(x) + γψ) that
    the appendix says it follows. ψ ~ U(−1, 1) of the logits' shape (only ψ_y enters); no released code.
    Cost: 1 forward + 1 input backward.
    """
    gamma, target = attack.gamma, attack.target
    _check_x(x, y)
    _check_options(norm=attack.norm, generator=generator, eps=attack.eps, step_size=attack.step_size)
    V.non_negative("gamma", gamma)
    V.choice("target", target, ("shifted", "literal"))
    if psi is not None and (not isinstance(psi, Tensor) or psi.dim() != 2 or len(psi) != len(x)):
        raise ValueError(f"psi must be a tensor of shape ({len(x)}, C), got {_shape(psi)}")
    logits_clean = None if logits_clean is None else _clean_logits(model, x, logits_clean)

    def mismatch(logits: Tensor) -> Tensor:
        y_logit = lambda t: t.gather(-1, y[:, None]).squeeze(-1)  # noqa: E731
        noise = gamma * y_logit(_draw_psi(psi, logits, 1, generator)[0])
        ref = y_logit(logits.detach() if logits_clean is None else logits_clean)
        return (y_logit(logits) - (ref if target == "shifted" else 0.0) - noise) ** 2

    return _descend_once(model, x, mismatch, attack.ball, step_size=attack.step_size)


# ----------------------------------------------------------------------------- ODI, GradAlign
def odi_init(model: nn.Module, x: Tensor, attack: ODI, *, w: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
    """Output Diversified Initialisation (Tashiro et al. 2020, ODI): ``steps`` steps maximising
    w·f(x'), w ~ U(−1, 1)^C per example (drawn once per call, or ``w``), step ``step_size`` (default
    eps, the ODI code's choice), project + clamp each step. As in the ODI code the U(−eps, eps) start
    is not clamped before the first gradient. Default 2 steps (ODI code); the BS ablation's count is
    not stated. Cost: ``steps`` forwards + input backwards."""
    eps, norm = attack.eps, attack.norm
    _check_x(x)
    step_size = eps if attack.step_size is None else attack.step_size
    _check_options(norm=norm, generator=generator, eps=eps, step_size=step_size, steps=attack.steps)
    if w is not None and (not isinstance(w, Tensor) or w.dim() != 2 or w.shape[0] != x.shape[0]):
        raise ValueError(f"w must be a tensor of shape ({x.shape[0]}, C)")
    state: dict[str, Tensor] = {} if w is None else {"w": w}

    def objective(z: Tensor) -> Tensor:
        logits = model(z)
        if "w" not in state:
            state["w"] = 2 * _draw("uniform", tuple(logits.shape), logits, generator) - 1
        return (logits * state["w"].to(logits)).sum(1)

    x_start = x + _random_in_ball(x, eps, norm, generator) if attack.random_start else x
    return _ascend(x, x_start, _autograd(objective), Ball(eps, norm), step_size=step_size,
                   steps=attack.steps)[0]


def _input_gradient(model: nn.Module, point: Tensor, y: Tensor, *, create_graph: bool) -> Tensor:
    """∇ₓ Σ_i CE(f(point)_i, y_i), kept differentiable w.r.t. the parameters with ``create_graph``."""
    point = point.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_ce(model(point), y).sum(), point, create_graph=create_graph)
    return grad


def gradalign_regularizer(model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
                          grad_clean: Tensor | None = None, backprop_clean: bool = False,
                          generator: torch.Generator | None = None) -> Tensor:
    """GradAlign (Andriushchenko & Flammarion 2020) without λ: 1 − mean_i cos(g1_i, g2_i).

    g1 = ∇ₓCE at x; g2 = ∇ₓCE at x + η, η ~ U(−eps, eps) not clamped (as both codes), taken with
    ``create_graph=True`` so the result is differentiable w.r.t. the parameters (double backprop).
    ``backprop_clean=False`` (GradAlign's `train.py`): g1 is detached, so the weight gradient flows
    through g2 only (pass ``grad_clean`` to reuse the zero-start FGSM gradient, as their code does).
    ``backprop_clean=True`` (the Backward Smoothing repository's `pgd_fast_gradalign.py`, and
    GradAlign's README before their issue #3): g1 is also taken with ``create_graph=True`` and the
    weight gradient flows through both (``grad_clean`` must then be None). The value is the same;
    its weight gradient is not. Examples where either gradient is zero are dropped (as both codes).
    Returns a 0-d tensor.
    """
    _check_x(x, y)
    _check_options(generator=generator, eps=eps)
    _check_like("grad_clean", grad_clean, tuple(x.shape))
    V.flag("backprop_clean", backprop_clean)
    if backprop_clean and grad_clean is not None:
        raise ValueError("grad_clean is a detached gradient: give it only with backprop_clean=False")
    if grad_clean is None:
        grad_clean = _input_gradient(model, x, y, create_graph=backprop_clean)
    noisy = x + _random_in_ball(x, eps, "linf", generator)
    grad_noisy = _input_gradient(model, noisy, y, create_graph=True)
    g1 = (grad_clean if backprop_clean else grad_clean.detach()).flatten(1)
    g2 = grad_noisy.flatten(1)
    keep = (g1.norm(dim=1) > 0) & (g2.norm(dim=1) > 0)
    if not bool(keep.any()):
        return g2.sum() * 0.0
    return 1.0 - F.cosine_similarity(g1[keep], g2[keep], dim=1).mean()


def lambda_gradalign(eps: float) -> float:
    """GradAlign's log-linear rule λ(ε) = 0.02·10^(ε/8) with ε in /255 units (0.2 at 8/255, 2.0 at
    16/255; their `sh/exps_diff_eps_cifar10.sh`); here ``eps`` is in [0, 1] pixel units (CIFAR-10 rule)."""
    V.positive("eps", eps)
    return 0.02 * 10 ** (eps * 255 / 8)


# ------------------------------------------------------------------- RayS (hard label)


class RaySResult(NamedTuple):
    """``x_adv``: the closest misclassified point found (in [0, 1]; for an example whose label never
    changed, the corner of the box along the last direction); ``distance``: its l-inf distance to x,
    per example (the decision-boundary distance whose mean over correct examples is the ADBD);
    ``queries``: label queries spent per example; ``found``: whether x_adv is misclassified."""

    x_adv: Tensor
    distance: Tensor
    queries: Tensor
    found: Tensor


@torch.no_grad()
def rays(model: nn.Module, x: Tensor, y: Tensor, *, query_limit: int = 10_000, tol: float = 1e-3,
         eps: float | None = None) -> RaySResult:
    """RayS (Chen & Gu 2020): a hard-label l-inf attack that only queries ``model(x).argmax(1)``.

    Searches over sign directions d ∈ {−1, +1}^D for the one whose ray x + r·d/‖d‖₂ (clamped to
    [0, 1]) leaves the true class soonest. It starts from d = (1, ..., 1) and, block level after
    level (1, 2, 4, ... blocks of coordinates), flips one block of the best d so far. One query
    checks whether the flipped ray is misclassified at the current best radius. Only then does a
    binary search (to ``tol`` in the ray's l2 units, over (0, min(best, ‖d‖₂)]) find its boundary. As the
    reference ``RayS.py`` (uclaml/RayS), batched over examples, each with its own query count; an
    example stops once it has spent ``query_limit`` queries or, when ``eps`` is given, once its
    distance is at most ``eps`` (early stopping for robust accuracy; leave ``eps=None`` for ADBD).
    The model's mode is not changed (use eval).
    """
    _check_x(x, y)
    V.positive_int("query_limit", query_limit)
    V.positive("tol", tol)
    if eps is not None:
        V.positive("eps", eps)
    n, dim = x.shape[0], x[0].numel()
    flat = x.reshape(n, dim)
    norm = math.sqrt(dim)                          # ‖d‖₂ of every sign vector
    queries = torch.zeros(n, dtype=torch.long, device=x.device)

    def point(direction: Tensor, radius: Tensor, rows: Tensor) -> Tensor:
        return (flat[rows] + radius[rows, None] * direction[rows] / norm).clamp(0.0, 1.0)

    def misclassified(direction: Tensor, radius: Tensor, rows: Tensor) -> Tensor:
        queries[rows] += 1
        return model(point(direction, radius, rows).view(-1, *x.shape[1:])).argmax(1) != y[rows]

    best_dir = torch.ones_like(flat)
    best = torch.full((n,), math.inf, device=x.device, dtype=flat.dtype)
    level = block = 0
    while True:
        active = queries < query_limit
        if eps is not None:
            active &= _linf_distance(point(best_dir, best, torch.arange(n, device=x.device)), flat) > eps
        rows = active.nonzero().flatten()
        if len(rows) == 0:
            break
        size = math.ceil(dim / 2 ** level)
        start, end = block * size, min(dim, (block + 1) * size)
        attempt = best_dir.clone()
        attempt[rows, start:end] *= -1.0
        # does the flipped ray cross the boundary before the best radius so far?
        hit = rows[misclassified(attempt, best, rows)]
        low = torch.zeros_like(best)
        high = torch.minimum(best, torch.full_like(best, norm))
        searching = hit
        while len(searching) > 0:
            mid = (low + high) / 2
            crossed = misclassified(attempt, mid, searching)
            high[searching[crossed]] = mid[searching[crossed]]
            low[searching[~crossed]] = mid[searching[~crossed]]
            searching = searching[(high - low)[searching] > tol]
        better = hit[high[hit] < best[hit]]
        best[better] = high[better]
        best_dir[better] = attempt[better]
        block += 1
        if block == 2 ** level or end == dim:
            level, block = level + 1, 0
    everyone = torch.arange(n, device=x.device)
    x_adv = point(best_dir, best, everyone).view_as(x)
    found = torch.isfinite(best) & (model(x_adv).argmax(1) != y)
    return RaySResult(x_adv, _linf_distance(x_adv.reshape(n, dim), flat), queries, found)


def _linf_distance(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs().amax(1)


# ------------------------------------------------------------------- smoothed classifiers
def draw_noise(x: Tensor, *, sigma: float, num_noise: int,
               generator: torch.Generator | None = None) -> Tensor:
    """sigma·N(0, I) noise of shape (N, m, ...): m noise vectors per example."""
    V.non_negative("sigma", sigma)
    V.positive_int("num_noise", num_noise)
    return sigma * _draw("normal", (x.shape[0], num_noise, *x.shape[1:]), x, generator)


def _noise_arg(x: Tensor, noise: Tensor | None, sigma: float, num_noise: int,
               generator: torch.Generator | None) -> Tensor:
    if noise is None:
        return draw_noise(x, sigma=sigma, num_noise=num_noise, generator=generator)
    _check_like("noise", noise, (x.shape[0], num_noise, *x.shape[1:]))
    return noise.to(x).detach()


def _noisy_probs(model: nn.Module, x: Tensor, noise: Tensor) -> Tensor:
    """softmax(f(x + η_i)) for the m noise vectors of each example, shape (N, m, C), one batched forward."""
    logits = model((x.unsqueeze(1) + noise).flatten(0, 1))
    return F.softmax(logits, dim=-1).view(x.shape[0], noise.shape[1], -1)


def smoothed_softmax(model: nn.Module, x: Tensor, noise: Tensor) -> Tensor:
    """Plug-in smoothed soft classifier F̂(x) = (1/m) Σ_i softmax(f(x + η_i)), shape (N, C)."""
    return _noisy_probs(model, x, noise).mean(1)


def _nll(f_hat: Tensor, y: Tensor) -> Tensor:
    _check_fit(f_hat, y)
    return -f_hat.gather(1, y[:, None]).squeeze(1).clamp_min(1e-20).log()


def smoothed_nll(model: nn.Module, x: Tensor, y: Tensor, noise: Tensor) -> Tensor:
    """SmoothAdv's objective (S) −log F̂_y(x) per example, plug-in estimator eq. 6 (F̂ clamped at 1e-20)."""
    return _nll(smoothed_softmax(model, x, noise), y)


def _smoothadv_checks(x: Tensor, y: Tensor, *, sigma: float, generator: torch.Generator | None,
                      **numbers: float | None) -> None:
    _check_x(x, y)
    _check_options(norm="l2", generator=generator, **numbers)
    V.non_negative("sigma", sigma)


def _stein(model: nn.Module, x: Tensor, y: Tensor, noise: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        probs = _noisy_probs(model, x, noise)
        p_y = probs.gather(2, y.view(-1, 1, 1).expand(-1, noise.shape[1], 1)).squeeze(2)  # (N, m)
        f_hat = p_y.mean(1).clamp_min(1e-20)
        weights = p_y.view(*p_y.shape, *([1] * (x.dim() - 1)))
        grad_f = (weights * noise).mean(1) / sigma**2  # Stein: ∇F_y ≈ mean_i p_y,i·η_i / σ²
        return -f_hat.log(), -grad_f / f_hat.view(-1, *([1] * (x.dim() - 1)))


def stein_gradient(model: nn.Module, x: Tensor, y: Tensor, *, sigma: float, num_noise: int,
                   noise: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Gradient-free estimate of ∇ₓ[−log F_y(x)] (SmoothAdv §3 eq. 7, App. C.6; `--no-grad-attack`).

    Stein's lemma: ∇F_y(x) = E[softmax_y(f(x+η))·η]/σ², estimated with the m noise samples; then
    ∇(−log F_y) = −∇F_y / F̂_y. No backward pass. The reference keeps only −mean(p_y·η) (the same
    direction: its step is normalised). Unbiased for ∇F_y, consistent for the log.
    """
    _smoothadv_checks(x, y, sigma=sigma, generator=generator, num_noise=num_noise)
    V.positive("sigma", sigma)
    return _stein(model, x, y, _noise_arg(x, noise, sigma, num_noise, generator), sigma)[1]


def smoothadv_pgd(model: nn.Module, x: Tensor, y: Tensor, attack: SmoothAdvPGD, *,
                  noise: Tensor | None = None, generator: torch.Generator | None = None) -> SmoothAdvResult:
    """SmoothAdv_PGD: l2 PGD on objective (S) with the plug-in gradient eq. 6 (Salman et al. 2019, Alg. 1).

    Ascends −log F̂_y(x') with m noise vectors drawn once (or ``noise``) and reused for every step;
    returns them so that training reuses them for augmentation. Zero start; step ``step_size``
    (default 2·eps/steps) along the normalised gradient (a zero gradient gets a random unit direction,
    as the reference); ``estimator='stein'`` uses `stein_gradient` instead of autograd.
    Cost: ``steps`` forwards of the m·N noisy copies + as many input backwards (none with 'stein').

    ``step_order``: ``'project_clamp'`` (default) projects each iterate onto the ball, then clamps to
    [0, 1]; ``'clamp_renorm'`` is the reference's order (clamp, then ``renorm`` δ to ε, see
    `_clamp_renorm`). Both land in ball ∩ box, but not at the same point: where the clamp cuts
    coordinates, project-then-clamp leaves ‖δ‖ below ε (0.4-3 % below in the audit) while the
    reference's renorm of the clamped δ keeps ‖δ‖ = ε, a slightly stronger attack (training loss
    0.2-0.7 % higher). Remaining deviation: the random direction for a zero gradient is normalised
    (reference: an unnormalised N(0, I) step before the renorm).
    """
    eps, steps, sigma, num_noise = attack.eps, attack.steps, attack.sigma, attack.num_noise
    _smoothadv_checks(x, y, eps=eps, steps=steps, sigma=sigma, num_noise=num_noise, generator=generator)
    step_size = 2 * eps / steps if attack.step_size is None else V.positive("step_size", attack.step_size)
    V.choice("estimator", attack.estimator, ("plugin", "stein"))
    V.choice("step_order", attack.step_order, STEP_ORDERS)
    if attack.estimator == "stein":
        V.positive("sigma", sigma)
    noise = _noise_arg(x, noise, sigma, num_noise, generator)
    grad_fn = (_autograd(lambda z: smoothed_nll(model, z, y, noise)) if attack.estimator == "plugin"
               else lambda z: _stein(model, z, y, noise, sigma))
    project = (lambda point, clean: _clamp_renorm(point, clean, eps)) if attack.step_order == "clamp_renorm" else None
    x_adv, _ = _ascend(x, x, grad_fn, Ball(eps, "l2"), step_size=step_size, steps=steps,
                       direction=lambda g: _l2_direction(g, generator, random_if_zero=True), project=project)
    return SmoothAdvResult(x_adv, noise)


def smoothadv_ddn(model: nn.Module, x: Tensor, y: Tensor, attack: SmoothAdvDDN, *,
                  noise: Tensor | None = None, generator: torch.Generator | None = None) -> SmoothAdvResult:
    """SmoothAdv's DDN variant (Rony et al. 2019 adapted by Salman et al.; reference `attacks.py` DDN).

    Step i (0-based) moves δ by lr_i = 0.01 + 0.99·(1 + cos(π(i+1)/steps))/2 along the normalised
    gradient of −log F̂_y (same noise every step); the per-example radius, starting at ``init_norm``,
    shrinks by (1 − gamma) where the current point is adversarial (majority vote of the m noisy
    argmaxes, ties to the lowest class) and grows by (1 + gamma) otherwise, capped by ‖max(x, 1−x)‖; δ is
    rescaled to it, x + δ quantised to ``levels`` grey levels (None: off) and clamped. Returns the
    smallest adversarial δ found (zero if none), renormed to eps. Deviation: no re-quantisation after
    that final renorm (the reference's can push ‖δ‖ slightly above eps).
    Cost: ``steps`` forwards of the m·N noisy copies + ``steps`` input backwards.
    """
    eps, steps, gamma, levels = attack.eps, attack.steps, attack.gamma, attack.levels
    _smoothadv_checks(x, y, eps=eps, steps=steps, sigma=attack.sigma, num_noise=attack.num_noise,
                      generator=generator)
    V.probability("gamma", gamma)
    V.positive("init_norm", attack.init_norm)
    if levels is not None:
        V.integer("levels", levels, low=2)
    noise = _noise_arg(x, noise, attack.sigma, attack.num_noise, generator)
    delta, best = torch.zeros_like(x), torch.zeros_like(x)
    worst = _flat_norm(torch.maximum(x, 1 - x))
    best_norm, radius = worst.clone(), torch.full_like(worst, attack.init_norm)
    for i in range(steps):
        z = (x + delta).detach().requires_grad_(True)
        with torch.enable_grad():
            probs = _noisy_probs(model, z, noise)
            (grad,) = torch.autograd.grad(_nll(probs.mean(1), y).sum(), z)
        votes = F.one_hot(probs.argmax(-1), probs.shape[-1]).sum(1).argmax(1)
        is_adv = (votes != y).view_as(worst)
        size = _flat_norm(delta)
        better = is_adv & (size < best_norm)
        best_norm, best = torch.where(better, size, best_norm), torch.where(better, delta, best)
        lr = 0.01 + 0.99 * (1 + math.cos(math.pi * (i + 1) / steps)) / 2
        delta = delta + lr * _l2_direction(grad, generator, random_if_zero=True)
        radius = torch.minimum(radius * torch.where(is_adv, 1 - gamma, 1 + gamma), worst)
        x_new = x + delta * radius / _flat_norm(delta).clamp_min(_TINY)
        if levels is not None:
            x_new = (x_new * (levels - 1)).round() / (levels - 1)
        delta = x_new.clamp(0, 1) - x
    return SmoothAdvResult(_project(x + best, x, eps, "l2").detach(), noise)


def smoothmix_attack(model: nn.Module, x: Tensor, y: Tensor, attack: SmoothMix, *,
                     noise: Tensor | None = None, generator: torch.Generator | None = None) -> SmoothMixResult:
    """SmoothMix's adversary (Jeong et al. 2021, eq. 7; reference `SmoothMix_PGD`).

    From x, ``steps`` (T) steps x ← clamp(x + α·g/‖g‖₂) ascending −log F̂_y (true label, the same m
    noise vectors every step and returned for the mixup loss). Unrestricted: no ball unless ``maxnorm``
    (then renorm to it before the clamp), so ‖x_adv − x‖ ≤ T·α. ``x_init``: x (``mix_step=0``), or the
    iterate after ``mix_step`` steps (one-step adversary, ``mix_step=1``) projected onto the ball of
    radius ``maxnorm_s`` (default α·mix_step, which the reference's warm-up rescales per epoch).
    Cost: T forwards of the m·N noisy copies + T input backwards.
    """
    step_size, steps, mix_step = attack.step_size, attack.steps, attack.mix_step
    _smoothadv_checks(x, y, sigma=attack.sigma, generator=generator, maxnorm=attack.maxnorm,
                      step_size=step_size, steps=steps, num_noise=attack.num_noise)
    V.integer("mix_step", mix_step, low=0)
    if attack.maxnorm_s is not None:
        V.non_negative("maxnorm_s", attack.maxnorm_s)
    noise = _noise_arg(x, noise, attack.sigma, attack.num_noise, generator)
    grad_fn = _autograd(lambda z: smoothed_nll(model, z, y, noise))
    ball = Ball(attack.maxnorm, "l2")
    done = min(mix_step, steps)  # the reference saves the iterate at i == mix_step, if that comes
    x_mid = _ascend(x, x, grad_fn, ball, step_size=step_size, steps=done)[0]
    x_adv = _ascend(x, x_mid, grad_fn, ball, step_size=step_size, steps=steps - done)[0]
    x_init = x_mid if mix_step < steps else x
    radius = step_size * mix_step if attack.maxnorm_s is None else attack.maxnorm_s
    return SmoothMixResult(_project(x_init, x, radius, "l2").detach(), x_adv, noise)
