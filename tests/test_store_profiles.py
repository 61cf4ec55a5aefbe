"""Run store hashing and atomic writes; profile resolution, including the paper profile."""

import pytest

from rs_lib import profiles, store


def test_config_hash_is_stable_and_sensitive():
    a = {"lr": 0.1, "epochs": 10, "method_params": {"sigma": 0.25}}
    assert store.config_hash(a) == store.config_hash(dict(reversed(list(a.items()))))
    assert store.config_hash(a) != store.config_hash({**a, "lr": 0.2})
    assert store.config_hash(a) != store.config_hash({**a, "method_params": {"sigma": 0.5}})


def test_atomic_write_replaces_whole_file_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "x.json"
    store.atomic_write_json(path, {"a": 1})
    store.atomic_write_json(path, {"a": 2})
    assert path.read_text().strip().endswith("}") and '"a": 2' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.json"
    store.atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        store.atomic_write_json(path, {"a": object()})
    assert '"a": 1' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_run_dir_is_not_created_until_asked(tmp_path):
    rd = store.run_dir("exp", {"a": 1}, root=tmp_path)
    assert not rd.path.exists() and not rd.finished
    rd.create()
    assert (rd.path / "config.json").exists() and rd.path.parent.name == "exp"


def test_results_root_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RS_RESULTS", str(tmp_path / "r"))
    assert store.results_root() == tmp_path / "r"


def test_none_override_keeps_the_profile_value_and_others_replace_it():
    s = profiles.resolve("noise_training", "cpu", epochs=None, lr=0.01)
    assert s.epochs == profiles.PRESETS["noise_training"]["cpu"]["epochs"] and s.lr == 0.01


def test_noise_training_paper_profile_is_cohen_et_al():
    s = profiles.resolve("noise_training", "paper")
    cfg = s.train_config(method="gaussian", method_params={"sigma": 0.25})
    assert (cfg.dataset, cfg.model, cfg.epochs, cfg.batch_size) == ("cifar10", "resnet110", 90, 400)
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
    # StepLR(30, 0.1) over 90 epochs: decays after epochs 30 and 60
    assert cfg.schedule == "piecewise" and cfg.lr_decay == 0.1
    assert [round(m * 90) for m in cfg.milestones] == [30, 60]
    assert cfg.augment and set(s.train_sigmas) == {0.12, 0.25, 0.5, 1.0}


@pytest.mark.parametrize("experiment", sorted(profiles.PRESETS))
@pytest.mark.parametrize("profile", profiles.PROFILES)
def test_every_preset_resolves(experiment, profile):
    profiles.resolve(experiment, profile)
