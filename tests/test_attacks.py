"""Properties of rs_lib.attacks on tiny models and generated data (CPU, seconds)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import fit
from rs_lib import attacks as A

SHAPE = (1, 8, 8)
NUM_CLASSES = 4


def tiny_cnn(batchnorm: bool = False) -> nn.Module:
    layers = [nn.Conv2d(1, 8, 3, padding=1)]
    layers += [nn.BatchNorm2d(8)] if batchnorm else []
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 32), nn.ReLU(), nn.Linear(32, NUM_CLASSES)]
    return nn.Sequential(*layers)


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class prototypes (fixed) plus noise, clamped to [0, 1]."""
    protos = torch.rand((NUM_CLASSES, *SHAPE), generator=torch.Generator().manual_seed(123)) * 0.6 + 0.2
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    x = (protos[y] + 0.25 * torch.randn((n, *SHAPE), generator=g)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="module")
def trained():
    """A tiny CNN trained for 300 Adam steps on the prototype data (eval mode, ~1 s)."""
    torch.manual_seed(0)
    model = tiny_cnn()
    x, y = make_data(2048, seed=1)
    return fit(model, x, y)


@pytest.fixture
def batch():
    return make_data(16, seed=7)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# Every attack, registered by name: call(model, x, y, generator) -> [(output, norm, radius it must respect)].
EPS, L2EPS = 0.1, 0.5
ATTACKS: dict[str, Callable] = {}


def attack(fn: Callable) -> Callable:
    ATTACKS[fn.__name__] = fn
    return fn


@attack
def pgd_linf_rs(m, x, y, g):
    return [(A.pgd(m, x, y, A.PGD(eps=EPS, step_size=0.03, steps=5, random_start=True), generator=g), "linf", EPS)]


@attack
def pgd_l2_rs(m, x, y, g):
    out = A.pgd(m, x, y, A.PGD(eps=L2EPS, step_size=0.2, steps=5, norm="l2", random_start=True), generator=g)
    return [(out, "l2", L2EPS)]


@attack
def pgd_linf_zero(m, x, y, g):
    return [(A.pgd(m, x, y, A.PGD(eps=EPS, step_size=0.03, steps=5)), "linf", EPS)]


@attack
def fgsm(m, x, y, g):
    return [(A.fgsm(m, x, y, A.FGSM(eps=EPS)).x_adv, "linf", EPS)]


@attack
def fgsm_rs(m, x, y, g):
    out = A.fgsm(m, x, y, A.FGSM(eps=EPS, step_size=1.25 * EPS, random_start=True), generator=g).x_adv
    return [(out, "linf", EPS)]


@attack
def fgsm_l2(m, x, y, g):
    return [(A.fgsm(m, x, y, A.FGSM(eps=L2EPS, norm="l2", random_start=True), generator=g).x_adv, "l2", L2EPS)]


@attack
def trades_gaussian(m, x, y, g):
    return [(A.trades_kl_attack(m, x, A.TradesKL(eps=EPS, step_size=0.03, steps=3), generator=g).x_adv, "linf", EPS)]


@attack
def trades_uniform(m, x, y, g):
    out = A.trades_kl_attack(m, x, A.TradesKL(eps=EPS, step_size=EPS, steps=1, start="uniform"), generator=g).x_adv
    return [(out, "linf", EPS)]


@attack
def trades_l2(m, x, y, g):
    out = A.trades_kl_attack(m, x, A.TradesKL(eps=L2EPS, step_size=0.3, steps=2, norm="l2", start="uniform"), generator=g)
    return [(out.x_adv, "l2", L2EPS)]


@attack
def bs_init(m, x, y, g):
    return [(A.backward_smoothing_init(m, x, A.BackwardSmoothing(eps=EPS, step_size=EPS, gamma=1.0), generator=g), "linf", EPS)]


@attack
def bs_init_k3(m, x, y, g):
    return [(A.backward_smoothing_init(m, x, A.BackwardSmoothing(eps=EPS, step_size=EPS, num_points=3), generator=g), "linf", EPS)]


@attack
def bs_attack(m, x, y, g):
    out = A.backward_smoothing_attack(m, x, A.BackwardSmoothing(eps=EPS, step_size=EPS, steps=2), generator=g).x_adv
    return [(out, "linf", EPS)]


@attack
def bs_pgd_init(m, x, y, g):
    return [(A.backward_smoothing_pgd_init(m, x, y, A.BackwardSmoothingPGD(eps=EPS, step_size=EPS), generator=g), "linf", EPS)]


@attack
def bs_pgd_init_literal(m, x, y, g):
    out = A.backward_smoothing_pgd_init(m, x, y, A.BackwardSmoothingPGD(eps=EPS, step_size=EPS, target="literal"), generator=g)
    return [(out, "linf", EPS)]


@attack
def odi(m, x, y, g):
    return [(A.odi_init(m, x, A.ODI(eps=EPS), generator=g), "linf", EPS)]


@attack
def smoothadv_pgd(m, x, y, g):
    out = A.smoothadv_pgd(m, x, y, A.SmoothAdvPGD(eps=L2EPS, steps=3, sigma=0.25, num_noise=3), generator=g).x_adv
    return [(out, "l2", L2EPS)]


@attack
def smoothadv_stein(m, x, y, g):
    out = A.smoothadv_pgd(m, x, y, A.SmoothAdvPGD(eps=L2EPS, steps=3, sigma=0.25, num_noise=3, estimator="stein"), generator=g)
    return [(out.x_adv, "l2", L2EPS)]


@attack
def smoothadv_ddn(m, x, y, g):
    out = A.smoothadv_ddn(m, x, y, A.SmoothAdvDDN(eps=L2EPS, steps=5, sigma=0.25, num_noise=3), generator=g).x_adv
    return [(out, "l2", L2EPS)]


@attack
def smoothmix(m, x, y, g):  # unrestricted: ‖x_adv − x‖ ≤ T·α; x_init = x
    res = A.smoothmix_attack(m, x, y, A.SmoothMix(step_size=0.4, steps=3, sigma=0.25, num_noise=2), generator=g)
    return [(res.x_init, "l2", 0.0), (res.x_adv, "l2", 3 * 0.4)]


@attack
def smoothmix_onestep_maxnorm(m, x, y, g):
    res = A.smoothmix_attack(m, x, y, A.SmoothMix(step_size=0.4, steps=4, sigma=0.25, num_noise=2, mix_step=1, maxnorm=0.6), generator=g)
    return [(res.x_init, "l2", 0.4), (res.x_adv, "l2", 0.6)]


def _radius(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attack_stays_in_ball_and_box_keeps_dtype_mode_and_grads(name, dtype, batch):
    model = tiny_cnn(batchnorm=True).to(dtype)
    model.train()  # the attack must leave a train-mode (BatchNorm) model in train mode
    x, y = batch
    x = x.to(dtype)
    for out, norm, radius in ATTACKS[name](model, x, y, gen()):
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        assert not out.requires_grad
        assert out.min() >= 0 and out.max() <= 1
        assert (_radius(out - x, norm) <= radius + 1e-6).all()
    assert model.training and all(mod.training for mod in model.modules())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_eval_mode_unchanged_and_moves_the_input(name, trained, batch):
    x, y = batch
    outs = ATTACKS[name](trained, x, y, gen())
    assert not trained.training
    assert all(p.grad is None for p in trained.parameters())
    assert any((out - x).abs().max() > 0 for out, _, _ in outs)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_accepts_an_input_that_requires_grad_and_returns_detached(name, trained, batch):
    x, y = batch
    x = x.clone().requires_grad_(True)
    for out, _, _ in ATTACKS[name](trained, x, y, gen()):
        assert not out.requires_grad and out.grad_fn is None
    assert x.grad is None


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_same_generator_seed_gives_identical_output_and_spares_global_rng(name, trained, batch):
    x, y = batch
    state = torch.get_rng_state()
    first = ATTACKS[name](trained, x, y, gen(5))
    assert torch.equal(state, torch.get_rng_state()), "global RNG consumed despite a generator"
    second = ATTACKS[name](trained, x, y, gen(5))
    for (a, _, _), (b, _, _) in zip(first, second):
        assert torch.equal(a, b)


def test_random_start_depends_on_the_generator_seed(trained, batch):
    x, y = batch
    a = A.pgd(trained, x, y, A.PGD(eps=EPS, step_size=0.01, steps=1, random_start=True), generator=gen(1))
    b = A.pgd(trained, x, y, A.PGD(eps=EPS, step_size=0.01, steps=1, random_start=True), generator=gen(2))
    assert not torch.equal(a, b)


def test_l2_random_start_fills_the_ball_uniformly():
    x = torch.full((4000, 1, 2, 2), 0.5)
    delta = A._random_in_ball(x, 1.0, "l2", gen())
    r = delta.flatten(1).norm(dim=1)
    assert (r <= 1 + 1e-6).all()
    # radius of a uniform point in the 4-dim unit ball: P(r <= t) = t^4
    assert abs((r <= 0.5).float().mean().item() - 0.5**4) < 0.02


def _ce(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def test_pgd_raises_loss_above_clean_and_at_least_as_much_as_fgsm(trained):
    x, y = make_data(256, seed=11)
    eps = 0.15
    clean = _ce(trained, x, y)
    fgsm = _ce(trained, A.fgsm(trained, x, y, A.FGSM(eps=eps)).x_adv, y)
    pgd = _ce(trained, A.pgd(trained, x, y, A.PGD(eps=eps, step_size=eps / 4, steps=10)), y)
    pgd_l2 = _ce(trained, A.pgd(trained, x, y, A.PGD(eps=1.0, step_size=0.25, steps=10, norm="l2")), y)
    assert fgsm > clean and pgd_l2 > clean
    assert pgd >= fgsm


def test_pgd_attack_reports_start_and_final_losses(trained, batch):
    x, y = batch
    res = A.pgd_attack(trained, x, y, A.PGD(eps=EPS, step_size=0.03, steps=5), track_loss=True)
    assert res.loss_start.item() == pytest.approx(_ce(trained, x, y), rel=1e-5)
    assert res.loss_final.item() == pytest.approx(_ce(trained, res.x_adv, y), rel=1e-5)
    assert res.loss_final > res.loss_start
    assert A.fgsm(trained, x, y, A.FGSM(eps=EPS)).loss_final is None


def test_pgd_steps_have_the_norms_step_length():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, NUM_CLASSES))
    x, y = torch.full((5, *SHAPE), 0.5), torch.arange(5) % NUM_CLASSES
    one_linf = A.pgd(model, x, y, A.PGD(eps=1.0, step_size=0.1, steps=1))
    assert torch.allclose((one_linf - x).abs(), torch.full_like(x, 0.1))  # every coordinate moves by ±α
    one_l2 = A.pgd(model, x, y, A.PGD(eps=1.0, step_size=0.1, steps=1, norm="l2"))
    assert torch.allclose((one_l2 - x).flatten(1).norm(dim=1), torch.full((5,), 0.1))


def test_pgd_examples_are_independent_of_the_batch(trained, batch):
    x, y = batch
    whole = A.pgd(trained, x, y, A.PGD(eps=EPS, step_size=0.03, steps=5))
    alone = torch.cat([A.pgd(trained, x[i:i + 1], y[i:i + 1], A.PGD(eps=EPS, step_size=0.03, steps=5))
                       for i in range(3)])
    assert torch.allclose(whole[:3], alone, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_attacks_run_on_cuda_with_a_cpu_generator(trained, batch):
    model = tiny_cnn().cuda().eval()
    model.load_state_dict(trained.state_dict())
    x, y = (t.cuda() for t in batch)
    for name, call in ATTACKS.items():
        for out, norm, radius in call(model, x, y, gen()):
            assert out.device == x.device and (_radius(out - x, norm) <= radius + 1e-5).all(), name


def test_pgd_matches_torchattacks_robust_accuracy(trained):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = make_data(300, seed=13)
    eps, alpha, steps = 0.12, 0.03, 10
    ours = A.pgd(trained, x, y, A.PGD(eps=eps, step_size=alpha, steps=steps))
    theirs = torchattacks.PGD(trained, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    with torch.no_grad():
        acc_ours = (trained(ours).argmax(1) == y).float().mean().item()
        acc_theirs = (trained(theirs).argmax(1) == y).float().mean().item()
        clean = (trained(x).argmax(1) == y).float().mean().item()
    assert acc_ours < clean - 0.05  # the attack does something at this eps
    assert abs(acc_ours - acc_theirs) <= 0.01
    assert not trained.training


def test_custom_loss_fn_is_used(trained, batch):
    x, y = batch
    # ascending the negative CE lowers the CE
    x_adv = A.pgd(trained, x, y, A.PGD(eps=EPS, step_size=0.03, steps=5, loss_fn=lambda z, t: -F.cross_entropy(z, t)))
    assert _ce(trained, x_adv, y) < _ce(trained, x, y)


def _kl_mean(target_logits, logits):
    return F.kl_div(F.log_softmax(logits, 1), F.softmax(target_logits, 1), reduction="batchmean").item()


def test_backward_smoothing_step_lowers_kl_to_the_noisy_target(trained, batch):
    x, _ = batch
    gamma = 1.0
    with torch.no_grad():
        clean = trained(x)
    psi = 2 * torch.rand(clean.shape, generator=gen(3)) - 1
    target = clean + gamma * psi
    x_bs = A.backward_smoothing_init(trained, x, A.BackwardSmoothing(eps=0.005, step_size=0.005, gamma=gamma), psi=psi)
    with torch.no_grad():
        before, after = _kl_mean(target, trained(x)), _kl_mean(target, trained(x_bs))
    assert after < before
    # with several points the step lowers the mean KL to the k noisy targets
    psis = 2 * torch.rand((3, *clean.shape), generator=gen(4)) - 1
    x_k = A.backward_smoothing_init(trained, x, A.BackwardSmoothing(eps=0.005, step_size=0.005, num_points=3), psi=psis)
    with torch.no_grad():
        mean_kl = lambda z: sum(_kl_mean(clean + p, trained(z)) for p in psis) / 3  # noqa: E731
        assert mean_kl(x_k) < mean_kl(x)


def test_backward_smoothing_attack_is_init_then_trades_steps(trained, batch):
    x, _ = batch
    with torch.no_grad():
        psi = 2 * torch.rand(trained(x).shape, generator=gen(3)) - 1
    x_bs = A.backward_smoothing_init(trained, x, A.BackwardSmoothing(eps=EPS, step_size=0.05), psi=psi)
    res = A.backward_smoothing_attack(trained, x, A.BackwardSmoothing(eps=EPS, step_size=0.05, steps=2), psi=psi, track_loss=True)
    ref = A.trades_kl_attack(trained, x, A.TradesKL(eps=EPS, step_size=0.05, steps=2), x_start=x_bs, track_loss=True)
    assert torch.equal(res.x_adv, ref.x_adv)
    with torch.no_grad():
        assert res.loss_start.item() == pytest.approx(_kl_mean(trained(x), trained(x_bs)), rel=1e-4)
    assert res.loss_final > res.loss_start


def test_backward_smoothing_pgd_init_moves_y_logit_towards_its_target(trained, batch):
    x, y = batch
    with torch.no_grad():
        clean = trained(x)
    psi = 2 * torch.rand(clean.shape, generator=gen(3)) - 1
    target = clean.gather(1, y[:, None]).squeeze(1) + psi.gather(1, y[:, None]).squeeze(1)
    x_bs = A.backward_smoothing_pgd_init(trained, x, y, A.BackwardSmoothingPGD(eps=0.01, step_size=0.01), psi=psi)
    with torch.no_grad():
        err = lambda z: ((trained(z).gather(1, y[:, None]).squeeze(1) - target) ** 2).mean()  # noqa: E731
        assert err(x_bs) < err(x)


def test_trades_kl_attack_raises_the_kl(trained, batch):
    x, _ = batch
    for start in ("gaussian", "uniform", "zero"):
        res = A.trades_kl_attack(trained, x, A.TradesKL(eps=EPS, step_size=0.03, steps=5, start=start), generator=gen(), track_loss=True)
        assert res.loss_final > res.loss_start
        with torch.no_grad():
            assert res.loss_final.item() == pytest.approx(_kl_mean(trained(x), trained(res.x_adv)), rel=1e-4)


def test_odi_increases_the_random_linear_output(trained, batch):
    x, _ = batch
    w = 2 * torch.rand((x.shape[0], NUM_CLASSES), generator=gen(8)) - 1
    x_odi = A.odi_init(trained, x, A.ODI(eps=EPS, step_size=0.03, steps=2, random_start=False), w=w)
    with torch.no_grad():
        assert (trained(x_odi) * w).sum() > (trained(x) * w).sum()


def test_gradalign_is_zero_for_a_linear_model_positive_for_relu_and_differentiable(trained, batch):
    x, y = batch
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    reg_lin = A.gradalign_regularizer(linear, x, y % 2, eps=0.3, generator=gen())
    assert abs(reg_lin.item()) < 1e-5
    relu = tiny_cnn()
    relu.load_state_dict(trained.state_dict())
    reg = A.gradalign_regularizer(relu, x, y, eps=0.3, generator=gen())
    assert reg.item() > 1e-3
    assert all(p.grad is None for p in relu.parameters())
    reg.backward()
    grads = [p.grad for p in relu.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_gradalign_reuses_a_given_clean_gradient(trained, batch):
    x, y = batch
    xg = x.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(F.cross_entropy(trained(xg), y, reduction="sum"), xg)
    a = A.gradalign_regularizer(trained, x, y, eps=0.1, grad_clean=g1, generator=gen())
    b = A.gradalign_regularizer(trained, x, y, eps=0.1, generator=gen())
    assert torch.allclose(a, b)


def test_lambda_gradalign_log_linear_rule():
    assert A.lambda_gradalign(8 / 255) == pytest.approx(0.2)
    assert A.lambda_gradalign(16 / 255) == pytest.approx(2.0)
    assert A.lambda_gradalign(6 / 255) == pytest.approx(0.112, abs=1e-3)


def test_plugin_estimator_with_one_noise_is_ce_gradient_at_the_noisy_point(trained, batch):
    x, y = batch
    noise = A.draw_noise(x, sigma=0.25, num_noise=1, generator=gen())
    xa = x.clone().requires_grad_(True)
    (g_plugin,) = torch.autograd.grad(A.smoothed_nll(trained, xa, y, noise).sum(), xa)
    xb = (x + noise[:, 0]).requires_grad_(True)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(trained(xb), y, reduction="sum"), xb)
    assert torch.allclose(g_plugin, g_ce, atol=1e-6)
    # and one SmoothAdv step is one normalised CE step at the noisy point, then project + clamp
    res = A.smoothadv_pgd(trained, x, y, A.SmoothAdvPGD(eps=0.3, steps=1, sigma=0.25, num_noise=1, step_size=0.2), noise=noise)
    step = g_ce / g_ce.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(res.x_adv, (x + 0.2 * step).clamp(0, 1), atol=1e-6)
    assert res.noise is not None and torch.equal(res.noise, noise)


def test_smoothadv_pgd_raises_the_smoothed_loss_and_reuses_noise(trained, batch):
    x, y = batch
    res = A.smoothadv_pgd(trained, x, y, A.SmoothAdvPGD(eps=1.0, steps=5, sigma=0.25, num_noise=4), generator=gen())
    assert res.noise.shape == (x.shape[0], 4, *SHAPE)
    with torch.no_grad():
        nll = lambda z: A.smoothed_nll(trained, z, y, res.noise).mean()  # noqa: E731
        assert nll(res.x_adv) > nll(x)
    again = A.smoothadv_pgd(trained, x, y, A.SmoothAdvPGD(eps=1.0, steps=5, sigma=0.25, num_noise=4), noise=res.noise)
    assert torch.equal(again.x_adv, res.x_adv)


def test_smoothadv_ddn_finds_adversarial_points_within_eps(trained, batch):
    x, y = batch
    res = A.smoothadv_ddn(trained, x, y, A.SmoothAdvDDN(eps=2.0, steps=20, sigma=0.1, num_noise=2), generator=gen())
    delta = (res.x_adv - x).flatten(1).norm(dim=1)
    assert (delta <= 2.0 + 1e-6).all() and (delta > 0).any()
    with torch.no_grad():
        nll = lambda z: A.smoothed_nll(trained, z, y, res.noise).mean()  # noqa: E731
        assert nll(res.x_adv) > nll(x)


def test_stein_estimator_correlates_with_the_smoothed_loss_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x = torch.rand((6, *SHAPE), generator=gen(1)) * 0.5 + 0.25
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    sigma = 0.5
    many = A.draw_noise(x, sigma=sigma, num_noise=20000, generator=gen(2))
    xa = x.clone().requires_grad_(True)
    (true_grad,) = torch.autograd.grad(A.smoothed_nll(model, xa, y, many).sum(), xa)
    est = A.stein_gradient(model, x, y, sigma=sigma, num_noise=4000, generator=gen(3))
    cos = F.cosine_similarity(est.flatten(1), true_grad.flatten(1), dim=1)
    assert (cos > 0.5).all(), cos
    # magnitude is right too (unbiased-ish, not just the direction)
    ratio = est.flatten(1).norm(dim=1) / true_grad.flatten(1).norm(dim=1)
    assert ((ratio > 0.7) & (ratio < 1.5)).all(), ratio


def test_smoothmix_one_step_init_is_the_first_iterate(trained, batch):
    x, y = batch
    noise = A.draw_noise(x, sigma=0.25, num_noise=2, generator=gen())
    one = A.smoothmix_attack(trained, x, y, A.SmoothMix(step_size=0.3, steps=1, sigma=0.25, num_noise=2), noise=noise)
    res = A.smoothmix_attack(trained, x, y, A.SmoothMix(step_size=0.3, steps=3, sigma=0.25, num_noise=2, mix_step=1), noise=noise)
    assert torch.equal(one.x_init, x)  # mix_step = 0: x_init is the clean input
    assert torch.allclose(res.x_init, one.x_adv)
    with torch.no_grad():
        nll = lambda z: A.smoothed_nll(trained, z, y, noise).mean()  # noqa: E731
        assert nll(res.x_adv) > nll(res.x_init) > nll(x)


BAD_ARGS = [
    ("eps", lambda m, x, y: A.pgd(m, x, y, A.PGD(eps=0.0, step_size=0.1, steps=1))),
    ("eps", lambda m, x, y: A.fgsm(m, x, y, A.FGSM(eps=-1.0))),
    ("steps", lambda m, x, y: A.pgd(m, x, y, A.PGD(eps=0.1, step_size=0.1, steps=0))),
    ("norm", lambda m, x, y: A.pgd(m, x, y, A.PGD(eps=0.1, step_size=0.1, steps=1, norm="l1"))),
    ("step_size", lambda m, x, y: A.pgd(m, x, y, A.PGD(eps=0.1, step_size=0.0, steps=1))),
    ("y", lambda m, x, y: A.pgd(m, x, y[:3], A.PGD(eps=0.1, step_size=0.1, steps=1))),
    ("x", lambda m, x, y: A.pgd(m, x * 3, y, A.PGD(eps=0.1, step_size=0.1, steps=1))),
    ("x_start", lambda m, x, y: A.pgd_attack(m, x, y, A.PGD(eps=0.1, step_size=0.1, steps=1), x_start=x[:2])),
    ("start", lambda m, x, y: A.trades_kl_attack(m, x, A.TradesKL(eps=0.1, step_size=0.1, steps=1, start="ones"))),
    ("logits_clean", lambda m, x, y: A.trades_kl_attack(m, x, A.TradesKL(eps=0.1, step_size=0.1, steps=1), logits_clean=torch.zeros(3, 4))),
    ("steps", lambda m, x, y: A.trades_kl_attack(m, x, A.TradesKL(eps=0.1, step_size=0.1, steps=0))),
    ("gamma", lambda m, x, y: A.backward_smoothing_init(m, x, A.BackwardSmoothing(eps=0.1, step_size=0.1, gamma=-1.0))),
    ("num_points", lambda m, x, y: A.backward_smoothing_init(m, x, A.BackwardSmoothing(eps=0.1, step_size=0.1, num_points=0))),
    ("psi", lambda m, x, y: A.backward_smoothing_init(m, x, A.BackwardSmoothing(eps=0.1, step_size=0.1), psi=torch.zeros(3, 4))),
    ("psi", lambda m, x, y: A.backward_smoothing_init(m, x, A.BackwardSmoothing(eps=0.1, step_size=0.1), psi=torch.zeros(len(x), 5))),
    ("steps", lambda m, x, y: A.backward_smoothing_attack(m, x, A.BackwardSmoothing(eps=0.1, step_size=0.1, steps=0))),
    ("target", lambda m, x, y: A.backward_smoothing_pgd_init(m, x, y, A.BackwardSmoothingPGD(eps=0.1, step_size=0.1, target="x"))),
    ("w", lambda m, x, y: A.odi_init(m, x, A.ODI(eps=0.1), w=torch.zeros(2, 4))),
    ("generator", lambda m, x, y: A.odi_init(m, x, A.ODI(eps=0.1), generator=0)),
    ("eps", lambda m, x, y: A.gradalign_regularizer(m, x, y, eps=0.0)),
    ("eps", lambda m, x, y: A.lambda_gradalign(0.0)),
    ("sigma", lambda m, x, y: A.smoothadv_pgd(m, x, y, A.SmoothAdvPGD(eps=0.5, steps=2, sigma=-0.1, num_noise=2))),
    ("num_noise", lambda m, x, y: A.smoothadv_pgd(m, x, y, A.SmoothAdvPGD(eps=0.5, steps=2, sigma=0.1, num_noise=0))),
    ("noise", lambda m, x, y: A.smoothadv_pgd(m, x, y, A.SmoothAdvPGD(eps=0.5, steps=2, sigma=0.1, num_noise=3), noise=torch.zeros(len(x), 2, *SHAPE))),
    ("estimator", lambda m, x, y: A.smoothadv_pgd(m, x, y, A.SmoothAdvPGD(eps=0.5, steps=2, sigma=0.1, num_noise=2, estimator="spsa"))),
    ("eps", lambda m, x, y: A.smoothadv_ddn(m, x, y, A.SmoothAdvDDN(eps=0.0, steps=2, sigma=0.1, num_noise=2))),
    ("gamma", lambda m, x, y: A.smoothadv_ddn(m, x, y, A.SmoothAdvDDN(eps=0.5, steps=2, sigma=0.1, num_noise=2, gamma=1.5))),
    ("sigma", lambda m, x, y: A.stein_gradient(m, x, y, sigma=0.0, num_noise=2)),
    ("step_size", lambda m, x, y: A.smoothmix_attack(m, x, y, A.SmoothMix(step_size=0.0, steps=2, sigma=0.1, num_noise=2))),
    ("maxnorm", lambda m, x, y: A.smoothmix_attack(m, x, y, A.SmoothMix(step_size=0.1, steps=2, sigma=0.1, num_noise=2, maxnorm=0.0))),
    ("levels", lambda m, x, y: A.smoothadv_ddn(m, x, y, A.SmoothAdvDDN(eps=0.5, steps=2, sigma=0.1, num_noise=2, levels=1))),
    ("mix_step", lambda m, x, y: A.smoothmix_attack(m, x, y, A.SmoothMix(step_size=0.1, steps=2, sigma=0.1, num_noise=2, mix_step=-1))),
    ("query_limit", lambda m, x, y: A.rays(m, x, y, query_limit=0)),
    ("tol", lambda m, x, y: A.rays(m, x, y, tol=-1e-3)),
]


@pytest.mark.parametrize("arg,call", BAD_ARGS, ids=[f"{a}-{i}" for i, (a, _) in enumerate(BAD_ARGS)])
def test_bad_arguments_raise_value_error_naming_the_argument(arg, call, trained, batch):
    x, y = batch
    with pytest.raises(ValueError, match=arg):
        call(trained, x, y)


# ------------------------------------------------------------------------------------------ RayS

def test_rays_finds_the_exact_linf_boundary_distance_of_a_linear_classifier():
    # f(x) = 1 iff w·x + b > 0. Away from the box's faces the l-inf distance to the boundary is
    # |w·x + b| / ‖w‖₁, reached along -sign(margin)·sign(w): a sign vector, so RayS's block search can
    # find it exactly; no misclassified point can be closer.
    from helpers import linear_classifier
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=g)
    x = 0.5 + 0.05 * torch.rand((12, 1, 4, 4), generator=g)
    b = -(x.flatten(1) @ w).mean()
    model = linear_classifier(w, float(b)).eval()
    margin = x.flatten(1) @ w + b
    y = (margin > 0).long()
    true = margin.abs() / w.abs().sum()
    assert float(true.max()) < 0.4                                  # the box never binds
    res = A.rays(model, x, y, query_limit=3000)
    assert res.found.all() and (model(res.x_adv).argmax(1) != y).all()
    torch.testing.assert_close(res.distance, (res.x_adv - x).flatten(1).abs().amax(1))
    assert (res.distance >= true - 1e-6).all()                      # never closer than the boundary
    assert (res.distance <= true + 1e-3).all()                      # and finds it (tol 1e-3 in l2 / 4)
    assert (res.queries <= 3000 + 20).all() and res.x_adv.min() >= 0 and res.x_adv.max() <= 1


def test_rays_early_stops_below_eps_and_counts_queries(trained, batch):
    x, y = batch
    full = A.rays(trained, x, y, query_limit=400)
    stopped = A.rays(trained, x, y, query_limit=400, eps=0.5)
    assert (full.distance[full.found] <= 1.0).all()
    # an example already within 0.5 stops early and spends fewer queries; the others search on
    near = stopped.distance <= 0.5
    assert near.any() and (stopped.queries[near] < full.queries[near]).all()
    assert (trained(stopped.x_adv[stopped.found]).argmax(1) != y[stopped.found]).all()
