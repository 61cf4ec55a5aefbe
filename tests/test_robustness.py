"""Robust accuracy under named protocols (rs_lib.robustness): PGD-k, AutoAttack and RayS
protocols, custom protocols, agreement with torchattacks, AutoAttack's sanity checks and the `evaluate`
CLI. Tiny CNN on generated data."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from helpers import prototype_data as make_data, tiny_trained_cnn
from rs_lib import data as data_mod
from rs_lib import robustness as R
from rs_lib.robustness import Protocol
from rs_lib.__main__ import main
from rs_lib.train import TrainConfig, run_training

NUM_CLASSES = 4
EPS = 0.12


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    return tiny_trained_cnn()


def test_torchattacks_imports_with_its_private_scipy_helper():
    import torchattacks
    from scipy._lib._util import check_random_state  # torchattacks imports it at import time

    assert callable(check_random_state)
    assert hasattr(torchattacks, "MultiAttack") and hasattr(torchattacks, "APGDT")


def test_robust_accuracy_pgd_agrees_with_torchattacks_pgd_within_one_point(trained):
    import torchattacks

    x, y = make_data(300, seed=13)
    ours = R.robust_accuracy(trained, (x, y), eps=EPS, batch_size=128,
                             protocol=Protocol.custom("pgd", steps=10, step_size=0.03, random_start=False))
    adv = torchattacks.PGD(trained, eps=EPS, alpha=0.03, steps=10, random_start=False)(x, y)
    with torch.no_grad():
        theirs = (trained(adv).argmax(1) == y).float().mean().item()
    assert ours.accuracy < ours.clean_accuracy - 0.05  # the attack bites at this eps
    assert abs(ours.accuracy - theirs) <= 0.01
    assert not trained.training


def test_named_pgd_protocols_follow_the_bs_and_random_start_conventions(trained):
    x, y = make_data(64, seed=3)
    bs = R.robust_accuracy(trained, (x, y), eps=0.031, protocol="pgd20_bs")
    expected = {"attack": "pgd", "steps": 20, "random_start": False, "restarts": 1}
    assert {k: bs.settings[k] for k in expected} == expected
    assert bs.settings["step_size"] == pytest.approx(0.031 / 4)  # 0.0078 at 0.031, the BS code's step
    assert "PGD-20" in bs.label and "no random start" in bs.label
    rs = R.robust_accuracy(trained, (x, y), eps=0.031, protocol="pgd100_rs")
    assert rs.settings["steps"] == 100 and rs.settings["random_start"] is True
    assert "NOT the standard" in R.PROTOCOLS["autoattack_fast"].label
    assert "standard protocol" in R.PROTOCOLS["autoattack_standard"].label


@pytest.mark.parametrize("n_classes,targets", [(10, 9), (100, 9), (4, 3)])
def test_autoattack_is_built_to_the_standard_protocol(trained, n_classes, targets):
    aa = R.autoattack(trained, eps=8 / 255, n_classes=n_classes)
    apgd, apgdt, fab, square = aa.attacks
    assert [type(a).__name__ for a in aa.attacks] == ["APGD", "APGDT", "FAB", "Square"]
    assert apgd.steps == apgdt.steps == fab.steps == 100 and apgd.loss == "ce"
    assert apgdt.n_target_classes == fab.n_target_classes == targets and fab.multi_targeted
    assert square.n_queries == 5000 and square.rescale_schedule is False
    assert {a.seed for a in aa.attacks} == {0} and {a.n_restarts for a in aa.attacks} == {1}
    assert all(a.eps == 8 / 255 and a.norm == "Linf" for a in aa.attacks)


def test_autoattack_fast_runs_within_the_clean_set_and_spares_the_global_rng(trained):
    x, y = make_data(48, seed=5)
    state = torch.get_rng_state()
    aa = R.robust_accuracy(trained, (x, y), eps=EPS, protocol="autoattack_fast")
    assert torch.equal(torch.get_rng_state(), state)
    pgd = R.robust_accuracy(trained, (x, y), eps=EPS, protocol="pgd20_bs")
    assert bool((aa.correct <= aa.clean_correct).all()) and aa.accuracy < aa.clean_accuracy
    assert aa.accuracy <= pgd.accuracy + 2 / 48  # AutoAttack is not weaker than PGD-20 here
    assert aa.settings["steps"] == 10 and aa.settings["queries"] == 500


def test_rays_protocol_reports_boundary_distances_and_their_mean_over_correct_examples(trained):
    x, y = make_data(32, seed=5)
    rays = R.robust_accuracy(trained, (x, y), eps=EPS, protocol="rays_fast")
    assert "NOT the leaderboard" in rays.label and rays.settings["queries"] == 300
    assert rays.distance is not None and rays.distance.shape == (32,)
    # robust under RayS <=> correct and no misclassified point found within eps
    assert torch.equal(rays.correct, rays.clean_correct & (rays.distance > EPS))
    assert rays.adbd == pytest.approx(float(rays.distance[rays.clean_correct].mean()))
    pgd = R.robust_accuracy(trained, (x, y), eps=EPS, protocol="pgd20_bs")
    assert rays.accuracy >= pgd.accuracy - 2 / 32   # a hard-label attack is not stronger than PGD here
    assert R.robust_accuracy(trained, (x, y), eps=EPS, protocol="pgd20_bs").adbd is None
    assert "adbd" in rays.to_dict() and "adbd" not in pgd.to_dict()


def _restarts(n: int) -> Protocol:
    return Protocol.custom("pgd", steps=5, random_start=True, restarts=n)


def test_restarts_keep_the_worst_case_and_are_reproducible(trained):
    x, y = make_data(128, seed=7)
    one = R.robust_accuracy(trained, (x, y), eps=EPS, protocol=_restarts(1), seed=4)
    three = R.robust_accuracy(trained, (x, y), eps=EPS, protocol=_restarts(3), seed=4)
    again = R.robust_accuracy(trained, (x, y), eps=EPS, protocol=_restarts(3), seed=4)
    assert bool((three.correct <= one.correct).all()) and torch.equal(three.correct, again.correct)
    assert bool((one.correct <= one.clean_correct).all())


def test_imagedata_pairs_and_batch_iterables_give_the_same_answer(trained):
    x, y = make_data(40, seed=9)
    info = data_mod.DatasetInfo("tiny", NUM_CLASSES, (1, 8, 8), (0.5,), (0.25,))
    images = data_mod.ImageData((x * 255).round().to(torch.uint8), y, info)
    x = images.images.float() / 255
    results = [R.robust_accuracy(trained, d, eps=EPS, protocol="pgd20_bs", batch_size=16)
               for d in (images, (x, y), [(x[:25], y[:25]), (x[25:], y[25:])])]
    assert all(torch.equal(r.correct, results[0].correct) for r in results)
    json.dumps(results[0].to_dict())


# Each case builds its keywords lazily: a bad Protocol.custom(...) raises on construction.
@pytest.mark.parametrize("kwargs,word", [
    (lambda: {"protocol": "pgd7"}, "protocol"),
    (lambda: {"protocol": dataclasses.replace(R.PROTOCOLS["pgd20_bs"], steps=5)}, "steps"),
    (lambda: {"protocol": Protocol.custom("pgd", restarts=2)}, "restarts"),
    (lambda: {"protocol": Protocol.custom("cw")}, "attack"),
    (lambda: {"eps": 0.0}, "eps"), (lambda: {"batch_size": 0}, "batch_size"),
    (lambda: {"protocol": Protocol.custom("pgd", steps=0)}, "steps"),
    (lambda: {"protocol": Protocol.custom("autoattack", queries=0)}, "queries")])
def test_bad_arguments_raise_value_error_naming_them(trained, kwargs, word):
    x, y = make_data(8, seed=1)
    with pytest.raises(ValueError, match=word):
        R.robust_accuracy(trained, (x, y), **{"eps": EPS, "protocol": Protocol.custom(), **kwargs()})


def test_custom_protocols_label_themselves_and_equal_settings_give_the_named_protocol(trained):
    custom = Protocol.custom("pgd", steps=10, step_size=0.03)
    assert custom.name == custom.label == "PGD-10 (custom: CE, no random start, step 0.03, 1 restart)"
    assert Protocol.custom("pgd", steps=7).name == "PGD-7 (custom: CE, no random start, step ε/4, 1 restart)"
    assert "NOT the standard" in Protocol.custom("autoattack", steps=5, queries=50).label
    assert Protocol.custom() is R.PROTOCOLS["pgd20_bs"]
    assert Protocol.custom("pgd", steps=100, random_start=True) is R.PROTOCOLS["pgd100_rs"]
    assert Protocol.custom("autoattack") is R.PROTOCOLS["autoattack_standard"]
    assert Protocol.custom("autoattack", steps=10, queries=500) is R.PROTOCOLS["autoattack_fast"]
    x, y = make_data(16, seed=1)
    res = R.robust_accuracy(trained, (x, y), eps=EPS, protocol=custom)
    assert res.label == custom.label and res.settings["protocol"] == custom.name
    assert res.settings["step_size"] == 0.03 and res.settings["steps"] == 10
    with pytest.raises(ValueError, match="autoattack_original"):
        Protocol.custom("autoattack_original", steps=10)


def test_threat_eps_reads_one_radius_from_a_run_config_and_refuses_two():
    assert R.threat_eps(TrainConfig(method="fast_at", method_params={"eps": 0.1})) == 0.1
    both = TrainConfig(method="fast_at", method_params={"eps": 0.1}, val_metrics=("clean", "pgd"),
                       eval_params={"eps": 0.1})
    assert R.threat_eps(both) == 0.1
    assert R.threat_eps(TrainConfig()) is None
    clash = TrainConfig(method="fast_at", method_params={"eps": 0.1}, val_metrics=("clean", "pgd"),
                        eval_params={"eps": 0.2})
    with pytest.raises(ValueError, match="differ"):
        R.threat_eps(clash)


def test_train_mode_model_is_refused(trained):
    x, y = make_data(8, seed=1)
    trained.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            R.robust_accuracy(trained, (x, y), eps=EPS, protocol="pgd20_bs")
    finally:
        trained.eval()


def test_cli_evaluate_prints_a_table_for_a_stored_run(tmp_path, capsys):
    cfg = TrainConfig(method="fast_at", method_params={"eps": 0.1}, dataset="synthetic", model="small_cnn", epochs=1,
                      batch_size=64, n_train=64, n_val=32, augment=False)
    run = run_training(cfg, root=tmp_path, device="cpu", progress=False)
    code = main(["evaluate", "--run", str(run.dir.path), "--protocol", "clean", "pgd20_bs", "--n", "32",
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "eps 0.1" in out
    assert "clean accuracy" in out and "PGD-20 (CE, no random start" in out
    assert main(["evaluate", "--run", str(run.dir.path), "--protocol", "pgd7"]) == 2


# ------------------------------------------------------------------ AutoAttack's sanity checks
class _Dropout(nn.Module):
    """A model whose eval-mode outputs are random (a randomised defence)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + torch.randn(len(x), NUM_CLASSES)


def test_sanity_checks_flag_random_and_softmax_outputs_and_pass_plain_logits(trained):
    x, _ = make_data(16, seed=2)
    assert R.sanity_checks(trained, x) == []
    assert ["randomness" in m for m in R.sanity_checks(_Dropout(trained).eval(), x)] == [True]
    softmax = nn.Sequential(trained, nn.Softmax(dim=1)).eval()
    assert ["softmax-output" in m for m in R.sanity_checks(softmax, x)] == [True]


def test_square_check_warns_only_when_square_lowers_the_gradient_attacks_accuracy():
    stages = {"apgd-ce": 0.40, "apgd-t": 0.39, "fab-t": 0.39, "square": 0.39}
    assert R.square_check(stages) == []
    assert R.square_check({**stages, "square": 0.389}) == []  # within fra31's 0.2 %
    (message,) = R.square_check({**stages, "square": 0.38})
    assert "Square decreased robust accuracy by 1.0%" in message


def test_autoattack_returns_its_stages_and_checks_with_the_result(trained):
    x, y = make_data(24, seed=5)
    res = R.robust_accuracy(trained, (x, y), eps=EPS, protocol="autoattack_fast")
    assert list(res.stages) == list(R.AA_STAGES)
    values = list(res.stages.values())
    assert values == sorted(values, reverse=True) and values[-1] == pytest.approx(res.accuracy)
    assert values[0] <= res.clean_accuracy
    assert res.checks == tuple(R.square_check(res.stages))
    assert res.to_dict()["stages"] == res.stages and res.to_dict()["checks"] == list(res.checks)
    with pytest.warns(UserWarning, match="randomness"):
        noisy = R.robust_accuracy(_Dropout(trained).eval(), (x, y), eps=EPS, protocol="pgd20_bs")
    assert any("randomness" in m for m in noisy.checks)


def test_stages_equal_torchattacks_multiattack(trained):
    """Running the four attacks in turn on the points still correct is MultiAttack's worst case."""
    x, y = make_data(24, seed=6)
    ours = R.robust_accuracy(trained, (x, y), eps=EPS, protocol="autoattack_fast")
    aa = R.autoattack(trained, eps=EPS, n_classes=NUM_CLASSES, steps=10, queries=500)
    with torch.random.fork_rng():
        adv = aa(x, y)
    with torch.no_grad():
        theirs = (trained(adv).argmax(1) == y) & (trained(x).argmax(1) == y)
    assert torch.equal(ours.correct, theirs)


def test_original_autoattack_cross_check_agrees_with_ours_within_one_image(trained):
    pytest.importorskip("pyautoattack")
    x, y = make_data(10, seed=5)
    original = R.robust_accuracy(trained, (x, y), eps=1.5 * EPS, protocol="autoattack_original")
    ours = R.robust_accuracy(trained, (x, y), eps=1.5 * EPS, protocol="autoattack_standard")
    assert "fra31" in original.label and original.accuracy < original.clean_accuracy
    assert abs(original.accuracy - ours.accuracy) <= 1 / 10
    assert bool((original.correct <= original.clean_correct).all())
