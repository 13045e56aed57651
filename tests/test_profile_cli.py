"""Tests of ``unimix profile`` and the profile pictures of unimix.viz.profiles."""

from __future__ import annotations

import csv

import pytest
import torch

from unimix.cli import main
from unimix.theory import closed_form, distance_profile, pairwise_coefficients
from unimix.viz.profiles import plot_heatmaps, plot_radial_profiles, write_profile_plot

PNG = b"\x89PNG\r\n\x1a\n"


def test_profile_command_writes_plots_and_numbers(tmp_path, capsys):
    out = tmp_path / "prof"
    code = main(
        [
            "profile",
            "--methods",
            "mixup,cutmix,hmix",
            "--size",
            "8x10",
            "--samples",
            "64",
            "--out",
            str(out),
            "--closed-form",
            "--weighting",
            "label",
        ]
    )
    assert code == 0
    for name in ("profile.png", "heatmap.png"):
        assert (out / name).read_bytes()[:8] == PNG
    with open(out / "profile.csv") as fh:
        rows = list(csv.DictReader(fh))
    radii = round((7**2 + 9**2) ** 0.5) + 1
    assert len(rows) == 3 * radii
    mixup = [r for r in rows if r["method"] == "mixup"]
    # Mixup's label-weighted coefficient: E[λ(1 − λ)] = 1/6 (closed form), flat in distance
    assert {r["A"] for r in mixup} == {mixup[0]["A"]}
    assert float(mixup[0]["closed_form_torus"]) == pytest.approx(1 / 6, abs=1e-7)
    assert {r["method"] for r in rows} == {"mixup", "cutmix", "hmix(r=0.5)"}
    with open(out / "heatmap.csv") as fh:
        heat = list(csv.DictReader(fh))
    assert len(heat) == 3 * 8 * 10
    assert "wrote" in capsys.readouterr().out


def test_profile_command_rejects_unknown_methods(tmp_path):
    with pytest.raises(SystemExit):
        main(["profile", "--methods", "mixup,nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["profile", "--size", "0x4", "--out", str(tmp_path)])


def test_write_profile_plot(tmp_path):
    path = tmp_path / "radial.png"
    profiles = write_profile_plot(["mixup", "gmix"], path, height=8, width=6, samples=32)
    assert list(profiles) == ["mixup", "gmix"]
    assert profiles["gmix"].offsets.shape == (15, 11)
    assert path.read_bytes()[:8] == PNG
    with pytest.raises(ValueError):
        write_profile_plot([], path)
    with pytest.raises(TypeError):
        write_profile_plot("mixup", path)


def test_plot_functions_return_figures(tmp_path):
    g = torch.Generator().manual_seed(0)
    prof = {"cutmix": distance_profile("cutmix", 6, 6, samples=16, generator=g)}
    fig = plot_radial_profiles(prof, closed_forms={"cutmix": closed_form("cutmix", 6, 6)})
    assert len(fig.axes[0].lines) == 2
    maps = {
        "cutmix": pairwise_coefficients("cutmix", 6, 6, samples=16, generator=g, pixels=[(3, 3)])
    }
    fig = plot_heatmaps(maps, (3, 3), tmp_path / "h.png")
    assert (tmp_path / "h.png").exists() and fig.axes
    with pytest.raises(ValueError):
        plot_radial_profiles({})
