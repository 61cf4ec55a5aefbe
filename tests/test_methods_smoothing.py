"""Tests of the smoothing chapters' training objectives (rs_lib.methods.smoothing), the empirical
robust accuracy of a smoothed classifier (rs_lib.smoothing.empirical_accuracy) and the `certify`
command: stated pass counts, BatchNorm modes, noise reuse, warm-ups, SmoothMix's targets and mask,
and end-to-end runs on synthetic data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import linear_classifier
from rs_lib import attacks, methods
from rs_lib.__main__ import main
from rs_lib.methods import StepContext
from rs_lib.methods import smoothing as sm
from rs_lib import smoothing
from rs_lib.smoothing import Smooth, example_generator, read_certify_tsv
from rs_lib.train import TrainConfig, run_training

B, C = 6, 4
SHAPE = (1, 8, 8)


class Tiny(nn.Module):
    """conv-BN-ReLU-linear: BatchNorm makes train/eval mode observable."""

    def __init__(self, classes: int = C) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 8 * 8, classes)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


class Constant(nn.Module):
    """Logits that favour class ``cls`` by a wide margin whatever the input (a parameter keeps a device)."""

    def __init__(self, cls: int, classes: int = C) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(classes))
        with torch.no_grad():
            self.bias[cls] = 10.0

    def forward(self, x):
        return self.bias + 0.0 * x.flatten(1).sum(1, keepdim=True)


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((B, *SHAPE), generator=g)
    y = torch.arange(B) % C
    return x, y


def ctx(epoch: int = 50, warmup: float = 1.0, seed: int = 0) -> StepContext:
    return StepContext(epoch=epoch, iteration=0, progress=float(epoch), generator=torch.Generator().manual_seed(seed),
                       num_classes=C, warmup=warmup)


class Spy:
    """Counts forwards and backwards through ``model`` in batch-equivalents and records, per forward,
    the mode and the input."""

    def __init__(self, model: nn.Module, batch_size: int) -> None:
        self.forward = {True: 0.0, False: 0.0}  # keyed by model.training
        self.backward = 0.0
        self.inputs: list[tuple[bool, torch.Tensor]] = []

        def on_forward(module, args, out):
            self.forward[module.training] += out.shape[0] / batch_size
            self.inputs.append((module.training, args[0].detach().clone()))

        def on_backward(module, grad_output):
            self.backward += grad_output[0].shape[0] / batch_size

        model.register_forward_hook(on_forward)
        model.register_full_backward_pre_hook(on_backward)

    def train_inputs(self) -> list[torch.Tensor]:
        return [t for training, t in self.inputs if training]


# Every method of the module, with small settings (and the variants whose cost differs).
CASES = [
    ("stability", {}),
    ("smoothadv_pgd", {"steps": 3, "num_noise": 3}),
    ("smoothadv_pgd", {"steps": 2, "num_noise": 2, "estimator": "stein"}),
    ("smoothadv_ddn", {"steps": 3, "num_noise": 2}),
    ("vanilla_pgd", {"steps": 3}),
    ("vanilla_pgd_noise", {"steps": 2}),
    ("macer", {"num_noise": 5}),
    ("consistency", {"num_noise": 3}),
    ("smoothmix", {"steps": 3, "num_noise": 2}),
    ("smoothmix", {"steps": 2, "num_noise": 3, "mix_step": 1}),
]


def _attack_forwards(name: str, cfg) -> float:
    if name.startswith("smoothadv") or name == "smoothmix":
        return cfg.num_noise * cfg.steps
    if name.startswith("vanilla"):
        return cfg.steps
    return 0


def test_cases_cover_every_method_of_the_module():
    mine = {n for n, m in methods.METHODS.items() if m.objective.__module__ == sm.__name__}
    assert mine == {name for name, _ in CASES}
    assert mine == {"stability", "smoothadv_pgd", "smoothadv_ddn", "vanilla_pgd", "vanilla_pgd_noise",
                    "macer", "consistency", "smoothmix"}


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_measured_passes_equal_stated_and_attacks_run_in_eval_mode(name, params):
    method = methods.get_method(name)
    cfg = methods.method_config(name, params)
    model = Tiny().train()
    spy = Spy(model, B)
    x, y = batch()
    out = method.objective(model, x, y, cfg, ctx())
    assert model.training, "the objective must leave the model in train mode"
    assert out.loss.dim() == 0 and torch.isfinite(out.loss) and out.loss.requires_grad
    out.loss.backward()
    stated = method.passes(cfg)
    assert spy.forward[True] + spy.forward[False] == pytest.approx(stated.forward)
    assert spy.backward == pytest.approx(stated.backward)
    # Attack forwards (and only they) run in eval mode; every training forward in train mode.
    assert spy.forward[False] == pytest.approx(_attack_forwards(name, cfg))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(isinstance(float(v), float) for v in out.stats.values())


def test_methods_draw_all_randomness_from_the_context_generator():
    x, y = batch()
    for name, params in CASES:
        cfg = methods.method_config(name, params)
        torch.manual_seed(0)
        first = Tiny().train()
        second = Tiny().train()
        second.load_state_dict(first.state_dict())
        torch.manual_seed(1)  # a different global RNG state for each call
        a = methods.get_method(name).objective(first, x, y, cfg, ctx(seed=7)).loss
        torch.manual_seed(2)
        b = methods.get_method(name).objective(second, x, y, cfg, ctx(seed=7)).loss
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------------------------
# SmoothAdv and the vanilla baselines
# --------------------------------------------------------------------------------------------


def _record(monkeypatch, fn_name: str) -> list[dict]:
    calls: list[dict] = []
    original = getattr(attacks, fn_name)

    def wrapped(model, x, y, attack, **kw):  # kw: the attack's config fields and the call's keywords
        result = original(model, x, y, attack, **kw)
        calls.append({"x": x, "kw": {**dataclasses.asdict(attack), **kw}, "result": result,
                      "training": model.training})
        return result

    monkeypatch.setattr(attacks, fn_name, wrapped)
    return calls


@pytest.mark.parametrize("name,fn", [("smoothadv_pgd", "smoothadv_pgd"), ("smoothadv_ddn", "smoothadv_ddn")])
@pytest.mark.parametrize("epoch,loop_warmup,factor", [(0, 1.0, 0.1), (4, 1.0, 0.5), (9, 1.0, 1.0), (30, 0.5, 0.5)])
def test_smoothadv_perturbation_within_warmed_up_eps_and_box_and_noise_reused(monkeypatch, name, fn, epoch,
                                                                             loop_warmup, factor):
    calls = _record(monkeypatch, fn)
    cfg = methods.method_config(name, {"eps": 0.8, "steps": 4, "num_noise": 3, "sigma": 0.3})
    model = Tiny().train()
    spy = Spy(model, B)
    x, y = batch(1)
    out = methods.get_method(name).objective(model, x, y, cfg, ctx(epoch=epoch, warmup=loop_warmup))
    (call,) = calls
    assert call["training"] is False
    eps = call["kw"]["eps"]
    assert eps == pytest.approx(0.8 * factor) and out.stats["eps"] == pytest.approx(0.8 * factor)
    x_adv, noise = call["result"]
    assert ((x_adv - x).flatten(1).norm(dim=1) <= eps * (1 + 1e-5)).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # The attack's noise (sigma-scaled, drawn by the objective) is the augmentation noise of all m copies.
    assert torch.equal(call["kw"]["noise"], noise) and noise.shape == (B, 3, *SHAPE)
    assert 0.2 < float(noise.std()) < 0.4
    (train_input,) = spy.train_inputs()
    assert torch.equal(train_input, (x_adv.unsqueeze(1) + noise).flatten(0, 1))


def test_smoothadv_trains_on_all_copies_with_true_labels():
    cfg = methods.method_config("smoothadv_pgd", {"steps": 1, "num_noise": 2})
    model = Tiny().train()
    x, y = batch()
    out = sm.smoothadv_pgd(model, x, y, cfg, ctx())
    assert float(out.stats["ce"]) == pytest.approx(float(out.loss.detach()))
    assert 0 <= float(out.stats["acc"]) <= 1


@pytest.mark.parametrize("name", ["vanilla_pgd", "vanilla_pgd_noise"])
def test_vanilla_pgd_attacks_the_base_classifier_then_adds_noise_or_not(monkeypatch, name):
    calls = _record(monkeypatch, "smoothadv_pgd")
    cfg = methods.method_config(name, {"eps": 0.5, "steps": 2})
    model = Tiny().train()
    spy = Spy(model, B)
    x, y = batch(2)
    methods.get_method(name).objective(model, x, y, cfg, ctx())
    (call,) = calls
    assert call["training"] is False
    assert call["kw"]["num_noise"] == 1 and torch.count_nonzero(call["kw"]["noise"]) == 0  # no noise in the attack
    x_adv = call["result"].x_adv
    assert ((x_adv - x).flatten(1).norm(dim=1) <= 0.5 * (1 + 1e-5)).all() and not torch.equal(x_adv, x)
    (train_input,) = spy.train_inputs()
    if name == "vanilla_pgd":
        assert torch.equal(train_input, x_adv)
    else:
        assert 0.15 < float((train_input - x_adv).std()) < 0.35  # sigma = 0.25 added after the attack


# --------------------------------------------------------------------------------------------
# SmoothMix
# --------------------------------------------------------------------------------------------


def _terms(model=None, lam=None, y=None):
    model = model or Tiny().train()
    x, y0 = batch(3)
    y = y0 if y is None else y
    g = torch.Generator().manual_seed(4)
    x_adv = torch.rand(x.shape, generator=g)
    noise = 0.25 * torch.randn((B, 3, *SHAPE), generator=g)
    lam = torch.rand(B, generator=g) / 2 if lam is None else lam
    return sm.smoothmix_terms(model, x, x_adv, y, noise, lam), x, y


def test_smoothmix_targets_are_the_stated_distributions():
    terms, _, _ = _terms()
    t, f_hat, lam = terms.targets, terms.f_hat, terms.lam
    assert (t >= 0).all()
    assert torch.allclose(t.sum(1), torch.ones(B), atol=1e-6)
    assert torch.allclose(t, (1 - lam[:, None]) * f_hat + lam[:, None] / C, atol=0, rtol=0)
    # F̂ is the mean softmax of the clean-side copies.
    assert torch.allclose(f_hat, F.softmax(terms.logits_clean, 1).view(B, 3, C).mean(1))
    assert torch.equal(sm.mixup_targets(f_hat, torch.zeros(B)), f_hat)
    assert torch.allclose(sm.mixup_targets(f_hat, torch.ones(B)), torch.full((B, C), 1 / C))


def test_smoothmix_soft_target_is_not_detached():
    terms, _, _ = _terms(model=Constant(1).train(), y=torch.ones(B, dtype=torch.long))
    assert terms.f_hat.requires_grad and terms.targets.requires_grad
    (grad,) = torch.autograd.grad(terms.loss_mix, terms.logits_clean)
    assert grad.abs().sum() > 0  # the mixup loss reaches the clean forward through y_mix


def test_smoothmix_mask_selects_correctly_classified_examples():
    y = torch.tensor([2, 0, 2, 1, 2, 3])
    terms, _, _ = _terms(model=Constant(2).train(), y=y)
    assert terms.mask.tolist() == (y == 2).tolist()
    per_copy = terms.mix.view(B, 3)
    assert float(terms.loss_mix.detach()) == pytest.approx(float(per_copy[y == 2].sum().detach() / (B * 3)))
    none, _, _ = _terms(model=Constant(2).train(), y=torch.zeros(B, dtype=torch.long))
    assert float(none.loss_mix.detach()) == 0.0


def test_smoothmix_lambda_uniform_on_half_interval_and_warmup(monkeypatch):
    seen = []
    original = sm.smoothmix_terms

    def spy_terms(model, x_init, x_adv, y, noise, lam):
        seen.append({"x_init": x_init, "lam": lam, "noise": noise, "x_adv": x_adv})
        return original(model, x_init, x_adv, y, noise, lam)

    monkeypatch.setattr(sm, "smoothmix_terms", spy_terms)
    calls = _record(monkeypatch, "smoothmix_attack")
    cfg = methods.method_config("smoothmix", {"steps": 2, "num_noise": 2, "mix_step": 1, "step_size": 0.5,
                                              "eta": 3.0})
    x, y = torch.rand((64, *SHAPE)), torch.arange(64) % C
    out = sm.smoothmix(Tiny().train(), x, y, cfg, ctx(epoch=0))
    lam = seen[0]["lam"]
    assert lam.min() >= 0 and lam.max() <= 0.5 and lam.std() > 0.05
    # Warm-up (10 epochs): factor 0.1 on eta and on the one-step radius alpha * mix_step.
    assert out.stats["warmup_factor"] == pytest.approx(0.1)
    assert calls[0]["kw"]["maxnorm_s"] == pytest.approx(0.05)
    assert ((seen[0]["x_init"] - x).flatten(1).norm(dim=1) <= 0.05 + 1e-6).all()
    assert float(out.loss.detach()) == pytest.approx(float(out.stats["ce"] + 3.0 * 0.1 * out.stats["mix"]), rel=1e-5)
    # The attack's noise is the noise of both training forwards.
    assert torch.equal(calls[0]["kw"]["noise"], seen[0]["noise"]) and calls[0]["training"] is False
    seen.clear()
    calls.clear()
    sm.smoothmix(Tiny().train(), x, y, cfg, ctx(epoch=20))
    assert calls[0]["kw"]["maxnorm_s"] == pytest.approx(0.5)
    step = (seen[0]["x_init"] - x).flatten(1).norm(dim=1)
    assert (step <= 0.5 + 1e-6).all() and step.max() > 0.4


def test_smoothmix_clean_side_is_x_without_one_step_adversary(monkeypatch):
    seen = []
    original = sm.smoothmix_terms
    monkeypatch.setattr(sm, "smoothmix_terms", lambda m, xi, xa, y, n, lam: seen.append(xi) or
                        original(m, xi, xa, y, n, lam))
    cfg = methods.method_config("smoothmix", {"steps": 2, "num_noise": 1})
    x, y = batch()
    sm.smoothmix(Tiny().train(), x, y, cfg, ctx())
    assert torch.equal(seen[0], x)


# --------------------------------------------------------------------------------------------
# MACER, stability, consistency: numerics
# --------------------------------------------------------------------------------------------


class Scaled(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.inner, self.scale = Tiny(), scale

    def forward(self, x):
        return self.scale * self.inner(x)


def test_macer_is_finite_when_softmax_saturates():
    # beta * huge logits saturate G to one-hot: Φ⁻¹(1) = inf must be filtered, not back-propagated.
    model = Scaled(1e3).train()
    x, y = batch()
    cfg = methods.method_config("macer", {"num_noise": 4})
    out = sm.macer(model, x, y, cfg, ctx())
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_macer_without_robustness_term_is_smoothed_nll():
    model = Tiny().train()
    x, y = batch()
    cfg = methods.method_config("macer", {"num_noise": 3, "lbd": 0.0})
    out = sm.macer(model, x, y, cfg, ctx(seed=3))
    noise = attacks.draw_noise(x, sigma=cfg.sigma, num_noise=3, generator=torch.Generator().manual_seed(3))
    model2 = Tiny()
    model2.load_state_dict(model.state_dict())  # BN running stats moved, weights not
    f_hat = F.softmax(model2.train()((x.unsqueeze(1) + noise).flatten(0, 1)), 1).view(B, 3, C).mean(1)
    assert float(out.loss.detach()) == pytest.approx(float(F.nll_loss((f_hat + 1e-10).log(), y).detach()), rel=1e-5)


def test_macer_loss_and_gradient_equal_the_reference_formula():
    # Zhai et al.'s macer.py, written out with torch.distributions.Normal.icdf as it does: NLL of the
    # mean softmax + lbd * sigma/2 * sum over correct examples with |gap| <= gamma of (gamma - gap), / B.
    # Labels: the smoothed top class for all but the last example; gamma: the median gap of those, so
    # that the hinge keeps some examples and drops others.
    model, (x, _) = Tiny().eval(), batch()     # eval: BN statistics do not move between forwards
    sigma, m, beta, lbd = 0.5, 4, 2.0, 3.0
    noise = attacks.draw_noise(x, sigma=sigma, num_noise=m, generator=torch.Generator().manual_seed(7))
    logits = model((x.unsqueeze(1) + noise).flatten(0, 1)).view(B, m, C)
    top2 = torch.topk(F.softmax(beta * logits, 2).mean(1), 2)
    y = top2[1][:, 0].clone()
    y[-1] = (y[-1] + 1) % C
    normal = torch.distributions.Normal(0.0, 1.0)
    gaps = (normal.icdf(top2[0][:, 0]) - normal.icdf(top2[0][:, 1])).detach()[:-1]
    gamma = float(gaps.median())
    cfg = methods.method_config("macer", {"num_noise": m, "beta": beta, "gamma": gamma, "lbd": lbd, "sigma": sigma})
    out = sm.macer(model, x, y, cfg, ctx(seed=7))
    ours = torch.autograd.grad(out.loss, list(model.parameters()))

    classification = F.nll_loss((F.softmax(logits, 2).mean(1) + 1e-10).log(), y, reduction="sum")
    correct = top2[1][:, 0] == y
    out0, out1 = top2[0][correct, 0], top2[0][correct, 1]
    gap = normal.icdf(out1) - normal.icdf(out0)
    keep = ~torch.isnan(gap) & ~torch.isinf(gap) & (gap.abs() <= gamma)
    assert 0 < int(keep.sum()) < int(correct.sum()) == B - 1
    robustness = (normal.icdf(out1[keep]) - normal.icdf(out0[keep]) + gamma).sum() * sigma / 2
    expected = (classification + lbd * robustness) / B
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    for g, r in zip(ours, torch.autograd.grad(expected, list(model.parameters()))):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_macer_deferred_epochs_switch_off_the_robustness_term():
    cfg = methods.method_config("macer", {"num_noise": 3, "deferred_epochs": 5})
    x, y = batch()
    out = sm.macer(Tiny().train(), x, y, cfg, ctx(epoch=2))
    assert float(out.loss.detach()) == pytest.approx(float(out.stats["ce"]), rel=1e-6)


def test_consistency_terms_are_non_negative_and_vanish_for_identical_copies():
    cfg = methods.method_config("consistency", {"num_noise": 2, "lbd": 10.0, "eta": 0.5})
    x, y = batch()
    out = sm.consistency(Constant(0).train(), x, y, cfg, ctx())
    assert float(out.stats["kl"]) == pytest.approx(0.0, abs=1e-6)  # every copy predicts the same
    out = sm.consistency(Tiny().train(), x, y, cfg, ctx())
    assert float(out.stats["kl"]) >= 0 and float(out.stats["entropy"]) >= 0


def test_configs_validate_their_arguments():
    bad = [("smoothadv_pgd", {"eps": 0}, "eps"), ("smoothadv_pgd", {"num_noise": 0}, "num_noise"),
           ("smoothadv_ddn", {"estimator": "x"}, "estimator"), ("smoothmix", {"mix_step": 9, "steps": 8}, "mix_step"),
           ("smoothmix", {"sigma": -1}, "sigma"), ("macer", {"gamma": 0}, "gamma"), ("consistency", {"lbd": -1}, "lbd"),
           ("stability", {"sigma": 0}, "sigma"), ("vanilla_pgd_noise", {"sigma": 0}, "sigma"),
           ("vanilla_pgd", {"steps": 0}, "steps"), ("smoothmix", {"maxnorm_s": -1.0}, "maxnorm_s")]
    for name, params, key in bad:
        with pytest.raises(ValueError, match=key):
            methods.method_config(name, params)


# --------------------------------------------------------------------------------------------
# Empirical robust accuracy of the smoothed classifier
# --------------------------------------------------------------------------------------------


def empirical_accuracy(model, data, *, sigma, eps, attack="pgd", steps=20, num_noise=32, n=1000, alpha=0.001,
                       batch_size=1000, estimator="plugin", generator=None):
    """``smoothing.empirical_accuracy`` with the attack and PREDICT settings as loose keywords."""
    return smoothing.empirical_accuracy(
        model, data, sigma=sigma,
        attack=smoothing.SmoothedAttack(eps=eps, attack=attack, steps=steps, num_noise=num_noise, estimator=estimator),
        predict=smoothing.PredictSettings(n=n, alpha=alpha, batch_size=batch_size), generator=generator)


@pytest.mark.parametrize("attack", ["pgd", "ddn", "base_pgd"])
def test_empirical_accuracy_of_a_constant_classifier_is_its_label_rate(attack):
    x, y = torch.rand((10, *SHAPE)), torch.tensor([2, 0, 2, 1, 2, 3, 2, 2, 0, 1])
    model = Constant(2).train()
    result = empirical_accuracy(model, (x, y), sigma=0.25, eps=0.5, attack=attack, steps=3, num_noise=4, n=100,
                                alpha=0.001, batch_size=64, generator=torch.Generator().manual_seed(0))
    assert result.predictions.tolist() == [2] * 10
    assert result.correct.tolist() == (y == 2).tolist()
    assert result.accuracy == pytest.approx(0.5) and result.abstain_rate == 0.0
    assert model.training  # mode restored


def test_empirical_accuracy_without_attack_equals_predict_on_clean_inputs():
    torch.manual_seed(0)
    w = torch.randn(64) / 8
    model = linear_classifier(w, 0.0)
    x = torch.rand((12, *SHAPE))
    y = (model(x).argmax(1) + (torch.arange(12) % 3 == 0).long()) % 2  # some labels wrong on purpose
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(9)))
    smooth = Smooth(model, 2, 0.25)
    expected = smooth.predict_batch(x, 200, 0.01, 50, generators=[example_generator(seed, i) for i in range(12)])
    for eps in (0.0, 1e-7):
        result = empirical_accuracy(model, (x, y), sigma=0.25, eps=eps, steps=2, num_noise=4, n=200, alpha=0.01,
                                    batch_size=50, generator=torch.Generator().manual_seed(9))
        assert result.predictions.tolist() == expected
        assert result.accuracy == pytest.approx(float(np.mean(np.array(expected) == y.numpy())))
    as_batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    result = empirical_accuracy(model, as_batches, sigma=0.25, eps=0.0, n=200, alpha=0.01, batch_size=50,
                                generator=torch.Generator().manual_seed(9))
    assert result.predictions.tolist() == expected


def test_empirical_accuracy_drops_when_the_attack_crosses_the_boundary():
    # Points at l2 distance 0.3 on the class-1 side of a hyperplane; sigma 0.1 keeps g confident.
    u = torch.zeros(64)
    u[:8] = 8 ** -0.5  # unit normal
    model = linear_classifier(u, -1.0)
    x = torch.full((6, *SHAPE), 0.5)
    x.view(6, -1)[:, :8] = 1.3 / 8 ** 0.5  # u·x − 1 = 0.3
    y = torch.ones(6, dtype=torch.long)
    clean = empirical_accuracy(model, (x, y), sigma=0.1, eps=0.0, n=200, alpha=0.001, batch_size=64)
    attacked = empirical_accuracy(model, (x, y), sigma=0.1, eps=0.8, steps=10, num_noise=8, n=200, alpha=0.001,
                                  batch_size=64, generator=torch.Generator().manual_seed(1))
    assert clean.accuracy == 1.0 and attacked.accuracy == 0.0


def test_empirical_accuracy_rejects_bad_arguments():
    x, y = torch.rand((2, *SHAPE)), torch.zeros(2, dtype=torch.long)
    model = Constant(0)
    for kw, name in [({"sigma": 0.0}, "sigma"), ({"eps": -1.0}, "eps"), ({"attack": "fgsm"}, "attack"),
                     ({"n": 0}, "n"), ({"alpha": 1.0}, "alpha"), ({"num_noise": 0}, "num_noise"),
                     ({"attack": "ddn", "eps": 0.005}, "eps")]:
        args = {"sigma": 0.25, "eps": 0.5, **kw}
        with pytest.raises(ValueError, match=name):
            empirical_accuracy(model, (x, y), **args)
    with pytest.raises(ValueError, match="data"):
        empirical_accuracy(model, x, sigma=0.25, eps=0.5)


# --------------------------------------------------------------------------------------------
# The certify command and end-to-end training
# --------------------------------------------------------------------------------------------

TINY_RUN = dict(dataset="synthetic", model="lenet", epochs=1, batch_size=64, n_train=128, n_val=32, lr=0.05,
                schedule="constant", augment=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    cfg = TrainConfig(method="gaussian", method_params={"sigma": 0.3}, **TINY_RUN)
    return run_training(cfg, root=root, device="cpu", progress=False)


def _certify_args(run, out, *extra):
    return ["certify", "--run", str(run.dir.path), "--n0", "10", "--n", "60", "--alpha", "0.01", "--batch", "32",
            "--stop", "5", "--device", "cpu", "--no-progress", "--out", str(out), *extra]


@pytest.mark.parametrize("flag,value,name", [("--n", "0", "--n"), ("--n0", "-1", "--n0"), ("--alpha", "1.5", "--alpha"),
                                             ("--alpha", "0", "--alpha"), ("--sigma", "0", "--sigma"),
                                             ("--sigma", "-0.5", "--sigma"), ("--batch", "0", "--batch"),
                                             ("--which", "middle", "--which")])
def test_certify_cli_rejects_bad_inputs_naming_the_argument(tiny_run, tmp_path, capsys, flag, value, name):
    out = tmp_path / "c.tsv"
    assert main(_certify_args(tiny_run, out, flag, value)) == 2
    err = capsys.readouterr().err
    assert name in err and "error" in err
    assert not out.exists()


def test_certify_cli_rejects_missing_checkpoint_or_run(tmp_path, capsys):
    out = tmp_path / "c.tsv"
    base = ["--n", "10", "--out", str(out), "--device", "cpu", "--sigma", "0.25"]
    assert main(["certify", "--checkpoint", str(tmp_path / "nope.pt"), *base]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert main(["certify", "--run", str(tmp_path / "norun"), *base]) == 2
    assert "--run" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["certify", "--run", str(tmp_path / "empty"), *base]) == 2
    assert "config.json" in capsys.readouterr().err
    assert not out.exists()


def test_certify_cli_end_to_end_resumes_and_accepts_a_checkpoint_path(tiny_run, tmp_path, capsys):
    out = tmp_path / "c.tsv"
    assert main(_certify_args(tiny_run, out)) == 0
    assert "certified 5 examples" in capsys.readouterr().out
    frame = read_certify_tsv(out)
    assert frame["idx"].tolist() == [0, 1, 2, 3, 4] and (frame["n"] == 60).all()
    assert json.loads((tmp_path / "c.tsv.meta.json").read_text())["sigma"] == 0.3  # the run's sigma
    assert main(_certify_args(tiny_run, out)) == 0  # resume: nothing left, same rows
    assert read_certify_tsv(out).drop(columns="time").equals(frame.drop(columns="time"))
    other = tmp_path / "d.tsv"
    args = ["certify", "--checkpoint", str(tiny_run.dir.file("checkpoint_best.pt")), "--n0", "10", "--n", "60",
            "--alpha", "0.01", "--batch", "16", "--stop", "5", "--device", "cpu", "--no-progress",
            "--out", str(other)]
    assert main(args) == 0
    assert read_certify_tsv(other).drop(columns="time").equals(frame.drop(columns="time"))


@pytest.mark.parametrize("method,params", [("smoothmix", {"steps": 2, "num_noise": 2, "mix_step": 1}),
                                           ("smoothadv_pgd", {"steps": 2, "num_noise": 2, "eps": 0.5})])
def test_run_training_end_to_end(tmp_path, method, params):
    cfg = TrainConfig(method=method, method_params=params, **TINY_RUN)
    run = run_training(cfg, root=tmp_path, device="cpu", progress=False)
    assert run.summary["finished"]
    stated = methods.get_method(method).passes(cfg.method_cfg)
    assert run.summary["passes_per_iteration"] == {"forward": stated.forward, "backward": stated.backward,
                                                   "double_backward": 0.0}
    rows = run.iterations()
    assert len(rows) == 2 and np.isfinite(rows["loss"]).all()
    if method == "smoothadv_pgd":
        assert np.allclose(rows["eps"], 0.05)  # epoch 0 of the 10-epoch warm-up
    else:
        assert np.allclose(rows["warmup_factor"], 0.1) and np.isfinite(rows["mix"]).all()
    model = run.load_model("best")
    assert not model.training
