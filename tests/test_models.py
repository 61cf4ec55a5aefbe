"""Tests of rs_lib.models: reference parameter counts, shapes, the normalisation layer, the factory."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rs_lib.models import (
    MODELS,
    CifarResNet,
    LeNet,
    Normalized,
    PreActResNet18,
    SmallCNN,
    WideResNet,
    build_model,
    model_info,
)

MNIST_NETS = ("lenet", "small_cnn", "wong_mnist")


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build(name: str, *, in_channels: int = 3, num_classes: int = 10, image_size=None) -> Normalized:
    return build_model(name, in_channels=in_channels, num_classes=num_classes,
                       mean=[0.5] * in_channels, std=[0.25] * in_channels, image_size=image_size)


# ---- parameter counts (10 classes, the papers' input sizes) -----------------------------------

# lenet, 1x28x28 -> 24 -> 12 -> 8 -> 4:
#   conv1 20*1*5*5+20 = 520; conv2 50*20*5*5+50 = 25,050; fc1 800*500+500 = 400,500;
#   fc2 500*10+10 = 5,010; total 431,080 (SmoothMix's LeNet).
# small_cnn, 1x28x28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4:
#   conv 32*1*9+32 = 320; 32*32*9+32 = 9,248; 64*32*9+64 = 18,496; 64*64*9+64 = 36,928;
#   fc 64*4*4*200+200 = 205,000; 200*200+200 = 40,200; 200*10+10 = 2,010; total 312,202.
# wong_mnist, 1x28x28 -> 14 -> 7:
#   conv 16*1*16+16 = 272; 32*16*16+32 = 8,224; fc 1568*100+100 = 156,900; 100*10+10 = 1,010;
#   total 166,406.
REFERENCE_COUNTS = {
    "lenet": (1, 431_080),
    "small_cnn": (1, 312_202),
    "wong_mnist": (1, 166_406),
    "resnet18": (3, 11_173_962),         # kuangliu / Backward Smoothing `--arch resnet`
    "preact_resnet18": (3, 11_171_146),  # GradAlign's PreActResNet-18
    "resnet20": (3, 272_474),            # bearpaw / Cohen cifar_resnet20
    "resnet110": (3, 1_730_714),         # bearpaw / Cohen cifar_resnet110
    "wrn34_10": (3, 46_160_474),         # TRADES WideResNet(34, 10), no sub_block1
}


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_parameter_count_equals_reference(name):
    in_channels, expected = REFERENCE_COUNTS[name]
    model = _build(name, in_channels=in_channels)
    assert _num_params(model) == expected
    assert model_info(model)["num_params"] == expected


def test_every_registered_model_except_resnet50_has_a_reference_count():
    assert set(MODELS) - set(REFERENCE_COUNTS) == {"resnet50"}


def test_resnet50_is_torchvision_resnet50():
    # torchvision's ImageNet ResNet-50 has 25,557,032 parameters with 1000 classes.
    assert _num_params(_build("resnet50", num_classes=1000)) == 25_557_032


def test_preact_wong_variant_adds_only_the_final_batchnorm():
    gradalign = PreActResNet18(variant="gradalign")
    wong = PreActResNet18(variant="wong")
    assert _num_params(gradalign) == 11_171_146
    assert _num_params(wong) == 11_171_146 + 2 * 512
    with pytest.raises(ValueError, match="variant"):
        PreActResNet18(variant="kuangliu")


def test_cifar_resnet_counts_follow_6n_plus_2_and_reject_other_depths():
    # Each extra block per stage adds two 3x3 convs + two BNs in each of the three stages.
    per_block = 2 * (16 * 16 * 9 + 2 * 16) + 2 * (32 * 32 * 9 + 2 * 32) + 2 * (64 * 64 * 9 + 2 * 64)
    assert _num_params(CifarResNet(depth=26)) - _num_params(CifarResNet(depth=20)) == per_block
    with pytest.raises(ValueError, match="depth"):
        CifarResNet(depth=21)


# ---- output shapes ----------------------------------------------------------------------------

SHAPE_CASES = [(name, 1, 28) for name in MODELS if name not in ("wrn34_10", "resnet50")] + \
              [(name, 3, 32) for name in MODELS if name not in ("wrn34_10", "resnet50")]


@pytest.mark.parametrize(("name", "channels", "size"), SHAPE_CASES)
def test_forward_returns_batch_by_num_classes(name, channels, size):
    model = _build(name, in_channels=channels, num_classes=7, image_size=size)
    logits = model(torch.rand(2, channels, size, size))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


def test_small_wide_resnet_forward_shape_on_both_input_sizes():
    # Same block code as WRN-34-10 at a fraction of the cost (WRN-10-1: one block per stage).
    for channels, size in ((1, 28), (3, 32)):
        model = WideResNet(depth=10, widen_factor=1, in_channels=channels, num_classes=5)
        assert model(torch.rand(2, channels, size, size)).shape == (2, 5)
    with pytest.raises(ValueError, match="depth"):
        WideResNet(depth=33)


@pytest.mark.parametrize(("name", "stage", "width", "side"), [
    ("resnet18", "layer4", 512, 4),         # = kuangliu's avg_pool2d(4)
    ("preact_resnet18", "layer4", 512, 4),  # = Wong / GradAlign avg_pool2d(4)
    ("resnet20", "layer3", 64, 8),          # = bearpaw's AvgPool2d(8)
])
def test_residual_nets_pool_the_reference_feature_map_at_32x32(name, stage, width, side):
    model = _build(name)
    shapes = []
    getattr(model.model, stage).register_forward_hook(lambda m, i, o: shapes.append(o.shape) and None)
    model(torch.rand(2, 3, 32, 32))
    assert shapes == [(2, width, side, side)]


def test_fixed_size_nets_size_their_classifier_from_image_size():
    assert LeNet(image_size=(28, 28)).fc1.in_features == 50 * 4 * 4
    assert LeNet(in_channels=3, image_size=(32, 32)).fc1.in_features == 50 * 5 * 5
    assert SmallCNN(in_channels=3, image_size=(32, 32)).classifier[0].in_features == 64 * 5 * 5


def test_fixed_size_net_rejects_input_of_another_size():
    model = _build("lenet", in_channels=1)
    with pytest.raises(ValueError, match="image_size"):
        model(torch.rand(2, 1, 32, 32))


@pytest.mark.parametrize("name", MNIST_NETS)
def test_build_model_rejects_an_image_too_small_for_the_architecture(name):
    with pytest.raises(ValueError, match="image_size"):
        _build(name, in_channels=1, image_size=3)


# ---- the normalisation layer --------------------------------------------------------------------


def test_normalized_applies_per_channel_standardisation():
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.3, 0.4]
    layer = Normalized(nn.Identity(), mean, std)
    x = torch.rand(4, 3, 5, 5)
    expected = torch.empty_like(x)
    for c in range(3):
        expected[:, c] = (x[:, c] - mean[c]) / std[c]
    torch.testing.assert_close(layer(x), expected)


def test_normalized_with_zero_mean_unit_std_is_the_identity():
    net = LeNet()
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(Normalized(net, 0.0, 1.0)(x), net(x), rtol=0, atol=0)


def test_normalized_stats_are_buffers_saved_and_moved_with_the_model():
    layer = Normalized(nn.Identity(), [0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    assert layer.mean.shape == layer.std.shape == (1, 3, 1, 1)
    state = layer.state_dict()
    torch.testing.assert_close(state["std"].flatten(), torch.tensor([0.4, 0.5, 0.6]))
    assert list(layer.parameters()) == []  # not trained
    layer.to(torch.float64)
    assert layer.mean.dtype == layer.std.dtype == torch.float64
    layer.to("meta")  # a device move without needing a GPU
    assert layer.mean.device.type == layer.std.device.type == "meta"


def test_normalized_state_dict_round_trips_into_a_fresh_model():
    source = _build("resnet20")
    target = build_model("resnet20", in_channels=3, num_classes=10, mean=0.0, std=1.0)
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target.mean, source.mean)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(target.eval()(x), source.eval()(x))


@pytest.mark.parametrize(("mean", "std", "argument"), [
    ([0.5], [0.0], "std"),
    ([0.5], [-1.0], "std"),
    ([float("nan")], [1.0], "mean"),
    ([], [1.0], "mean"),
    ([0.1, 0.2], [0.1, 0.2, 0.3], "mean and std"),
])
def test_normalized_rejects_bad_statistics(mean, std, argument):
    with pytest.raises(ValueError, match=argument):
        Normalized(nn.Identity(), mean, std)


# ---- the factory --------------------------------------------------------------------------------


def test_build_model_rejects_unknown_name_listing_the_allowed_ones():
    with pytest.raises(ValueError, match="name") as info:
        _build("resnet19")
    assert "lenet" in str(info.value) and "wrn34_10" in str(info.value)


@pytest.mark.parametrize(("kwargs", "argument"), [
    ({"in_channels": 0}, "in_channels"),
    ({"num_classes": 1}, "num_classes"),
    ({"mean": [0.1, 0.2]}, "mean"),
    ({"image_size": (28, 28, 1)}, "image_size"),
    ({"image_size": 0}, "image_size"),
])
def test_build_model_rejects_bad_arguments_naming_them(kwargs, argument):
    options = {"in_channels": 3, "num_classes": 10, "mean": 0.5, "std": 0.25} | kwargs
    with pytest.raises(ValueError, match=argument):
        build_model("resnet20", **options)


def test_build_model_wraps_the_architecture_in_its_normalisation():
    model = build_model("lenet", in_channels=1, num_classes=10, mean=[0.286], std=[0.353])
    assert isinstance(model, Normalized) and isinstance(model.model, LeNet)
    info = model_info(model)
    assert info["arch"] == "LeNet"
    assert info["mean"] == pytest.approx([0.286]) and info["std"] == pytest.approx([0.353])
    assert info["num_trainable"] == info["num_params"] == 431_080


# ---- behaviour the attacks and the certifier rely on ---------------------------------------------


@pytest.mark.parametrize(("name", "channels", "size"), [
    ("lenet", 1, 28), ("wong_mnist", 1, 28), ("resnet20", 3, 32), ("preact_resnet18", 3, 32),
])
def test_channels_last_gives_the_same_logits(name, channels, size):
    model = _build(name, in_channels=channels, image_size=size).eval()
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        logits = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["lenet", "small_cnn", "resnet20"])
def test_input_gradient_reaches_pixel_space(name):
    channels, size = (1, 28) if name in MNIST_NETS else (3, 32)
    model = _build(name, in_channels=channels, image_size=size).eval()
    if name == "small_cnn":  # its last layer starts at zero (as in TRADES): logits ignore x
        nn.init.normal_(model.model.classifier[-1].weight)
    x = torch.rand(2, channels, size, size, requires_grad=True)
    model(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_small_cnn_keeps_trades_dropout_and_zero_last_layer():
    model = SmallCNN()
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in dropouts] == [0.5]
    last = model.classifier[-1]
    assert torch.count_nonzero(last.weight) == 0 and torch.count_nonzero(last.bias) == 0
    assert not any(isinstance(m, nn.Dropout) and m.p > 0 for m in SmallCNN(dropout=0.0).modules())


def test_cifar_resnet_conv_init_is_he_normal_fan_out():
    model = CifarResNet(depth=20)
    weight = model.layer3[1].conv1.weight  # 64 x 64 x 3 x 3
    expected_std = math.sqrt(2.0 / (3 * 3 * 64))
    assert weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert all(conv.bias is None for conv in model.modules() if isinstance(conv, nn.Conv2d))


@pytest.mark.parametrize(("variant", "reads_preactivation"), [("gradalign", False), ("wong", True)])
def test_preact_projection_shortcut_reads_the_variants_input(variant, reads_preactivation):
    block = PreActResNet18(variant=variant).layer2[0]  # 64 -> 128, stride 2: projection shortcut
    inputs = []
    block.shortcut.register_forward_hook(lambda m, i, o: inputs.append(i[0]) and None)
    x = torch.randn(2, 64, 8, 8)
    block(x)
    expected = torch.relu(block.bn1(x)) if reads_preactivation else x
    torch.testing.assert_close(inputs[0], expected)


def test_wide_resnet_projection_shortcut_reads_the_preactivation():
    block = WideResNet(depth=10, widen_factor=2).block2[0]  # 32 -> 64 channels
    inputs = []
    block.convShortcut.register_forward_hook(lambda m, i, o: inputs.append(i[0]) and None)
    x = torch.randn(2, 32, 8, 8)
    block(x)
    torch.testing.assert_close(inputs[0], torch.relu(block.bn1(x)))
