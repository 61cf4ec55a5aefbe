"""The architectures of the three papers, each behind its normalisation layer.

Every model built here takes images in [0, 1] and normalises them in its first layer
(:class:`Normalized`), so that attacks, eps-balls, Gaussian noise and certified radii all live in
pixel space, as in Cohen et al.'s ``NormalizeLayer`` and the Backward Smoothing repository's
``DataAugmentModel`` (reference notes: ``smoothing_reference.md`` §2.1,
``robust_training_reference.md`` §1.2).

Architectures (parameter counts for 10 classes at the papers' input size):

========================  =====================================================  ============
name                      used by                                                params
========================  =====================================================  ============
``lenet``                 SmoothMix, MNIST (1x28x28)                             431,080
``small_cnn``             TRADES, MNIST (1x28x28); dropout 0.5 in the classifier 312,202
``wong_mnist``            Fast AT (Wong et al.), MNIST (1x28x28)                 166,406
``resnet18``              Backward Smoothing ``--arch resnet`` (CIFAR, kuangliu) 11,173,962
``preact_resnet18``       GradAlign / Fast AT (CIFAR), GradAlign's variant       11,171,146
``resnet20``              Cohen / SmoothAdv / SmoothMix (CIFAR, 6n+2, n=3)       272,474
``resnet110``             Cohen / SmoothAdv / SmoothMix (CIFAR, 6n+2, n=18)      1,730,714
``wrn34_10``              TRADES, Backward Smoothing ``--arch wrn`` (CIFAR)      46,160,474
``resnet50``              Cohen / SmoothAdv ImageNet (torchvision, 3x224x224)    23,528,522
========================  =====================================================  ============

Attribute names follow the reference implementations (``conv1``, ``bn1``, ``layer1``, ``shortcut``,
``downsample``, ``block1``, ``fc`` ...) so that a released state dict maps onto ours by renaming its
normalisation prefix only.  The fixed-size networks (``lenet``, ``small_cnn``, ``wong_mnist``)
compute their flattened feature size from ``image_size``; the residual networks end in adaptive
average pooling, which equals the references' fixed pooling at 32x32 (resp. 224x224) and lets
them run on 28x28 images with the same parameters.  No ``view`` on activations: ``flatten`` keeps
``channels_last`` inputs working.

Public names: `build_model`, `model_info`, `Normalized`, the architecture classes and builders
above, and two helpers every other module uses for a built model: `device_of` (its device) and
`mode` (a train/eval phase that restores the previous mode).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from rs_lib import _validate

__all__ = [
    "MODELS",
    "LeNet",
    "Normalized",
    "PreActResNet18",
    "ResNet18",
    "CifarResNet",
    "SmallCNN",
    "WideResNet",
    "WongMNISTNet",
    "build_model",
    "model_info",
    "resnet20",
    "resnet110",
    "wrn34_10",
]

ImageSize = tuple[int, int]


# --------------------------------------------------------------------------------------------
# Normalisation layer
# --------------------------------------------------------------------------------------------


def _channel_stats(name: str, value: float | Sequence[float] | torch.Tensor, *,
                   strictly_positive: bool) -> torch.Tensor:
    """A per-channel statistic as a float32 tensor of shape (1, C, 1, 1), validated."""
    if isinstance(value, torch.Tensor):
        values = value.detach().flatten().tolist()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        values = [value]
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0:
        values = list(value)
    else:
        raise ValueError(f"{name} must be a number or a non-empty sequence of numbers "
                         f"(one per channel), got {value!r}")
    for i, v in enumerate(values):
        if strictly_positive:
            _validate.positive(f"{name}[{i}]", v)
        else:
            _validate.number(f"{name}[{i}]", v)
    return torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1, 1)


class Normalized(nn.Module):
    """``model((x - mean) / std)``: per-channel normalisation as the model's first layer.

    The model then takes images in [0, 1] (pixel space), so that an attack's ``eps``, the noise
    level ``sigma`` and a certified l2 radius are all in pixel units (Cohen et al. 2019, §4;
    Salman et al. 2019, App. A). ``mean`` and ``std`` are buffers of shape (1, C, 1, 1): they follow
    ``.to(device)`` and are saved in the ``state_dict``. A single value (or a length-1 sequence)
    broadcasts over all channels; ``mean=0, std=1`` is the identity (SmoothMix's MNIST LeNet).

    Args:
        model: the network that receives the normalised input.
        mean: per-channel mean, in [0, 1] pixel units.
        std: per-channel standard deviation, > 0.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: float | Sequence[float] | torch.Tensor,
                 std: float | Sequence[float] | torch.Tensor) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        mean_t = _channel_stats("mean", mean, strictly_positive=False)
        std_t = _channel_stats("std", std, strictly_positive=True)
        if mean_t.shape[1] != std_t.shape[1] and 1 not in (mean_t.shape[1], std_t.shape[1]):
            raise ValueError(f"mean and std must have the same number of channels (or one of them "
                             f"1), got {mean_t.shape[1]} and {std_t.shape[1]}")
        self.model = model
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


# --------------------------------------------------------------------------------------------
# Small fixed-input-size networks (MNIST family)
# --------------------------------------------------------------------------------------------


def _conv_out(size: int, kernel: int, *, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution or pooling along one spatial axis (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def _feature_size(image_size: ImageSize, layers: Sequence[tuple[int, int, int]], *, arch: str
                  ) -> ImageSize:
    """Spatial size after ``layers`` = [(kernel, stride, padding), ...]; ValueError if it vanishes."""
    h, w = image_size
    for kernel, stride, padding in layers:
        h = _conv_out(h, kernel, stride=stride, padding=padding)
        w = _conv_out(w, kernel, stride=stride, padding=padding)
        if h < 1 or w < 1:
            raise ValueError(f"image_size={image_size} is too small for {arch}: its feature map "
                             f"shrinks to nothing")
    return h, w


class _FixedInputNet(nn.Module):
    """A network whose classifier size depends on the input size: checks it in ``forward``."""

    arch_name: str = ""

    def __init__(self, image_size: ImageSize) -> None:
        super().__init__()
        self.image_size = image_size

    def _check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[-2:]) != self.image_size:
            h, w = self.image_size
            raise ValueError(f"{self.arch_name} was built for {h}x{w} inputs but got "
                             f"{x.shape[-2]}x{x.shape[-1]}; build it with image_size="
                             f"{tuple(x.shape[-2:])}")


class LeNet(_FixedInputNet):
    """SmoothMix's MNIST LeNet (Jeong et al. 2021, ``archs/lenet.py``).

    conv(C->20, 5x5) ReLU maxpool2, conv(20->50, 5x5) ReLU maxpool2, fc(50*4*4=800 -> 500) ReLU,
    fc(500 -> classes). 431,080 parameters at 1x28x28 with 10 classes. PyTorch's default init.
    """

    arch_name = "lenet"

    def __init__(self, *, in_channels: int = 1, num_classes: int = 10,
                 image_size: ImageSize = (28, 28)) -> None:
        super().__init__(image_size)
        h, w = _feature_size(image_size, [(5, 1, 0), (2, 2, 0), (5, 1, 0), (2, 2, 0)],
                             arch=self.arch_name)
        self.conv1 = nn.Conv2d(in_channels, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.fc1 = nn.Linear(50 * h * w, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


class SmallCNN(_FixedInputNet):
    """TRADES' MNIST SmallCNN (Zhang et al. 2019, ``models/small_cnn.py``).

    Features: conv 32, conv 32, maxpool2, conv 64, conv 64, maxpool2 (3x3 kernels, no padding,
    ReLU after each conv). Classifier: fc(64*4*4=1024 -> 200) ReLU **dropout(0.5)**
    fc(200 -> 200) ReLU fc(200 -> classes). 312,202 parameters at 1x28x28 with 10 classes.

    The dropout is the reference's: in train mode the network is random, so an attack run in train
    mode sees a different network at each step (TRADES attacks in eval mode). Pass ``dropout=0``
    for a deterministic network. Init as the reference: He-normal convs (fan-in) with zero bias,
    default linear layers, and a **zero last layer** (all logits 0 at initialisation).
    """

    arch_name = "small_cnn"

    def __init__(self, *, in_channels: int = 1, num_classes: int = 10,
                 image_size: ImageSize = (28, 28), dropout: float = 0.5) -> None:
        super().__init__(image_size)
        _validate.probability("dropout", dropout, open_interval=False)
        if dropout == 1.0:
            raise ValueError("dropout must be in [0, 1), got 1.0")
        h, w = _feature_size(image_size, [(3, 1, 0), (3, 1, 0), (2, 2, 0), (3, 1, 0), (3, 1, 0),
                                          (2, 2, 0)], arch=self.arch_name)
        self.feature_extractor = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(),
            nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(),
            nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * h * w, 200), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, num_classes),
        )
        for m in self.feature_extractor:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
        last = self.classifier[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.classifier(torch.flatten(self.feature_extractor(x), 1))


class WongMNISTNet(_FixedInputNet):
    """Wong et al.'s Fast-AT MNIST network (``MNIST/mnist_net.py``).

    conv(C->16, 4x4, stride 2, pad 1) ReLU, conv(16->32, 4x4, stride 2, pad 1) ReLU, flatten,
    fc(32*7*7=1568 -> 100) ReLU, fc(100 -> classes). 166,406 parameters at 1x28x28, 10 classes.
    """

    arch_name = "wong_mnist"

    def __init__(self, *, in_channels: int = 1, num_classes: int = 10,
                 image_size: ImageSize = (28, 28)) -> None:
        super().__init__(image_size)
        h, w = _feature_size(image_size, [(4, 2, 1), (4, 2, 1)], arch=self.arch_name)
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=4, stride=2, padding=1)
        self.fc1 = nn.Linear(32 * h * w, 100)
        self.fc2 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


# --------------------------------------------------------------------------------------------
# Residual networks (CIFAR family)
# --------------------------------------------------------------------------------------------


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _projection(in_planes: int, out_planes: int, stride: int, *, batch_norm: bool) -> nn.Module:
    """1x1 strided convolution (+ BatchNorm) for a shortcut whose shape changes."""
    conv = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_planes)) if batch_norm else nn.Sequential(conv)


class _BasicBlock(nn.Module):
    """Post-activation residual block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)).

    The shortcut is the identity, or a 1x1 conv + BN when the stride or the width changes
    (He et al. 2016, option B), as in both kuangliu's ResNet-18 and the bearpaw/Cohen CIFAR ResNet.
    ``shortcut_name`` only picks the attribute name each reference uses.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, *,
                 shortcut_name: str = "shortcut") -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self._shortcut_name = shortcut_name
        needs_projection = stride != 1 or in_planes != planes
        setattr(self, shortcut_name,
                _projection(in_planes, planes, stride, batch_norm=True) if needs_projection
                else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + getattr(self, self._shortcut_name)(x))


class _PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016b): conv(relu(bn(conv(relu(bn(x)))))) + sc.

    The projection shortcut (1x1 conv, no BN; used when the stride or width changes) reads the raw
    input x in GradAlign's code and the pre-activated relu(bn(x)) in kuangliu's / Wong et al.'s
    (``shortcut_preact``).
    """

    def __init__(self, in_planes: int, planes: int, stride: int, *,
                 shortcut_preact: bool = False) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.shortcut_preact = shortcut_preact
        self.shortcut = (_projection(in_planes, planes, stride, batch_norm=False)
                         if stride != 1 or in_planes != planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        if self.shortcut is None:
            shortcut = x
        else:
            shortcut = self.shortcut(out if self.shortcut_preact else x)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


def _stage(block: Callable[..., nn.Module], in_planes: int, planes: int, num_blocks: int,
           stride: int, **kwargs: Any) -> nn.Sequential:
    """``num_blocks`` blocks; the first one carries the stride and the width change."""
    blocks = [block(in_planes, planes, stride, **kwargs)]
    blocks += [block(planes, planes, 1, **kwargs) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class ResNet18(nn.Module):
    """kuangliu-style CIFAR ResNet-18: the Backward Smoothing repository's ``--arch resnet``.

    3x3 stem (64 channels, BN, ReLU; no max-pool), four stages of two basic blocks with widths
    64-128-256-512 and strides 1-2-2-2, global average pooling (= ``avg_pool2d(4)`` at 32x32),
    fc(512 -> classes). 11,173,962 parameters for 10 classes. PyTorch's default init.
    """

    def __init__(self, *, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, 64)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = _stage(_BasicBlock, 64, 64, 2, 1)
        self.layer2 = _stage(_BasicBlock, 64, 128, 2, 2)
        self.layer3 = _stage(_BasicBlock, 128, 256, 2, 2)
        self.layer4 = _stage(_BasicBlock, 256, 512, 2, 2)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 of GradAlign (Andriushchenko & Flammarion 2020) and Fast AT (Wong et al.).

    3x3 stem (64 channels, no BN), four stages of two pre-activation blocks (64-128-256-512,
    strides 1-2-2-2), global average pooling (= ``avg_pool2d(4)`` at 32x32), fc(512 -> classes);
    PyTorch's default init. Two lineages differ in details that matter for reproducing them:

    * ``variant="gradalign"`` (default; ``tml-epfl/understanding-fast-adv-training/models.py``):
      projection shortcuts read the raw block input, no BN after the last stage.
      11,171,146 parameters for 10 classes.
    * ``variant="wong"`` (``locuslab/fast_adversarial/CIFAR10/preact_resnet.py``, after kuangliu):
      projection shortcuts read the pre-activated input, and a final BN + ReLU precedes the
      pooling. 11,172,170 parameters (the final BN adds 2 x 512).
    """

    VARIANTS = ("gradalign", "wong")

    def __init__(self, *, in_channels: int = 3, num_classes: int = 10,
                 variant: str = "gradalign") -> None:
        super().__init__()
        _validate.choice("variant", variant, self.VARIANTS)
        self.variant = variant
        preact = variant == "wong"
        self.conv1 = _conv3x3(in_channels, 64)
        self.layer1 = _stage(_PreActBlock, 64, 64, 2, 1, shortcut_preact=preact)
        self.layer2 = _stage(_PreActBlock, 64, 128, 2, 2, shortcut_preact=preact)
        self.layer3 = _stage(_PreActBlock, 128, 256, 2, 2, shortcut_preact=preact)
        self.layer4 = _stage(_PreActBlock, 256, 512, 2, 2, shortcut_preact=preact)
        self.bn = nn.BatchNorm2d(512) if variant == "wong" else None
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        if self.bn is not None:
            out = F.relu(self.bn(out))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def _he_normal_fan_out(module: nn.Module) -> None:
    """Conv weights ~ N(0, 2 / (k*k*out_channels)), BN weight 1 and bias 0 (He et al. 2015).

    The init of the bearpaw/Cohen CIFAR ResNet and of TRADES' WideResNet.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth 6n+2 (He et al. 2016, §4.2), as in Cohen et al., SmoothAdv, SmoothMix.

    (bearpaw/pytorch-classification ``cifar_resnet.py``.) conv3x3(C->16) BN ReLU, three stages of
    n basic blocks with widths 16/32/64 and strides 1/2/2 (projection shortcut 1x1 conv + BN when
    the shape changes), global average pooling (= the 8x8 average pool at 32x32), fc(64 ->
    classes). No conv bias; He-normal (fan-out) conv init, BN 1/0. ResNet-20 (n=3): 272,474
    parameters; ResNet-110 (n=18): 1,730,714 (10 classes).
    """

    def __init__(self, *, depth: int, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        _validate.integer("depth", depth, low=8)
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = _conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = _stage(_BasicBlock, 16, 16, n, 1, shortcut_name="downsample")
        self.layer2 = _stage(_BasicBlock, 16, 32, n, 2, shortcut_name="downsample")
        self.layer3 = _stage(_BasicBlock, 32, 64, n, 2, shortcut_name="downsample")
        self.fc = nn.Linear(64, num_classes)
        _he_normal_fan_out(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def resnet20(*, in_channels: int = 3, num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-20 (n=3): 272,474 parameters for 10 classes."""
    return CifarResNet(depth=20, in_channels=in_channels, num_classes=num_classes)


def resnet110(*, in_channels: int = 3, num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-110 (n=18), the CIFAR-10 base classifier of Cohen et al., SmoothAdv and
    SmoothMix: 1,730,714 parameters for 10 classes."""
    return CifarResNet(depth=110, in_channels=in_channels, num_classes=num_classes)


class _WideBlock(nn.Module):
    """TRADES' WideResNet block: pre-activation, optional dropout between the two convs.

    When the width changes, the 1x1 projection shortcut ``convShortcut`` takes the *pre-activated*
    input relu(bn(x)); when it does not, the shortcut is the raw x (Zagoruyko & Komodakis 2016).
    """

    def __init__(self, in_planes: int, planes: int, stride: int, *, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.dropout = dropout
        self.equal_in_out = in_planes == planes
        self.convShortcut = (None if self.equal_in_out else
                             nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(pre)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        return out + (x if self.convShortcut is None else self.convShortcut(pre))


class WideResNet(nn.Module):
    """WideResNet-depth-widen_factor as in TRADES (``models/wideresnet.py``) and the Backward
    Smoothing repository's ``--arch wrn``.

    conv3x3(C->16), three stages of (depth-4)/6 wide blocks with widths 16k/32k/64k and strides
    1/2/2, BN ReLU, global average pooling (= the 8x8 average pool at 32x32), fc(64k -> classes).
    He-normal (fan-out) convs, BN 1/0, zero fc bias. WRN-34-10: 46,160,474 parameters for 10
    classes. RobustBench's copy adds an unused ``sub_block1`` (loading such a checkpoint needs
    ``strict=False`` or dropping those keys).
    """

    def __init__(self, *, depth: int = 34, widen_factor: int = 10, in_channels: int = 3,
                 num_classes: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        _validate.integer("depth", depth, low=10)
        if (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n+4 (16, 22, 28, 34, 40, ...), got {depth}")
        _validate.positive_int("widen_factor", widen_factor)
        _validate.probability("dropout", dropout, open_interval=False)
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = _conv3x3(in_channels, widths[0])
        self.block1 = _stage(_WideBlock, widths[0], widths[1], n, 1, dropout=dropout)
        self.block2 = _stage(_WideBlock, widths[1], widths[2], n, 2, dropout=dropout)
        self.block3 = _stage(_WideBlock, widths[2], widths[3], n, 2, dropout=dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        _he_normal_fan_out(self)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def wrn34_10(*, in_channels: int = 3, num_classes: int = 10, dropout: float = 0.0) -> WideResNet:
    """WRN-34-10 (TRADES, Backward Smoothing): 46,160,474 parameters for 10 classes."""
    return WideResNet(depth=34, widen_factor=10, in_channels=in_channels,
                      num_classes=num_classes, dropout=dropout)


def _resnet50(*, in_channels: int = 3, num_classes: int = 1000) -> nn.Module:
    """torchvision's ResNet-50 with random weights (Cohen et al.'s ImageNet base classifier).

    For ``in_channels != 3`` the 7x7 stem is replaced by one with that many input channels.
    25,557,032 parameters for 1000 classes, 23,528,522 for 10.
    """
    from torchvision.models import resnet50  # imported here: torchvision costs ~1 s to import

    net = resnet50(weights=None, num_classes=num_classes)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return net


# --------------------------------------------------------------------------------------------
# Registry and factory
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Arch:
    """How to build one architecture; ``native_size`` is the input size of its paper."""

    build: Callable[[int, int, ImageSize], nn.Module]
    native_size: ImageSize


_ARCHS: dict[str, _Arch] = {
    "lenet": _Arch(lambda c, k, s: LeNet(in_channels=c, num_classes=k, image_size=s),
                   (28, 28)),
    "small_cnn": _Arch(lambda c, k, s: SmallCNN(in_channels=c, num_classes=k, image_size=s),
                       (28, 28)),
    "wong_mnist": _Arch(lambda c, k, s: WongMNISTNet(in_channels=c, num_classes=k, image_size=s),
                        (28, 28)),
    "resnet18": _Arch(lambda c, k, s: ResNet18(in_channels=c, num_classes=k), (32, 32)),
    "preact_resnet18": _Arch(lambda c, k, s: PreActResNet18(in_channels=c, num_classes=k),
                             (32, 32)),
    "resnet20": _Arch(lambda c, k, s: resnet20(in_channels=c, num_classes=k), (32, 32)),
    "resnet110": _Arch(lambda c, k, s: resnet110(in_channels=c, num_classes=k), (32, 32)),
    "wrn34_10": _Arch(lambda c, k, s: wrn34_10(in_channels=c, num_classes=k), (32, 32)),
    "resnet50": _Arch(lambda c, k, s: _resnet50(in_channels=c, num_classes=k), (224, 224)),
}

MODELS: tuple[str, ...] = tuple(_ARCHS)
"""Names accepted by :func:`build_model`."""


def _image_size(value: int | Sequence[int] | None, default: ImageSize) -> ImageSize:
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2):
        raise ValueError(f"image_size must be an int or a pair (height, width), got {value!r}")
    return (_validate.positive_int("image_size[0]", value[0]),
            _validate.positive_int("image_size[1]", value[1]))


def build_model(name: str, *, in_channels: int, num_classes: int,
                mean: float | Sequence[float], std: float | Sequence[float],
                image_size: int | Sequence[int] | None = None) -> Normalized:
    """Build architecture ``name`` behind its normalisation: ``Normalized(arch, mean, std)``.

    Args:
        name: one of :data:`MODELS`.
        in_channels: channels of the input images (1 for (Fashion-)MNIST, 3 for CIFAR).
        num_classes: number of classes, >= 2.
        mean, std: per-channel normalisation in [0, 1] pixel units (one value per channel, or
            one value for all, stored expanded to ``in_channels``); ``mean=0, std=1`` for none.
        image_size: input height and width (an int for square images). ``None`` takes the
            architecture's native size (28 for the MNIST networks, 32 for the CIFAR ones, 224 for
            ResNet-50). Only ``lenet``, ``small_cnn`` and ``wong_mnist`` depend on it (their
            classifier size does); the residual networks pool adaptively and take any size.

    Returns:
        The model in train mode, on the CPU, in float32, with fresh (seeded by torch's global RNG)
        weights; it takes images in [0, 1] and returns logits of shape (batch, num_classes).

    Raises:
        ValueError: unknown ``name`` (the message lists :data:`MODELS`), bad channel counts or
            statistics, or an ``image_size`` the architecture cannot take.
    """
    _validate.choice("name", name, MODELS)
    _validate.positive_int("in_channels", in_channels)
    _validate.integer("num_classes", num_classes, low=2)
    stats = {}
    for stat_name, stat in (("mean", mean), ("std", std)):
        values = _channel_stats(stat_name, stat, strictly_positive=stat_name == "std")
        if values.shape[1] not in (1, in_channels):
            raise ValueError(f"{stat_name} must have 1 or in_channels={in_channels} values, "
                             f"got {values.shape[1]}")
        # One value per channel always, so that every checkpoint of an architecture loads
        # into every other build of it.
        stats[stat_name] = values.expand(1, in_channels, 1, 1).clone()
    arch = _ARCHS[name]
    size = _image_size(image_size, arch.native_size)
    return Normalized(arch.build(in_channels, num_classes, size), stats["mean"], stats["std"])


def model_info(model: nn.Module) -> dict[str, Any]:
    """Size summary of a model: architecture class, parameter counts, normalisation.

    Returns a dict with ``arch`` (class name of the network inside :class:`Normalized`),
    ``num_params`` (all parameters), ``num_trainable`` (those with ``requires_grad``),
    ``num_buffers`` (elements of all buffers, e.g. BatchNorm statistics), and ``mean``/``std``
    (lists, or ``None`` when the model is not :class:`Normalized`).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inner = model.model if isinstance(model, Normalized) else model
    return {
        "arch": type(inner).__name__,
        "num_params": sum(p.numel() for p in model.parameters()),
        "num_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "num_buffers": sum(b.numel() for b in model.buffers()),
        "mean": model.mean.flatten().tolist() if isinstance(model, Normalized) else None,
        "std": model.std.flatten().tolist() if isinstance(model, Normalized) else None,
    }


def device_of(model: nn.Module) -> torch.device:
    """The device of a model's first parameter, else of its first buffer (CPU for a stateless model)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def mode(model: nn.Module, *, train: bool) -> Iterator[nn.Module]:
    """Put ``model`` in train or eval mode for a phase and restore the previous mode after."""
    was_training = model.training
    model.train(train)
    try:
        yield model
    finally:
        model.train(was_training)
