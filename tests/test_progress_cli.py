"""``unimix evaluate`` shows progress: a bar on a terminal, one line per stage otherwise
(issue 10, item 8)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from unimix.commands._progress import StageProgress
from unimix.evaluate import evaluate_model


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_stage_progress_off_a_terminal_writes_one_line_per_stage_edge() -> None:
    stream = io.StringIO()
    bar = StageProgress("evaluate", "attacks on", unit="images", stream=stream)
    for done in (10, 20, 25):
        bar.update(done, 25)
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("evaluate: attacks on 25 images")
    assert lines[1].startswith("evaluate: done: 25 images in ")


def test_stage_progress_on_a_terminal_draws_a_bar() -> None:
    pytest.importorskip("tqdm")
    stream = _Terminal()
    with StageProgress("evaluate", "attacks on", unit="images", stream=stream) as bar:
        for done in (10, 20, 25):
            bar.update(done, 25)
    text = stream.getvalue()
    assert "\r" in text and "/25" in text and "images/s" in text
    assert "done:" not in text  # the bar replaces the stage lines


def test_stage_progress_that_never_started_is_silent() -> None:
    stream = io.StringIO()
    StageProgress("evaluate", "x", stream=stream).close()
    assert stream.getvalue() == ""


def test_evaluate_model_reports_each_batch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    images, labels = torch.rand(10, 3, 8, 8), torch.randint(0, 4, (10,))
    calls: list[tuple[int, int | None]] = []
    evaluate_model(
        model,
        (images, labels),
        mean=0.5,
        std=0.25,
        eps_list=[1 / 255],
        pgd_steps=1,
        occlusion_size=2,
        batch_size=4,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(4, 10), (8, 10), (10, 10)]
    calls.clear()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels), batch_size=3
    )
    evaluate_model(
        model,
        loader,
        mean=0.5,
        std=0.25,
        eps_list=[],
        pgd_steps=0,
        occlusion_size=None,
        max_batches=2,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(3, 6), (6, 6)]
