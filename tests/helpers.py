"""Small models and training shared by several test modules."""

import torch
import torch.nn.functional as F
from torch import nn


def linear_classifier(w: torch.Tensor, b: float) -> nn.Module:
    """Two-class linear classifier on the flattened input: logits (0, w·x + b), so class 1 iff w·x + b > 0."""
    layer = nn.Linear(w.numel(), 2)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        layer.weight[1] = w
        layer.bias[1] = b
    return nn.Sequential(nn.Flatten(), layer)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 300, lr: float = 3e-3,
        batch_size: int = 64, seed: int = 2) -> nn.Module:
    """Adam on random minibatches of (x, y); returns the model in eval mode with no stale gradients."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()


def recorded_lookups(path) -> set[tuple[str, str]]:
    """The (store, key) pairs appended to ``path`` by rs_lib._record (``$RS_RECORD_KEYS``)."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return set()
    return {(row["store"], row["key"]) for row in map(json.loads, path.read_text().splitlines())}


def assert_lookups_equal_plan(experiment: str, profile: str, record) -> None:
    """The runs and results a notebook looked up (recorded in ``record``) are exactly the plan's
    (certification shards aside: the notebook reads their merge)."""
    from rs_lib import plan

    looked_up = recorded_lookups(record)
    planned = {(j.store, j.key) for j in plan.plan(experiment, profile) if j.kind != "certify_shard"}
    labels = {(j.store, j.key): j.label for j in plan.plan(experiment, profile)}
    assert looked_up, f"{experiment}: nothing recorded in {record}"
    missing = sorted(labels[k] for k in planned - looked_up)
    extra = sorted(looked_up - planned)
    assert not extra, f"{experiment} ({profile}): the notebook looked up {len(extra)} keys its plan lacks: {extra[:5]}"
    assert not missing, f"{experiment} ({profile}): the plan lists {len(missing)} jobs the notebook never used: {missing[:5]}"


def certification(*, n_points, n0, n, alpha, batch_size, sigma=None, seed=0, split="test", which="last"):
    """``smoothing.RunCertification`` from loose keywords (the tests' shorthand)."""
    from rs_lib import smoothing

    settings = smoothing.CertifySettings(n0=n0, n=n, alpha=alpha, batch_size=batch_size)
    return smoothing.RunCertification(settings=settings, n_points=n_points, sigma=sigma, seed=seed, split=split,
                                      which=which)


_RUN_OPTIONS = ("shard", "device", "compile", "progress")


def certify_run(run, **kwargs):
    """``smoothing.certify_run`` with the certification given as loose keywords."""
    from rs_lib import smoothing

    options = {k: kwargs.pop(k) for k in _RUN_OPTIONS if k in kwargs}
    return smoothing.certify_run(run, certification(**kwargs), **options)


def certify_dataset(smooth, *data, n0, n, alpha, batch_size, indices=None, start=0, stop=None, skip=1, **options):
    """``smoothing.certify_dataset`` with CERTIFY's settings and the selection as loose keywords."""
    from rs_lib import smoothing

    return smoothing.certify_dataset(
        smooth, *data, settings=smoothing.CertifySettings(n0=n0, n=n, alpha=alpha, batch_size=batch_size),
        select=smoothing.Selection(indices=indices, start=start, stop=stop, skip=skip), **options)


def prototype_data(n: int, seed: int, num_classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """n noisy copies of num_classes fixed 1x8x8 prototypes in [0, 1] (the evaluation tests' data)."""
    protos = torch.rand((num_classes, 1, 8, 8), generator=torch.Generator().manual_seed(123)) * 0.6 + 0.2
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return (protos[y] + 0.25 * torch.randn((n, 1, 8, 8), generator=g)).clamp(0, 1), y


def tiny_trained_cnn(num_classes: int = 4) -> nn.Module:
    """A tiny BN CNN trained for 300 Adam steps on `prototype_data` (eval mode, ~1 s)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 64, 32), nn.ReLU(), nn.Linear(32, num_classes))
    x, y = prototype_data(2048, seed=1, num_classes=num_classes)
    return fit(model, x, y)
