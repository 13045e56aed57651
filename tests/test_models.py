"""unimix.models: the built-in networks, the registry and torchvision/timm models by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unimix.models import (
    PreActResNet,
    SmallCNN,
    WideResNet,
    adapt_input_channels,
    available_models,
    create_model,
    register_model,
)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, kwargs, in_chans, size",
    [
        ("small_cnn", {}, 1, 32),
        ("small_cnn", {}, 1, 8),
        ("small_cnn", {"widths": (8, 16)}, 3, (12, 20)),
        ("preact_resnet18", {}, 3, 32),
        ("preact_resnet18", {}, 1, 16),
        ("wrn", {"depth": 10, "widen": 2}, 3, 32),
        ("wrn", {"depth": 16, "widen": 1, "drop_rate": 0.3}, 1, 16),
    ],
)
def test_forward_backward_shapes(name, kwargs, in_chans, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=in_chans, image_size=size, **kwargs)
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(2, in_chans, h, w)
    out = model(x)
    assert out.shape == (2, 7) and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x[:1]), model(x[:1]))  # eval mode is deterministic


def test_parameter_counts_match_the_published_networks():
    assert n_params(create_model("preact_resnet18", 10)) == pytest.approx(11.17e6, rel=2e-3)
    assert n_params(create_model("preact_resnet18", 100)) == pytest.approx(11.22e6, rel=2e-3)
    wrn = create_model("wrn28_10", 10)
    assert isinstance(wrn, WideResNet) and (wrn.depth, wrn.widen) == (28, 10)
    assert n_params(wrn) == pytest.approx(36.48e6, rel=2e-3)
    convs = [m for m in wrn.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 25  # stem + 3 stages x 4 blocks x 2: depth 28 with the classifier
    with torch.no_grad():  # one quick forward of the real configuration on a tiny input
        assert wrn.eval()(torch.randn(1, 3, 8, 8)).shape == (1, 10)
    small = create_model("small_cnn", 10, in_chans=1)
    assert isinstance(small, SmallCNN) and n_params(small) < 150_000


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("small_cnn", {}),
        ("preact_resnet18", {"widths": (8, 16, 16, 32)}),
        ("wrn", {"depth": 10, "widen": 1}),
    ],
)
def test_channels_last_gives_the_same_outputs(name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, 5, in_chans=1, **kwargs).eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)
        out = cl(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-4)


def test_initialisation_is_seeded():
    torch.manual_seed(1)
    a = create_model("small_cnn", 10, in_chans=1)
    torch.manual_seed(1)
    b = create_model("small_cnn", 10, in_chans=1)
    c = create_model("small_cnn", 10, in_chans=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_preact_block_structure():
    model = create_model("preact_resnet18", 10)
    assert isinstance(model, PreActResNet)
    strides = [blk.conv1.stride[0] for stage in model.layers for blk in stage]
    assert strides == [1, 1, 2, 1, 2, 1, 2, 1]
    with torch.no_grad():
        feats = model.eval().forward_features(torch.randn(1, 3, 32, 32))
    assert feats.shape == (1, 512)


def test_registry_errors_and_names():
    builtin = ["preact_resnet18", "small_cnn", "wrn", "wrn28_10"]
    # other test modules may register their own models in this process
    assert [m for m in available_models() if m in builtin] == builtin
    with pytest.raises(ValueError, match="preact_resnet18, small_cnn, wrn, wrn28_10.*tv:<name>"):
        create_model("resnet18", 10)
    with pytest.raises(TypeError, match="use create_model\\('wrn'"):
        create_model("wrn28_10", 10, widen=2)
    with pytest.raises(ValueError, match="depth must be 6n \\+ 4"):
        create_model("wrn", 10, depth=20)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("small_cnn", 0)
    with pytest.raises(ValueError, match="in_chans"):
        create_model("small_cnn", 10, in_chans=0)

    @register_model("test_linear_probe")
    def _probe(num_classes, in_chans, image_size, **kw):
        return nn.Sequential(
            nn.Flatten(), nn.Linear(in_chans * image_size[0] * image_size[1], num_classes)
        )

    assert "test_linear_probe" in available_models()
    probe = create_model("test_linear_probe", 4, in_chans=2, image_size=(3, 5))
    assert probe(torch.randn(6, 2, 3, 5)).shape == (6, 4)
    with pytest.raises(ValueError, match="taken"):
        register_model("small_cnn")(_probe)


def test_torchvision_models_by_name():
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):  # parameters without memory or initialisation cost
        model = create_model("tv:resnet50", 1000)
    assert isinstance(model, torchvision.models.ResNet)
    assert n_params(model) == pytest.approx(25.56e6, rel=1e-3)
    gray = create_model("tv:resnet18", 10, in_chans=1)
    assert gray.conv1.in_channels == 1 and gray.conv1.kernel_size == (7, 7)
    with torch.no_grad():
        assert gray.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="did you mean tv:resnet50"):
        create_model("tv:resnet5O", 10)
    with pytest.raises(ValueError, match="never downloads"):
        create_model("tv:resnet18", 10, weights="IMAGENET1K_V1")


def test_timm_models_by_name():
    pytest.importorskip("timm")
    model = create_model("timm:resnet18", 10, in_chans=1)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    vit = create_model("timm:vit_tiny_patch16_224", 10, in_chans=1, image_size=32, depth=1)
    with torch.no_grad():
        assert vit.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="unknown timm model"):
        create_model("timm:no_such_net", 10)
    with pytest.raises(ValueError, match="never downloads"):
        create_model("timm:resnet18", 10, pretrained=True)
    assert "timm:resnet18" in available_models(external=True)


def test_adapt_input_channels_needs_a_three_channel_conv():
    with pytest.raises(ValueError, match="no 3-channel Conv2d"):
        adapt_input_channels(nn.Sequential(nn.Conv2d(1, 4, 3)), 2)
    net = adapt_input_channels(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1)), 5)
    assert net[0].in_channels == 5 and net[0].stride == (2, 2) and net[0].padding == (1, 1)
