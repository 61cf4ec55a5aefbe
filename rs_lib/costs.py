"""GPU-hour estimates of a plan's jobs: seconds per training iteration and certify samples per second.

The defaults are derived from numbers the papers state, on the GPUs they name:

- training, ResNet-18 on CIFAR-10 at batch 128: Backward Smoothing (Chen et al., AAAI), Table 2,
  minutes on an RTX 2080 Ti for 100 epochs (Experimental Setting: piecewise decay at epochs 50 and
  75) of 50,000 / 128 = 391 iterations: s/iter = minutes * 60 / 39,100.  These are the entries of
  :data:`PAPER_TRAIN`;
- training, any other (model, method): the same GPU's cost of one pass, ``c`` seconds per
  batch-equivalent forward (a backward counted as two forwards), fitted by least squares to those
  Table 2 rows through the methods' own pass counts (``Passes``), scaled by the model's forward
  FLOPs at its dataset's input shape relative to ResNet-18 on CIFAR-10 (counted by
  ``torch.utils.flop_counter`` on the real model) and by batch size / 128;
- certification (and every other job counted in noisy forwards): Cohen et al. (2019), about 15 s
  per CIFAR-10 input at n0 + n = 100,100 for ResNet-110 on a GTX 1080 Ti
  (``../shared/reference/smoothing_reference.md`` §5.1), i.e. about 6,670 noisy samples/s; other
  models scaled by forward FLOPs relative to ResNet-110;
- PGD-k robust accuracy: (3k + 1) forwards per image at the fitted pass cost; AutoAttack, RayS and
  the curvature traces have no estimate (their cost depends on how robust the model is).
- AMP: no speed-up is assumed (Table 6's cyclic+AMP minutes match Table 2's per-epoch cost at the
  shorter schedule, so the paper's own numbers show none on that GPU); a measured ``.../amp`` entry
  from the GPU check replaces this.

:func:`load_table` overlays the measurements of ``benchmarks/gpu_check.json`` (written by
``benchmarks/gpu_check.py``: ``{"train": {"<model>/<method>[/amp]": {"s_per_iter", "batch_size"}},
"certify": {"<model>": {"samples_per_s", ...}}}``), which are used instead wherever they exist.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
GPU_CHECK = REPO_ROOT / "benchmarks" / "gpu_check.json"

#: BS Table 2 (AAAI), minutes for ResNet-18 / CIFAR-10 / 100 epochs on an RTX 2080 Ti.
TABLE2_MINUTES = {"pgd_at": 430, "fast_at": 82, "fast_at_2step": 127, "gradalign": 402, "trades": 482,
                  "fast_trades": 126, "fast_trades_2step": 164, "backward_smoothing": 164}
TABLE2_ITERATIONS = 100 * 391
REFERENCE_BATCH = 128
#: seconds per iteration, ResNet-18 on CIFAR-10, batch 128, RTX 2080 Ti (BS Table 2).
PAPER_TRAIN = {f"resnet18/{m}": minutes * 60 / TABLE2_ITERATIONS for m, minutes in TABLE2_MINUTES.items()}
#: noisy samples per second of ResNet-110 on CIFAR-10 (Cohen et al.: ~15 s per input at n = 100,100).
COHEN_RESNET110_SAMPLES_PER_S = 100_100 / 15.0


@dataclass(frozen=True)
class CostTable:
    """Seconds per training iteration per ``model/method[/amp]`` and certify samples/s per model."""

    train_s_per_iter: Mapping[str, float] = field(default_factory=lambda: dict(PAPER_TRAIN))
    train_batch: Mapping[str, int] = field(default_factory=dict)
    certify_samples_per_s: Mapping[str, float] = field(default_factory=dict)
    source: str = "papers (BS Table 2, RTX 2080 Ti; Cohen et al., 1080 Ti)"

    def train_seconds(self, cost: Mapping[str, Any], method_params: Mapping[str, Any] | None = None) -> float:
        """Estimated seconds of a training job from its ``cost`` inputs (model, method, dataset,
        iterations, batch_size, amp) and the method's hyperparameters (default: the paper's)."""
        model, method, amp = cost["model"], cost["method"], bool(cost.get("amp", False))
        batch = int(cost.get("batch_size") or REFERENCE_BATCH)
        for key in ([f"{model}/{method}/amp"] if amp else []) + [f"{model}/{method}"]:
            if key in self.train_s_per_iter and _paper_defaults(method, method_params):
                measured_batch = self.train_batch.get(key, REFERENCE_BATCH)
                return self.train_s_per_iter[key] * batch / measured_batch * int(cost["iterations"])
        per_iter = (forward_seconds(model, cost["dataset"]) * weighted_passes(method, method_params)
                    * batch / REFERENCE_BATCH)
        return per_iter * int(cost["iterations"])

    def noisy_seconds(self, cost: Mapping[str, Any]) -> float:
        """Estimated seconds of ``samples`` noisy forwards (certification, noisy accuracy, attacks on
        the smoothed classifier) at the model's certify rate."""
        model = cost["model"]
        rate = self.certify_samples_per_s.get(model)
        if rate is None:
            rate = COHEN_RESNET110_SAMPLES_PER_S / relative_flops(model, cost["dataset"], "resnet110", "cifar10")
        return int(cost["samples"]) / rate

    def seconds(self, kind: str, cost: Mapping[str, Any], spec: Mapping[str, Any] | None = None) -> float | None:
        """Estimated GPU seconds of a plan job, or None when its inputs do not allow an estimate
        (AutoAttack, RayS and curvature evaluations: their cost depends on the model's robustness)."""
        spec = spec or {}
        try:
            if kind == "train":
                return self.train_seconds(cost, dict(spec.get("config", {})).get("method_params"))
            if kind == "certify_merge":
                return 0.0                               # concatenates the shards' files
            if int(cost.get("samples") or 0) > 0:
                return self.noisy_seconds(cost)
            steps = _pgd_steps(cost.get("protocol") or dict(spec.get("kwargs") or {}).get("protocol", ""))
            if steps is not None and int(cost.get("images") or 0) > 0:
                # PGD-k: k input-gradient steps (a forward and a backward, = 3 forwards) + 1 forward
                per_image = forward_seconds(cost["model"], cost["dataset"]) / REFERENCE_BATCH
                return int(cost["images"]) * (3 * steps + 1) * per_image
        except (KeyError, ValueError, TypeError):
            return None
        return None


def _pgd_steps(protocol: str) -> int | None:
    """k of a PGD-k protocol name (``pgd20_bs`` -> 20), None for any other protocol."""
    match = re.fullmatch(r"pgd(\d+)_\w+", str(protocol))
    return int(match.group(1)) if match else None


def forward_seconds(model: str, dataset: str) -> float:
    """Seconds of one batch-of-128 forward of ``model`` on ``dataset``'s inputs: ResNet-18's fitted
    pass cost (:func:`pass_seconds`) scaled by forward FLOPs."""
    return pass_seconds() * relative_flops(model, dataset, "resnet18", "cifar10")


def _paper_defaults(method: str, method_params: Mapping[str, Any] | None) -> bool:
    """Are ``method_params`` the method's defaults (the setting the measured entry was taken at)?"""
    from . import methods

    return methods.method_config(method, dict(method_params or {})) == methods.method_config(method, {})


def weighted_passes(method: str, method_params: Mapping[str, Any] | None = None) -> float:
    """Forward + 2 x backward (+ 3 x double backward) batch-equivalents of one iteration of
    ``method`` at ``method_params`` (default: the paper's), from the method's own pass counts."""
    from . import methods

    passes = methods.get_method(method).passes(methods.method_config(method, dict(method_params or {})))
    return passes.forward + 2 * passes.backward + 3 * passes.double_backward


@functools.cache
def pass_seconds() -> float:
    """Seconds of one batch-equivalent forward of ResNet-18 (batch 128, RTX 2080 Ti): the least-squares
    fit of BS Table 2's seconds per iteration to the methods' weighted pass counts."""
    xs = [weighted_passes(m) for m in TABLE2_MINUTES]
    ys = [PAPER_TRAIN[f"resnet18/{m}"] for m in TABLE2_MINUTES]
    return sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)


@functools.cache
def model_flops(model: str, dataset: str) -> int:
    """Forward FLOPs of one input of ``dataset``'s shape through ``model`` (torch's flop counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from . import data, models

    info = data.dataset_info(dataset)
    net = models.build_model(model, in_channels=info.shape[0], num_classes=info.num_classes,
                             mean=info.mean, std=info.std, image_size=tuple(info.shape[1:])).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, *info.shape))
    return int(counter.get_total_flops())


def relative_flops(model: str, dataset: str, ref_model: str, ref_dataset: str) -> float:
    return model_flops(model, dataset) / model_flops(ref_model, ref_dataset)


def load_table(path: str | Path | None = None) -> CostTable:
    """The default table, with the GPU check's measurements (``benchmarks/gpu_check.json``, or
    ``path``) on top where that file exists."""
    path = GPU_CHECK if path is None else Path(path)
    if not path.is_file():
        return CostTable()
    try:
        check = json.loads(path.read_text(encoding="utf-8"))
        train = {k: float(v["s_per_iter"]) for k, v in check.get("train", {}).items()}
        batch = {k: int(v["batch_size"]) for k, v in check.get("train", {}).items()}
        certify = {k: float(v["samples_per_s"]) for k, v in check.get("certify", {}).items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: not a GPU check file ({err}); rerun benchmarks/gpu_check.py "
                         f"or delete it") from None
    return CostTable(train_s_per_iter={**PAPER_TRAIN, **train}, train_batch=batch,
                     certify_samples_per_s=certify,
                     source=f"{path.name} ({check.get('device', 'unknown GPU')}) over the papers' numbers")
