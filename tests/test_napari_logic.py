"""The napari plugin's logic: plain functions, tested without napari or Qt.

The Deblur widget's result must be what ``coordgate deblur`` writes for the same image;
both call :mod:`coordgate.deblurring`, and these tests hold them to 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coordgate.inference import predict
from coordgate.models import build_model
from coordgate.napari.deblur import (
    Cancelled,
    DeblurSettings,
    checkpoint_summary,
    deblur_stack,
    devices,
    reference_checkpoints,
    suggested_normalisation,
)
from coordgate.napari.deconvolve import deconvolve_stack, field_choices, field_for
from coordgate.napari.fields import GAP, get_reader, psf_montage
from coordgate.napari.layers import (
    SENSOR_SIZE,
    as_frames,
    layer_pixels,
    output_layer,
    pixel_origin,
    sensor_size,
    stack_progress,
)
from coordgate.napari.simulate import blur_stack, load_field
from coordgate.optics import PSFField, SpatiallyVaryingBlur
from tests.helpers import cli_deblur, cli_deconvolve, lens_frames, save_tiny


def test_pixel_origin_is_translate_over_scale_on_the_image_plane():
    assert pixel_origin((0, 0), (1, 1)) is None
    assert pixel_origin((10, 20), (2, 0.5)) == (5.0, 40.0)
    assert pixel_origin((7, 3, 6), (1, 1, 3)) == (3.0, 2.0)  # a stack: last two axes
    with pytest.raises(ValueError, match="positive scale"):
        pixel_origin((1, 2), (0, 1))


def test_sensor_size_comes_from_the_widget_then_the_layer():
    assert sensor_size((0, 0)) is None
    assert sensor_size((0, 0), {SENSOR_SIZE: [512, 256]}) == (512.0, 256.0)
    assert sensor_size((100, 200), {SENSOR_SIZE: [512, 256]}) == (100.0, 200.0)
    with pytest.raises(ValueError, match="both"):
        sensor_size((100, 0))


def test_frames_and_pixels_of_a_layer():
    assert as_frames(np.zeros((5, 6), np.uint16)).shape == (1, 5, 6)
    stack = as_frames(np.arange(2 * 3 * 5 * 6).reshape(2, 3, 5, 6))
    assert stack.shape == (6, 5, 6) and stack.dtype == np.float32 and stack[-1, -1, -1] == 179
    with pytest.raises(ValueError, match="real numbers"):
        as_frames(np.zeros((4, 4), np.complex64))
    with pytest.raises(ValueError, match="two non-empty axes"):
        as_frames(np.zeros(7))
    with pytest.raises(ValueError, match="RGB"):
        layer_pixels(np.zeros((4, 4, 3)), rgb=True)
    levels = [np.zeros((8, 8)), np.zeros((4, 4))]
    assert layer_pixels(levels, multiscale=True) is levels[0]


def test_output_layer_lies_where_its_input_lay():
    data = np.ones((3, 4))
    same, kwargs = output_layer(
        data, "x deblurred", scale=(2, 2), translate=(4, 8), full_size=(64, 32), metadata={"a": 1}
    )
    assert same is data
    assert kwargs == {
        "name": "x deblurred",
        "scale": (2, 2),
        "translate": (4, 8),
        "metadata": {"a": 1, SENSOR_SIZE: [64.0, 32.0]},
    }


def test_reference_checkpoints_are_found_by_study_and_name(tmp_path):
    assert reference_checkpoints([tmp_path]) == {}
    path = tmp_path / "cpu" / "checkpoints" / "cg-unet3.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    (tmp_path / "cpu" / "notes.safetensors").write_bytes(b"")
    assert reference_checkpoints([tmp_path]) == {"cpu/cg-unet3": path}
    # from the installed package: whatever is committed, each one a file
    assert all(p.is_file() for p in reference_checkpoints().values())


def test_devices_and_checkpoint_summary(tmp_path):
    assert devices()[:2] == ["auto", "cpu"]
    ckpt = save_tiny(tmp_path, full_size=(64, 48))
    assert checkpoint_summary(ckpt) == "cg-unet3, trained on 64x48 frames"
    assert suggested_normalisation(ckpt) == "checkpoint"
    bare = save_tiny(tmp_path / "bare", normalisation=None)
    assert suggested_normalisation(bare) == "none"
    assert checkpoint_summary(bare).endswith("64x64 frames; no recorded normalisation")


def test_settings_are_validated_at_the_door(tmp_path):
    with pytest.raises(ValueError, match="normalisation"):
        DeblurSettings(tmp_path, normalisation="percentile")
    with pytest.raises(ValueError, match="tile"):
        DeblurSettings(tmp_path, tile=0)


def test_deblur_equals_the_command_line_on_a_whole_frame(tmp_path):
    ckpt = save_tiny(tmp_path, full_size=(45, 37))
    image = np.random.default_rng(0).random((45, 37), dtype=np.float32)
    result, used = deblur_stack(image, DeblurSettings(ckpt))
    assert used is None and result.shape == image.shape and result.dtype == np.float32
    np.testing.assert_allclose(result, cli_deblur(tmp_path, ckpt, image), rtol=0, atol=1e-5)


def test_deblur_equals_the_command_line_on_a_tiled_crop_of_the_sensor(tmp_path):
    ckpt = save_tiny(tmp_path, full_size=(128, 128))
    image = np.random.default_rng(1).random((70, 90), dtype=np.float32) * 300
    settings = DeblurSettings(ckpt, tile=32, overlap=16, normalisation="per-image")
    result, used = deblur_stack(image, settings, origin=(10, 20), full_size=(128, 128))
    assert used == (128.0, 128.0)
    expected = cli_deblur(
        tmp_path,
        ckpt,
        image,
        *("--origin", "10", "20", "--full-size", "128", "128"),
        *("--tile", "32", "--overlap", "16", "--normalisation", "per-image"),
    )
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)
    # the position matters to a coordinate-aware model
    elsewhere, _ = deblur_stack(image, settings, origin=(50, 30), full_size=(128, 128))
    assert np.abs(elsewhere - result).max() > 1e-3


def test_a_translated_layer_lies_on_the_sensor_the_model_was_trained_on(tmp_path):
    ckpt = save_tiny(tmp_path, full_size=(96, 96))
    image = np.random.default_rng(2).random((40, 48), dtype=np.float32)
    result, used = deblur_stack(image, DeblurSettings(ckpt), origin=(8, 16))
    assert used == (96.0, 96.0)
    expected = cli_deblur(tmp_path, ckpt, image, "--origin", "8", "16", "--full-size", "96", "96")
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="trained on a 96x96 sensor frame"):
        deblur_stack(image, DeblurSettings(ckpt))


def test_a_stack_is_deblurred_frame_by_frame_like_a_multipage_tiff(tmp_path):
    ckpt = save_tiny(tmp_path, "unet3", normalisation=None)
    stack = np.random.default_rng(3).random((2, 3, 24, 40), dtype=np.float32)
    result, _ = deblur_stack(stack, DeblurSettings(ckpt, normalisation="per-image"))
    assert result.shape == stack.shape
    expected = cli_deblur(tmp_path, ckpt, stack.reshape(6, 24, 40), "--normalisation", "per-image")
    np.testing.assert_allclose(result.reshape(6, 24, 40), expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="records no normalisation"):
        deblur_stack(stack, DeblurSettings(ckpt))


def test_progress_counts_windows_over_all_frames_and_can_stop_the_run(tmp_path):
    ckpt = save_tiny(tmp_path, "unet3")
    stack = np.random.default_rng(4).random((2, 64, 64), dtype=np.float32)
    seen = []
    deblur_stack(
        stack, DeblurSettings(ckpt, tile=32, overlap=8), progress=lambda *a: seen.append(a)
    )
    # 3 x 3 windows of 32 px per frame, run 4 at a time
    assert seen == [(4, 18), (8, 18), (9, 18), (13, 18), (17, 18), (18, 18)]

    calls = []

    def cancel(done, total):
        calls.append(done)
        raise Cancelled

    with pytest.raises(Cancelled):
        deblur_stack(stack, DeblurSettings(ckpt, tile=32, overlap=8), progress=cancel)
    assert calls == [4]


def test_predict_reports_every_batch_of_windows():
    model = build_model("unet3", base_channels=1)
    seen = []
    predict(
        model,
        np.zeros((40, 72), np.float32),
        tile=16,
        overlap=8,
        progress=lambda *a: seen.append(a),
    )
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted({d for d, _ in seen})


def test_fields_offered_by_the_simulate_widget(tmp_path):
    assert load_field("default lens").config() == PSFField.default().config()
    assert load_field("gaussian").config() == PSFField.gaussian().config()
    path = PSFField.gaussian(psf_size=9).save(tmp_path / "field.npz")
    assert load_field("file", path).psf_size == 9
    with pytest.raises(ValueError, match="choose a PSF field"):
        load_field("file", None)
    with pytest.raises(ValueError, match="must be one of"):
        load_field("lens")


def test_blurring_a_crop_matches_the_whole_sensor_blurred_then_cropped():
    field = PSFField.default()
    sensor = np.random.default_rng(5).random((96, 128), dtype=np.float32)
    whole = SpatiallyVaryingBlur(field, (96, 128), method="lowrank", padding="reflect")
    expected = whole.A(torch.from_numpy(sensor)[None, None])[0, 0].numpy()[36:, 48:]
    crop = blur_stack(sensor[36:, 48:], field, origin=(36, 48), full_size=(96, 128))
    inner = (slice(field.psf_size, -field.psf_size),) * 2  # away from the crop's borders
    np.testing.assert_allclose(crop[inner], expected[inner], atol=1e-5)
    centred = blur_stack(sensor[36:, 48:], field)  # as if the crop were the sensor
    assert np.abs(centred[inner] - crop[inner]).max() > 1e-3


def test_blur_scales_integers_keeps_stacks_and_seeds_its_noise():
    field = PSFField.gaussian(psf_size=7)
    image = np.random.default_rng(8).integers(0, 65536, (2, 32, 40)).astype(np.uint16)
    blurred = blur_stack(image, field)
    assert blurred.shape == (2, 32, 40) and blurred.dtype == np.float32
    np.testing.assert_allclose(blurred, blur_stack(image / 65535, field), atol=1e-6)
    noisy = [blur_stack(image, field, photons=100, read_noise=1, seed=s) for s in (0, 0, 1)]
    np.testing.assert_array_equal(noisy[0], noisy[1])
    assert 0.05 < np.std(noisy[0]) < 0.2 and not np.array_equal(noisy[0], noisy[2])


def test_psf_montage_lays_out_the_grid_each_psf_at_its_peak():
    psfs = np.random.default_rng(6).random((3, 4, 5, 5))
    image = psf_montage(psfs)
    assert image.shape == (3 * (5 + GAP) - GAP, 4 * (5 + GAP) - GAP)
    tile = image[5 + GAP : 10 + GAP, 3 * (5 + GAP) :]  # row 1, column 3
    np.testing.assert_allclose(tile, psfs[1, 3] / psfs[1, 3].max(), rtol=1e-6)
    with pytest.raises(ValueError, match="ny, nx, k, k"):
        psf_montage(np.ones((5, 5)))


def test_the_reader_opens_field_files_and_leaves_others(tmp_path):
    analytic = PSFField.default().save(tmp_path / "lens.npz")
    psfs = np.random.default_rng(7).random((2, 3, 5, 5))
    np.savez(tmp_path / "measured.npz", psfs=psfs)
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    (tmp_path / "notes.txt").write_text("x")
    for other in ("other.npz", "notes.txt", "absent.npz"):
        assert get_reader(str(tmp_path / other)) is None
    assert get_reader([str(analytic), str(analytic)]) is None

    reader = get_reader(str(analytic))
    [(image, kwargs, kind)] = reader(str(analytic))
    assert kind == "image" and kwargs["name"] == "lens PSF grid"
    assert image.shape == (17 * (21 + GAP) - GAP,) * 2
    assert kwargs["metadata"]["config"] == PSFField.default().config()

    [(image, kwargs, _)] = get_reader([str(tmp_path / "measured.npz")])(
        [str(tmp_path / "measured.npz")]
    )
    assert image.shape == (2 * 7 - GAP, 3 * 7 - GAP)
    assert kwargs["metadata"]["grid_positions"]["x"] == [-1.0, 0.0, 1.0]


def test_sample_data(tmp_path):
    from coordgate.data.samples import SAMPLES
    from coordgate.napari import samples

    (sharp, s_kwargs, kind), (blurred, b_kwargs, _) = samples.synthetic()
    assert kind == "image" and sharp.shape == blurred.shape == (256, 256)
    assert "sharp" in s_kwargs["name"] and "blurred" in b_kwargs["name"]
    assert 0.01 < np.abs(sharp - blurred).mean() < 0.2
    for name in SAMPLES:
        [(image, kwargs, _)] = getattr(samples, name)()
        assert kwargs["name"] == name and image.ndim == 2
        assert image.min() == 0 and image.max() == 1
    with pytest.raises(ValueError, match="unknown sample"):
        samples.real_sample("lena")


@pytest.fixture(scope="module")
def bead_calibration(tmp_path_factory):
    """A calibration of 40 simulated beads on a 256x256 sensor, and its saved field."""
    pytest.importorskip("coordgate.optics.calibration")
    from coordgate.napari.calibrate import calibrate_beads
    from coordgate.optics.calibration import simulate_beads

    beads = simulate_beads(PSFField.default(), 256, 40, photons=20000, seed=0)
    out = tmp_path_factory.mktemp("calibration") / "field.npz"
    return calibrate_beads(beads.image, 15, out=out), out, beads.image


def test_calibrating_a_bead_layer_saves_a_field(bead_calibration, tmp_path):
    from coordgate.napari.calibrate import available, calibrate_beads

    assert available() == (True, "")
    result, out, image = bead_calibration
    assert PSFField.load(out).psf_size == 15 and result.sensor_size == (256, 256)
    with pytest.raises(ValueError, match=".npz"):
        calibrate_beads(image, 15, out=tmp_path / "field.tif")


def test_calibration_layers_show_beads_montage_and_fwhm(bead_calibration, tmp_path):
    from coordgate.napari.calibrate import FWHM_CELLS, calibration_layers, fwhm_map
    from coordgate.optics.calibration import REJECTION_REASONS

    result, _, _ = bead_calibration
    used, rejected, montage, fwhm = calibration_layers(
        result, "beads", scale=(2, 2), translate=(10, 20)
    )
    counts = result.counts()
    assert used[0].shape == (counts["used"], 2) and used[2] == "points"
    assert len(rejected[0]) == counts["found"] - counts["used"] > 0
    assert set(rejected[1]["features"]["reason"]) <= set(REJECTION_REASONS)
    assert used[1]["translate"] == (10.0, 20.0) and rejected[1]["name"] == "beads beads rejected"
    points = result.field.psfs.shape[0]  # the calibrated grid's points per axis
    assert montage[0].shape == (points * (15 + GAP) - GAP,) * 2 and montage[2] == "image"
    assert "psf_field" not in montage[1]["metadata"]
    # the FWHM map's pixels lie on the centres of 32 x 32 cells of the 256 px sensor
    cell = 256 / FWHM_CELLS
    assert fwhm[1]["scale"] == (2 * cell, 2 * cell)
    assert fwhm[1]["translate"] == (10 + 2 * (cell / 2 - 0.5), 20 + 2 * (cell / 2 - 0.5))
    widths = fwhm[0]
    assert widths.shape == (FWHM_CELLS, FWHM_CELLS)
    np.testing.assert_allclose(widths, fwhm_map(result.field))
    centre = widths[14:18, 14:18].mean()
    assert widths[0, 0] > centre and widths[-1, -1] > centre  # the lens defocuses outward

    named = calibration_layers(result, "beads", field_file=tmp_path / "field.npz")[2][1]
    assert named["metadata"]["psf_field"] == str(tmp_path / "field.npz")  # for Deconvolve
    stacked = calibration_layers(result, "beads", stacked=True, scale=(1, 1, 1))
    assert stacked[0][0].shape[1] == 3 and (stacked[0][0][:, 0] == 0).all()


def test_bead_sample_is_a_calibration_test_case():
    pytest.importorskip("coordgate.optics.calibration")
    from coordgate.napari.calibrate import beads_sample

    [(image, kwargs, kind)] = beads_sample()
    assert image.shape == (512, 512) and kind == "image" and "beads" in kwargs["name"]


def test_deconvolve_equals_the_command_line(tmp_path):
    from coordgate.deconvolution import DeconvolutionSettings

    image = lens_frames((64, 56))
    result, used, summaries = deconvolve_stack(image, PSFField.default(), DeconvolutionSettings())
    assert result.shape == image.shape and result.dtype == np.float32 and used is None
    assert summaries[0]["iterations"] == 100 and "residual" in summaries[0]["description"]
    expected = cli_deconvolve(tmp_path, "default", image)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)


def test_deconvolve_equals_the_command_line_on_a_crop_and_a_stack(tmp_path):
    from coordgate.deconvolution import DeconvolutionSettings

    stack = lens_frames((2, 1, 48, 40))
    settings = DeconvolutionSettings(iterations=20, tile=42)
    result, used, _ = deconvolve_stack(
        stack, PSFField.default(), settings, origin=(10, 20), full_size=(128, 96)
    )
    assert result.shape == stack.shape and used == (128.0, 96.0)
    options = ("--iterations", "20", "--tile", "42", "--origin", "10", "20")
    expected = cli_deconvolve(
        tmp_path, "default", stack.reshape(2, 48, 40), *options, "--full-size", "128", "96"
    )
    np.testing.assert_allclose(result.reshape(2, 48, 40), expected, rtol=0, atol=1e-5)
    wiener = DeconvolutionSettings(method="wiener")
    result, _, summaries = deconvolve_stack(stack[0, 0], PSFField.default(), wiener)
    assert summaries[0]["method"] == "wiener"
    expected = cli_deconvolve(tmp_path / "w", "default", stack[0, 0], "--method", "wiener")
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)


def test_deconvolve_progress_counts_iterations_over_all_frames():
    from coordgate.deconvolution import DeconvolutionSettings

    stack = lens_frames((2, 48, 40))
    seen = []
    settings = DeconvolutionSettings(iterations=3)
    deconvolve_stack(stack, PSFField.default(), settings, progress=lambda *a: seen.append(a))
    assert seen == [(k, 6) for k in range(1, 7)]

    def cancel(done, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        deconvolve_stack(stack, PSFField.default(), settings, progress=cancel)
    assert stack_progress(None, 0, 2) is None


def test_fields_on_offer_include_those_layers_name(tmp_path):
    path = str(PSFField.gaussian(psf_size=9).save(tmp_path / "calibrated.npz"))
    layers = [
        ("beads calibrated PSF grid", {"psf_field": path}),
        ("a copy", {"psf_field": path}),
        ("blurred", {"psf_field": "default lens"}),
        ("gone", {"psf_field": str(tmp_path / "gone.npz")}),
        ("plain", {}),
    ]
    choices = field_choices(layers)
    assert choices == [
        ("default lens", "default lens"),
        ("gaussian", "gaussian"),
        ("file", "file"),
        ("beads calibrated PSF grid (calibrated.npz)", path),
    ]
    assert field_for(path).psf_size == 9 and field_for("file", path).psf_size == 9
    assert field_for("default lens").config() == PSFField.default().config()
