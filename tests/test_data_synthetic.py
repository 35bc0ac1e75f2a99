"""Synthetic microscopy: determinism per (seed, index), sane statistics, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coordgate.data.realism import image_statistics, radial_power_spectrum
from coordgate.data.synthetic import MicroscopyStyle, SyntheticMicroscopy, synthetic_microscopy

SIZE = (37, 31)


def test_shape_dtype_and_range():
    x = synthetic_microscopy(6, SIZE, seed=3)
    assert x.shape == (6, 1, *SIZE) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


def test_deterministic_per_seed_and_index_whatever_the_batch():
    a = synthetic_microscopy(5, SIZE, seed=1, batch_size=5)
    b = synthetic_microscopy([3, 1], SIZE, seed=1, batch_size=1)
    assert torch.equal(a, synthetic_microscopy(5, SIZE, seed=1, batch_size=5))
    torch.testing.assert_close(b[0], a[3], atol=1e-5, rtol=0)
    torch.testing.assert_close(b[1], a[1], atol=1e-5, rtol=0)
    assert not torch.allclose(a, synthetic_microscopy(5, SIZE, seed=2))
    assert not torch.allclose(a[0], a[1])


def test_statistics_in_a_sane_range():
    x = synthetic_microscopy(24, 64, seed=0)[:, 0]
    per_image_std = x.std(dim=(-2, -1))
    assert (per_image_std > 0.02).all(), "no blank images"
    saturated = (x >= 1).float().mean(dim=(-2, -1))
    assert (saturated <= 0.01).all(), "at most 1 % saturated pixels"
    assert 0.02 < x.mean() < 0.5
    stats = image_statistics(x.numpy())
    # Natural and microscopy images have power spectra falling roughly as f**-2 .. f**-4.
    assert -4.5 < stats["spectral_slope"] < -1.5
    assert 0.02 < stats["foreground_fraction"] < 0.9


def test_structure_varies_between_images():
    x = synthetic_microscopy(8, 48, seed=5)[:, 0]
    means = x.mean(dim=(-2, -1))
    assert means.max() > 1.5 * means.min()


def test_larger_images_and_style():
    style = MicroscopyStyle(cell_radius=(3.0, 4.0), filaments_per_cell=0.0, puncta_per_cell=0.0)
    x = synthetic_microscopy(2, (70, 45), seed=0, style=style)
    assert x.shape == (2, 1, 70, 45)
    assert MicroscopyStyle.from_dict(style.to_dict()) == style


def test_dataset_view_matches_function():
    dataset = SyntheticMicroscopy(3, SIZE, seed=4)
    assert len(dataset) == 3
    torch.testing.assert_close(dataset[2], synthetic_microscopy([2], SIZE, seed=4)[0])
    with pytest.raises(IndexError):
        dataset[3]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"indices": 2, "size": 0}, "size"),
        ({"indices": 2, "size": (5, 5, 5)}, "size"),
        ({"indices": -1, "size": 8}, "number of images"),
        ({"indices": [0, -2], "size": 8}, "indices"),
        ({"indices": 2, "size": 8, "seed": -1}, "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_microscopy(**kwargs)


def test_bad_style():
    with pytest.raises(ValueError, match="cell_radius"):
        MicroscopyStyle(cell_radius=(5.0, 2.0))
    with pytest.raises(ValueError, match="peak"):
        MicroscopyStyle(peak=(0.5, 1.5))


def test_power_spectrum_of_white_noise_is_flat():
    noise = np.random.default_rng(0).standard_normal((4, 64, 64))
    _, power = radial_power_spectrum(noise)
    assert power.max() / power.min() < 2


def test_comparison_with_real_images(tmp_path):
    from coordgate.data.realism import compare_with_real

    record = compare_with_real(tmp_path, n=4, size=64)
    assert (tmp_path / "comparison.png").stat().st_size > 1000
    assert set(record["statistics"]) == {"synthetic", "real microscopy"}
    assert (tmp_path / "comparison.json").is_file()
