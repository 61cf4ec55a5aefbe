"""Validation metrics (rs_lib.evaluate): the per-epoch FGSM / PGD metrics and their parameter checks.
Tiny CNN on generated data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import prototype_data as make_data, tiny_trained_cnn
from rs_lib import evaluate as E
from rs_lib.train import TrainConfig

NUM_CLASSES = 4
EPS = 0.12


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    return tiny_trained_cnn()


def test_fgsm_and_pgd_validation_metrics_select_on_pgd(trained):
    cfg = TrainConfig(val_metrics=("clean", "fgsm", "pgd"), eval_params={"eps": 0.3}, select_on="pgd")
    assert cfg.select_on == "pgd"
    assert E.pgd_metric_settings({"eps": 0.2}) == {"eps": 0.2, "steps": 20, "step_size": 0.05, "random_start": True}
    x, y = make_data(200, seed=11)
    batches = [(x[:100], y[:100]), (x[100:], y[100:])]
    params = {"eps": EPS, "pgd_steps": 10}
    first = E.evaluate(trained, batches, ["clean", "fgsm", "pgd"], params=params, seed=1)
    again = E.evaluate(trained, batches, ["clean", "fgsm", "pgd"], params=params, seed=1)
    assert first == again and not trained.training
    assert first["pgd_acc"] < first["clean_acc"] and first["fgsm_acc"] < first["clean_acc"]
    assert first["pgd_acc"] <= first["fgsm_acc"] + 0.02


@pytest.mark.parametrize("params,word", [({}, "eps"), ({"eps": -1}, "eps"), ({"eps": 0.1, "pgd_steps": 0}, "pgd_steps"),
                                         ({"eps": 0.1, "pgd_random_start": "yes"}, "pgd_random_start")])
def test_validation_metric_parameters_are_checked_before_training(params, word):
    with pytest.raises(ValueError, match=word):
        TrainConfig(val_metrics=("clean", "pgd"), eval_params=params)
