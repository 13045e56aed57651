"""MixMixin with the real Lightning Trainer on scikit-learn's digits: training sees soft targets."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning")
datasets = pytest.importorskip("sklearn.datasets")

from unimix import Mixer  # noqa: E402
from unimix.integrations.lightning import MixMixin, mix_loss  # noqa: E402

K = 10


def digits(n: int = 96):
    data = datasets.load_digits()
    images = torch.tensor(data.images[:n], dtype=torch.float32)[:, None] / 16.0  # [n, 1, 8, 8]
    labels = torch.tensor(data.target[:n])
    return images, labels


def trainer(steps: int = 3) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, limit_val_batches=1,
        num_sanity_val_steps=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip


class Steps(L.LightningModule):
    """A tiny classifier that records what its steps receive (no mixing of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, K))
        self.train_batches: list[tuple[torch.Tensor, ...]] = []
        self.val_batches: list[tuple[torch.Tensor, ...]] = []

    def training_step(self, batch, batch_idx):
        self.train_batches.append(tuple(t.detach().clone() for t in batch))
        images, targets = batch[0], batch[1]
        return self.mix_loss(self.net(images), targets)

    def validation_step(self, batch, batch_idx):
        self.val_batches.append(tuple(t.detach().clone() for t in batch))
        return self.mix_loss(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def mix_loss(self, logits, targets):
        return mix_loss(logits, targets)


class Recorder(MixMixin, Steps):
    def __init__(self, mixer: Mixer | None) -> None:
        super().__init__()
        self.mixer = mixer


def loaders(with_index: bool = True):
    images, labels = digits()
    tensors = (images, labels, torch.arange(len(labels))) if with_index else (images, labels)
    dataset = TensorDataset(*tensors)
    return DataLoader(dataset, batch_size=16, shuffle=True), DataLoader(dataset, batch_size=16)


def test_trainer_training_step_sees_mixed_images_and_soft_targets():
    images, labels = digits()
    mixer = Mixer("mixup", alpha=1.0, num_classes=K, generator=torch.Generator().manual_seed(0))
    model = Recorder(mixer)
    trainer(3).fit(model, *loaders())
    assert len(model.train_batches) == 3
    for mixed, targets, index in model.train_batches:
        assert targets.shape == (16, K) and targets.dtype == torch.float32
        torch.testing.assert_close(targets.sum(1), torch.ones(16))
        y = labels[index]
        onehot = torch.nn.functional.one_hot(y, K).float()
        # batch-mode Mixup: one λ, partner = flip; labels and pixels carry the same λ
        differ = y != y.flip(0)
        assert differ.any()
        lam = targets[differ.nonzero()[0, 0], y[differ][0]]
        assert 0 < lam < 1
        torch.testing.assert_close(targets, lam * onehot + (1 - lam) * onehot.flip(0))
        x = images[index]
        torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-5, rtol=0)
    # validation (sanity check and the epoch's) is never mixed: class indices, original images
    assert model.val_batches
    for val_images, val_labels, index in model.val_batches:
        assert val_labels.dtype == torch.int64 and val_labels.dim() == 1
        torch.testing.assert_close(val_images, images[index])


def test_hmix_gmix_per_row_give_two_class_soft_targets():
    mixer = Mixer(["hmix", "gmix"], mode="elem", num_classes=K, r=0.5)
    model = Recorder(mixer)
    trainer(2).fit(model, *loaders())
    for _, targets, _ in model.train_batches:
        assert ((targets > 0).sum(1) <= 2).all()
        assert (targets.max(1).values < 1).any()


def test_mix_enabled_false_trains_on_class_indices():
    model = Recorder(Mixer("cutmix", num_classes=K))
    model.mix_enabled = False
    trainer(1).fit(model, *loaders(with_index=False))
    ((images, labels),) = model.train_batches
    assert labels.dtype == torch.int64 and labels.shape == (16,)


def test_on_a_datamodule_too():
    class Digits(MixMixin, L.LightningDataModule):
        def __init__(self) -> None:
            super().__init__()
            self.mixer = Mixer("gmix", num_classes=K)

        def train_dataloader(self):
            return loaders(with_index=False)[0]

    model = Steps()  # the datamodule mixes
    trainer(1).fit(model, datamodule=Digits())
    ((images, targets),) = model.train_batches
    assert targets.shape == (16, K) and targets.is_floating_point()


def test_dict_batches_and_missing_mixer():
    class DictRecorder(Recorder):
        def training_step(self, batch, batch_idx):
            self.train_batches.append((batch["image"], batch["label"]))
            return self.mix_loss(self.net(batch["image"]), batch["label"])

    images, labels = digits(32)
    data = [{"image": images[i], "label": labels[i]} for i in range(32)]
    model = DictRecorder(Mixer("cutmix", num_classes=K))
    trainer(1).fit(model, DataLoader(data, batch_size=16))
    ((_, targets),) = model.train_batches
    assert targets.shape == (16, K)

    with pytest.raises(TypeError, match="self.mixer"):
        trainer(1).fit(Recorder(None), DataLoader(data, batch_size=16))


def test_mix_loss_is_softmax_cross_entropy_for_both_target_kinds():
    logits = torch.randn(5, K)
    labels = torch.tensor([0, 3, 9, 2, 2])
    onehot = torch.nn.functional.one_hot(labels, K).float()
    torch.testing.assert_close(mix_loss(logits, labels), mix_loss(logits, onehot))
    soft = torch.softmax(torch.randn(5, K), 1)
    expected = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(mix_loss(logits, soft), expected)


def test_checkpoint_keeps_the_mixer_random_state(tmp_path):
    model = Recorder(Mixer("hmix", num_classes=K, generator=torch.Generator().manual_seed(3)))
    fit = trainer(2)
    fit.fit(model, loaders(with_index=False)[0])
    path = tmp_path / "last.ckpt"
    fit.save_checkpoint(path)
    state = model.mixer.generator.get_state()

    fresh = Recorder(Mixer("hmix", num_classes=K, generator=torch.Generator().manual_seed(99)))
    fresh.on_load_checkpoint(torch.load(path, weights_only=False))
    assert torch.equal(fresh.mixer.generator.get_state(), state)
