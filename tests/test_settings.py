"""Typed per-experiment settings (rs_lib.presets._settings): one frozen dataclass of knobs per
experiment; profiles.resolve fills it from a profile and the overrides and validates every knob."""

from __future__ import annotations

import dataclasses

import pytest

from rs_lib import profiles
from rs_lib.presets import backward_smoothing as bs
from rs_lib.presets import smoothing as sp


@pytest.mark.parametrize("profile", profiles.PROFILES)
@pytest.mark.parametrize("experiment", sorted(profiles.SETTINGS))
def test_each_profile_sets_only_its_experiments_knobs_and_resolves_frozen(experiment, profile):
    cls = profiles.SETTINGS[experiment]
    assert dataclasses.is_dataclass(cls) and cls.experiment == experiment
    assert set(profiles.PRESETS[experiment][profile]) <= set(cls.knobs())
    s = profiles.resolve(experiment, profile)
    assert isinstance(s, profiles.Settings) and s.profile == profile
    assert dict(s.values) == {k: getattr(s, k) for k in cls.knobs()}
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.epochs = 1
    with pytest.raises(TypeError):
        s.values["epochs"] = 1


def test_the_chapter_classes_share_their_chapter_knobs():
    assert issubclass(profiles.SETTINGS["bs_stability"], bs.BackwardSmoothingSettings)
    assert issubclass(profiles.SETTINGS["rs_comparison"], sp.SmoothingSettings)
    assert "linf_eps" in profiles.knobs("bs_ablations") and "cert_n" in profiles.knobs("rs_smoothmix_ablations")
    assert "cert_n" not in profiles.knobs("bs_ablations") and "seeds" not in profiles.knobs("bs_ablations")


def test_a_misspelled_override_names_the_known_knobs():
    with pytest.raises(ValueError, match=r"'stability_epz' is not a parameter of experiment 'bs_stability' "
                                         r"\(allowed: .*stability_eps.*\)"):
        profiles.resolve("bs_stability", "cpu", stability_epz=0.1)


@pytest.mark.parametrize("experiment, overrides, name", [
    ("bs_stability", {"seeds": "0"}, "seeds"),
    ("bs_stability", {"seeds": [0, -1]}, r"seeds\[1\]"),
    ("bs_comparison", {"rays_protocol": "nope"}, "rays_protocol"),
    ("bs_loss_increment", {"long_training": {"epoch": 3}}, "long_training"),
    ("bs_hessian", {"weight_hessian": 1}, "weight_hessian"),
    ("rs_smoothmix_ablations", {"interp_ratios": 1}, "interp_ratios"),
    ("rs_smoothadv_attacks", {"vanilla_grid": [[0.5]]}, "vanilla_grid"),
    ("noise_training", {"momentum": 1.5}, "momentum"),           # a training knob, checked by TrainConfig
])
def test_a_bad_value_is_a_value_error_naming_the_knob(experiment, overrides, name):
    with pytest.raises(ValueError, match=name):
        profiles.resolve(experiment, "smoke", **overrides)


def test_a_training_knob_a_profile_leaves_out_takes_the_loop_default_so_configs_do_not_change():
    s = profiles.resolve("bs_comparison", "smoke")
    assert "momentum" not in profiles.PRESETS["bs_comparison"]["smoke"]
    assert s.momentum == 0.9 and s.train_config().momentum == 0.9
    assert profiles.resolve("bs_comparison", "smoke", momentum=0.5).train_config().momentum == 0.5
