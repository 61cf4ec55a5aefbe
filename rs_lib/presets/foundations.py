"""Foundations chapter: natural vs Gaussian-noise training (Cohen et al. 2019, §4 and App. B)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .. import _validate as check
from ._checks import list_of
from ._settings import TrainKnobs, knob


@dataclass(frozen=True, kw_only=True)
class NoiseTraining(TrainKnobs):
    """``noise_training``: natural and Gaussian-noise models (one per ``train_sigmas``), each
    tested on ``n_test`` images under noise of each of ``eval_sigmas``."""

    experiment: ClassVar[str] = "noise_training"
    train_sigmas: list[float] = knob(list_of(check.positive))
    eval_sigmas: list[float] = knob(list_of(check.non_negative))
    n_test: int = knob(check.positive_int)


SETTINGS = {"noise_training": NoiseTraining}

PRESETS = {
    "noise_training": {
        "smoke": dict(dataset="synthetic", model="lenet", epochs=2, batch_size=64, n_train=512, n_val=128,
                      optimizer="sgd", lr=0.05, schedule="constant", weight_decay=5e-4, augment=False,
                      train_sigmas=[0.5], eval_sigmas=[0.0, 0.5, 1.0], n_test=128, seed=0),
        "cpu": dict(dataset="fashion-mnist", model="lenet", epochs=4, batch_size=128, n_train=20000,
                    n_val=1000, optimizer="sgd", lr=0.05, schedule="piecewise", milestones=(0.5, 0.75),
                    weight_decay=1e-4, augment=False, train_sigmas=[0.25, 0.5, 1.0],
                    eval_sigmas=[0.0, 0.12, 0.25, 0.5, 0.75, 1.0], n_test=10000, seed=0),
        # Cohen et al.: CIFAR-10 ResNet-110, 90 epochs, SGD lr 0.1 / 10 every 30 epochs, momentum 0.9,
        # weight decay 1e-4, batch 400 in the paper's commands; sigma in {0.12, 0.25, 0.5, 1.0}.
        "paper": dict(dataset="cifar10", model="resnet110", epochs=90, batch_size=400, n_train=None,
                      n_val=1000, optimizer="sgd", lr=0.1, schedule="piecewise", milestones=(1 / 3, 2 / 3),
                      weight_decay=1e-4, augment=True, train_sigmas=[0.12, 0.25, 0.5, 1.0],
                      eval_sigmas=[0.0, 0.12, 0.25, 0.5, 0.75, 1.0], n_test=10000, seed=0),
    },
}

#: The run-store experiment of the chapter's notebook.
STORE = "noise_training"


def noise_runs(settings: Any) -> dict[str, Any]:
    """The notebook's models by label: natural training, then Gaussian-noise training
    (Cohen et al. §4) at each of ``settings.train_sigmas``."""
    configs = {"standard": settings.train_config(method="standard")}
    for s in settings.train_sigmas:
        configs[f"gaussian σ={s}"] = settings.train_config(method="gaussian", method_params={"sigma": s})
    return configs


def noisy_accuracy_params(settings: Any) -> dict[str, Any]:
    """What :func:`noisy_accuracy`'s cached result depends on."""
    return {"eval_sigmas": settings.eval_sigmas, "n_test": settings.n_test}


def noisy_accuracy(run: Any, settings: Any, *, device: str = "auto") -> dict[float, float]:
    """Accuracy of a run's best model on the first ``n_test`` test images under Gaussian noise of
    each of ``eval_sigmas`` (Cohen et al. App. B: the base classifier under noise), keyed by the
    sigmas of ``eval_sigmas`` themselves (the cached file keys them by ``str(sigma)``: JSON keys are
    strings); computed once, then read from the run directory."""
    from .. import data, evaluate, models

    def compute() -> dict[str, float]:
        test = data.load(settings.dataset, "test", n=settings.n_test)
        model = run.load_model("best", device=device)
        batches = list(data.batches(test, 500, shuffle=False, augment=False,
                                    device=models.device_of(model)))
        acc = evaluate.accuracy_under_noise(model, batches, settings.eval_sigmas, seed=settings.seed)
        return {str(k): v for k, v in acc.items()}

    stored = run.cached("noisy_accuracy", noisy_accuracy_params(settings), compute)
    return {sigma: stored[str(sigma)] for sigma in settings.eval_sigmas}
