"""unimix.compat.MixCollate: mixing while collating, in the main process and in DataLoader workers."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset, default_collate

from unimix import Mixer
from unimix.compat import MixCollate, TimmMixup

K = 10


def samples(n: int, dtype=torch.float32, seed: int = 0) -> list[tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g).to(dtype)
    return [(images[i], i % K) for i in range(n)]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("method", ["mixup", "cutmix", "gmix"])
def test_collate_then_mix_equals_mixing_the_collated_batch(dtype, method):
    batch = samples(6, dtype)
    kw = dict(num_classes=K, mode="elem")
    images, targets = MixCollate(Mixer(method, generator=torch.Generator().manual_seed(1), **kw))(
        batch
    )
    ref_images, ref_labels = default_collate(batch)
    expected = Mixer(method, generator=torch.Generator().manual_seed(1), **kw)(
        ref_images.clone(), ref_labels, inplace=True
    )
    assert images.dtype == dtype and images.shape == (6, 3, 8, 8)
    assert torch.equal(images, expected[0]) and torch.equal(targets, expected[1])
    assert not torch.equal(images, ref_images)  # it did mix
    torch.testing.assert_close(targets.sum(1), torch.ones(6))


def test_samples_are_not_modified():
    batch = samples(4)
    before = [img.clone() for img, _ in batch]
    MixCollate(Mixer("cutmix", num_classes=K))(batch)
    assert all(torch.equal(img, b) for (img, _), b in zip(batch, before, strict=True))


def test_out_of_place_leaves_the_collated_batch_alone():
    cached = default_collate(samples(4))
    original = cached[0].clone()
    collate = MixCollate(Mixer("mixup", num_classes=K), collate_fn=lambda _: cached, inplace=False)
    images, _ = collate([])
    assert torch.equal(cached[0], original) and not torch.equal(images, original)


def test_timm_facade_as_collate():
    images, targets = MixCollate(TimmMixup(cutmix_alpha=1.0, num_classes=K))(samples(4))
    assert images.shape == (4, 3, 8, 8) and targets.shape == (4, K)


def test_repr_names_the_mixer_and_the_collate_function():
    def my_collate(batch):
        return default_collate(batch)

    class Collator:  # a callable without __name__ is shown by its repr
        def __call__(self, batch):
            return default_collate(batch)

        def __repr__(self):
            return "Collator()"

    mixer = Mixer("mixup", num_classes=K)
    assert (
        repr(MixCollate(mixer, collate_fn=my_collate))
        == f"MixCollate({mixer!r}, collate_fn='my_collate')"
    )
    assert repr(MixCollate(mixer, collate_fn=Collator())).endswith("collate_fn=Collator())")


def test_collate_fn_must_return_images_and_labels():
    with pytest.raises(TypeError, match="images, labels"):
        MixCollate(Mixer(num_classes=K), collate_fn=lambda b: default_collate(b)[0])(samples(2))
    with pytest.raises(TypeError, match="mixer"):
        MixCollate(lambda x, y: (x, y))
    with pytest.raises(TypeError, match="collate_fn"):
        MixCollate(Mixer(num_classes=K), collate_fn=3)


# ---- DataLoader workers ---------------------------------------------------------------------

N, BATCH = 32, 8


def _repeating_dataset() -> TensorDataset:
    # Every batch holds the same eight samples: batches differ only through their masks.
    images = torch.rand(BATCH, 3, 8, 8, generator=torch.Generator().manual_seed(0)).repeat(
        N // BATCH, 1, 1, 1
    )
    labels = torch.arange(BATCH).repeat(N // BATCH)
    return TensorDataset(images, labels)


def _epochs(collate: MixCollate, loader_seed: int, epochs: int = 2) -> list[list[torch.Tensor]]:
    loader = DataLoader(
        _repeating_dataset(), batch_size=BATCH, num_workers=2, collate_fn=collate,
        generator=torch.Generator().manual_seed(loader_seed),
    )  # fmt: skip
    return [[images for images, _ in loader] for _ in range(epochs)]


def _all_distinct(batches: list[torch.Tensor]) -> bool:
    return all(not torch.equal(a, b) for i, a in enumerate(batches) for b in batches[i + 1 :])


@pytest.mark.parametrize("with_generator", [True, False])
def test_workers_and_epochs_draw_different_masks(with_generator):
    generator = torch.Generator().manual_seed(5) if with_generator else None
    mixer = Mixer("cutmix", mode="elem", num_classes=BATCH, generator=generator)
    state = generator.get_state() if generator is not None else None
    epochs = _epochs(MixCollate(mixer), loader_seed=0)
    # batches 0, 2 come from worker 0 and 1, 3 from worker 1; both epochs together
    assert _all_distinct(epochs[0] + epochs[1])
    if generator is not None:
        assert torch.equal(generator.get_state(), state)  # the parent's mixer is untouched


def test_workers_are_reproducible_given_the_loader_seed():
    def run(loader_seed: int) -> list[list[torch.Tensor]]:
        mixer = Mixer(["mixup", "cutmix"], mode="elem", num_classes=BATCH,
                      generator=torch.Generator().manual_seed(5))  # fmt: skip
        return _epochs(MixCollate(mixer), loader_seed)

    first, again, other = run(0), run(0), run(1)
    flat = [b for epoch in first for b in epoch]
    assert all(torch.equal(a, b) for a, b in zip(flat, [b for e in again for b in e], strict=True))
    assert not any(
        torch.equal(a, b) for a, b in zip(flat, [b for e in other for b in e], strict=True)
    )


def test_main_process_uses_the_mixer_itself():
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    loader = DataLoader(_repeating_dataset(), batch_size=BATCH, num_workers=0,
                        collate_fn=MixCollate(Mixer("cutmix", num_classes=BATCH, generator=generator)))  # fmt: skip
    batches = [images for images, _ in loader]
    assert _all_distinct(batches) and not torch.equal(generator.get_state(), state)
