"""``unimix gallery`` writes where it says and draws every method's mask; help texts list every
registered method (issue 10, item 8)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unimix import masks, registry
from unimix.cli import build_parser, main
from unimix.commands._methods import method_names
from unimix.viz.gallery import _mix_one, gallery_methods, resolve_output, source_mask


def _help(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return " ".join(sub.choices[command].format_help().split())  # undo argparse's wrapping


def test_method_names_are_every_registered_method() -> None:
    names = method_names()
    assert names == registry.available()
    assert {"mixup", "cutmix", "hmix", "gmix", "resizemix", "saliencymix", "puzzlemix"} <= set(
        names
    )


def test_a_newly_registered_method_appears_in_help() -> None:
    pytest.importorskip("yaml")

    @registry.register("zz_help_probe")
    class Probe(masks.MaskSampler):
        def sample(self, lam, height, width, device, generator):  # pragma: no cover
            raise NotImplementedError

    try:
        assert "zz_help_probe" in _help("train") and "zz_help_probe" in _help("study")
    finally:
        registry.unregister("zz_help_probe")


@pytest.mark.parametrize("command", ["train", "study", "gallery"])
def test_help_lists_every_method(command: str) -> None:
    pytest.importorskip("yaml")
    text = _help(command).replace(", ", ",")
    listed = text.split("methods:", 1)[1] if "methods:" in text else ""
    missing = [n for n in method_names() if n not in listed.replace(",", " ").split()]
    assert not missing, f"`unimix {command} --help` does not list {missing}"


def test_profile_help_lists_every_mask_method() -> None:

    text = _help("profile")
    missing = [n for n in registry.available("mask") if n not in text]
    assert not missing


def test_gallery_methods_cover_every_model_free_method() -> None:
    names = gallery_methods()
    expected = {n for n in method_names() if n != "none" and not registry.requires_model(n)}
    assert set(names) == expected
    assert names[:4] == ["mixup", "cutmix", "hmix", "gmix"]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), soft=st.booleans())
def test_source_mask_recovers_a_mask_where_images_differ(seed: int, soft: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(2, 3, 9, 11, generator=g)
    mask = torch.rand(9, 11, generator=g)
    if not soft:
        mask = (mask > 0.5).float()
    mixed = mask * a + (1 - mask) * b
    found = source_mask(mixed, a, b)
    differ = (a - b).abs().amax(dim=0) > 0.05
    assert found.shape == mask.shape
    torch.testing.assert_close(found[differ], mask[differ], atol=1e-3, rtol=0)


def test_source_mask_of_a_transformed_partner_is_zero() -> None:
    g = torch.Generator().manual_seed(0)
    a, b, other = torch.rand(3, 3, 8, 8, generator=g)
    mixed = a.clone()
    mixed[:, 2:5, 3:7] = other[:, 2:5, 3:7]  # neither a, b nor a blend of them: "from B"
    found = source_mask(mixed, a, b)
    assert torch.all(found[2:5, 3:7] == 0)
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:5, 3:7] = False
    assert torch.all(found[outside] == 1)


@pytest.mark.parametrize("name", ["resizemix", "saliencymix"])
def test_image_methods_have_a_mask_matching_their_label_weight(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 40, 56, generator=g)
    mixed, mask, lam_eff, derived = _mix_one(name, x, 0.65, 0.5, g)
    assert derived and mask.shape == (40, 56)
    assert 0 < mask.mean() < 1  # not blank: part from each image
    assert abs(float(mask.mean()) - lam_eff) < 0.02  # the pixel sources agree with the label


def test_resolve_output(tmp_path: Path) -> None:
    assert resolve_output(tmp_path) == tmp_path / "gallery.png"
    assert resolve_output(tmp_path / "new") == tmp_path / "new" / "gallery.png"
    assert resolve_output(tmp_path / "g.pdf") == tmp_path / "g.pdf"


@pytest.mark.parametrize("out", ["dir", "existing", "file.png"])
def test_gallery_writes_where_it_says(tmp_path: Path, out: str) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    (tmp_path / "existing").mkdir()
    target = tmp_path / out
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["gallery", "--out", str(target), "--methods", "mixup,resizemix"])
    assert code == 0
    written = Path(stdout.getvalue().strip().removeprefix("wrote "))
    assert written.is_file() and written.stat().st_size > 0
    expected = target if target.suffix else target / "gallery.png"
    assert written == expected
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [expected.name]
