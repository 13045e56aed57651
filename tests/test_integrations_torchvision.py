"""MixTransform against torchvision's own v2.MixUp / v2.CutMix conventions."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, default_collate

pytest.importorskip("torchvision")
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from unimix import Mixer  # noqa: E402
from unimix.integrations.torchvision import GMix, HMix, MixTransform  # noqa: E402

K = 3
COLOURS = torch.tensor([[0.1, 0.8, 0.3], [0.9, 0.2, 0.5], [0.4, 0.4, 0.9]])


def class_images(labels: torch.Tensor, size: int = 8) -> torch.Tensor:
    """Images of one colour per class, so a mixed row's mean is ``targets @ COLOURS``."""
    return COLOURS[labels][:, :, None, None].expand(-1, -1, size, size).clone()


def ours_and_theirs():
    return [
        (MixTransform("mixup", num_classes=K), v2.MixUp(num_classes=K)),
        (MixTransform("cutmix", num_classes=K), v2.CutMix(num_classes=K)),
        (HMix(num_classes=K), v2.CutMix(num_classes=K)),
        (GMix(num_classes=K), v2.MixUp(num_classes=K)),
    ]


def samples():
    labels = torch.tensor([0, 1, 2, 1])
    image = tv_tensors.Image(class_images(labels))
    plain = class_images(labels)
    return [
        ("two args", (image, labels)),
        ("plain tensor", (plain, labels)),
        ("tuple", ((image, labels),)),
        ("list", ([plain, labels],)),
        ("dict", ({"image": image, "labels": labels, "ids": torch.arange(4), "name": "b0"},)),
        ("tuple with dict", ((image, {"labels": labels, "ids": torch.arange(4)}),)),
        ("label-like key", ({"pixels": image, "class_label": labels},)),
        ("video", (tv_tensors.Video(class_images(labels)[:, None].repeat(1, 2, 1, 1, 1)), labels)),
        ("probabilities", (image, torch.eye(K)[labels] * 0.9 + 0.1 / K)),
        ("float64 probabilities", (plain, torch.eye(K, dtype=torch.float64)[labels])),
    ]


def structure(tree):
    """Containers, keys and leaf types/shapes/dtypes of a transform's output."""
    if isinstance(tree, dict):
        return {k: structure(v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return (type(tree).__name__, [structure(v) for v in tree])
    if isinstance(tree, torch.Tensor):
        return (type(tree).__name__, tuple(tree.shape), tree.dtype)
    return (type(tree).__name__, tree)


@pytest.mark.parametrize(("name", "args"), samples(), ids=[n for n, _ in samples()])
def test_same_output_structure_and_label_format_as_torchvision(name, args):
    for ours, theirs in ours_and_theirs():
        torch.manual_seed(0)
        expected = theirs(*args)
        got = ours(*args)
        assert structure(got) == structure(expected), (name, type(ours).__name__)


@pytest.mark.parametrize(("name", "args"), samples(), ids=[n for n, _ in samples()])
def test_targets_weigh_classes_as_the_pixels_do(name, args):
    for ours, _ in ours_and_theirs():
        out = ours(*args)
        flat = out if len(args) > 1 else (out,)
        tensors = [
            t for t in _leaves(flat) if isinstance(t, torch.Tensor) and t.is_floating_point()
        ]
        images = next(t for t in tensors if t.dim() >= 4)
        targets = next(t for t in tensors if t.dim() == 2 and t.shape[1] == K)
        assert targets.shape == (4, K) and targets.is_floating_point()
        torch.testing.assert_close(targets.sum(1), torch.ones(4, dtype=targets.dtype))
        means = images.as_subclass(torch.Tensor).reshape(4, -1, 3, 64).mean(dim=(1, 3))
        if name == "probabilities":  # smoothed one-hot in, so undo the smoothing first
            targets = (targets - 0.1 / K) / 0.9
        torch.testing.assert_close(means, targets.float() @ COLOURS, atol=1e-5, rtol=0)


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    elif isinstance(tree, (tuple, list)):
        for v in tree:
            yield from _leaves(v)
    else:
        yield tree


def test_passes_other_entries_through_untouched():
    labels = torch.tensor([0, 1, 2, 1])
    ids = torch.arange(4)
    out = GMix(num_classes=K)({"image": class_images(labels), "labels": labels, "ids": ids})
    assert out["ids"] is ids


BAD = [
    ("2D labels, wrong K", lambda: (torch.rand(4, 3, 8, 8), torch.rand(4, K + 1))),
    ("labels not a tensor", lambda: (torch.rand(4, 3, 8, 8), [0, 1, 2, 0])),
    ("unbatched image", lambda: (torch.rand(3, 8, 8), torch.tensor([0, 1, 2]))),
    ("batch mismatch", lambda: (torch.rand(2, 3, 8, 8), torch.tensor([0, 1, 2]))),
    ("no labels key", lambda: ({"image": torch.rand(2, 3, 8, 8)},)),
    ("3D labels", lambda: (torch.rand(4, 3, 8, 8), torch.zeros(4, 1, 1))),
    (
        "boxes",
        lambda: (
            torch.rand(2, 3, 8, 8),
            {
                "labels": torch.tensor([0, 1]),
                "boxes": tv_tensors.BoundingBoxes(
                    torch.zeros(2, 4), format="XYXY", canvas_size=(8, 8)
                ),
            },
        ),
    ),  # fmt: skip
]


@pytest.mark.parametrize(("name", "make"), BAD, ids=[n for n, _ in BAD])
def test_same_error_as_torchvision_on_bad_input(name, make):
    for ours, theirs in ours_and_theirs():
        with pytest.raises(ValueError):
            theirs(*make())
        with pytest.raises(ValueError):
            ours(*make())


def test_index_labels_need_num_classes_as_in_torchvision():
    args = (torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="num_classes"):
        v2.MixUp()(*args)
    with pytest.raises(ValueError, match="num_classes"):
        MixTransform("gmix")(*args)
    # probabilities need no num_classes, as in torchvision
    _, targets = MixTransform("gmix")(args[0], torch.eye(3))
    assert targets.shape == (3, 3)


def test_is_a_module_in_compose_and_random_choice():
    mix = v2.RandomChoice([MixTransform("hmix", r=0.5, num_classes=K), GMix(num_classes=K)])
    pipeline = v2.Compose([v2.ToDtype(torch.float32, scale=True), mix])
    assert isinstance(mix.transforms[0], nn.Module) and isinstance(mix.transforms[0], v2.Transform)
    labels = torch.tensor([0, 1, 2, 1])
    images = tv_tensors.Image((class_images(labels) * 255).round().to(torch.uint8))
    out_images, targets = pipeline(images, labels)
    assert isinstance(out_images, tv_tensors.Image) and out_images.dtype == torch.float32
    assert targets.shape == (4, K)


def test_in_collate_fn_as_torchvision_documents():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    dataset = TensorDataset(class_images(labels), labels)
    mix = MixTransform(
        ["cutmix", "gmix"], num_classes=K, generator=torch.Generator().manual_seed(0)
    )
    loader = DataLoader(dataset, batch_size=3, collate_fn=lambda b: mix(*default_collate(b)))
    for images, targets in loader:
        torch.testing.assert_close(images.mean(dim=(2, 3)), targets @ COLOURS, atol=1e-5, rtol=0)


def test_uses_a_given_mixer_and_keeps_its_settings():
    mixer = Mixer("hmix", alpha=2.0, mode="elem", num_classes=K, r=0.25)
    transform = MixTransform(mixer)
    assert transform.mixer is mixer and transform.num_classes == K
    with pytest.raises(TypeError, match="Mixer"):
        MixTransform(mixer, mode="elem")
    with pytest.raises(ValueError, match="labels_getter"):
        MixTransform("mixup", labels_getter="first")


def test_callable_labels_getter():
    labels = torch.tensor([0, 1, 2, 1])
    batch = {"x": class_images(labels), "y": labels}
    out = MixTransform("cutmix", num_classes=K, labels_getter=lambda s: s["y"])(batch)
    assert out["y"].shape == (4, K)


class _Batches(torch.utils.data.Dataset):
    """Each item is already a batch, so the transform runs inside the DataLoader's workers."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i):
        return torch.rand(4, 3, 8, 8), torch.arange(4) % 3


def test_a_seeded_transform_draws_other_masks_in_each_worker():
    transform = MixTransform("mixup", num_classes=3, generator=torch.Generator().manual_seed(0))

    def collate(items):
        images, labels = items[0]
        _, targets = transform(images, labels)
        return targets

    loader = DataLoader(_Batches(), batch_size=1, num_workers=2, collate_fn=collate,
                        generator=torch.Generator().manual_seed(1))  # fmt: skip
    lams = [float(targets[1, 1]) for targets in loader]  # row 1 (label 1) mixed with label 2
    # workers alternate batches: with one shared stream consecutive pairs would be equal
    pairs = list(zip(lams[0::2], lams[1::2], strict=True))
    assert any(a != b for a, b in pairs), lams


def test_several_images_and_a_video_of_a_sample_are_mixed_with_one_plan():
    g = torch.Generator().manual_seed(3)
    view1 = tv_tensors.Image(torch.rand(4, 3, 8, 8, generator=g))
    view2 = tv_tensors.Image(torch.rand(4, 3, 8, 8, generator=g))
    video = tv_tensors.Video(torch.rand(4, 2, 3, 8, 8, generator=g))
    labels = torch.arange(4) % 3
    transform = MixTransform("cutmix", num_classes=3, generator=torch.Generator().manual_seed(5))
    (out1, out2, out_video), targets = transform((view1, view2, video), labels)
    assert isinstance(out1, tv_tensors.Image) and isinstance(out_video, tv_tensors.Video)
    flip = torch.tensor([3, 2, 1, 0])
    # the same pixels come from the partner in every tensor
    from_partner = (out1 != view1).any(1)
    assert from_partner.any()
    assert torch.equal(from_partner, (out2 != view2).any(1))
    assert torch.equal(out1, torch.where(from_partner[:, None], view1[flip], view1))
    for t in range(2):
        assert torch.equal(
            out_video[:, t], torch.where(from_partner[:, None], video[flip, t], video[:, t])
        )
    torch.testing.assert_close(targets.sum(1), torch.ones(4))


# ---- torchvision's TestCutMixMixUp.test_error, ported: its phrases, our argument and fix ----------

_TV_BATCH = 9


def _tv_images() -> torch.Tensor:
    return torch.rand(_TV_BATCH, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def _tv_labels(size: int = _TV_BATCH) -> torch.Tensor:
    return torch.randint(0, 10, (size,), generator=torch.Generator().manual_seed(1))


# (case, inputs, torchvision's phrases, what our message must also name: the argument or the fix).
# Phrases of two wordings: the older TestCutMixMixUp's, and that of torchvision 0.29.
SHAPE = (
    "labels tensor should be of shape",
    "labels should be index based",
    "but got a tensor of shape",
)
TORCHVISION_PHRASES = [
    ("a mask", lambda: (tv_tensors.Mask(torch.rand(12, 12)),), ("does not support PIL images, ",),
     "image/video"),
    ("boxes", lambda: (tv_tensors.BoundingBoxes(torch.rand(2, 4), format="XYXY", canvas_size=12),),
     ("does not support PIL images, ",), "image/video"),
    ("no labels key", lambda: ({"img": _tv_images(), "Nothing_else": 3},),
     ("Could not infer where the labels are",), "labels_getter=callable"),
    ("images only", lambda: (_tv_images(),), SHAPE, "pass one label"),
    ("labels not a tensor", lambda: (_tv_images(), "not_a_tensor"),
     ("When using the default labels_getter",), "labels_getter=callable"),
    ("labels of the wrong width", lambda: (_tv_images(), torch.randint(0, 2, size=(_TV_BATCH, 3))),
     ("labels tensor should be of shape", "When passing 2D labels"), "num_classes=3"),
    ("labels of three dims", lambda: (_tv_images(), torch.randint(0, 2, size=(2, 3, 4))), SHAPE,
     "pass one label"),
    ("images of six dims", lambda: (_tv_images()[None, None], _tv_labels()),
     ("Expected a batched input with 4 dims",), "batch the samples"),
    ("one label too many", lambda: (_tv_images(), _tv_labels(_TV_BATCH + 1)),
     ("does not match the batch size of the labels",), "pass as many rows of labels"),
    ("no num_classes", lambda: (_tv_images(), _tv_labels()), ("num_classes must be passed",),
     "pass num_classes=K"),
]  # fmt: skip


@pytest.mark.parametrize("method", ["mixup", "cutmix"])
@pytest.mark.parametrize(
    ("case", "make", "phrases", "fix"), TORCHVISION_PHRASES, ids=[c[0] for c in TORCHVISION_PHRASES]
)
def test_errors_keep_torchvisions_phrases_and_name_the_argument_and_fix(
    method, case, make, phrases, fix
):
    """Ours holds every phrase of either torchvision wording; the installed torchvision raises
    with one of them (so the phrases are really torchvision's)."""
    num_classes = None if case == "no num_classes" else 10
    theirs = (v2.MixUp if method == "mixup" else v2.CutMix)(alpha=0.5, num_classes=num_classes)
    with pytest.raises(ValueError) as info:
        theirs(*make())
    assert any(p in str(info.value) for p in phrases), str(info.value)
    ours = MixTransform(method, alpha=0.5, num_classes=num_classes)
    with pytest.raises(ValueError) as info:
        ours(*make())
    message = str(info.value)
    assert all(p in message for p in phrases) and fix in message, message


def test_a_pil_image_is_refused_with_torchvisions_phrase():
    pil = pytest.importorskip("PIL.Image")
    image = pil.new("RGB", (12, 12))
    with pytest.raises(ValueError, match="does not support PIL images, "):
        v2.MixUp(num_classes=10)(image)
    with pytest.raises(ValueError, match="does not support PIL images, "):
        MixTransform("mixup", num_classes=10)(image)


def test_twice_in_compose_mixes_the_targets_of_the_first_again():
    """The older TestCutMixMixUp documents that ``Compose([mix, mix])`` fails (labels had to be
    ``[B]``); MixTransform, like torchvision 0.29, takes probabilities ``[B, K]``, so the second
    call mixes the first one's targets again (same partners: row ``k`` and ``B−1−k``)."""
    images, labels = _tv_images(), torch.arange(_TV_BATCH)

    def make():
        return MixTransform("mixup", num_classes=10, generator=torch.Generator().manual_seed(0))

    _, once = make()(images, labels)
    _, twice = v2.Compose([make(), make()])(images, labels)
    torch.testing.assert_close(twice.sum(dim=1), torch.ones(_TV_BATCH))
    pair = torch.zeros(_TV_BATCH, 10, dtype=torch.bool)
    pair[torch.arange(_TV_BATCH), labels] = True
    pair[torch.arange(_TV_BATCH), labels.flip(0)] = True
    assert (twice[~pair] == 0).all()  # still the two classes of the pair
    assert not torch.allclose(once, twice)  # but weighed again
