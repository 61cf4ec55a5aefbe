"""Bad input gets a clear error naming the argument, before anything is written to the store."""

import pytest

from rs_lib import profiles
from rs_lib.__main__ import main
from rs_lib.train import TrainConfig, run_training

BASE = dict(dataset="synthetic", model="lenet", epochs=1, batch_size=32, n_train=64, n_val=32)

API_CASES = [
    ({"method": "nope"}, "method"),
    ({"dataset": "imagenet-21k"}, "dataset"),
    ({"model": "vgg99"}, "model"),
    ({"method": "gaussian", "method_params": {"sigma": -0.5}}, "sigma"),
    ({"method": "gaussian", "method_params": {"sigma": 0.0}}, "sigma"),
    ({"method": "gaussian", "method_params": {"noise": 0.5}}, "noise"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -0.1}, "lr"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": -8}, "batch_size"),
    ({"n_train": 0}, "n_train"),
    ({"optimizer": "lbfgs"}, "optimizer"),
    ({"schedule": "exponential"}, "schedule"),
    ({"milestones": (0.75, 0.5)}, "milestones"),
    ({"milestones": (1.5,)}, "milestones"),
    ({"momentum": 1.5}, "momentum"),
    ({"weight_decay": -1e-4}, "weight_decay"),
    ({"val_metrics": ("clean", "telepathy")}, "val_metrics"),
    ({"select_on": "gaussian"}, "select_on"),
    ({"val_metrics": ("gaussian",), "select_on": "gaussian"}, "sigma"),
    ({"epochs": 2.5}, "epochs"),
    ({"seed": -1}, "seed"),
]


@pytest.mark.parametrize("change,name", API_CASES)
def test_bad_train_config_is_rejected_naming_the_argument(change, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**{**BASE, **change})


RUN_CASES = [
    ({"device": "tpu"}, "device"),
    ({"threads": 0}, "threads"),
    ({"experiment": "a/b"}, "experiment"),
]


@pytest.mark.parametrize("kwargs,name", RUN_CASES)
def test_bad_run_arguments_write_nothing(tmp_path, kwargs, name):
    root = tmp_path / "store"
    with pytest.raises(ValueError, match=name):
        run_training(TrainConfig(**BASE), root=root, progress=False, **kwargs)
    assert not root.exists()


def test_data_root_that_is_a_file_is_rejected(tmp_path):
    afile = tmp_path / "not_a_dir"
    afile.write_text("x")
    with pytest.raises(ValueError, match="data_root"):
        run_training(TrainConfig(**BASE), root=tmp_path / "store", data_root=afile, progress=False)
    assert not (tmp_path / "store").exists()


def test_amp_on_cpu_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="amp"):
        run_training(TrainConfig(**{**BASE, "amp": True}), root=tmp_path / "s", device="cpu", progress=False)
    assert not (tmp_path / "s").exists()


CLI_CASES = [
    (["--method", "nope"], "method"),
    (["--dataset", "nope"], "dataset"),
    (["--model", "nope"], "model"),
    (["--method", "gaussian", "--param", "sigma=-1"], "sigma"),
    (["--method", "gaussian", "--param", "sigma"], "--param"),
    (["--lr", "-0.1"], "lr"),
    (["--lr", "0"], "lr"),
    (["--epochs", "0"], "epochs"),
    (["--batch-size", "-1"], "batch_size"),
    (["--optimizer", "rmsprop"], "optimizer"),
    (["--device", "quantum"], "device"),
    (["--threads", "0"], "threads"),
    (["--schedule", "nope"], "schedule"),
    (["--n-train", "0"], "n_train"),
]


@pytest.mark.parametrize("args,name", CLI_CASES)
def test_cli_rejects_bad_input_naming_the_argument(tmp_path, capsys, args, name):
    root = tmp_path / "store"
    code = main(["train", "--dataset", "synthetic", "--model", "lenet", "--results", str(root),
                 "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and name in err
    assert not root.exists()


def test_cli_rejects_data_root_that_is_not_a_directory(tmp_path, capsys):
    afile = tmp_path / "file"
    afile.write_text("")
    code = main(["train", "--dataset", "synthetic", "--results", str(tmp_path / "s"), "--data-root", str(afile)])
    assert code == 2 and "data_root" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_cli_book_rejects_unknown_profile(capsys):
    assert main(["book", "--profile", "huge", "--no-build"]) == 2
    assert "--profile" in capsys.readouterr().err


def test_cli_book_rejects_zero_threads(capsys):
    assert main(["book", "--profile", "smoke", "--threads", "0", "--no-build", "--notebooks", "noise_training"]) == 2
    assert "threads" in capsys.readouterr().err


@pytest.mark.parametrize("overrides,name", [
    ({"epochs": 0}, "epochs"),
    ({"train_sigmas": [0.25, -1.0]}, "train_sigmas"),
    ({"n_test": 0}, "n_test"),
    ({"unknown_knob": 3}, "unknown_knob"),
])
def test_profile_overrides_are_validated(overrides, name):
    with pytest.raises(ValueError, match=name):
        profiles.resolve("noise_training", "cpu", **overrides)


def test_unknown_profile_and_experiment_are_rejected():
    with pytest.raises(ValueError, match="profile"):
        profiles.resolve("noise_training", "gpu")
    with pytest.raises(ValueError, match="experiment"):
        profiles.resolve("nope", "cpu")
