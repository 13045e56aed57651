"""The "Add your own method" example of docs/methods.md (once the README's), verbatim, and what
it promises."""

import pytest
import torch
import torch.nn.functional as F

import unimix
from unimix import masks, registry


@pytest.fixture(params=["sample", "_sample override"])
def custom_methods(request):
    if request.param == "sample":
        # ---- the docs/methods.md example, exactly ------------------------------------------------
        import torch

        from unimix import MixMethod, registry
        from unimix.masks import MaskSample, MaskSampler

        @registry.register("stripes")  # a mask: the first image on the left λ of the columns
        class Stripes(MaskSampler):
            def sample(self, lam, height, width, device, generator):
                cols = torch.arange(width, device=device)
                keep = cols < (lam.to(device) * width).round()[:, None]
                masks = keep[:, None, None, :].expand(-1, 1, height, width).float()
                return MaskSample(masks, masks.mean(dim=(1, 2, 3)))

        @registry.register("mirrormix")  # an image method: Mixup with the partner mirrored
        class MirrorMix(MixMethod):
            def mix(self, images, partners, lam, *, generator, context):
                w = lam.view(-1, 1, 1, 1)
                return w * images + (1 - w) * partners.flip(-1), lam

        # mixer = unimix.Mixer({"stripes": 0.5, "mirrormix": 0.5}, num_classes=10)
        # ---- end of the example ---------------------------------------------------------------
    else:  # the private override point of MaskSampler (input checks done by the base class)
        import torch

        from unimix import registry
        from unimix.masks import MaskSample, MaskSampler
        from unimix.mixmethod import MixMethod

        @registry.register("stripes")
        class Stripes(MaskSampler):
            def _sample(self, lam, height, width, device, generator):
                cols = torch.arange(width, device=device)
                keep = cols < (lam.to(device) * width).round()[:, None]
                masks = keep[:, None, None, :].expand(-1, 1, height, width).float()
                return MaskSample(masks, masks.mean(dim=(1, 2, 3)))

        @registry.register("mirrormix")
        class MirrorMix(MixMethod):
            def mix(self, images, partners, lam, *, generator, context):
                w = lam.view(-1, 1, 1, 1)
                return w * images + (1 - w) * partners.flip(-1), lam

    yield Stripes, MirrorMix
    registry.unregister("stripes")
    registry.unregister("mirrormix")


def test_registry_rejects_clashes_across_kinds(custom_methods):
    from unimix.masks import MaskSampler

    with pytest.raises(ValueError, match="already registered"):

        @registry.register("resizemix")  # an image method's name, taken by a mask
        class Clash(MaskSampler):
            def sample(self, lam, height, width, device, generator):
                raise AssertionError

    with pytest.raises(TypeError, match="expected a image method"):
        registry.register("stripes2", kind="image")(custom_methods[0])
    assert registry.kind("stripes") == "mask" and registry.kind("mirrormix") == "image"
    assert "mirrormix" not in registry.available("mask")
    with pytest.raises(ValueError, match="unknown mask method 'mirrormix'"):
        registry.get("mirrormix", "mask")


def test_custom_mask_sampler_is_a_method_like_the_others(custom_methods):
    assert "stripes" in registry.available("mask") and "stripes" in registry.available()
    x = torch.rand(8, 3, 6, 10, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8)
    for mode in ("batch", "pair", "elem"):
        out, targets, info = unimix.Mixer("stripes", mode=mode, num_classes=8)(
            x, y, return_info=True
        )
        m = info.masks.expand(8, 1, 6, 10)
        torch.testing.assert_close(out, m * x + (1 - m) * x[info.partner])
        torch.testing.assert_close(info.lam_effective, m.mean(dim=(1, 2, 3)))
        # the kept columns are a prefix: the mask never switches back to the first image
        assert (m[..., 1:] <= m[..., :-1]).all()
        onehot = F.one_hot(y, 8).float()
        lam = info.lam_effective[:, None]
        torch.testing.assert_close(targets, lam * onehot + (1 - lam) * onehot[info.partner])


def test_custom_image_method_mixes_through_the_mixer(custom_methods):
    x = torch.rand(6, 2, 5, 7, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6)
    mixer = unimix.Mixer(
        {"stripes": 0.5, "mirrormix": 0.5},
        mode="elem",
        num_classes=6,
        generator=torch.Generator().manual_seed(2),
    )
    out, targets, info = mixer(x, y, return_info=True)
    mirror = info.method == mixer.method_names.index("mirrormix")
    assert mirror.any() and (~mirror).any()
    w = info.lam[mirror].view(-1, 1, 1, 1)
    expected = w * x[mirror] + (1 - w) * x[info.partner[mirror]].flip(-1)
    torch.testing.assert_close(out[mirror], expected)
    torch.testing.assert_close(info.lam_effective[mirror], info.lam[mirror])
    torch.testing.assert_close(targets.sum(1), torch.ones(6))


def test_the_registry_refuses_a_second_class_of_the_same_qualname_under_a_taken_name():
    from unimix import registry

    def make():
        class Same(masks.MaskSampler):
            def sample(self, lam, height, width, device, generator):  # pragma: no cover
                raise NotImplementedError

        return Same

    first, second = make(), make()
    assert first.__qualname__ == second.__qualname__ and first is not second
    registry.register("same_qualname_probe")(first)
    try:
        with pytest.raises(ValueError, match="already registered"):
            registry.register("same_qualname_probe")(second)
        assert registry.lookup("same_qualname_probe") is first
        registry.register("same_qualname_probe")(first)  # the same class again is harmless
    finally:
        registry.unregister("same_qualname_probe")
