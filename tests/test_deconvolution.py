"""Deconvolution with a PSF field (:mod:`coordgate.deconvolution`), checked against the
forward model: frames blurred by a field are restored by that field, a wrong field is
reported by its fit, tiles equal the whole frame, bad input is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from coordgate.deconvolution import (
    DEFAULT_BALANCE,
    DEFAULT_ITERATIONS,
    STOP_DISCREPANCY,
    TV_STRENGTH,
    DeconvolutionSettings,
    check_frame,
    deconvolve_frame,
    field_frame,
)
from coordgate.optics import MeasuredField, PSFField
from coordgate.optics.restoration import WIENER_GRID
from coordgate.training.metrics import psnr
from tests.helpers import sharp_and_blurred

SIZE = (96, 84)
DEFAULTS = Path(__file__).resolve().parent.parent / "benchmarks/results/deconvolve_defaults.json"


def _psnr(x: np.ndarray, sharp: np.ndarray) -> float:
    return float(psnr(torch.from_numpy(x), torch.from_numpy(sharp)))


@pytest.fixture(scope="module")
def lens() -> PSFField:
    return PSFField.default()


@pytest.fixture(scope="module")
def noisy(lens):
    return sharp_and_blurred(lens)


def test_the_defaults_are_the_studys_choice():
    chosen = json.loads(DEFAULTS.read_text())["results"]
    rule, wiener = chosen["chosen"], chosen["wiener"]["chosen"]
    assert (rule["tv_strength"], rule["iterations"], rule["stop"]) == (
        TV_STRENGTH,
        DEFAULT_ITERATIONS,
        STOP_DISCREPANCY,
    )
    assert (wiener["grid"], wiener["balance"]) == (WIENER_GRID, DEFAULT_BALANCE)


def test_richardson_lucy_with_the_true_field_raises_psnr(lens, noisy):
    """Default settings at the default noise: +2 dB at least (measured: 31.32 -> 34.79)."""
    sharp, blurred = noisy
    result = deconvolve_frame(blurred, lens, DeconvolutionSettings())
    assert result.image.shape == SIZE and result.image.dtype == np.float32
    assert result.iterations == DEFAULT_ITERATIONS and result.stopped_by == "iterations"
    assert _psnr(result.image, sharp) > _psnr(blurred, sharp) + 2
    # the fit reaches the noise (measured 0.999 of it) and no further
    assert 0.9 < result.residual / result.noise_residual < 1.05
    assert 0 < result.tv <= 0.1 and "residual" in result.describe()


def test_without_noise_richardson_lucy_is_hardly_regularised_and_gains_more(lens):
    sharp, blurred = sharp_and_blurred(lens, noise=False)
    result = deconvolve_frame(blurred, lens, DeconvolutionSettings())
    assert result.tv < 1e-3
    assert _psnr(result.image, sharp) > _psnr(blurred, sharp) + 4


def test_wiener_with_the_true_field_raises_psnr(lens, noisy):
    """Less than Richardson-Lucy (measured here: 31.32 -> 31.51 dB)."""
    sharp, blurred = noisy
    result = deconvolve_frame(blurred, lens, DeconvolutionSettings(method="wiener"))
    assert result.method == "wiener" and result.iterations == 0
    assert _psnr(result.image, sharp) > _psnr(blurred, sharp) + 0.1


@pytest.mark.parametrize("wrong", [{"tilt": 0.5}, {"max_defocus": 1.5}])
def test_a_wrong_field_reports_a_worse_fit(lens, noisy, wrong):
    """A focal plane tilted by half a wave across the frame, or twice the defocus, where
    the truth is the default lens: the fit stays 18-21 % above the noise (measured), the
    right field's within 1 % of it."""
    sharp, blurred = noisy
    right = deconvolve_frame(blurred, lens, DeconvolutionSettings())
    result = deconvolve_frame(blurred, PSFField.default(**wrong), DeconvolutionSettings())
    assert result.residual > 1.1 * result.noise_residual
    assert result.residual > 1.1 * right.residual
    assert _psnr(result.image, sharp) < _psnr(right.image, sharp) - 2


def test_the_discrepancy_stop_keeps_plain_richardson_lucy_from_the_noise(lens, noisy):
    sharp, blurred = noisy
    unstopped = DeconvolutionSettings(tv=0, iterations=60)
    stopped = DeconvolutionSettings(tv=0, iterations=60, stop=0.9)
    late, early = (deconvolve_frame(blurred, lens, s) for s in (unstopped, stopped))
    assert early.stopped_by == "discrepancy" and early.iterations < 30
    assert _psnr(early.image, sharp) > _psnr(late.image, sharp) + 1


@pytest.mark.parametrize("frame", [{}, {"origin": (30, 21), "full_size": (200, 180)}])
def test_tiled_richardson_lucy_equals_the_whole_frame(frame):
    field = PSFField.default(psf_size=11, max_defocus=0.4)
    size = (131, 117)
    sharp, blurred = sharp_and_blurred(field, size, **frame)
    whole, tiled = (
        deconvolve_frame(blurred, field, DeconvolutionSettings(tile=tile), **frame)
        for tile in (None, 40)
    )
    assert np.abs(tiled.image - whole.image).max() < 1e-4
    assert tiled.iterations == whole.iterations and tiled.residual == pytest.approx(
        whole.residual, rel=1e-5
    )


def test_the_origin_places_the_frame_on_the_sensor(lens):
    sensor_sharp, sensor = sharp_and_blurred(lens, (160, 140))
    crop = sensor[40:136, 30:114]
    settings = DeconvolutionSettings(iterations=30)
    placed = deconvolve_frame(crop, lens, settings, origin=(40, 30), full_size=(160, 140))
    centred = deconvolve_frame(crop, lens, settings)
    truth = sensor_sharp[40:136, 30:114]
    assert _psnr(placed.image, truth) > _psnr(centred.image, truth) + 0.3
    assert placed.residual < centred.residual


def test_a_field_measured_on_a_sensor_applies_to_that_sensor(lens):
    measured = MeasuredField(lens.grid(5), sensor_size=(96, 84))
    assert field_frame(measured, SIZE).full_size == (96.0, 84.0)
    crop = field_frame(measured, (40, 30), origin=(10, 20))
    assert crop.origin == (10.0, 20.0) and crop.full_size == (96.0, 84.0)
    with pytest.raises(ValueError, match="measured on a 96x84 sensor but the image is 40x30"):
        field_frame(measured, (40, 30))
    with pytest.raises(ValueError, match="not on the 100x84 sensor given"):
        field_frame(measured, (40, 30), origin=(0, 0), full_size=(100, 84))
    with pytest.raises(ValueError, match="records no sensor size"):
        field_frame(lens, (40, 30), origin=(10, 20))


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (np.full((20, 20), np.nan), "400 NaN or infinite"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), "1 NaN or infinite"),
        (np.random.default_rng(0).standard_normal((20, 20)), "negative intensities"),
        (np.zeros((20, 20)), "no light"),
    ],
)
def test_frames_that_are_no_intensity_images_are_refused(frame, match):
    with pytest.raises(ValueError, match=match):
        check_frame(frame)


def test_read_noise_about_zero_is_no_negative_image(lens, noisy):
    _, blurred = noisy
    dark = blurred - blurred.min()  # some pixels just below zero, as read noise leaves them
    check_frame(dark - 0.002)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"method": "lucy"}, "method"),
        ({"iterations": 0}, "iterations"),
        ({"iterations": 2.5}, "iterations"),
        ({"tv": -1.0}, "tv"),
        ({"tv": 0.5}, "at most"),
        ({"stop": float("nan")}, "stop"),
        ({"balance": 0.0}, "balance"),
        ({"background": -1.0}, "background"),
        ({"tile": 0}, "tile"),
    ],
)
def test_settings_are_validated_at_the_door(options, match):
    with pytest.raises(ValueError, match=match):
        DeconvolutionSettings(**options)


def test_progress_counts_iterations_and_can_stop_the_run(lens, noisy):
    _, blurred = noisy
    seen = []
    deconvolve_frame(
        blurred, lens, DeconvolutionSettings(iterations=5), progress=lambda *a: seen.append(a)
    )
    assert seen == [(k, 5) for k in range(1, 6)]

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop

    with pytest.raises(Stop):
        deconvolve_frame(blurred, lens, DeconvolutionSettings(), progress=stop)


def test_deconvolution_follows_the_device(lens, noisy, device):
    _, blurred = noisy
    settings = DeconvolutionSettings(iterations=10)
    here = deconvolve_frame(blurred, lens, settings, device=device)
    cpu = deconvolve_frame(blurred, lens, settings)
    assert np.abs(here.image - cpu.image).max() < 1e-4
