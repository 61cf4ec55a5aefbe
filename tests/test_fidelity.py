"""The book's code path against the authors' code (issue 13): each objective's equation, written here
in our own words from the reference papers and codes, evaluated on a fixed batch with the same
random draws, must equal our implementation; and the options that reproduce the references'
choices (GradAlign's two gradient flows, the unclamped random start, SmoothAdv's l2 step order).

No reference code is copied: every "reference" below is a plain transcription of an equation.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rs_lib import attacks as A
from rs_lib import methods
from rs_lib.methods import StepContext, method_config

C, N, SHAPE = 4, 12, (1, 6, 6)


def smooth_model(seed: int = 0, batchnorm: bool = False) -> nn.Module:
    """A small twice-differentiable network (softplus), so finite differences of input gradients work."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(1, 3, 3, padding=1)]
    layers += [nn.BatchNorm2d(3)] if batchnorm else []
    layers += [nn.Softplus(beta=2.0), nn.Flatten(), nn.Linear(3 * 36, 16), nn.Softplus(beta=2.0), nn.Linear(16, C)]
    return nn.Sequential(*layers).double()


def fixed_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((N, *SHAPE), generator=g, dtype=torch.float64)
    x[:, :, 0, :] = 0.0  # pixels on the box's edges, where clamping matters
    x[:, :, -1, :] = 1.0
    return x, torch.arange(N) % C


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ctx(seed: int = 0) -> StepContext:
    return StepContext(epoch=0, iteration=0, progress=0.0, generator=gen(seed), num_classes=C)


# ------------------------------------------------------------------------------ GradAlign
def _input_grad(model: nn.Module, point: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    point = point.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(point), y, reduction="sum"), point, create_graph=True)
    return g


def _cos_reg(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """1 − mean_i cos(g1_i, g2_i), the GradAlign regulariser (Andriushchenko & Flammarion 2020, eq. 3)."""
    g1, g2 = g1.flatten(1), g2.flatten(1)
    return 1 - ((g1 * g2).sum(1) / (g1.norm(dim=1) * g2.norm(dim=1))).mean()


def _eta(x: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    """The η ~ U(−ε, ε) our regulariser draws from ``gen(seed)`` (one uniform draw of x's shape)."""
    return (2 * torch.rand(x.shape, generator=gen(seed), dtype=torch.float64) - 1) * eps


@pytest.mark.parametrize("backprop_clean", [False, True])
def test_gradalign_weight_gradient_equals_finite_differences_of_its_own_definition(backprop_clean):
    """GradAlign's code detaches g1 (the weight gradient of 1 − cos flows through g2 only); the BS
    repository keeps both. Each must equal a central finite difference of its definition."""
    model, (x, y), eps = smooth_model(), fixed_batch(), 0.1
    eta = _eta(x, eps, 5)
    g1_fixed = _input_grad(model, x, y).detach()
    reg = A.gradalign_regularizer(model, x, y, eps=eps, backprop_clean=backprop_clean, generator=gen(5))
    assert float(reg.detach()) == pytest.approx(float(_cos_reg(g1_fixed, _input_grad(model, x + eta, y)).detach()), rel=1e-10)
    weight = model[3].weight
    (auto,) = torch.autograd.grad(reg, weight)
    h = 1e-6
    for idx in [(0, 0), (3, 17), (15, 100), (7, 55)]:
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                weight[idx] += sign * h
            g1 = _input_grad(model, x, y) if backprop_clean else g1_fixed
            values.append(float(_cos_reg(g1, _input_grad(model, x + eta, y)).detach()))
            with torch.no_grad():
                weight[idx] -= sign * h
        assert float(auto[idx]) == pytest.approx((values[0] - values[1]) / (2 * h), rel=1e-4, abs=1e-9)


def test_the_two_gradalign_flows_have_one_value_and_different_weight_gradients():
    model, (x, y) = smooth_model(), fixed_batch()
    grads = []
    for backprop_clean in (False, True):
        reg = A.gradalign_regularizer(model, x, y, eps=0.1, backprop_clean=backprop_clean, generator=gen(1))
        grads.append((float(reg.detach()), torch.cat([g.flatten() for g in torch.autograd.grad(reg, list(model.parameters()))])))
    (v0, g0), (v1, g1) = grads
    assert v0 == pytest.approx(v1, rel=1e-12)
    assert float(F.cosine_similarity(g0, g1, dim=0)) < 0.999


def test_gradalign_bs_is_the_bs_repositorys_training_loss():
    """pgd_fast_gradalign.py: eval-mode FGSM from x + U(−ε, ε) (not clamped), α = 10/255, project,
    clamp; train mode: CE(f(x'), y) + 0.3·(1 − cos(∇ₓCE(x), ∇ₓCE(x + η))), both gradients kept."""
    cfg = method_config("gradalign_bs")
    assert (cfg.lam, cfg.clamp_start, cfg.backprop_clean, cfg.random_start) == (0.3, False, True, True)
    assert cfg.step_size == pytest.approx(10 / 255) and method_config("gradalign").lam == 0.2
    model, (x, y) = smooth_model(batchnorm=True), fixed_batch()
    g = gen(3)
    start = x + (2 * torch.rand(x.shape, generator=g, dtype=torch.float64) - 1) * cfg.eps
    eta = (2 * torch.rand(x.shape, generator=g, dtype=torch.float64) - 1) * cfg.eps
    reference = smooth_model(batchnorm=True)
    reference.eval()
    point = start.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(reference(point), y), point)
    x_adv = torch.min(torch.max(start + cfg.step_size * grad.sign(), x - cfg.eps), x + cfg.eps).clamp(0, 1)
    reference.train()
    expected = F.cross_entropy(reference(x_adv), y) + 0.3 * _cos_reg(_input_grad(reference, x, y),
                                                                     _input_grad(reference, x + eta, y))
    out = methods.METHODS["gradalign_bs"].objective(model, x, y, method_config("gradalign_bs", {"instrument": False}),
                                                  StepContext(0, 0, 0.0, gen(3), C))
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-10)
    ours = torch.autograd.grad(out.loss, list(model.parameters()))
    theirs = torch.autograd.grad(expected, list(reference.parameters()))
    assert all(torch.allclose(a, b, rtol=1e-8, atol=1e-12) for a, b in zip(ours, theirs))


def test_gradalign_bs_rejects_a_detached_clean_gradient():
    model, (x, y) = smooth_model(), fixed_batch()
    with pytest.raises(ValueError, match="grad_clean"):
        A.gradalign_regularizer(model, x, y, eps=0.1, grad_clean=torch.zeros_like(x), backprop_clean=True)


# --------------------------------------------------------------------------- random start
@pytest.mark.parametrize("clamp_start", [True, False])
def test_random_start_is_clamped_only_when_asked(clamp_start):
    """Wong et al. clamp x + U(−ε, ε) to [0, 1] before FGSM's gradient; the BS repository does not."""
    model, (x, y), eps = smooth_model(), fixed_batch(), 0.1
    start = x + (2 * torch.rand(x.shape, generator=gen(2), dtype=torch.float64) - 1) * eps
    start = start.clamp(0, 1) if clamp_start else start
    res = A.fgsm(model, x, y, A.FGSM(eps=eps, step_size=0.05, random_start=True, clamp_start=clamp_start), generator=gen(2))
    with torch.no_grad():
        assert float(res.loss_start) == pytest.approx(float(F.cross_entropy(model(start), y)), rel=1e-12)
    assert bool((res.x_adv >= 0).all() and (res.x_adv <= 1).all())
    assert float((res.x_adv - x).abs().max()) <= eps + 1e-12


@pytest.mark.parametrize("name", ["fast_at", "pgd_at", "gradalign"])
def test_methods_default_to_the_clamped_start_and_take_the_unclamped_one_as_an_option(name):
    assert method_config(name).clamp_start is True
    model, (x, y) = smooth_model(), fixed_batch()
    seen = []
    model.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    cfg = method_config(name, {"clamp_start": False, "instrument": False})
    methods.METHODS[name].objective(model, x, y, cfg, ctx())
    assert float(seen[0].min()) < 0 and float(seen[0].max()) > 1  # the first gradient outside the box


# ------------------------------------------------------------------ SmoothAdv l2 step order
def _reference_order_pgd(model, x, y, noise, eps, steps):
    """SmoothAdv's PGD_L2 as its code orders a step: δ += α·g/‖g‖; δ = clamp(x + δ) − x; then
    δ = δ·ε/(‖δ‖ + 1e-7) where ‖δ‖ > ε (torch's renorm); α = 2ε/T, zero start, the same noise."""
    delta, alpha = torch.zeros_like(x), 2 * eps / steps
    for _ in range(steps):
        point = (x + delta).requires_grad_(True)
        probs = F.softmax(model((point.unsqueeze(1) + noise).flatten(0, 1)), -1).view(len(x), noise.shape[1], -1)
        loss = -probs.mean(1).gather(1, y[:, None]).clamp_min(1e-20).log().sum()
        (g,) = torch.autograd.grad(loss, point)
        delta = delta + alpha * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        delta = (x + delta).clamp(0, 1) - x
        norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        delta = torch.where(norm > eps, delta * eps / (norm + 1e-7), delta)
    return (x + delta).detach()


def test_smoothadv_clamp_renorm_is_the_references_step_order_and_reaches_the_sphere():
    model, (x, y) = smooth_model(), fixed_batch()
    eps, steps = 1.5, 4
    noise = A.draw_noise(x, sigma=0.25, num_noise=3, generator=gen(4))
    ours = A.smoothadv_pgd(model, x, y, A.SmoothAdvPGD(eps=eps, steps=steps, sigma=0.25, num_noise=3, step_order="clamp_renorm"), noise=noise).x_adv
    assert torch.allclose(ours, _reference_order_pgd(model, x, y, noise, eps, steps), atol=1e-12)
    default = A.smoothadv_pgd(model, x, y, A.SmoothAdvPGD(eps=eps, steps=steps, sigma=0.25, num_noise=3), noise=noise).x_adv
    norms = {k: (v - x).flatten(1).norm(dim=1) for k, v in (("ref", ours), ("ours", default))}
    assert torch.allclose(norms["ref"], torch.full_like(norms["ref"], eps), atol=1e-6)
    assert bool((norms["ours"] < eps - 1e-4).any())  # project-then-clamp ends inside the ball
    assert method_config("smoothadv_pgd").step_order == "project_clamp"
    assert method_config("smoothadv_pgd", {"step_order": "clamp_renorm"}).step_order == "clamp_renorm"
    with pytest.raises(ValueError, match="step_order"):
        method_config("smoothadv_pgd", {"step_order": "renorm"})


# ------------------------------------------- side by side: the references' equations, our code
def _kl_batchmean(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """(1/N) Σ_i Σ_c s(p)_ic (log s(p)_ic − log s(q)_ic): KLDivLoss(sum) / N, as both codes divide."""
    p = F.softmax(p_logits, 1)
    return (p * (F.log_softmax(p_logits, 1) - F.log_softmax(q_logits, 1))).sum() / len(p_logits)


def _signed_step(point: torch.Tensor, loss: torch.Tensor, x: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    """x' ← clamp(min(max(x' + α·sign(∇ loss), x − ε), x + ε), 0, 1)."""
    (g,) = torch.autograd.grad(loss, point)
    return torch.min(torch.max(point.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)


def _trades_outer(ref: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, beta: float) -> torch.Tensor:
    """Train mode: CE(f(x), y) + β·KL(s(f(x)) ‖ s(f(x'))), the target not detached."""
    ref.train()
    logits = ref(x)
    return F.cross_entropy(logits, y) + beta * _kl_batchmean(logits, ref(x_adv))


def _same_loss_and_weight_gradient(name: str, expected_fn) -> None:
    model, (x, y) = smooth_model(batchnorm=True), fixed_batch()
    reference = smooth_model(batchnorm=True)
    cfg = method_config(name, {"instrument": False})
    expected = expected_fn(reference, x, y, cfg, gen(11))
    out = methods.METHODS[name].objective(model, x, y, cfg, ctx(11))
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-10)
    ours = torch.autograd.grad(out.loss, list(model.parameters()))
    theirs = torch.autograd.grad(expected, list(reference.parameters()))
    assert all(torch.allclose(a, b, rtol=1e-8, atol=1e-12) for a, b in zip(ours, theirs))
    assert all(torch.allclose(a, b) for a, b in zip(model.buffers(), reference.buffers()) if a.is_floating_point())


def test_trades_equals_trades_loss_written_out():
    """TRADES' trades_loss (Zhang et al. 2019, eq. 5): eval mode, x' = x + 0.001·N(0, I), K times
    x' ← Π(x' + α·sign ∇ KL(s(f(x)) ‖ s(f(x')))); then train mode, CE(f(x), y) + β·KL(s(f(x)) ‖ s(f(x')))
    with the clean target not detached. Their code forwards x twice in train mode (for the CE and
    inside the KL); without dropout both give the same logits, so the loss is the same; the BN
    running statistics differ by that one extra update (stated on the chapter's page), so the
    written-out version forwards x once, as ours."""
    def expected(ref, x, y, cfg, g):
        ref.eval()
        with torch.no_grad():
            target = ref(x)
        x_adv = x + 0.001 * torch.randn(x.shape, generator=g, dtype=x.dtype)
        for _ in range(cfg.steps):
            point = x_adv.detach().requires_grad_(True)
            x_adv = _signed_step(point, _kl_batchmean(target, ref(point)), x, cfg.step_size, cfg.eps)
        return _trades_outer(ref, x, y, x_adv, cfg.beta)

    _same_loss_and_weight_gradient("trades", expected)


def test_backward_smoothing_equals_its_training_loss_written_out():
    """Backward Smoothing's training_loss (Chen et al., Alg. 1, eq. 4.4-4.5): eval mode; ψ = γ·U(−1, 1)^{N×C};
    one signed step from x that lowers KL(s(f(x) + ψ) ‖ s(f(x'))), projected and clamped; one signed
    step that raises KL(s(f(x)) ‖ s(f(x'))); train mode: CE(f(x), y) + β·KL(s(f(x)) ‖ s(f(x')))."""
    def expected(ref, x, y, cfg, g):
        ref.eval()
        with torch.no_grad():
            clean = ref(x)
        psi = cfg.gamma * (2 * torch.rand((len(x), C), generator=g, dtype=x.dtype) - 1)
        point = x.clone().requires_grad_(True)
        x_adv = _signed_step(point, -_kl_batchmean(clean + psi, ref(point)), x, cfg.step_size, cfg.eps)
        for _ in range(cfg.steps):
            point = x_adv.detach().requires_grad_(True)
            x_adv = _signed_step(point, _kl_batchmean(clean, ref(point)), x, cfg.step_size, cfg.eps)
        return _trades_outer(ref, x, y, x_adv, cfg.beta)

    _same_loss_and_weight_gradient("backward_smoothing", expected)


def test_certify_equals_cohens_certify_written_out():
    """Cohen et al.'s Smooth.certify (Alg. 1 of their paper): counts of argmax f(x + σε) over n0
    selection draws give ĉ_A; counts over n fresh estimation draws give n_A; p_A = the one-sided
    (1 − α) Clopper-Pearson lower bound (statsmodels' proportion_confint(n_A, n, 2α, 'beta')[0]);
    abstain if p_A < 1/2, else (ĉ_A, σ·Φ⁻¹(p_A)). Same Gaussian draws: one draw per phase."""
    from scipy.stats import norm
    from statsmodels.stats.proportion import proportion_confint

    from rs_lib.smoothing import ABSTAIN, Smooth

    torch.manual_seed(0)
    base = nn.Sequential(nn.Flatten(), nn.Linear(16, C)).double().eval()
    sigma, n0, n, alpha = 0.5, 30, 400, 0.001
    outcomes = []
    for seed in range(8):
        x = torch.rand((1, 4, 4), generator=gen(100 + seed), dtype=torch.float64)
        g = gen(seed)
        with torch.no_grad():
            counts0 = torch.bincount(base(x + sigma * torch.randn((n0, *x.shape), generator=g, dtype=x.dtype)).argmax(1),
                                     minlength=C)
            counts = torch.bincount(base(x + sigma * torch.randn((n, *x.shape), generator=g, dtype=x.dtype)).argmax(1),
                                    minlength=C)
        c_hat = int(counts0.argmax())
        p_a = proportion_confint(int(counts[c_hat]), n, alpha=2 * alpha, method="beta")[0]
        want = (ABSTAIN, 0.0) if p_a < 0.5 else (c_hat, sigma * norm.ppf(p_a))
        got = Smooth(base, C, sigma).certify(x, n0, n, alpha, 1000, generator=gen(seed))
        assert got[0] == want[0] and got[1] == pytest.approx(want[1], rel=1e-9, abs=1e-12)
        outcomes.append(got[0] == ABSTAIN)
    assert any(outcomes) and not all(outcomes)  # both branches were compared


# ------------------------------------------------------------- stored runs keep their hash
@pytest.mark.parametrize("method,option,value", [("fast_at", "clamp_start", False), ("pgd_at", "clamp_start", False),
                                                 ("gradalign", "backprop_clean", True),
                                                 ("smoothadv_pgd", "step_order", "clamp_renorm")])
def test_new_options_leave_the_store_hash_of_earlier_runs_unchanged(method, option, value):
    """An option added after runs were stored is recorded only when set, so at its default the
    resolved parameters (and the run's store hash) are what they were before the option existed."""
    from rs_lib import store
    from rs_lib.train import TrainConfig

    plain = TrainConfig(method=method, dataset="synthetic", model="small_cnn")
    assert option not in plain.to_dict()["method_params"]
    assert store.config_hash(plain.to_dict()) == store.config_hash(
        TrainConfig(method=method, dataset="synthetic", model="small_cnn", method_params={option: getattr(
            plain.method_cfg, option)}).to_dict())
    changed = TrainConfig(method=method, dataset="synthetic", model="small_cnn", method_params={option: value})
    assert changed.to_dict()["method_params"][option] == value
    assert store.config_hash(changed.to_dict()) != store.config_hash(plain.to_dict())
