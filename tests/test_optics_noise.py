import pytest
import torch

from coordgate.optics import (
    NoiseLevel,
    PSFField,
    SpatiallyVaryingBlur,
    estimate_noise,
    poisson_gaussian,
)


def test_seeded_noise_is_reproducible_and_generators_differ():
    x = torch.rand(1, 1, 37, 31)
    a = poisson_gaussian(x, photons=100, read_noise=2, generator=torch.Generator().manual_seed(3))
    b = poisson_gaussian(x, photons=100, read_noise=2, generator=torch.Generator().manual_seed(3))
    c = poisson_gaussian(x, photons=100, read_noise=2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype


def test_noise_statistics_follow_the_model():
    level, photons, read_noise = 0.3, 200.0, 3.0
    x = torch.full((200_000,), level, dtype=torch.float64)
    y = poisson_gaussian(
        x, photons=photons, read_noise=read_noise, generator=torch.Generator().manual_seed(0)
    )
    variance = (level * photons + read_noise**2) / photons**2
    assert abs(y.mean().item() - level) < 5 * (variance / len(x)) ** 0.5
    assert abs(y.var().item() / variance - 1) < 0.02


def test_without_read_noise_values_are_photon_counts():
    x = torch.rand(500, dtype=torch.float64)
    y = poisson_gaussian(x, photons=50, read_noise=0, generator=torch.Generator().manual_seed(0))
    counts = y * 50
    assert torch.allclose(counts, counts.round(), atol=1e-9) and (y >= 0).all()


def test_half_precision_input_keeps_its_dtype(device):
    x = torch.rand(4, 5, device=device).half()
    y = poisson_gaussian(x, photons=10, read_noise=1)
    assert y.dtype == torch.float16 and y.device.type == device.type


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (-torch.ones(3), {}, "non-negative"),
        (torch.tensor([float("nan")]), {}, "finite"),
        (torch.ones(3, dtype=torch.int64), {}, "floating"),
        (torch.ones(3), {"photons": 0}, "photons"),
        (torch.ones(3), {"read_noise": -1}, "read_noise"),
        (torch.ones(3), {"photons": float("inf")}, "photons"),
    ],
)
def test_noise_rejects_bad_input(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        poisson_gaussian(x, **{"photons": 10.0, "read_noise": 1.0, **kwargs})


@pytest.mark.parametrize(("photons", "read_noise"), [(1000.0, 2.0), (100.0, 5.0), (5000.0, 0.0)])
def test_the_noise_level_of_a_blurred_frame_is_estimated_from_the_frame(photons, read_noise):
    from coordgate.data.synthetic import synthetic_microscopy

    sharp = synthetic_microscopy([0], 128, seed=2).double()
    blurred = SpatiallyVaryingBlur(
        PSFField.default(), (128, 128), method="lowrank", padding="reflect", dtype=torch.float64
    ).A(sharp)
    generator = torch.Generator().manual_seed(1)
    noisy = poisson_gaussian(
        blurred.clamp_min(0), photons=photons, read_noise=read_noise, generator=generator
    )
    noise = estimate_noise(noisy)
    # 1 / photons within 25 % (gain and floor trade off where the read noise is large);
    # the variance they give at the frame's mean light, read noise included, within 15 %
    assert abs(noise.gain * photons - 1) < 0.25
    level = float(blurred.mean())
    expected = level / photons + (read_noise / photons) ** 2
    assert abs(float(noise.variance(torch.tensor(level))) / expected - 1) < 0.15
    assert noise.discrepancy(blurred, noisy) == pytest.approx(1, abs=0.1)
    assert noise.discrepancy(blurred, blurred) == 0


def test_noise_estimate_of_gaussian_noise_or_a_tiny_image():
    generator = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0.2, 0.8, 128).repeat(128, 1)
    gaussian = estimate_noise(ramp + 0.01 * torch.randn(128, 128, generator=generator))
    assert isinstance(gaussian, NoiseLevel)
    assert abs(float(gaussian.variance(torch.tensor(0.5))) / 1e-4 - 1) < 0.1
    with pytest.raises(ValueError, match="at least 4x4"):
        estimate_noise(torch.zeros(3, 8))
