"""MixCollator + MixTrainer with a real transformers Trainer and a tiny model built from a config."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("sklearn.datasets")

from unimix import Mixer, soft_target_cross_entropy  # noqa: E402
from unimix.integrations.hf import MixCollator, MixTrainer, soft_target_loss  # noqa: E402

K = 10


class Digits(Dataset):
    """scikit-learn's digits as HF-style dict samples."""

    def __init__(self, n: int = 64, offset: int = 0) -> None:
        data = datasets.load_digits()
        self.images = torch.tensor(data.images[offset : offset + n], dtype=torch.float32)[:, None]
        self.images /= 16.0
        self.labels = torch.tensor(data.target[offset : offset + n])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[i], "labels": self.labels[i]}


def tiny_vit() -> torch.nn.Module:
    config = transformers.ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, num_labels=K,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.ViTForImageClassification(config)


class Recording(MixTrainer):
    """Records the labels and logits each loss computation sees, and the loss it returns."""

    seen: list[tuple[bool, torch.Tensor, torch.Tensor, torch.Tensor]]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"].clone()
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        self.seen.append((model.training, labels, outputs.logits.detach(), loss.detach()))
        return (loss, outputs) if return_outputs else loss


def make_trainer(tmp_path, collator, steps: int = 3) -> Recording:
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=16,
        per_device_eval_batch_size=16, use_cpu=True, report_to=[], save_strategy="no",
        logging_strategy="no", dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    trainer = Recording(
        model=tiny_vit(), args=args, train_dataset=Digits(), eval_dataset=Digits(32, 64),
        data_collator=collator,
    )  # fmt: skip
    trainer.seen = []
    return trainer


def test_trainer_trains_on_soft_targets_with_soft_cross_entropy_and_evaluates_unmixed(tmp_path):
    mixer = Mixer(["mixup", "gmix"], num_classes=K, generator=torch.Generator().manual_seed(0))
    trainer = make_trainer(tmp_path, MixCollator(mixer))
    trainer.train()
    training = [s for s in trainer.seen if s[0]]
    assert len(training) == 3
    for _, labels, logits, loss in training:
        assert labels.shape == (16, K) and labels.dtype == torch.float32
        torch.testing.assert_close(labels.sum(1), torch.ones(16))
        assert (labels.max(1).values < 1).any()  # mixed
        torch.testing.assert_close(loss, soft_target_cross_entropy(logits, labels))
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        assert not torch.isclose(loss, bce)

    metrics = trainer.evaluate()
    evaluation = [s for s in trainer.seen if not s[0]]
    assert evaluation
    for _, labels, logits, loss in evaluation:
        assert labels.dtype == torch.int64 and labels.dim() == 1  # never mixed
        torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, labels))
    assert "eval_loss" in metrics
    # the collator the Trainer holds is the mixing one again after evaluation
    assert isinstance(trainer.data_collator, MixCollator)


def test_what_the_model_alone_would_do_with_soft_labels():
    # The trap MixTrainer avoids: HF classifiers score float labels with multi-label BCE.
    model = tiny_vit()
    batch = MixCollator(Mixer("mixup", num_classes=K))([Digits()[i] for i in range(8)])
    out = model(**batch)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch["labels"])
    torch.testing.assert_close(out.loss, bce)
    assert not torch.isclose(out.loss, soft_target_cross_entropy(out.logits, batch["labels"]))


def test_collator_mixes_dict_batches_and_keeps_other_keys():
    features = [dict(Digits()[i], ids=i) for i in range(8)]
    mixer = Mixer("cutmix", mode="elem", num_classes=K, generator=torch.Generator().manual_seed(1))
    batch = MixCollator(mixer)(features)
    assert set(batch) == {"pixel_values", "labels", "ids"}
    assert batch["pixel_values"].shape == (8, 1, 8, 8)
    assert batch["labels"].shape == (8, K)
    assert torch.equal(batch["ids"], torch.arange(8))
    # an already-collated dict works too and is not modified in place
    collated = {"pixel_values": torch.rand(4, 1, 8, 8), "labels": torch.tensor([0, 1, 2, 3])}
    before = collated["pixel_values"].clone()
    out = MixCollator(Mixer("gmix", num_classes=K))(collated)
    assert torch.equal(collated["pixel_values"], before) and out["labels"].shape == (4, K)


def test_collator_bad_input_is_named():
    with pytest.raises(ValueError, match="num_classes"):
        MixCollator(Mixer("mixup"))
    with pytest.raises(TypeError, match="Mixer"):
        MixCollator("mixup")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="image_key"):
        MixCollator(Mixer("mixup", num_classes=K))([{"image": torch.zeros(1, 8, 8), "labels": 0}])


def test_soft_target_loss_normalises_over_the_accumulated_batch():
    logits = torch.randn(6, K)
    soft = torch.softmax(torch.randn(6, K), 1)
    outputs = {"logits": logits}
    mean = soft_target_cross_entropy(logits, soft)
    torch.testing.assert_close(soft_target_loss(outputs, soft), mean)
    # two micro-batches of 6 rows accumulated: the Trainer counts 2 * 6 * K label entries
    torch.testing.assert_close(soft_target_loss(outputs, soft, torch.tensor(12 * K)), mean / 2)
    labels = torch.tensor([0, 1, -100, 3, 4, 5])
    hard = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100)
    torch.testing.assert_close(soft_target_loss(outputs, labels), hard)
    torch.testing.assert_close(soft_target_loss(outputs, labels, torch.tensor(10)), hard / 2)
    with pytest.raises(ValueError, match="labels"):
        soft_target_loss(outputs, soft[:, :, None])
