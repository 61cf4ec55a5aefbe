"""Top Hessian eigenvalue of a loss w.r.t. the input (own power iteration) and the weights (PyHessian).

Backward Smoothing, Sec. 4 and Fig. 3: random initialisation acts as randomized smoothing of the inner
maximisation, so the curvature of delta -> L(x + delta), i.e. the Hessian **with respect to the input**,
is lower at randomly initialised points than at clean ones, and lower still at backward-smoothed ones.
The paper plots the "Hessian maximum eigenvalue" along a Fast TRADES trajectory, so the objective is
the TRADES KL (eq. 4.1, ``kl_objective``; ``ce_objective`` for AT). It does not say how it averages over
data: we average per-example top eigenvalues (``per_example=True``, then ``.mean()``).

Power iteration converges to the eigenvalue of largest magnitude and returns it with its sign. For
piecewise-linear nets (ReLU, max-pool, eval-mode BatchNorm) the input Hessian of CE and of the TRADES KL
is J^T (diag p - p p^T) J almost everywhere, which is PSD, so that is the top eigenvalue. With smooth
activations (tanh, softplus, GELU) a curvature term sum_k (p_k - t_k) grad^2 f_k is added, which vanishes
for the KL at x' = x but elsewhere can make the Hessian indefinite: a negative value then means the
most curved direction is concave. Eigenvalues of (nearly) equal magnitude and opposite sign make power
iteration oscillate; raise ``iters`` and compare runs if in doubt.

Public names: `input_hessian_top_eigenvalue` (``iters`` double back-propagations of the batch),
`weight_hessian_top_eigenvalue` (PyHessian, GPL-3.0, imported on use), `ce_objective`, `kl_objective`,
`smoothing_points`, `Probe` (what Fig. 3 measures), `smoothing_curvature`, `curvature_along_training`,
`POINTS`, `OBJECTIVES`. Every function leaves the model's train/eval mode as it found it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rs_lib import _validate as check
from rs_lib import models

LossFn = Callable[[Tensor], Tensor]


def _per_example_norm(v: Tensor) -> Tensor:
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


def input_hessian_top_eigenvalue(loss_fn: LossFn, x: Tensor, *, iters: int = 20, tol: float = 1e-4,
                                 generator: torch.Generator | None = None, per_example: bool = False,
                                 dtype: torch.dtype | None = None) -> float | Tensor:
    """Top eigenvalue of grad^2_x loss_fn(x) by power iteration on Hessian-vector products.

    ``loss_fn(x)`` must return a scalar that is a **sum** of per-example losses of a model whose
    examples do not interact (eval mode: BatchNorm on running statistics). Its Hessian over the batch
    is then block-diagonal, one (d x d) block per example, and the power iteration runs on every block
    at once (one double back-propagation per iteration, the vector normalised per example). A mean
    instead of a sum would scale every block by 1/batch.

    Returns the signed eigenvalue of largest magnitude, in units of loss / (pixel unit)^2:
    ``per_example=False``: a float, that of the whole batch Hessian (the largest-|lambda| block);
    ``per_example=True``: a 1-D tensor, one per example (Fig. 3 plots their mean over the data).
    Stops when every example's estimate changes by less than ``tol`` (relative) or after ``iters``.
    ``dtype`` (e.g. torch.float64 for tiny eigenvalues) casts x; ``loss_fn`` must accept that dtype
    (pass a float64 copy of the model). The start vector is N(0, I) drawn from ``generator``.
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a callable x -> scalar loss, got {loss_fn!r}")
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2 or x.numel() == 0:
        raise ValueError("x must be a non-empty floating tensor with a batch dimension, got "
                         f"{type(x).__name__} {getattr(x, 'shape', '')}")
    check.positive_int("iters", iters)
    check.positive("tol", tol)
    check.choice("per_example", per_example, (True, False))
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype such as torch.float64, got {dtype!r}")

    x0 = x.detach().to(dtype or x.dtype).requires_grad_(True)
    loss = loss_fn(x0)
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        raise ValueError(f"loss_fn(x) must return a scalar tensor (sum over the batch), got "
                         f"shape {tuple(getattr(loss, 'shape', ()))}")
    if not loss.requires_grad:
        raise ValueError("loss_fn(x) does not depend differentiably on x")
    (grad,) = torch.autograd.grad(loss, x0, create_graph=True)

    v = torch.randn(x0.shape, generator=generator, dtype=x0.dtype,
                    device=generator.device if generator is not None else x0.device).to(x0.device)
    v = v / _per_example_norm(v)
    eig = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
    for step in range(iters):
        # d/dx (grad . v) = H v; grad without a graph means a loss linear in x (H = 0).
        hv = None
        if grad.requires_grad:
            (hv,) = torch.autograd.grad(grad, x0, grad_outputs=v, retain_graph=True, allow_unused=True)
        if hv is None:
            hv = torch.zeros_like(v)
        new = (hv * v).flatten(1).sum(1)  # Rayleigh quotient per block, since ||v_i|| = 1
        norm = _per_example_norm(hv)
        v = torch.where(norm > 0, hv / norm.clamp_min(torch.finfo(norm.dtype).tiny), v)
        converged = step > 0 and bool(((new - eig).abs() <= tol * eig.abs()).all())
        eig = new.detach()
        if converged:
            break
    if per_example:
        return eig
    return float(eig[eig.abs().argmax()])


def ce_objective(model: nn.Module, y: Tensor) -> LossFn:
    """x -> sum_i CE(f(x_i), y_i): the inner objective of PGD-AT / Fast AT (BS paper eq. 3.1)."""
    if not isinstance(y, Tensor) or y.dim() != 1 or y.is_floating_point():
        raise ValueError(f"y must be a 1-D integer tensor of labels, got {getattr(y, 'shape', y)!r}")

    def loss_fn(x: Tensor) -> Tensor:
        return F.cross_entropy(model(x), y, reduction="sum")

    return loss_fn


def kl_objective(model: nn.Module, logits_clean: Tensor) -> LossFn:
    """x' -> sum_i KL(s(f(x_i)) || s(f(x'_i))): the TRADES / Backward Smoothing inner objective
    (BS paper eq. 4.1 / 4.5; TRADES sums over the batch). The clean distribution is a constant target."""
    if (not isinstance(logits_clean, Tensor) or logits_clean.dim() != 2
            or not logits_clean.is_floating_point()):
        raise ValueError("logits_clean must be a (batch, classes) floating tensor, got "
                         f"{getattr(logits_clean, 'shape', logits_clean)!r}")
    target = logits_clean.detach()

    def loss_fn(x: Tensor) -> Tensor:
        log_q = F.log_softmax(model(x), dim=1)
        log_p = F.log_softmax(target.to(log_q.dtype), dim=1)
        return F.kl_div(log_q, log_p, reduction="sum", log_target=True)

    return loss_fn


def weight_hessian_top_eigenvalue(model: nn.Module, x: Tensor, y: Tensor, *,
                                  criterion: Callable[[Tensor, Tensor], Tensor] | None = None,
                                  iters: int = 100, tol: float = 1e-3,
                                  generator: torch.Generator | None = None) -> float:
    """Top eigenvalue (largest |lambda|, signed) of grad^2_theta criterion(model(x), y) via PyHessian 0.1.

    ``criterion`` defaults to mean cross-entropy. PyHessian evaluates the model in eval mode; every
    module's train/eval mode is restored afterwards. The model's gradients are cleared before (PyHessian
    silently adds stale ones) and after (they then hold a graph). ``tol`` is PyHessian's: the relative
    change between consecutive estimates. PyHessian normalises by ||Hv|| + 1e-6, so eigenvalues below
    ~1e-3 come out biased low. Its start vector uses the global RNG; with ``generator`` it is seeded
    from the generator inside a forked RNG state, so the global stream is untouched.
    """
    from pyhessian import hessian as PyHessian  # GPL-3.0, imported only where it is used

    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters that require grad")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.shape[:1] != y.shape[:1]:
        raise ValueError("x and y must be tensors with the same batch size")
    check.positive_int("iters", iters)
    check.positive("tol", tol)

    device = params[0].device
    modes = {module: module.training for module in model.modules()}
    seed = None if generator is None else int(torch.randint(2**62, (1,), generator=generator))
    forked = [device] if device.type == "cuda" else []
    try:
        model.zero_grad(set_to_none=True)
        with warnings.catch_warnings(), torch.random.fork_rng(devices=forked, enabled=seed is not None), \
                (torch.cuda.device(device) if device.type == "cuda" else nullcontext()):
            warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True")
            if seed is not None:
                torch.manual_seed(seed)
            hess = PyHessian(model, criterion or nn.CrossEntropyLoss(), data=(x.to(device), y.to(device)),
                             cuda=device.type == "cuda")
            eigenvalues, _ = hess.eigenvalues(maxIter=iters, tol=tol, top_n=1)
    finally:
        model.zero_grad(set_to_none=True)
        for module, training in modes.items():
            module.train(training)
    return float(eigenvalues[0])


# --------------------------------------------------------------------------------------------
# Backward Smoothing Fig. 3: curvature of the inner objective at clean, random and BS points
# --------------------------------------------------------------------------------------------

POINTS = ("clean", "random", "backward-smoothed")
OBJECTIVES = ("kl", "ce")


def smoothing_points(model: nn.Module, x: Tensor, *, eps: float, step_size: float, gamma: float = 1.0,
                     generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """The three starting points of BS Fig. 3, in the model's current mode (use eval).

    ``clean``: x; ``random``: x + U(−eps, eps), not clamped, as Fast TRADES starts (BS eq. 4.2, the
    trajectory the figure follows); ``backward-smoothed``: x + ξ*, one signed step of ``step_size``
    on KL(s(f(x) + γψ) ‖ s(f(x + ξ))) from ξ = 0 (BS eq. 4.4), projected and clamped.
    """
    from rs_lib import attacks

    check.positive("eps", eps)
    check.positive("step_size", step_size)
    check.non_negative("gamma", gamma)
    uniform = torch.rand(x.shape, generator=generator, dtype=x.dtype,
                         device=generator.device if generator is not None else x.device).to(x.device)
    return {"clean": x.detach(), "random": (x + eps * (2 * uniform - 1)).detach(),
            "backward-smoothed": attacks.backward_smoothing_init(
                model, x, attacks.BackwardSmoothing(eps, step_size, gamma=gamma), generator=generator)}


@dataclass(frozen=True)
class Probe:
    """What BS Fig. 3 measures at a checkpoint: the three :data:`POINTS` (radius ``eps``, the BS step
    ``step_size`` and ``gamma``), the ``objectives`` (from :data:`OBJECTIVES`), ``iters`` power
    iterations per eigenvalue, and the ``seed`` of every random draw (points and start vectors)."""

    eps: float
    step_size: float
    gamma: float = 1.0
    objectives: tuple[str, ...] | list[str] = ("kl",)
    iters: int = 20
    seed: int = 0


def smoothing_curvature(model: nn.Module, x: Tensor, y: Tensor, probe: Probe) -> list[dict[str, float | str]]:
    """Mean per-example top eigenvalue of the input Hessian of the inner objective at each of
    :data:`POINTS` (BS Fig. 3), one row per (objective, point).

    Objectives: ``'kl'``, x' ↦ KL(s(f(x)) ‖ s(f(x'))) (the TRADES / Fast TRADES / BS inner objective,
    eq. 4.1; clean target fixed); ``'ce'``, x' ↦ CE(f(x'), y) (AT, eq. 3.1). The model is put in eval
    mode for the computation and restored. The random and backward-smoothed points and the power
    iteration's start vectors come from one generator seeded with ``probe.seed`` on x's device, so every
    checkpoint of a trajectory is probed with the same draws. Units: loss / pixel².
    Cost: one BS step, then per objective and point ``iters`` double back-propagations of the batch.
    """
    objectives, iters, seed = probe.objectives, probe.iters, probe.seed
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(objectives, (list, tuple)) or not objectives:
        raise ValueError(f"objectives must be a non-empty list drawn from {OBJECTIVES}, got {objectives!r}")
    for objective in objectives:
        check.choice("objectives", objective, OBJECTIVES)
    check.positive_int("iters", iters)
    check.integer("seed", seed, low=0)
    with models.mode(model, train=False):
        generator = torch.Generator(device=x.device).manual_seed(seed)
        points = smoothing_points(model, x, eps=probe.eps, step_size=probe.step_size, gamma=probe.gamma,
                                  generator=generator)
        with torch.no_grad():
            clean_logits = model(x)
        rows: list[dict[str, float | str]] = []
        for objective in objectives:
            loss_fn = kl_objective(model, clean_logits) if objective == "kl" else ce_objective(model, y)
            for name, point in points.items():
                eig = input_hessian_top_eigenvalue(loss_fn, point, iters=iters, generator=generator,
                                                   per_example=True)
                rows.append({"objective": objective, "point": name, "eigenvalue": float(eig.mean())})
    return rows


def curvature_along_training(load_model: Callable[[int], nn.Module], epochs: list[int] | tuple[int, ...],
                             x: Tensor, y: Tensor, probe: Probe, *, weight_space: bool = False,
                             weight_iters: int = 100) -> list[dict[str, float | str | int]]:
    """:func:`smoothing_curvature` of the checkpoint ``load_model(e)`` for each epoch e (BS Fig. 3),
    plus, with ``weight_space``, the top eigenvalue of the weight Hessian of CE at each checkpoint,
    at each of the three :data:`POINTS` as the input-space rows (the same random and backward-smoothed
    points: :func:`smoothing_points` with the generator seeded ``probe.seed``, eval mode), since the
    paper's argument compares the three (PyHessian, at most ``weight_iters`` power iterations;
    objective ``'ce (weights)'``). Rows carry ``epoch``."""
    if not callable(load_model):
        raise ValueError("load_model must be a callable epoch -> model")
    if not isinstance(epochs, (list, tuple)) or not epochs:
        raise ValueError(f"epochs must be a non-empty list of epoch numbers, got {epochs!r}")
    check.positive_int("weight_iters", weight_iters)
    rows: list[dict[str, float | str | int]] = []
    for epoch in epochs:
        check.integer("epochs", epoch, low=0)
        model = load_model(epoch)
        device = models.device_of(model)
        xs, ys = x.to(device), y.to(device)
        for row in smoothing_curvature(model, xs, ys, probe):
            rows.append({"epoch": epoch, **row})
        if weight_space:
            for name, point in _weight_points(model, xs, probe).items():
                generator = torch.Generator(device=device).manual_seed(probe.seed)
                rows.append({"epoch": epoch, "objective": "ce (weights)", "point": name,
                             "eigenvalue": weight_hessian_top_eigenvalue(model, point, ys, iters=weight_iters,
                                                                         generator=generator)})
    return rows


def _weight_points(model: nn.Module, x: Tensor, probe: Probe) -> dict[str, Tensor]:
    """The three points of :func:`smoothing_curvature` (same seed, eval mode, mode restored)."""
    with models.mode(model, train=False):
        generator = torch.Generator(device=x.device).manual_seed(probe.seed)
        return smoothing_points(model, x, eps=probe.eps, step_size=probe.step_size, gamma=probe.gamma,
                                generator=generator)
