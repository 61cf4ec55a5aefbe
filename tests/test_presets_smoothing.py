"""Presets of the randomized-smoothing notebooks: every preset resolves in every profile, the
`paper` profile equals the papers' hyperparameters (typed here from the papers, sources in the
comments), and notebooks that need the same model get the same TrainConfig (one stored run)."""

from __future__ import annotations

import math

import pytest

from rs_lib import paper, profiles
from rs_lib.presets import smoothing as sp

EXPERIMENTS = ("rs_certified_curves", "rs_comparison", "rs_smoothadv_attacks", "rs_smoothmix_ablations")


def _params(cfg) -> dict:
    return {k: v for k, v in cfg.method_params.items() if k != "sigma"}


def _decay_epochs(cfg) -> list[float]:
    return [round(m * cfg.epochs, 6) for m in cfg.milestones]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("profile", profiles.PROFILES)
def test_every_preset_resolves_and_builds_its_runs(experiment, profile):
    settings = profiles.resolve(experiment, profile)
    if "train_sigmas" in settings.values:
        runs = sp.comparison_runs(settings)
        assert runs and all(r["config"].dataset == settings.dataset for r in runs)
    if experiment == "rs_smoothmix_ablations":
        assert {r["ablation"] for r in sp.ablation_runs(settings)} == {"eta", "alpha_T", "eps", "m"}
    if experiment == "rs_smoothadv_attacks":
        labels = {r["label"] for r in sp.vanilla_runs(settings)}
        assert labels == {"Vanilla PGD", "Vanilla PGD + noise", "SmoothAdv"}


# ----------------------------------------------------------------------------------- paper: CIFAR-10

def test_paper_cifar10_training_and_certification_settings():
    s = profiles.resolve("rs_comparison", "paper")
    cfg = sp.model_config(s, s.models["Gaussian"], 0.5)
    # SmoothMix App. B.3 / SmoothAdv App. D: ResNet-110, 150 epochs, batch 256, lr 0.1 x0.1 at 50 and 100,
    # momentum 0.9, weight decay 1e-4, random crop + flip.
    assert (cfg.dataset, cfg.model, cfg.epochs, cfg.batch_size) == ("cifar10", "resnet110", 150, 256)
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
    assert (cfg.schedule, cfg.lr_decay, _decay_epochs(cfg), cfg.augment) == ("piecewise", 0.1, [50, 100], True)
    # Cohen et al. / SmoothAdv App. D / SmoothMix App. B.2: n = 100,000, n0 = 100, alpha = 0.001, full test set.
    assert (s.cert_n, s.cert_n0, s.cert_alpha, s.cert_points) == (100_000, 100, 0.001, 10_000)
    assert s.train_sigmas == [0.25, 0.5, 1.0]
    assert s.paper_reference == "smoothmix_cifar10"


# (label, sigma) -> hyperparameters, SmoothMix §4 ("T = 4, m = 2, eta = 5; alpha = 0.5, 1.0, 2.0 with
# sigma = 0.25, 0.5, 1.0") and App. B.4 (Stability lambda = 2, 1 at sigma 1.0 on CIFAR-10; SmoothAdv
# T = 10, eps = 1.0, m = 8 for CIFAR-10, eps warm-up over 10 epochs; MACER m = 16, beta = 16, gamma = 8,
# lambda = 12 / 4 at sigma 0.25 / 0.5, at 1.0 lambda = 0 until the first lr decay then 12; Consistency
# eta = 0.5, lambda = 10, doubled to 20 at sigma = 0.25, m = 2 per EXPERIMENTS.MD / Jeong & Shin).
PAPER_CIFAR10 = {
    ("Gaussian", 0.25): {}, ("Gaussian", 0.5): {}, ("Gaussian", 1.0): {},
    ("Stability training", 0.25): dict(lbd=2.0), ("Stability training", 0.5): dict(lbd=2.0),
    ("Stability training", 1.0): dict(lbd=1.0),
    **{("SmoothAdv", s): dict(eps=1.0, steps=10, num_noise=8, warmup_epochs=10.0, step_order="clamp_renorm")
       for s in (0.25, 0.5, 1.0)},
    ("MACER", 0.25): dict(num_noise=16, beta=16.0, gamma=8.0, lbd=12.0, deferred_epochs=0),
    ("MACER", 0.5): dict(num_noise=16, beta=16.0, gamma=8.0, lbd=4.0, deferred_epochs=0),
    ("MACER", 1.0): dict(num_noise=16, beta=16.0, gamma=8.0, lbd=12.0, deferred_epochs=200),  # MACER's 1st decay
    ("Consistency", 0.25): dict(num_noise=2, lbd=20.0, eta=0.5),
    ("Consistency", 0.5): dict(num_noise=2, lbd=10.0, eta=0.5),
    ("Consistency", 1.0): dict(num_noise=2, lbd=10.0, eta=0.5),
    **{("SmoothMix", s): dict(eta=5.0, step_size=a, steps=4, num_noise=2, mix_step=0, warmup_epochs=10.0)
       for s, a in ((0.25, 0.5), (0.5, 1.0), (1.0, 2.0))},
    **{("SmoothMix + one-step adversary", s): dict(eta=5.0, step_size=a, steps=4, num_noise=2, mix_step=1,
                                                   warmup_epochs=10.0)
       for s, a in ((0.25, 0.5), (0.5, 1.0), (1.0, 2.0))},
}


def test_paper_comparison_hyperparameters_equal_smoothmix_cifar10_per_method_and_sigma():
    s = profiles.resolve("rs_comparison", "paper")
    runs = {(r["label"], r["sigma"]): r for r in sp.comparison_runs(s)}
    assert set(runs) == set(PAPER_CIFAR10)
    for key, expected in PAPER_CIFAR10.items():
        cfg = runs[key]["config"]
        assert _params(cfg) == expected, key
        assert cfg.method_params.get("sigma", key[1]) == key[1]
        # The references chunk each batch of 256 into m optimiser steps (SmoothAdv train_pgd.py,
        # SmoothMix train.py / train_consistency.py _chunk_minibatch); ours steps once on 256 / m.
        m = expected.get("num_noise", 1) if cfg.method in sp.CHUNKED else 1
        assert cfg.batch_size == 256 // m, key
    # every label has a row of the paper table to stand beside
    table = paper.load("smoothmix_cifar10")
    assert {r["paper_row"] for r in runs.values()} <= set(table["method"])


def test_paper_profiles_train_as_the_references_did():
    """All 50,000 CIFAR-10 / 60,000 MNIST training images (no held-out split; the last epoch is
    certified), Cohen et al.'s CIFAR-10 normalisation constants, no normalisation layer on SmoothMix's
    MNIST LeNet, SmoothAdv's clamp-then-renorm l2 step, MACER's own 440-epoch recipe for its rows."""
    from rs_lib import data
    from rs_lib.train import NORMALIZATIONS, build_model_for

    s = profiles.resolve("rs_comparison", "paper")
    runs = {(r["label"], r["sigma"]): r["config"] for r in sp.comparison_runs(s)}
    for (label, sigma), cfg in runs.items():
        assert cfg.full_train_set and cfg.n_train is None, label
        assert cfg.normalization == "cohen_cifar10", label
        if label == "SmoothAdv":
            assert cfg.method_cfg.step_order == "clamp_renorm"
        if label == "MACER":
            assert (cfg.epochs, cfg.lr, _decay_epochs(cfg)) == (440, 0.01, [200, 400])
        else:
            assert cfg.epochs == 150
    assert NORMALIZATIONS["cohen_cifar10"][1] == (0.2023, 0.1994, 0.2010)
    model = build_model_for(runs[("Gaussian", 0.5)], data.dataset_info("cifar10"))
    assert model.std.flatten().tolist() == pytest.approx([0.2023, 0.1994, 0.2010])
    mnist = profiles.resolve("rs_smoothmix_ablations", "paper")
    cfg = sp.model_config(mnist, mnist.models["SmoothMix"], mnist.ablation_sigma)
    assert (cfg.dataset, cfg.full_train_set, cfg.normalization) == ("mnist", True, "none")
    lenet = build_model_for(cfg, data.dataset_info("mnist"))
    assert lenet.mean.abs().max() == 0 and (lenet.std == 1).all()  # the identity, as SmoothMix's Identity()
    for profile in ("smoke", "cpu"):  # the book's scaled profiles keep a validation split
        cpu = profiles.resolve("rs_comparison", profile)
        assert not sp.model_config(cpu, cpu.models["Gaussian"], cpu.train_sigmas[0]).full_train_set


def test_full_train_set_trains_on_the_validation_images_too(tmp_path):
    from rs_lib import data
    from rs_lib.train import TrainConfig, run_training

    held_out = len(data.load("synthetic", "val"))
    base = dict(dataset="synthetic", model="small_cnn", epochs=1, batch_size=64, n_val=32, augment=False)
    with pytest.raises(ValueError, match="full_train_set"):
        TrainConfig(**base, n_train=100, full_train_set=True)
    seen = []
    for full in (False, True):
        run = run_training(TrainConfig(**base, full_train_set=full), root=tmp_path, device="cpu", progress=False)
        seen.append(len(run.iterations()))
    assert seen[1] > seen[0] and seen[1] * 64 >= len(data.load("synthetic", "train")) + held_out - 63


def test_paper_curves_are_cohen_gaussian_models_at_four_sigmas():
    s = profiles.resolve("rs_certified_curves", "paper")
    # SmoothAdv Fig. 1 / Tables 7-15 first rows: Cohen et al.'s models at sigma 0.12, 0.25, 0.5, 1.0.
    assert s.train_sigmas == [0.12, 0.25, 0.5, 1.0]
    cfgs = [sp.model_config(s, s.models["Gaussian"], sigma) for sigma in s.train_sigmas]
    assert {(c.method, c.dataset, c.model, c.epochs) for c in cfgs} == {("gaussian", "cifar10", "resnet110", 150)}
    assert (s.cert_n, s.cert_n0, s.cert_alpha) == (100_000, 100, 0.001)


def test_paper_attacks_equal_smoothadv_section_4_3_and_appendix_c():
    s = profiles.resolve("rs_smoothadv_attacks", "paper")
    # §4.3 / App. C.4 and the README: T = 20 steps, m_test in {1, 4, 8, 16, 64, 128}; PREDICT n = 1,000
    # (README commands), alpha = 0.001.
    assert s.attack_steps == 20
    assert s.m_test == [1, 4, 8, 16, 64, 128]
    assert (s.predict_n, s.cert_alpha) == (1000, 0.001)
    # App. C.1 (Fig. 4): T = 2, m_train = 1, eps in {0.25, 0.5, 1, 2} x sigma in {0.12, 0.25, 0.5, 1};
    # eps warm-up over the first 10 epochs (App. D remark 1).
    assert sorted(map(tuple, s.vanilla_grid)) == sorted((a, b) for a in (0.12, 0.25, 0.5, 1.0)
                                                        for b in (0.25, 0.5, 1.0, 2.0))
    rows = sp.vanilla_runs(s)
    assert len(rows) == 3 * 16
    for r in rows:
        cfg = r["config"]
        assert cfg.method_params["eps"] == r["eps"] and cfg.method_params["steps"] == 2
        assert cfg.method_params["warmup_epochs"] == 10.0
        if cfg.method == "smoothadv_pgd":
            assert cfg.method_params["num_noise"] == 1 and cfg.method_params["sigma"] == r["sigma"]
        assert (cfg.epochs, cfg.batch_size, cfg.lr, _decay_epochs(cfg)) == (150, 256, 0.1, [50, 100])


# ------------------------------------------------------------------------------------- paper: MNIST

def test_paper_ablations_equal_smoothmix_tables_6_to_9():
    s = profiles.resolve("rs_smoothmix_ablations", "paper")
    rows = sp.ablation_runs(s)
    cfg = rows[0]["config"]
    # App. B.3 / EXPERIMENTS.MD: MNIST LeNet, 90 epochs, lr 0.01 x0.1 at 30 and 60, batch 256.
    assert (cfg.dataset, cfg.model, cfg.epochs, cfg.lr, _decay_epochs(cfg)) == ("mnist", "lenet", 90, 0.01, [30, 60])
    assert (s.ablation_sigma, s.cert_n, s.cert_n0, s.cert_alpha) == (1.0, 100_000, 100, 0.001)
    by_axis: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_axis.setdefault(r["ablation"], {})[r["setting"]] = _params(r["config"])
    # App. H: default sigma = 1, eta = 1, (alpha, T) = (1, 8), m = 4, unrestricted (the rows
    # "eta = 1", "(1.0, 8)", "eps = inf", "m = 4" of Tables 6-9 are the same model, ACR 1.789).
    default = dict(eta=1.0, step_size=1.0, steps=8, num_noise=4, mix_step=0, warmup_epochs=10.0)
    assert by_axis["eta"]["eta=1"] == by_axis["alpha_T"]["(alpha,T)=(1.0,8)"] == default
    assert by_axis["eps"]["eps=inf"] == by_axis["m"]["m=4"] == default
    # Table 6: eta in {1, 2, 4, 8, 16}.
    assert {k: v["eta"] for k, v in by_axis["eta"].items()} == {f"eta={e:g}": float(e) for e in (1, 2, 4, 8, 16)}
    # Table 7: (alpha, T) in {(8, 1), (4, 2), (2, 4), (1, 8)}, alpha * T = 8.
    assert {(v["step_size"], v["steps"]) for v in by_axis["alpha_T"].values()} == {(8.0, 1), (4.0, 2), (2.0, 4), (1.0, 8)}
    # Table 8: hard l2 limit eps in {2, 4, 6, 8} and unrestricted.
    assert {v.get("maxnorm") for v in by_axis["eps"].values()} == {2.0, 4.0, 6.0, 8.0, None}
    # Table 9: m in {1, 2, 4, 8}; the batch is 256 / m (reference chunks).
    assert {v["num_noise"] for v in by_axis["m"].values()} == {1, 2, 4, 8}
    for r in rows:
        assert r["config"].batch_size == 256 // r["config"].method_params["num_noise"]
    # every setting stands beside a row of the transcribed table (Table 6's eta = 4 and 8 rows are
    # empty in the paper's text, so they have no transcribed numbers)
    table = paper.load("smoothmix_mnist_ablation")
    missing = {("eta", "eta=4"), ("eta", "eta=8")}
    assert {(r["ablation"], r["setting"]) for r in rows} - missing <= set(zip(table["ablation"], table["setting"]))


def test_mnist_paper_models_equal_smoothmix_appendix_d_and_experiments_md():
    m = sp.MNIST_PAPER_MODELS
    for sigma in (0.25, 0.5, 1.0):
        # App. B.4 / D and EXPERIMENTS.MD (MNIST): SmoothAdv PGD eps 255/256, T 10, m 4, warm-up 10.
        assert m["SmoothAdv"]["sigmas"][sigma] == dict(eps=255 / 256, steps=10, num_noise=4, warmup_epochs=10.0,
                                                        step_order="clamp_renorm")
        assert m["Stability training"]["sigmas"][sigma] == dict(lbd=2.0)
        # MACER: m 16, beta 16, gamma (margin) 8, lambda 16 (6 at sigma = 1), --deferred (30 epochs).
        assert m["MACER"]["sigmas"][sigma] == dict(num_noise=16, beta=16.0, gamma=8.0,
                                                   lbd=16.0 if sigma < 1 else 6.0, deferred_epochs=30)
        # Consistency: m 2, eta 0.5, lambda 5, doubled (10) at sigma 0.25.
        assert m["Consistency"]["sigmas"][sigma] == dict(num_noise=2, lbd=10.0 if sigma == 0.25 else 5.0, eta=0.5)
    # SmoothMix: alpha 1, m 4, T = 2, 4, 8 for sigma = 0.25, 0.5, 1.0 (App. D), eta 5.
    for sigma, steps in ((0.25, 2), (0.5, 4), (1.0, 8)):
        assert m["SmoothMix"]["sigmas"][sigma] == dict(eta=5.0, step_size=1.0, steps=steps, num_noise=4, mix_step=0,
                                                       warmup_epochs=10.0)
        assert m["SmoothMix + one-step adversary"]["sigmas"][sigma]["mix_step"] == 1
    rows = set(paper.load("smoothmix_mnist")["method"])
    assert {spec["paper_row"] for spec in m.values()} <= rows


# ------------------------------------------------------------------------------- shared runs, checks

@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_gaussian_models_are_one_run_for_every_notebook(profile):
    configs = {}
    for experiment in ("rs_certified_curves", "rs_comparison", "rs_smoothadv_attacks"):
        s = profiles.resolve(experiment, profile)
        for sigma in s.train_sigmas:
            if sigma in s.models["Gaussian"]["sigmas"]:
                configs.setdefault(sigma, []).append(sp.model_config(s, s.models["Gaussian"], sigma).to_dict())
    assert configs
    for sigma, dicts in configs.items():
        assert all(d == dicts[0] for d in dicts), sigma


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_ablation_default_is_the_comparison_smoothmix_model(profile):
    ab = profiles.resolve("rs_smoothmix_ablations", profile)
    comp = profiles.resolve("rs_comparison", profile)
    default = next(r["config"] for r in sp.ablation_runs(ab) if r["default"])
    assert default == sp.model_config(comp, comp.models["SmoothMix"], ab.ablation_sigma)
    gauss = sp.model_config(ab, ab.models["Gaussian"], ab.ablation_sigma)
    assert gauss == sp.model_config(comp, comp.models["Gaussian"], ab.ablation_sigma)


def test_cpu_profile_is_fashion_mnist_lenet_with_stated_certification():
    s = profiles.resolve("rs_comparison", "cpu")
    assert (s.dataset, s.model, s.train_sigmas) == ("fashion-mnist", "lenet", [0.25, 0.5, 1.0])
    assert (s.cert_n0, s.cert_n, s.cert_alpha, s.cert_points) == (100, 1000, 0.001, 120)
    assert set(s.models) == {"Gaussian", "Stability training", "SmoothAdv", "MACER", "Consistency", "SmoothMix"}
    # SmoothMix keeps the papers' alpha * T = 8 sigma at every sigma.
    for sigma, params in s.models["SmoothMix"]["sigmas"].items():
        assert math.isclose(params["step_size"] * params["steps"], 8 * sigma)


def test_cpu_macer_switches_lambda_on_only_after_the_first_lr_decay():
    # The reference's --deferred: lambda = 0 until the first lr decay. Switched on at the initial lr
    # (epoch 1 of 3, an earlier version of this preset) the robustness term threw LeNet to chance.
    s = profiles.resolve("rs_comparison", "cpu")
    for sigma in s.models["MACER"]["sigmas"]:
        cfg = sp.model_config(s, s.models["MACER"], sigma)
        assert min(_decay_epochs(cfg)) <= cfg.method_params["deferred_epochs"] < cfg.epochs


def test_chunked_methods_split_the_batch_by_num_noise():
    s = profiles.resolve("rs_comparison", "cpu")
    assert sp.model_config(s, s.models["Consistency"], 0.5).batch_size == 128 // 2
    assert sp.model_config(s, s.models["SmoothAdv"], 0.5, num_noise=8).batch_size == 128 // 8
    assert sp.model_config(s, s.models["SmoothMix"], 0.5, num_noise=4).batch_size == 128 // 4
    assert sp.model_config(s, s.models["MACER"], 0.5).batch_size == 128     # MACER: one step per batch
    assert sp.model_config(s, s.models["Gaussian"], 0.5).batch_size == 128


def test_bad_knobs_raise_value_errors_naming_them():
    with pytest.raises(ValueError, match="cert_alpha"):
        profiles.resolve("rs_comparison", "cpu", cert_alpha=1.5)
    with pytest.raises(ValueError, match="cert_radii"):
        profiles.resolve("rs_comparison", "cpu", cert_radii=[0.5, 0.25])
    bad = {"SmoothMix": {"method": "smoothmix", "paper_row": None, "sigmas": {0.5: {"etaa": 1.0}}}}
    with pytest.raises(ValueError, match="etaa"):
        profiles.resolve("rs_comparison", "cpu", models=bad)
    with pytest.raises(ValueError, match="method"):
        profiles.resolve("rs_comparison", "cpu", models={"X": {"method": "nope", "paper_row": None, "sigmas": {0.5: {}}}})
    with pytest.raises(ValueError, match="paper_reference"):
        profiles.resolve("rs_comparison", "cpu", paper_reference="no_such_table")
    with pytest.raises(ValueError, match="sigma"):
        s = profiles.resolve("rs_comparison", "cpu")
        sp.model_config(s, s.models["Gaussian"], 0.12)


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_cpu_fig4_smoothadv_is_the_comparison_smoothadv_model_where_settings_agree(profile):
    att = profiles.resolve("rs_smoothadv_attacks", profile)
    comp = profiles.resolve("rs_comparison", profile)
    for r in sp.vanilla_runs(att):
        if r["label"] == "SmoothAdv" and profile == "cpu":
            assert r["config"] == sp.model_config(comp, comp.models["SmoothAdv"], r["sigma"])
        assert r["config"].dataset == comp.dataset


def test_every_paper_table_names_its_paper_and_table():
    for name in paper.TABLES:
        where = paper.source(name)
        # a table, or (numbers the paper gives only in its text) the section they are quoted from
        assert where.startswith(paper.PAPERS[name.split("_", 1)[0]]) and ("Table" in where or "Section" in where), (name, where)
    assert paper.source("smoothmix_mnist") == "SmoothMix Table 2"
    assert paper.source("bs_beta") == "Backward Smoothing Table 12"
    with pytest.raises(ValueError, match="name"):
        paper.source("no_such_table")
