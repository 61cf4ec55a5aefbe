"""Presets of the Backward Smoothing chapter: every experiment resolves in every profile; the resolved
`paper` configurations carry the paper's hyperparameters (typed here from the paper text, with the
section cited); runs that several notebooks need are one TrainConfig; knob checks reject bad values."""

from __future__ import annotations

import itertools

import pytest

from rs_lib import profiles, store
from rs_lib.presets import backward_smoothing as bs

EXPERIMENTS = sorted(bs.PRESETS)
ADVERSARIAL = sorted(m for m in bs.LABELS if m != "standard")


def _cfg(profile: str, method: str, experiment: str = "bs_comparison", **kwargs):
    return bs.train_config(profiles.resolve(experiment, profile), method, **kwargs)


def _hash(cfg) -> str:
    return store.config_hash(cfg.to_dict())


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("profile", profiles.PROFILES)
def test_every_preset_resolves_and_builds_every_method_config(experiment, profile):
    settings = profiles.resolve(experiment, profile)
    for method in bs.LABELS:
        cfg = bs.train_config(settings, method)
        assert cfg.method == bs.objective_name(settings, method)
        assert cfg.eval_params["eps"] == settings.linf_eps


def test_chapter_has_six_notebook_experiments():
    assert EXPERIMENTS == ["bs_ablations", "bs_beta_tradeoff", "bs_comparison", "bs_hessian", "bs_loss_increment",
                           "bs_stability"]


# ------------------------------------------------------------------ the paper's hyperparameters

# BS §5 "Experimental Setting": eps = 0.031; ResNet-18 on CIFAR-10/100; piecewise decay at the 50th and
# 75th epochs; starting lr 0.1.  arXiv §3: "the best-performing model among 100 epochs" (100 epochs).
# Not in the text, from the BS code (train_trades_backward.py, reference notes §1.2): batch 128,
# momentum 0.9, weight decay 5e-4, decay factor 0.1, crop + flip augmentation.
PAPER_TRAINING = dict(dataset="cifar10", model="resnet18", epochs=100, batch_size=128, optimizer="sgd", lr=0.1,
                      momentum=0.9, weight_decay=5e-4, schedule="piecewise", milestones=(0.5, 0.75), lr_decay=0.1,
                      augment=True, warmup_epochs=0.0, n_train=None)

# BS §5: "For Adversarial Training and TRADES methods, we adopt a 10-step iterative PGD attack with a step
# size of 2/255 for both. For our proposed method, we set the backward smoothing parameter gamma = 1 and step
# size as 8/255. For other fast training methods, we use a step size of 10/255 for Fast AT/GradAlign, 6/255
# for 2-step Fast AT, 6/255 for Fast TRADES and 5/255 for 2-step Fast TRADES."  Steps: one for the fast
# methods, two for the 2-step ones.  Fig. 1's Fast AT without random init: Fast AT's 10/255.
PAPER_STEPS = {  # method: (step size in /255, steps)
    "pgd_at": (2, 10), "trades": (2, 10), "backward_smoothing": (8, 1), "fast_at": (10, 1), "gradalign": (10, None),
    "fast_at_zero": (10, 1), "fast_at_2step": (6, 2), "fast_trades": (6, 1), "fast_trades_2step": (5, 2),
}
# beta: Backward Smoothing 10 (Table 12: best robustness at beta = 10.0; the README command); TRADES 6 (Zhang
# et al. 2019; not restated by BS), Fast TRADES and its 2-step variant 6 (not stated; the BS code's default).
# gamma = 1 (§5). GradAlign: lambda = 0.2 at 8/255 (Andriushchenko & Flammarion 2020).
PAPER_BETAS = {"trades": 6.0, "fast_trades": 6.0, "fast_trades_2step": 6.0, "backward_smoothing": 10.0}


@pytest.mark.parametrize("method", sorted(bs.LABELS))
def test_paper_profile_trains_every_method_with_the_papers_schedule(method):
    cfg = _cfg("paper", method)
    for field, value in PAPER_TRAINING.items():
        assert getattr(cfg, field) == value, field


@pytest.mark.parametrize("method", ADVERSARIAL)
def test_paper_profile_uses_eps_0031(method):
    assert _cfg("paper", method).method_cfg.eps == 0.031


@pytest.mark.parametrize("method", sorted(PAPER_STEPS))
def test_paper_step_sizes_and_steps_are_section_5s(method):
    step_over_255, steps = PAPER_STEPS[method]
    mc = _cfg("paper", method).method_cfg
    assert mc.step_size == pytest.approx(step_over_255 / 255, rel=1e-12)
    if steps is not None:
        assert mc.steps == steps


def test_paper_random_start_is_on_for_fast_at_and_off_without_init():
    assert _cfg("paper", "fast_at").method_cfg.random_start
    assert _cfg("paper", "pgd_at").method_cfg.random_start
    assert not _cfg("paper", "fast_at_zero").method_cfg.random_start
    assert _cfg("paper", "fast_trades").method_cfg.start == "uniform"


@pytest.mark.parametrize("method", sorted(PAPER_BETAS))
def test_paper_betas(method):
    assert _cfg("paper", method).method_cfg.beta == PAPER_BETAS[method]


def test_paper_gamma_and_gradalign_lambda():
    assert _cfg("paper", "backward_smoothing").method_cfg.gamma == 1.0
    assert _cfg("paper", "backward_smoothing").method_cfg.num_points == 1  # App. B: "a single random point"
    assert _cfg("paper", "gradalign").method_cfg.effective_lam == 0.3  # the BS repository's, hard-coded there


def test_paper_profile_trains_the_bs_repositorys_gradalign_and_unclamped_starts():
    """The code behind the paper's numbers: pgd_fast_gradalign.py (lambda 0.3, create_graph on both input
    gradients, x + U(-eps, eps) not clamped) and pgd_fast.py (the same start for Fast AT)."""
    cfg = _cfg("paper", "gradalign")
    assert cfg.method == "gradalign_bs"
    ga = cfg.method_cfg
    assert (ga.lam, ga.backprop_clean, ga.clamp_start, ga.random_start) == (0.3, True, False, True)
    assert ga.step_size == pytest.approx(10 / 255)
    for method in ("fast_at", "pgd_at", "fast_at_2step"):
        assert _cfg("paper", method).method_cfg.clamp_start is False
    for profile in ("smoke", "cpu"):  # GradAlign's own code, Wong et al.'s clamped start
        assert _cfg(profile, "gradalign").method == "gradalign"
        assert _cfg(profile, "gradalign").method_cfg.backprop_clean is False
        assert _cfg(profile, "fast_at").method_cfg.clamp_start is True


def test_paper_autoattack_runs_at_8_over_255():
    """The authors' evaluation script (AutoAttackEval) attacks at 8/255, not the training radius 0.031."""
    settings = profiles.resolve("bs_comparison", "paper")
    assert settings.aa_protocol == "autoattack_standard" and settings.aa_eps == pytest.approx(8 / 255)
    assert profiles.resolve("bs_comparison", "cpu").aa_eps is None  # cpu: the run's own radius


@pytest.mark.parametrize("profile", profiles.PROFILES)
def test_fast_trades_is_in_the_stability_and_ablation_comparisons(profile):
    """Fig. 6 compares Backward Smoothing with Fast TRADES; Tables 8-9's "below a single-step attack"
    needs a single-step attack that has not collapsed (Fast TRADES)."""
    assert "fast_trades" in profiles.resolve("bs_stability", profile).stability_methods
    assert "fast_trades" in profiles.resolve("bs_ablations", profile).variant_methods


def test_paper_variants_use_backward_smoothings_settings():
    # App. B (Tables 8, 9, 15) does not restate them: Backward Smoothing's 8/255, gamma 1, beta 10.
    for method in ("bs_alone", "backward_smoothing_pgd", "odi_pgd", "odi_trades"):
        assert _cfg("paper", method).method_cfg.step_size == pytest.approx(8 / 255)
    assert _cfg("paper", "bs_alone").method_cfg.beta == 10.0
    assert _cfg("paper", "odi_trades").method_cfg.beta == 10.0


def test_paper_evaluation_follows_the_bs_code():
    s = profiles.resolve("bs_comparison", "paper")
    # per-epoch PGD-20, no random start, step 0.0078 ~ eps/4 (the BS code's selection attack); PGD-100 with
    # step 2/255 on the test set (§5) and AutoAttack standard on all 10,000 test images (Table 5)
    val = bs.train_config(s, "backward_smoothing").eval_params
    assert val["pgd_steps"] == 20 and val["pgd_random_start"] is False
    assert val["pgd_step_size"] == pytest.approx(0.0078, abs=1e-4)
    assert s.test_protocols["pgd100_bs"] == 10000
    assert s.aa_protocol == "autoattack_standard" and s.aa_n_test == 10000
    assert s.extra_eps == [4 / 255, 12 / 255]  # Tables 13-14


def test_paper_sweeps_are_the_appendix_grids():
    ablations = profiles.resolve("bs_ablations", "paper")
    steps = [r * ablations.linf_eps * 255 for r in ablations.step_ratio_grid]
    assert steps == pytest.approx([6, 7, 8, 9, 10, 11, 12])  # Table 7
    assert ablations.gamma_grid == [0.1, 0.5, 1.0, 2.0, 5.0]  # Table 11
    assert ablations.num_points_grid == [1, 2, 5, 10]  # Table 10
    assert profiles.resolve("bs_beta_tradeoff", "paper").beta_grid == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]  # Table 12
    stability = profiles.resolve("bs_stability", "paper")
    assert len(stability.seeds) == 10  # §3: "we run Fast AT ... for 10 times"
    assert [r * stability.stability_eps * 255 for r in stability.fast_at_step_ratios] == pytest.approx([6, 8, 10])


def test_paper_hessian_follows_fast_trades_to_epoch_51():
    # §4: "along the training trajectory until Fast TRADES obtains its best robustness (the 51st epoch)"
    s = profiles.resolve("bs_hessian", "paper")
    assert s.hessian_methods == ["fast_trades"]
    assert max(s.hessian_epochs) == 50  # 0-based: the 51st epoch
    assert bs.train_config(s, "fast_trades").keep_epochs == tuple(s.hessian_epochs)


# ------------------------------------------------------------------ cpu scale and sharing


def test_cpu_profile_runs_fashion_mnist_at_the_pilots_radii():
    cfg = _cfg("cpu", "fast_at")
    assert (cfg.dataset, cfg.model, cfg.optimizer, cfg.schedule) == ("fashion-mnist", "wong_mnist", "adam", "cyclic")
    assert profiles.resolve("bs_comparison", "cpu").linf_eps == 0.3  # certain collapse of Fast AT
    assert profiles.resolve("bs_stability", "cpu").stability_eps == 0.25  # seed-dependent collapse
    assert profiles.resolve("bs_loss_increment", "cpu").sanity_eps == 0.1  # no collapse
    assert len(profiles.resolve("bs_stability", "cpu").seeds) >= 5


@pytest.mark.parametrize("profile", profiles.PROFILES)
def test_same_method_is_one_run_in_every_notebook(profile):
    """A run two notebooks need has one TrainConfig, hence one store hash, so it is trained once."""
    for method in bs.LABELS:
        hashes = {_hash(bs.train_config(profiles.resolve(e, profile), method)) for e in EXPERIMENTS}
        assert len(hashes) == 1, method


def test_sweep_value_equal_to_the_default_is_the_default_run():
    s = profiles.resolve("bs_ablations", "cpu")
    base = _hash(bs.train_config(s, "backward_smoothing"))
    assert _hash(bs.train_config(s, "backward_smoothing", step_size=1.0 * s.linf_eps)) == base
    assert _hash(bs.train_config(s, "backward_smoothing", num_points=1)) == base
    assert _hash(bs.train_config(s, "backward_smoothing", beta=s.trades_betas["backward_smoothing"])) == base
    assert _hash(bs.train_config(s, "backward_smoothing", beta=2.0)) != base


def test_only_base_runs_of_hessian_methods_keep_epoch_checkpoints():
    s = profiles.resolve("bs_comparison", "cpu")
    assert bs.train_config(s, "backward_smoothing").keep_epochs == tuple(range(s.epochs))
    assert bs.train_config(s, "backward_smoothing", seed=1).keep_epochs == ()
    assert bs.train_config(s, "backward_smoothing", beta=2.0).keep_epochs == ()
    assert bs.train_config(s, "backward_smoothing", eps=0.25).keep_epochs == ()
    assert bs.train_config(s, "fast_at").keep_epochs == ()


def test_multistep_baselines_get_fewer_images_and_a_warmup_in_cpu():
    s = profiles.resolve("bs_comparison", "cpu")
    for method in bs.MULTISTEP:
        cfg = bs.train_config(s, method)
        assert cfg.n_train == s.multistep_n_train < s.n_train
        assert cfg.warmup_epochs == s.multistep_warmup_epochs > 0
    assert bs.train_config(s, "backward_smoothing").warmup_epochs == 0.0


def test_step_sizes_scale_with_eps_and_validation_follows_the_runs_eps():
    s = profiles.resolve("bs_stability", "cpu")
    cfg = bs.train_config(s, "fast_at", eps=0.25)
    assert cfg.method_cfg.eps == 0.25
    assert cfg.method_cfg.step_size == pytest.approx(s.step_ratios["fast_at"] * 0.25)
    assert cfg.eval_params["eps"] == 0.25 and cfg.eval_params["pgd_step_size"] == pytest.approx(0.25 / 4)
    odi = bs.train_config(s, "odi_trades", eps=0.25).method_cfg
    assert odi.odi_step_size == odi.step_size == pytest.approx(s.step_ratios["odi_trades"] * 0.25)


def test_labels_are_the_paper_table_rows():
    from rs_lib import paper

    rows = set(paper.load("bs_cifar10_resnet18")["method"])
    assert rows <= {bs.LABELS[m] for m in bs.LABELS}


# ------------------------------------------------------------------ knob checks


@pytest.mark.parametrize("knob, value", [
    ("linf_eps", -0.1),
    ("step_ratios", {"no_such_method": 1.0}),
    ("step_ratios", {"fast_at": 0.0}),
    ("trades_betas", {"trades": -1.0}),
    ("test_protocols", {"pgd7": 100}),
    ("test_protocols", {"pgd20_bs": 0}),
    ("aa_protocol", "autoattack"),
    ("compare_methods", []),
    ("compare_methods", ["fast_at", "fgsm"]),
    ("extra_eps", [0.0]),
    ("multistep_n_train", 0),
    ("accel_training", {"optimizer": "adam"}),
    ("accel_training", {"schedule": "one_cycle"}),
    ("accel_methods", ["fgsm"]),
])
def test_bad_knob_raises_value_error_naming_it(knob, value):
    with pytest.raises(ValueError, match=knob):
        profiles.resolve("bs_comparison", "cpu", **{knob: value})


def test_paper_table6_reruns_the_comparison_with_the_bs_codes_cyclic_lr_and_amp():
    s = profiles.resolve("bs_comparison", "paper")
    assert set(s.accel_methods) == set(s.compare_methods) - {"standard"}
    for method in s.accel_methods:
        base = bs.train_config(s, method)
        accel = bs.train_config(s, method, training=s.accel_training)
        # CyclicLR(base_lr=0, max_lr=0.2, step_size_up=1): peak at the first iteration, linear to 0.
        assert (accel.schedule, accel.lr, accel.peak, accel.amp, accel.epochs) == ("cyclic", 0.2, 0.0, True, 30)
        assert accel.replace(schedule=base.schedule, lr=base.lr, peak=base.peak, amp=False, epochs=100,
                             keep_epochs=base.keep_epochs) == base
        assert _hash(accel) != _hash(base)


def test_paper_table4_is_tiny_imagenet_resnet50_through_two_knobs():
    s = profiles.resolve("bs_comparison", "paper", dataset="tiny-imagenet", model="resnet50")
    cfg = bs.train_config(s, "backward_smoothing")
    assert (cfg.dataset, cfg.model, cfg.epochs, cfg.augment) == ("tiny-imagenet", "resnet50", 100, True)
    assert cfg.method_params["eps"] == pytest.approx(0.031)


@pytest.mark.parametrize("value, words", [({"n_train": 0}, "n_train must be"), ({"seed": 3}, "key must be one of")])
def test_bad_long_training_is_refused_naming_it(value, words):
    with pytest.raises(ValueError, match=f"long_training.*{words}"):
        profiles.resolve("bs_loss_increment", "cpu", long_training=value)


def test_cpu_long_fgsm_run_is_the_pilots_30000_x_8_and_differs_only_in_length():
    s = profiles.resolve("bs_loss_increment", "cpu")
    assert s.long_methods == ["fast_at_zero"]
    base = bs.train_config(s, "fast_at_zero")
    long = bs.train_config(s, "fast_at_zero", training=s.long_training)
    assert (long.n_train, long.epochs) == (30000, 8)
    assert long.replace(n_train=base.n_train, epochs=base.epochs) == base


def test_amp_runs_are_refused_on_the_cpu_before_training():
    s = profiles.resolve("bs_comparison", "paper")
    with pytest.raises(ValueError, match="accel_training.*amp.*CUDA"):
        bs.check_training_device(s.accel_training, "cpu", name="accel_training")
    bs.check_training_device({"schedule": "cyclic"}, "cpu")     # no amp: fine on the CPU


def test_empty_lists_allowed_where_a_part_can_be_skipped():
    s = profiles.resolve("bs_comparison", "cpu", extra_eps=[], aa_methods=[])
    assert s.extra_eps == [] and s.aa_methods == []


def test_train_config_rejects_unknown_method_and_bad_eps():
    s = profiles.resolve("bs_comparison", "smoke")
    with pytest.raises(ValueError, match="method"):
        bs.train_config(s, "fgsm_at")
    with pytest.raises(ValueError, match="eps"):
        bs.train_config(s, "fast_at", eps=-1.0)


# ------------------------------------------------------------------ run helpers (tiny smoke run)


def test_robustness_is_computed_once_and_cost_is_per_iteration(results_root, monkeypatch):
    from rs_lib import robustness

    s = profiles.resolve("bs_comparison", "smoke", epochs=1)
    run = bs.fit(s, "fast_at", device="cpu", progress=False)
    assert run.dir.path.parent.name == bs.STORE
    first = bs.robustness(run, protocol="pgd20_bs", n_test=16, device="cpu")
    assert len(list(run.dir.path.glob("robustness-*.json"))) == 1
    monkeypatch.setattr(robustness, "robust_accuracy", lambda *a, **k: pytest.fail("recomputed a cached result"))
    assert bs.robustness(run, protocol="pgd20_bs", n_test=16, device="cpu") == first
    assert 0.0 <= first["robust"] <= first["clean"] <= 1.0 and first["n"] == 16
    assert "PGD-20" in first["label"]
    cost = bs.cost(run)
    assert cost["ms_per_iter"] > 0 and cost["forward"] >= 2 and cost["backward"] >= 2
    with pytest.raises(ValueError, match="which"):
        bs.robustness(run, protocol="pgd20_bs", n_test=16, which="middle")


def test_hash_pairs_differ_between_methods():
    s = profiles.resolve("bs_comparison", "cpu")
    hashes = [_hash(bs.train_config(s, m)) for m in bs.LABELS]
    assert all(a != b for a, b in itertools.combinations(hashes, 2))
