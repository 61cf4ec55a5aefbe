"""Properties of the Backward Smoothing chapter's training objectives (rs_lib.methods.adversarial).

Tiny BN + dropout CNN on generated 8×8 data; every test runs in well under a second per method.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from rs_lib import methods
from rs_lib.methods import StepContext, adversarial, method_config
from rs_lib.train import TrainConfig, run_training

NUM_CLASSES, N = 4, 16
ADVERSARIAL = sorted(n for n, m in methods.METHODS.items() if m.objective.__module__ == adversarial.__name__)
PAPER_NAMES = {"pgd_at", "fast_at", "fast_at_zero", "fast_at_2step", "gradalign", "trades", "fast_trades",
               "fast_trades_2step", "backward_smoothing", "backward_smoothing_pgd", "bs_alone", "odi_pgd",
               "odi_trades"}
TRAIN_FORWARDS = {"gradalign": 3, "gradalign_bs": 3}  # training forwards at the end of each objective (train mode)
TRADES_TYPE = {"trades", "fast_trades", "fast_trades_2step", "backward_smoothing", "bs_alone", "odi_trades"}
INSTRUMENT_KEYS = {"inner_clean", "inner_start", "inner_final", "increment", "ce_clean", "ce_adv",
                   "ce_increment", "loss"}
VARIANTS = [(name, {}) for name in ADVERSARIAL] + [
    ("pgd_at", {"steps": 3, "random_start": False}), ("trades", {"steps": 2, "start": "uniform"}),
    ("backward_smoothing", {"steps": 2, "num_points": 3}), ("gradalign", {"random_start": False}),
    ("odi_trades", {"odi_steps": 2}), ("odi_pgd", {"odi_steps": 2, "steps": 2}),
    ("fast_at", {"attack_mode": "train"}), ("backward_smoothing", {"attack_mode": "train"}),
    ("backward_smoothing_pgd", {"target": "literal", "steps": 2})]


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Dropout(0.1), nn.Linear(4 * 64, NUM_CLASSES)).train()


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(N) % NUM_CLASSES
    protos = torch.rand((NUM_CLASSES, 1, 8, 8), generator=torch.Generator().manual_seed(99))
    x = (protos[y] + 0.2 * torch.randn((N, 1, 8, 8), generator=g)).clamp(0, 1)
    return x, y


def ctx(warmup: float = 1.0, seed: int = 0) -> StepContext:
    return StepContext(epoch=0, iteration=0, progress=0.0, generator=torch.Generator().manual_seed(seed),
                       num_classes=NUM_CLASSES, warmup=warmup)


class Spy:
    """Counts passes in batch-equivalents (forward hook; full backward pre-hook, which fires for
    input-gradient and weight backward passes alike) and records every forward's mode and input."""

    def __init__(self, model: nn.Module, n: int) -> None:
        self.n, self.forward, self.backward, self.calls = n, 0.0, 0.0, []
        model.register_forward_hook(self._on_forward)
        model.register_full_backward_pre_hook(self._on_backward)

    def _on_forward(self, module, inputs, output):
        self.forward += inputs[0].shape[0] / self.n
        self.calls.append((module.training, torch.is_grad_enabled(), inputs[0].detach().clone()))

    def _on_backward(self, module, grad_output):
        self.backward += grad_output[0].shape[0] / self.n


def run(name: str, params: dict | None = None, *, warmup: float = 1.0, model: nn.Module | None = None,
        seed: int = 0):
    model = model if model is not None else tiny_model()
    spy = Spy(model, N)
    x, y = batch()
    cfg = method_config(name, params or {})
    torch.manual_seed(seed)
    out = methods.METHODS[name].objective(model, x, y, cfg, ctx(warmup, seed))
    return model, spy, out, cfg, (x, y)


def test_every_method_of_the_paper_is_registered():
    assert PAPER_NAMES <= set(ADVERSARIAL)
    assert method_config("fast_at_zero").random_start is False
    assert method_config("fast_at").random_start is True


@pytest.mark.parametrize("instrument", [True, False])
@pytest.mark.parametrize("name,params", VARIANTS, ids=[f"{n}{p or ''}" for n, p in VARIANTS])
def test_measured_passes_equal_the_stated_count(name, params, instrument):
    model, spy, out, cfg, _ = run(name, {**params, "instrument": instrument})
    out.loss.backward()  # the loop's weight backward
    stated = methods.METHODS[name].passes(cfg)
    assert (spy.forward, spy.backward) == (stated.forward, stated.backward)


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_objective_leaves_train_mode_with_a_finite_differentiable_loss_and_its_stats(name):
    model, _, out, cfg, _ = run(name)
    assert model.training
    assert out.loss.dim() == 0 and torch.isfinite(out.loss) and out.loss.requires_grad
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert INSTRUMENT_KEYS <= set(out.stats)
    stats = {k: float(v) for k, v in out.stats.items()}
    assert all(math.isfinite(v) for v in stats.values())
    assert stats["increment"] == pytest.approx(stats["inner_final"] - stats["inner_start"], abs=1e-6)
    assert stats["ce_increment"] == pytest.approx(stats["ce_adv"] - stats["ce_clean"], abs=1e-6)
    assert stats["loss"] == pytest.approx(float(out.loss.detach()))


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_uninstrumented_objective_logs_loss_and_inner_start_only_from_free_quantities(name):
    _, _, out, _, _ = run(name, {"instrument": False})
    assert {"loss", "inner_start"} <= set(out.stats)
    assert not {"inner_final", "ce_adv", "ce_increment"} & set(out.stats)


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_inner_clean_is_the_methods_objective_at_x_in_eval_mode(name):
    model = tiny_model()
    x, y = batch()
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        ce_clean = torch.nn.functional.cross_entropy(reference(x), y).item()
    _, _, out, _, _ = run(name, model=model)
    assert float(out.stats["ce_clean"]) == pytest.approx(ce_clean, rel=1e-5)
    expected_inner = 0.0 if name in TRADES_TYPE else ce_clean
    assert float(out.stats["inner_clean"]) == pytest.approx(expected_inner, rel=1e-5, abs=1e-7)


def test_zero_start_fgsm_starts_at_the_clean_point_and_bs_alone_from_kl_zero():
    _, _, out, _, _ = run("fast_at_zero")
    assert float(out.stats["inner_start"]) == pytest.approx(float(out.stats["inner_clean"]), rel=1e-5)
    _, _, out, _, _ = run("bs_alone")
    assert float(out.stats["inner_start"]) == 0.0 and float(out.stats["increment"]) > 0


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_attack_phase_runs_in_eval_mode_and_training_forwards_in_train_mode(name):
    _, spy, _, _, _ = run(name)
    modes = [training for training, _, _ in spy.calls]
    k = TRAIN_FORWARDS.get(name, 2 if name in TRADES_TYPE else 1)
    assert modes[-k:] == [True] * k and not any(modes[:-k])
    assert all(grad for _, grad, _ in spy.calls[-k:])


@pytest.mark.parametrize("name", ["fast_at", "backward_smoothing", "trades"])
def test_attack_mode_train_runs_every_forward_in_train_mode(name):
    _, spy, _, _, _ = run(name, {"attack_mode": "train", "steps": 1} if name == "trades" else {"attack_mode": "train"})
    assert all(training for training, _, _ in spy.calls)


@pytest.mark.parametrize("name", ["fast_at", "backward_smoothing"])
@pytest.mark.parametrize("attack_mode", ["eval", "train"])
def test_instrumentation_changes_neither_the_loss_nor_the_bn_statistics(name, attack_mode):
    results = []
    for instrument in (True, False):
        model, _, out, _, _ = run(name, {"attack_mode": attack_mode, "instrument": instrument}, seed=3)
        results.append((out.loss.detach(), [b.clone() for b in model.buffers()]))
    (loss_a, buf_a), (loss_b, buf_b) = results
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(a, b) for a, b in zip(buf_a, buf_b))


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_eps_warmup_keeps_every_attack_point_within_the_scaled_ball(name):
    _, spy, _, cfg, (x, _) = run(name, warmup=0.5)
    radius = max((inp - x).abs().max().item() for _, _, inp in spy.calls)
    assert radius <= 0.5 * cfg.eps + 1e-6
    assert radius > 0.25 * cfg.eps  # the attack did move


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_warmup_zero_skips_the_attack(name):
    _, spy, out, _, (x, _) = run(name, warmup=0.0)
    assert all(torch.equal(inp, x) for _, _, inp in spy.calls)
    assert torch.isfinite(out.loss) and all(math.isfinite(float(v)) for v in out.stats.values())


def test_bs_and_trades_pass_counts_give_the_papers_cost_ordering():
    cost = {n: methods.METHODS[n].passes(method_config(n, {"instrument": False})) for n in
            ("fast_at", "fast_trades", "backward_smoothing", "fast_trades_2step", "trades", "pgd_at")}
    units = {n: p.forward + p.backward for n, p in cost.items()}  # a backward ≈ a forward on CPU
    assert units["fast_at"] < units["fast_trades"] < units["backward_smoothing"] <= units["fast_trades_2step"]
    assert units["trades"] / units["backward_smoothing"] >= 2.9  # paper Table 2: 482 / 164 = 2.94


def test_gradalign_log_linear_rule_gives_0_2_at_8_over_255():
    cfg = method_config("gradalign", {"lam_rule": "log_linear", "eps": 8 / 255})
    assert cfg.effective_lam == pytest.approx(0.2)
    assert method_config("gradalign").effective_lam == 0.2


@pytest.mark.parametrize("name,params,word", [
    ("trades", {"beta": -1.0}, "beta"), ("fast_at", {"attack_mode": "test"}, "attack_mode"),
    ("backward_smoothing", {"num_points": 0}, "num_points"), ("pgd_at", {"eps": 0.0}, "eps"),
    ("gradalign", {"lam_rule": "cubic"}, "lam_rule"), ("fast_at", {"instrument": 1}, "instrument"),
    ("backward_smoothing_pgd", {"target": "y"}, "target"), ("odi_pgd", {"odi_steps": 0}, "odi_steps")])
def test_bad_hyperparameters_raise_value_error_naming_them(name, params, word):
    with pytest.raises(ValueError, match=word):
        method_config(name, params)


def test_backward_smoothing_trains_end_to_end_and_logs_the_instrumentation(tmp_path):
    cfg = TrainConfig(method="backward_smoothing", method_params={"eps": 0.1, "step_size": 0.1},
                      dataset="synthetic", model="small_cnn", epochs=1, batch_size=64, n_train=128, n_val=64,
                      lr=0.05, augment=False, warmup_epochs=1.0, val_metrics=("clean", "fgsm", "pgd"),
                      eval_params={"eps": 0.1, "pgd_steps": 3}, select_on="pgd")
    run_ = run_training(cfg, root=tmp_path, device="cpu", progress=False)
    iters, epochs = run_.iterations(), run_.epochs()
    assert len(iters) == 2 and INSTRUMENT_KEYS <= set(iters.columns)
    assert iters["warmup"].iloc[0] == 0.0 and 0 < iters["warmup"].iloc[1] < 1
    assert {"val_clean_acc", "val_fgsm_acc", "val_pgd_acc"} <= set(epochs.columns)
    assert run_.summary["passes_per_iteration"] == {"forward": 5, "backward": 4, "double_backward": 0.0}
    assert run_.summary["select_on"] == "val_pgd_acc"
