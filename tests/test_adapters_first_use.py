"""Adapters and checkpoints at first use (issue 20, items 16, 20, 21, 22)."""

from pathlib import Path

import pytest
import torch

from unimix import Mixer

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
START = (ROOT / "docs" / "getting-started.md").read_text()
HF = (ROOT / "docs" / "integrations" / "huggingface.md").read_text()


def test_item21_mix_collator_takes_the_label_key_of_hf_datasets():
    pytest.importorskip("transformers")
    from unimix.integrations.hf import MixCollator

    collator = MixCollator(Mixer("mixup", num_classes=3, generator=torch.Generator().manual_seed(0)))
    features = [{"pixel_values": torch.rand(3, 4, 4), "label": i % 3} for i in range(4)]
    batch = collator(features)
    assert "label" not in batch and batch["labels"].shape == (4, 3)
    assert torch.allclose(batch["labels"].sum(1), torch.ones(4))
    plain = collator.collate(features)  # evaluation: unmixed, under the name models take
    assert plain["labels"].tolist() == [0, 1, 2, 0]


def test_item21_readme_says_a_plain_trainer_mixes_evaluation_batches():
    assert "also mixes the evaluation batches" in HF and "use `MixTrainer`" in HF


def test_item20_readme_installs_torch_and_torchvision_together_from_the_cpu_index():
    cmd = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    for text in (README, START):
        assert cmd in text and "--constraint cpu-torch.txt" in text
        assert "pip then keeps that torch" not in text  # the false promise


def test_item22_readme_bounds_uint8_rounding():
    assert "uint8" in START and "0.5 / |x_a − x_b|" in START and "0.016" in START


def test_item16_a_wrong_shaped_weight_names_the_tensor_and_both_shapes(tmp_path):
    from unimix.train.checkpoint import CheckpointError
    from unimix.train.state import load_model_state

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    weights = dict(model.state_dict())
    weights["1.weight"] = torch.zeros(5, 3)
    with pytest.raises(CheckpointError, match=r"1\.weight: checkpoint \(5, 3\) vs model \(2, 3\)"):
        load_model_state(model, {"model": weights}, tmp_path / "checkpoint.pt")
