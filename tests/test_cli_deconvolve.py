"""``coordgate deconvolve``: TIFFs in and out with their pixel size, a fit line per frame,
the same numbers as the library, and clean errors that leave no output behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from coordgate.cli import main
from coordgate.deconvolution import DeconvolutionSettings, deconvolve_frame
from coordgate.images import PixelSize, read_pixel_size, write_tiff
from coordgate.optics import MeasuredField, PSFField
from tests.helpers import sharp_and_blurred

FIELD = PSFField.default(psf_size=11, max_defocus=0.4)


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return sharp_and_blurred(FIELD, (72, 64))[1]


def _field_file(tmp_path, field=FIELD, name="field") -> str:
    return str(field.save(tmp_path / f"{name}.npz"))


def test_deconvolve_writes_float32_tiffs_with_their_pixel_size(tmp_path, frame, capsys):
    image = write_tiff(tmp_path / "in.tif", frame, pixel_size=PixelSize(0.1, 0.12, "um"))
    stack = write_tiff(tmp_path / "stack.tif", np.stack([frame, frame[::-1]]))
    out = tmp_path / "out"
    field = _field_file(tmp_path)
    assert main(["deconvolve", str(image), str(stack), "--psf-field", field, "-o", str(out)]) == 0
    result = tifffile.imread(out / "in.tif")
    assert result.dtype == np.float32 and result.shape == frame.shape
    assert read_pixel_size(out / "in.tif") == pytest.approx(PixelSize(0.1, 0.12, "um"))
    assert tifffile.imread(out / "stack.tif").shape == (2, *frame.shape)
    expected = deconvolve_frame(frame, FIELD, DeconvolutionSettings()).image
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)
    text = capsys.readouterr().out
    assert "in.tif: Richardson-Lucy, 100 iterations" in text and "noise alone" in text
    assert "stack.tif frame 1:" in text
    manifest = json.loads((out / "deconvolve.json").read_text())
    assert [f["frame"] for f in manifest["frames"]] == [0, 0, 1]
    assert manifest["settings"]["method"] == "rl" and manifest["field"] == FIELD.config()
    first = manifest["frames"][0]
    assert first["residual"] > 0 and first["noise"]["gain"] > 0


def test_options_reach_the_library(tmp_path, frame):
    image = write_tiff(tmp_path / "in.tif", frame)
    field = _field_file(tmp_path)
    options = ["--tv", "0", "--stop", "0.9", "--iterations", "40", "--background", "0.001"]
    where = ["--origin", "8", "16", "--full-size", "100", "90", "--tile", "24"]
    out = tmp_path / "out"
    assert (
        main(["deconvolve", str(image), "--psf-field", field, "-o", str(out), *options, *where])
        == 0
    )
    settings = DeconvolutionSettings(tv=0.0, stop=0.9, iterations=40, background=0.001, tile=24)
    expected = deconvolve_frame(frame, FIELD, settings, origin=(8, 16), full_size=(100, 90))
    np.testing.assert_allclose(tifffile.imread(out / "in.tif"), expected.image, atol=1e-6)
    assert json.loads((out / "deconvolve.json").read_text())["frames"][0]["stopped_by"] == (
        expected.stopped_by
    )
    wiener = tmp_path / "wiener"
    args = ["deconvolve", str(image), "--psf-field", field, "-o", str(wiener)]
    assert main([*args, "--method", "wiener", "--balance", "0.1"]) == 0
    expected = deconvolve_frame(frame, FIELD, DeconvolutionSettings(method="wiener", balance=0.1))
    np.testing.assert_allclose(tifffile.imread(wiener / "in.tif"), expected.image, atol=1e-6)


def _refused(tmp_path, capsys, images, *options) -> str:
    out = tmp_path / "out"
    paths = [str(p) for p in images]
    assert main(["deconvolve", *paths, "-o", str(out), *options]) == 2
    assert not out.exists() or not any(out.iterdir())  # nothing written, not even half
    return capsys.readouterr().err


def test_bad_input_is_refused_before_anything_is_written(tmp_path, frame, capsys):
    good = write_tiff(tmp_path / "good.tif", frame)
    field = ["--psf-field", _field_file(tmp_path)]
    nan = frame.copy()
    nan[3, 4] = np.nan
    bad = write_tiff(tmp_path / "nan.tif", nan)
    assert "nan.tif has 1 NaN or infinite pixel(s)" in _refused(
        tmp_path, capsys, [good, bad], *field
    )
    negative = write_tiff(tmp_path / "negative.tif", frame - frame.mean())
    err = _refused(tmp_path, capsys, [good, negative], *field)
    assert "negative.tif has negative intensities" in err and "expects photon counts" in err
    err = _refused(tmp_path, capsys, [good], "--psf-field", str(tmp_path / "absent.npz"))
    assert "PSF field file not found" in err
    err = _refused(tmp_path, capsys, [tmp_path / "absent.tif"], *field)
    assert "image file not found" in err
    measured = MeasuredField(FIELD.grid(5), sensor_size=(128, 128))
    other = _field_file(tmp_path, measured, "measured")
    err = _refused(tmp_path, capsys, [good], "--psf-field", other)
    assert "measured on a 128x128 sensor but the image is 72x64" in err
    err = _refused(tmp_path, capsys, [good], *field, "--origin", "1", "2")
    assert "records no sensor size; give the sensor's full size" in err


def test_a_calibrated_field_takes_a_crop_at_its_origin(tmp_path, frame):
    measured = MeasuredField(FIELD.grid(5), sensor_size=(100, 90))
    field = _field_file(tmp_path, measured)
    image = write_tiff(tmp_path / "crop.tif", frame)
    out = tmp_path / "out"
    args = ["deconvolve", str(image), "--psf-field", field, "-o", str(out)]
    assert main([*args, "--origin", "10", "20", "--iterations", "20"]) == 0
    manifest = json.loads((out / "deconvolve.json").read_text())
    assert manifest["settings"]["origin"] == [10.0, 20.0]
    settings = DeconvolutionSettings(iterations=20)
    expected = deconvolve_frame(frame, measured, settings, origin=(10, 20))
    np.testing.assert_allclose(tifffile.imread(out / "crop.tif"), expected.image, atol=1e-6)
