"""Foundations chapter: natural vs Gaussian-noise training (Cohen et al. 2019, §4 and App. B)."""

from __future__ import annotations

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
