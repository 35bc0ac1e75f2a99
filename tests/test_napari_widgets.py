"""The napari plugin's widgets, manifest, reader and samples, with pytest-qt and a
headless ``napari.components.ViewerModel`` (Qt's offscreen platform, no canvas).

Skipped where napari or pytest-qt is not installed (``make napari-env`` installs them),
unless ``COORDGATE_REQUIRE_NAPARI=1`` (CI), where a missing one is an error.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from coordgate.data.samples import SAMPLES
from coordgate.napari.deblur import DeblurSettings, deblur_stack
from coordgate.napari.fields import read_psf_field
from coordgate.napari.layers import SENSOR_SIZE
from coordgate.napari.simulate import blur_stack, load_field
from coordgate.optics import PSFField
from tests.helpers import cli_deblur, cli_deconvolve, lens_frames, save_tiny

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before pytest-qt creates the QApplication
if os.environ.get("COORDGATE_REQUIRE_NAPARI") != "1":
    pytest.importorskip("napari", reason="napari not installed: make napari-env")
    pytest.importorskip("pytestqt", reason="pytest-qt not installed: make napari-env")
with warnings.catch_warnings():  # pydantic deprecations inside npe2, not ours
    warnings.simplefilter("ignore", DeprecationWarning)
    from napari.components import ViewerModel
    from qtpy.QtCore import QTimer

    from coordgate.napari import widgets

WAIT_MS = 120_000


@pytest.fixture
def viewer(qtbot):
    return ViewerModel()


def finish(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)


def test_manifest_declares_every_contribution():
    from npe2 import PluginManager

    manager = PluginManager.instance()
    manager.discover()
    manifest = manager.get_manifest("coordgate")
    contributions = manifest.contributions
    assert {w.display_name for w in contributions.widgets} == {
        "Deblur",
        "Deconvolve",
        "Simulate blur",
        "Calibrate",
        "Export",
    }
    assert {s.key for s in contributions.sample_data} == {"synthetic", "beads", *SAMPLES}
    assert [r.filename_patterns for r in contributions.readers] == [["*.npz"]]
    for command in contributions.commands:  # every python_name resolves
        module, _, attribute = command.python_name.partition(":")
        assert callable(getattr(__import__(module, fromlist=[attribute]), attribute))


def test_layer_choices_follow_the_viewer(viewer, qtbot):
    widget = widgets.DeblurWidget(viewer)
    qtbot.addWidget(widget.native)
    assert widget.image.choices == ()
    first = viewer.add_image(np.zeros((8, 8)), name="first")
    viewer.add_points(np.zeros((1, 2)))
    second = viewer.add_image(np.zeros((8, 8)), name="second")
    assert widget.image.choices == (first, second)
    viewer.layers.remove(first)
    assert widget.image.choices == (second,)


def test_references_are_offered_by_name(viewer, qtbot, tmp_path, monkeypatch):
    ckpt = save_tiny(tmp_path, full_size=(48, 48))
    monkeypatch.setattr(widgets, "reference_checkpoints", lambda: {"cpu/tiny": ckpt})
    widget = widgets.DeblurWidget(viewer)
    qtbot.addWidget(widget.native)
    assert widget.reference.enabled and widget.reference.choices == (None, ckpt)
    widget.reference.value = widget.reference.get_choice("cpu/tiny")
    assert str(widget.checkpoint.value) == ckpt
    assert widget.about.value == "cg-unet3, trained on 48x48 frames"
    assert widget.normalisation.value == "checkpoint"
    widget.checkpoint.value = save_tiny(tmp_path / "bare", normalisation=None)
    assert widget.normalisation.value == "none"  # as the studies' models were trained

    monkeypatch.setattr(widgets, "reference_checkpoints", dict)
    empty = widgets.DeblurWidget(viewer)
    qtbot.addWidget(empty.native)
    assert not empty.reference.enabled and "no reference" in empty.reference.tooltip


def test_deblur_widget_equals_the_command_line(viewer, qtbot, tmp_path):
    ckpt = save_tiny(tmp_path, full_size=(56, 72))
    image = np.random.default_rng(0).random((56, 72), dtype=np.float32)
    layer = viewer.add_image(image, name="frame", scale=(0.5, 0.5))
    widget = widgets.DeblurWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.image.value = layer
    widget.checkpoint.value = ckpt
    assert widget.run() is not None
    finish(qtbot, widget)
    result = viewer.layers["frame deblurred"]
    np.testing.assert_array_equal(result.scale, layer.scale)
    np.testing.assert_array_equal(result.translate, layer.translate)
    assert widget.status.value == "done: frame deblurred"
    assert widget.progress.value == widget.progress.max == 1
    np.testing.assert_allclose(result.data, cli_deblur(tmp_path, ckpt, image), rtol=0, atol=1e-5)


def test_a_translated_layer_is_deblurred_where_it_lies_on_the_sensor(viewer, qtbot, tmp_path):
    ckpt = save_tiny(tmp_path, full_size=(64, 64))
    image = np.random.default_rng(1).random((40, 48), dtype=np.float32)
    layer = viewer.add_image(image, name="crop", translate=(24, 8), scale=(2, 2))
    widget = widgets.DeblurWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.image.value = layer
    widget.checkpoint.value = ckpt
    widget.sensor.rows.value, widget.sensor.columns.value = 100, 90
    widget.run()
    finish(qtbot, widget)
    result = viewer.layers["crop deblurred"]
    np.testing.assert_array_equal(result.translate, (24, 8))
    assert result.metadata[SENSOR_SIZE] == [100.0, 90.0]
    expected = cli_deblur(tmp_path, ckpt, image, "--origin", "12", "4", "--full-size", "100", "90")
    np.testing.assert_allclose(result.data, expected, rtol=0, atol=1e-5)
    # a layer made by the plugin remembers its sensor
    widget.image.value = result
    widget.sensor.rows.value = widget.sensor.columns.value = 0
    widget.run()
    finish(qtbot, widget)
    assert viewer.layers["crop deblurred deblurred"].metadata[SENSOR_SIZE] == [100.0, 90.0]


def test_bad_input_is_reported_in_the_widget(viewer, qtbot, tmp_path):
    widget = widgets.DeblurWidget(viewer)
    qtbot.addWidget(widget.native)
    assert widget.run() is None and "choose a checkpoint file" in widget.status.value
    widget.checkpoint.value = save_tiny(tmp_path, full_size=(32, 32))
    assert widget.run() is None and "image layer" in widget.status.value
    widget.image.value = viewer.add_image(np.zeros((16, 16, 3), np.uint8), name="rgb", rgb=True)
    assert widget.run() is None and "RGB" in widget.status.value
    widget.image.value = viewer.add_image(np.zeros((40, 40), np.float32), name="big")
    widget.run()  # fails in the worker: the model was trained on 32x32 frames
    finish(qtbot, widget)
    assert "trained on a 32x32 sensor frame" in widget.status.value
    assert [layer.name for layer in viewer.layers] == ["rgb", "big"]
    assert widget.run_button.enabled


def test_deblur_2048_runs_in_a_worker_with_progress_and_equals_the_command_line(
    viewer, qtbot, tmp_path, monkeypatch
):
    ckpt = save_tiny(tmp_path, "unet3", base_channels=1, full_size=(2048, 2048))
    image = np.random.default_rng(2).random((2048, 2048), dtype=np.float32)
    threads = []
    real = widgets.deblur_stack

    def recording(*args, **kwargs):
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(widgets, "deblur_stack", recording)
    widget = widgets.DeblurWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.image.value = viewer.add_image(image, name="sensor")
    widget.checkpoint.value = ckpt
    widget.tile.value = 512
    shown = []
    widget.progress.changed.connect(shown.append)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(widget.running))
    timer.start(10)
    widget.run()
    assert widget.running and not widget.run_button.enabled and widget.cancel_button.enabled
    finish(qtbot, widget)
    timer.stop()

    assert threads and threads[0] != threading.get_ident()  # off the GUI thread
    assert ticks.count(True) >= 3  # the GUI thread kept turning while it ran
    assert shown == sorted(shown) and shown[-1] == widget.progress.max == 25  # 5 x 5 tiles
    assert len(shown) > 2
    expected = cli_deblur(tmp_path, ckpt, image, "--tile", "512")
    np.testing.assert_allclose(viewer.layers["sensor deblurred"].data, expected, atol=1e-5, rtol=0)


def held_after_the_first_report(real, first_report, cancelled):
    """``real`` (a function taking ``progress``) that waits after its first report until
    ``cancelled`` is set, having set ``first_report``."""

    def held(*args, progress, **kwargs):
        def report(done, total):
            progress(done, total)  # raises Cancelled once the worker is asked to quit
            first_report.set()
            cancelled.wait(timeout=60)

        return real(*args, progress=report, **kwargs)

    return held


def test_deblur_can_be_cancelled(viewer, qtbot, tmp_path, monkeypatch):
    ckpt = save_tiny(tmp_path, "unet3", base_channels=1, full_size=(2048, 2048))
    first_batch, cancelled = threading.Event(), threading.Event()
    held = held_after_the_first_report(widgets.deblur_stack, first_batch, cancelled)
    monkeypatch.setattr(widgets, "deblur_stack", held)
    widget = widgets.DeblurWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.image.value = viewer.add_image(np.zeros((2048, 2048), np.float32), name="sensor")
    widget.checkpoint.value = ckpt
    widget.tile.value = 512
    widget.run()
    qtbot.waitUntil(first_batch.is_set, timeout=WAIT_MS)
    widget.cancel_button.native.click()
    cancelled.set()
    finish(qtbot, widget)
    assert widget.status.value == "cancelled"
    assert widget.progress.value < widget.progress.max
    assert [layer.name for layer in viewer.layers] == ["sensor"]
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_simulate_widget_blurs_a_layer_where_it_lies(viewer, qtbot, tmp_path):
    sensor = np.random.default_rng(3).random((64, 80), dtype=np.float32)
    layer = viewer.add_image(sensor[16:48, 8:72], name="crop", translate=(16, 8))
    widget = widgets.SimulateWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.show()
    widget.image.value = layer
    assert widget.run() is None and "give the sensor size" in widget.status.value

    widget.sensor.rows.value, widget.sensor.columns.value = 64, 80
    assert not widget.field_file.visible and not widget.photons.enabled
    widget.noise.value = True
    assert widget.photons.enabled
    widget.run()
    finish(qtbot, widget)
    result = viewer.layers["crop blurred"]
    expected = blur_stack(
        sensor[16:48, 8:72],
        PSFField.default(),
        origin=(16, 8),
        full_size=(64, 80),
        photons=1000.0,
        read_noise=2.0,
        seed=0,
    )
    np.testing.assert_array_equal(result.data, expected)
    np.testing.assert_array_equal(result.translate, (16, 8))
    assert result.metadata == {
        "psf_field": "default lens",
        "photons": 1000.0,
        "read_noise": 2.0,
        SENSOR_SIZE: [64.0, 80.0],
    }

    field = PSFField.gaussian(psf_size=9).save(tmp_path / "measured.npz")
    widget.field.value = "file"
    assert widget.field_file.visible
    widget.field_file.value = field
    widget.noise.value = False
    widget.image.value = viewer.add_image(sensor, name="whole")
    widget.sensor.rows.value = widget.sensor.columns.value = 0
    widget.run()
    finish(qtbot, widget)
    expected = blur_stack(sensor, load_field("file", field))
    np.testing.assert_array_equal(viewer.layers["whole blurred"].data, expected)


def test_the_reader_and_the_samples_through_napari(viewer, tmp_path):
    path = PSFField.default().save(tmp_path / "lens.npz")
    [layer] = viewer.open(str(path), plugin="coordgate")
    assert layer.name == "lens PSF grid" and layer.data.shape == (389, 389)
    viewer.open_sample("coordgate", "synthetic")
    assert [layer.name for layer in viewer.layers][1:] == [
        "synthetic (sharp)",
        "synthetic (blurred, default lens)",
    ]
    viewer.open_sample("coordgate", "moon")
    assert viewer.layers[-1].name == "moon"


def test_the_plugin_result_matches_the_plain_function(viewer, qtbot, tmp_path):
    """The widget adds exactly what deblur_stack computes, frames of a stack included."""
    ckpt = save_tiny(tmp_path, "unet3", full_size=(32, 40))
    stack = np.random.default_rng(4).random((3, 32, 40), dtype=np.float32)
    widget = widgets.DeblurWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.image.value = viewer.add_image(stack, name="stack")
    widget.checkpoint.value = ckpt
    widget.normalisation.value = "per-image"
    widget.run()
    finish(qtbot, widget)
    expected, _ = deblur_stack(stack, DeblurSettings(ckpt, normalisation="per-image"))
    np.testing.assert_array_equal(viewer.layers["stack deblurred"].data, expected)


def test_calibrate_widget_saves_a_field_and_shows_the_beads(viewer, qtbot, tmp_path):
    pytest.importorskip("coordgate.optics.calibration")
    from coordgate.optics.calibration import simulate_beads

    image = simulate_beads(PSFField.default(), 256, 40, photons=20000, seed=0).image
    layer = viewer.add_image(image, name="beads", translate=(5, 5))
    widget = widgets.calibrate_widget(viewer)
    assert isinstance(widget, widgets.CalibrateWidget)
    qtbot.addWidget(widget.native)
    widget.image.value = layer
    widget.psf_size.value = 15
    assert widget.run() is None and "choose where to save" in widget.status.value
    widget.out.value = tmp_path / "field.npz"
    widget.run()
    finish(qtbot, widget)
    assert widget.status.value.startswith("done: ") and "field.npz" in widget.status.value
    assert PSFField.load(tmp_path / "field.npz").psf_size == 15
    names = [layer.name for layer in viewer.layers]
    assert names == [
        "beads",
        "beads beads used",
        "beads beads rejected",
        "beads calibrated PSF grid",
        "beads FWHM (px)",
    ]
    rejected = viewer.layers["beads beads rejected"]
    assert len(rejected.data) == len(rejected.features["reason"]) > 0
    np.testing.assert_array_equal(viewer.layers["beads beads used"].translate, (5, 5))


def test_calibrate_is_a_note_where_calibration_is_missing(viewer, qtbot, monkeypatch):
    monkeypatch.setattr(widgets, "available", lambda: (False, "no calibration here"))
    note = widgets.calibrate_widget(viewer)
    qtbot.addWidget(note.native)
    assert not isinstance(note, widgets.CalibrateWidget)
    assert note[0].value == "no calibration here"


def test_export_widget_writes_the_package_the_command_writes(viewer, qtbot, tmp_path):
    pytest.importorskip("bioimageio.core", reason="the bioimageio extra is not installed")
    from zipfile import ZipFile

    from coordgate.cli import main

    ckpt = save_tiny(tmp_path, full_size=(32, 24))
    widget = widgets.ExportWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.choice.checkpoint.value = ckpt
    assert widget.choice.normalisation.value == "checkpoint"
    assert widget.run() is None and "choose where to write" in widget.status.value
    widget.output.value = tmp_path / "widget.zip"
    widget.authors.value = "A. Tester, B. Tester"
    assert widget.run() is not None
    finish(qtbot, widget)
    assert widget.status.value == "wrote widget.zip; bioimageio.core test: passed"
    command = tmp_path / "command.zip"
    args = ["export", ckpt, "--format", "bioimageio", "-o", str(command), "--no-test"]
    assert main([*args, "--author", "A. Tester", "--author", "B. Tester"]) == 0
    with ZipFile(tmp_path / "widget.zip") as ours, ZipFile(command) as theirs:
        for name in ("README.md", "test_input.npy", "test_output.npy"):
            assert ours.read(name) == theirs.read(name), name
        assert b"B. Tester" in ours.read("rdf.yaml")


def test_export_widget_follows_the_format(viewer, qtbot, tmp_path):
    ckpt = save_tiny(tmp_path, full_size=(32, 24))
    widget = widgets.ExportWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.choice.checkpoint.value = ckpt
    widget.output.value = tmp_path / "model.zip"
    widget.format.value = "onnx"
    assert Path(widget.output.value).name == "model.onnx"
    widget.run()
    finish(qtbot, widget)
    assert widget.status.value == "wrote model.onnx (onnx)"
    assert (tmp_path / "model.onnx").is_file()


def test_deconvolve_widget_equals_the_command_line(viewer, qtbot, tmp_path):
    image = lens_frames((64, 56))
    layer = viewer.add_image(image, name="frame", scale=(0.5, 0.5), translate=(3, 4))
    widget = widgets.DeconvolveWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.image.value = layer
    widget.sensor.rows.value, widget.sensor.columns.value = 100, 90
    assert widget.field.value == "default lens" and widget.iterations.enabled
    assert not widget.balance.enabled
    assert widget.run() is not None
    finish(qtbot, widget)
    result = viewer.layers["frame deconvolved"]
    np.testing.assert_array_equal(result.scale, layer.scale)
    np.testing.assert_array_equal(result.translate, layer.translate)
    assert result.metadata[SENSOR_SIZE] == [100.0, 90.0]
    assert result.metadata["psf_field"] == "default lens"
    assert widget.status.value.startswith("done: frame deconvolved; Richardson-Lucy, 100")
    assert widget.progress.value == widget.progress.max == 100
    where = ("--origin", "6", "8", "--full-size", "100", "90")  # translate / scale
    expected = cli_deconvolve(tmp_path, "default", image, *where)
    np.testing.assert_allclose(result.data, expected, rtol=0, atol=1e-5)


def test_deconvolve_offers_a_field_a_layer_names(viewer, qtbot, tmp_path):
    path = PSFField.default(psf_size=11, max_defocus=0.4).save(tmp_path / "field.npz")
    widget = widgets.DeconvolveWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.show()
    widget.field.value = "file"
    assert widget.field_file.visible
    assert widget.run() is None and "choose a PSF field .npz file" in widget.status.value
    [(montage, kwargs, _)] = read_psf_field(path)  # the layer File > Open makes of a field
    viewer.add_image(montage, **kwargs)
    assert str(path) in widget.field.choices
    widget.field.value = str(path)
    widget.method.value = "wiener"
    assert widget.balance.enabled and not widget.iterations.enabled
    image = lens_frames((48, 40))
    widget.image.value = viewer.add_image(image, name="frame")
    widget.run()
    finish(qtbot, widget)
    result = viewer.layers["frame deconvolved"]
    assert result.metadata["deconvolution"][0]["method"] == "wiener"
    expected = cli_deconvolve(tmp_path, str(path), image, "--method", "wiener")
    np.testing.assert_allclose(result.data, expected, rtol=0, atol=1e-5)


def test_deconvolve_can_be_cancelled(viewer, qtbot, monkeypatch):
    first_report, cancelled = threading.Event(), threading.Event()
    held = held_after_the_first_report(widgets.deconvolve_stack, first_report, cancelled)
    monkeypatch.setattr(widgets, "deconvolve_stack", held)
    widget = widgets.DeconvolveWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.image.value = viewer.add_image(lens_frames((48, 40)), name="frame")
    widget.run()
    assert widget.running and widget.cancel_button.enabled and not widget.run_button.enabled
    qtbot.waitUntil(first_report.is_set, timeout=WAIT_MS)
    widget.cancel_button.native.click()
    cancelled.set()
    finish(qtbot, widget)
    assert widget.status.value == "cancelled"
    assert [layer.name for layer in viewer.layers] == ["frame"]
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_deconvolve_reports_bad_input(viewer, qtbot):
    widget = widgets.DeconvolveWidget(viewer)
    qtbot.addWidget(widget.native)
    assert widget.run() is None and "image layer" in widget.status.value
    negative = np.random.default_rng(0).standard_normal((40, 40)).astype(np.float32)
    widget.image.value = viewer.add_image(negative, name="negative")
    widget.run()  # fails in the worker
    finish(qtbot, widget)
    assert "negative intensities" in widget.status.value
    assert [layer.name for layer in viewer.layers] == ["negative"]
