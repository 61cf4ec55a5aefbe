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
