"""The plugin's dock widgets (magicgui containers): Deblur, Deconvolve, Simulate blur,
Calibrate and Export.

Each widget reads its fields and the chosen layer, hands them to the plain functions of
:mod:`coordgate.napari.deblur`, :mod:`~coordgate.napari.deconvolve`,
:mod:`~coordgate.napari.simulate`, :mod:`~coordgate.napari.calibrate` and
:mod:`~coordgate.napari.export` in a napari thread
worker (the viewer stays responsive), and adds the results as layers. The widgets work with a full
``napari.Viewer`` and with a headless ``napari.components.ViewerModel``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.qt.threading import FunctionWorker, create_worker
from qtpy.QtCore import QObject, Qt, Signal

from coordgate.deblurring import NORMALISATIONS
from coordgate.deconvolution import (
    DEFAULT_BALANCE,
    DEFAULT_ITERATIONS,
    METHODS,
    DeconvolutionSettings,
)
from coordgate.export.checkpoint import SUFFIXES
from coordgate.napari.calibrate import available, calibrate_beads, calibration_layers
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
from coordgate.napari.export import ExportSettings, export_package
from coordgate.napari.layers import layer_pixels, output_layer, pixel_origin, sensor_size
from coordgate.napari.simulate import FIELDS, blur_stack, load_field

__all__ = [
    "CalibrateWidget",
    "DeblurWidget",
    "DeconvolveWidget",
    "ExportWidget",
    "SimulateWidget",
    "calibrate_widget",
]

_LARGEST = 1 << 20  # largest sensor side, tile or overlap a spin box accepts


def _image_layers(viewer: Any) -> list[tuple[str, Any]]:
    return [
        (layer.name, layer) for layer in viewer.layers if isinstance(layer, napari.layers.Image)
    ]


class _SensorSize(Container):
    """Two spin boxes: the sensor's height and width in pixels, 0 meaning "not given"."""

    def __init__(self) -> None:
        self.rows = SpinBox(label="H", min=0, max=_LARGEST, value=0)
        self.columns = SpinBox(label="W", min=0, max=_LARGEST, value=0)
        super().__init__(
            layout="horizontal",
            labels=False,
            label="sensor size (0: layer's)",
            widgets=[self.rows, self.columns],
        )

    def pair(self) -> tuple[int, int]:
        return int(self.rows.value), int(self.columns.value)


class _ProgressRelay(QObject):
    """Carries (done, total) from the worker thread to the GUI thread (a queued signal)."""

    progressed = Signal(int, int)


class _Task(Container):
    """A widget that runs one job at a time in a thread worker: its fields, a run button
    and a status line."""

    def __init__(self, viewer: Any, fields: list, run_text: str) -> None:
        self.viewer = viewer
        self.run_button = PushButton(text=run_text)
        self.status = Label(value="")
        self.worker: FunctionWorker | None = None
        super().__init__(widgets=[*fields, self.run_button, self.status])
        self.run_button.changed.connect(self.run)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def _start(self, function: Any, *args: Any, **kwargs: Any) -> FunctionWorker:
        worker = create_worker(
            function,
            *args,
            _worker_class=FunctionWorker,
            _start_thread=False,
            _connect={"returned": self._returned, "errored": self._errored},
            **kwargs,
        )
        worker.finished.connect(self._finished)
        self.worker = worker
        self.run_button.enabled = False
        worker.start()
        return worker

    def _errored(self, error: Exception) -> None:
        self.status.value = f"error: {error}"

    def _finished(self) -> None:
        self.worker = None
        self.run_button.enabled = True

    def _returned(self, result: Any) -> None:
        raise NotImplementedError

    def run(self) -> FunctionWorker | None:
        raise NotImplementedError


class _LayerTask(_Task):
    """A task on an image layer: the layer to use, the task's fields and, when ``sensor``,
    the sensor size."""

    def __init__(self, viewer: Any, widgets: list, run_text: str, sensor: bool = True) -> None:
        self.image = ComboBox(label="image", choices=lambda _: _image_layers(viewer))
        self.sensor = _SensorSize() if sensor else None
        self._input: Any = None
        super().__init__(
            viewer, [self.image, *widgets, *([self.sensor] if sensor else [])], run_text
        )
        for event in ("inserted", "removed", "reordered"):
            getattr(viewer.layers.events, event).connect(self._refresh_layers)

    def _refresh_layers(self, _event: Any = None) -> None:
        self.image.reset_choices()

    def _chosen_layer(self) -> tuple[Any, Any, Any, Any]:
        """(layer, its pixels, its sensor origin, the sensor size) of the chosen layer."""
        layer = self.image.value
        if layer is None:
            raise ValueError("choose an image layer")
        data = layer_pixels(layer.data, multiscale=layer.multiscale, rgb=layer.rgb)
        origin = pixel_origin(layer.translate, layer.scale)
        given = (0, 0) if self.sensor is None else self.sensor.pair()
        return layer, data, origin, sensor_size(given, layer.metadata)

    def _add_result(self, data: np.ndarray, suffix: str, full_size: Any, record: dict) -> None:
        """Add ``data`` as ``<input name> <suffix>``, lying where the input lay."""
        layer = self._input
        data, kwargs = output_layer(
            data,
            f"{layer.name} {suffix}",
            scale=layer.scale,
            translate=layer.translate,
            full_size=full_size,
            metadata=record,
        )
        self.viewer.add_image(data, **kwargs)
        self.status.value = f"done: {kwargs['name']}"


class _CancellableTask(_LayerTask):
    """A layer task with a progress bar and Cancel: :meth:`_run_stopping` runs a function
    that reports ``progress(done, total)``; the report moves the bar and, once Cancel was
    pressed, raises :class:`Cancelled` to stop the function (the worker returns None)."""

    def __init__(self, viewer: Any, widgets: list, run_text: str) -> None:
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self._relay = _ProgressRelay()
        self._relay.progressed.connect(self._progressed, Qt.ConnectionType.QueuedConnection)
        super().__init__(viewer, widgets, run_text)
        self.extend([self.progress, self.cancel_button])
        self.cancel_button.changed.connect(self.cancel)

    def _run_stopping(self, layer: Any, doing: str, function: Any, *args: Any, **kwargs: Any):
        """Start ``function(*args, progress=..., **kwargs)`` on ``layer``; the worker."""
        self._input = layer
        self.progress.value = 0
        self.cancel_button.enabled = True
        self.status.value = f"{doing} {layer.name} ..."
        return self._start(self._work, function, *args, **kwargs)

    def _work(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """In the worker thread: the function's result, or None when cancelled."""
        worker = self.worker

        def report(done: int, total: int) -> None:
            if worker is not None and worker.abort_requested:
                raise Cancelled
            self._relay.progressed.emit(done, total)

        try:
            return function(*args, progress=report, **kwargs)
        except Cancelled:
            return None

    def _progressed(self, done: int, total: int) -> None:
        self.progress.max = total
        self.progress.value = done

    def cancel(self) -> None:
        """Ask the running worker to stop at its next progress report."""
        if self.worker is not None:
            self.worker.quit()
            self.status.value = "cancelling ..."

    def _finished(self) -> None:
        if self.worker is not None and self.worker.abort_requested:
            self.status.value = "cancelled"
        super()._finished()
        self.cancel_button.enabled = False


class _CheckpointChoice:
    """The fields that choose a checkpoint (Deblur, Export): a committed reference or a
    file, one line about the chosen one, and the normalisation it suggests."""

    def __init__(self) -> None:
        references = reference_checkpoints()
        self.reference = ComboBox(
            label="reference",
            choices=[("choose a checkpoint file", None)]
            + [(name, path) for name, path in references.items()],
            enabled=bool(references),
            tooltip="the checkpoints committed with coordgate"
            if references
            else "no reference checkpoints found (results/*/checkpoints/)",
        )
        self.checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.safetensors")
        self.about = Label(value="no checkpoint chosen")
        self.normalisation = ComboBox(label="normalisation", choices=list(NORMALISATIONS))
        self.reference.changed.connect(self._reference_chosen)
        self.checkpoint.changed.connect(self._checkpoint_chosen)

    def _reference_chosen(self, path: Path | None) -> None:
        if path is not None:
            self.checkpoint.value = path

    def _checkpoint_chosen(self, path: Path) -> None:
        try:
            self.about.value = checkpoint_summary(path)
            self.normalisation.value = suggested_normalisation(path)
        except (OSError, ValueError) as error:
            self.about.value = f"not a coordgate checkpoint: {error}"

    def path(self) -> Path:
        """The chosen checkpoint file; ``ValueError`` when none is chosen."""
        path = Path(self.checkpoint.value)
        if not path.is_file():
            raise ValueError(f"choose a checkpoint file (.safetensors), got {str(path)!r}")
        return path


class DeblurWidget(_CancellableTask):
    """Deblur an image layer with a trained checkpoint; the result is a new layer
    ``<name> deblurred`` with the input's scale and translate.

    A translated layer is a crop of a larger sensor: its translate over its scale is its
    sensor origin, and the sensor size is the one given here, else the layer's recorded
    one, else the size the checkpoint was trained on.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.choice = _CheckpointChoice()
        self.reference, self.checkpoint = self.choice.reference, self.choice.checkpoint
        self.about, self.normalisation = self.choice.about, self.choice.normalisation
        self.device = ComboBox(label="device", choices=devices(), value="auto")
        self.tile = SpinBox(label="tile (0: auto)", min=0, max=_LARGEST, step=16, value=0)
        self.overlap = SpinBox(label="overlap (0: auto)", min=0, max=_LARGEST, step=8, value=0)
        fields = [self.reference, self.checkpoint, self.about, self.device, self.tile]
        fields += [self.overlap, self.normalisation]
        super().__init__(viewer, fields, "Deblur")
        self._record: dict = {}

    def settings(self) -> DeblurSettings:
        """The widget's choices, validated."""
        return DeblurSettings(
            checkpoint=self.choice.path(),
            device=self.device.value,
            tile=self.tile.value or None,
            overlap=self.overlap.value or None,
            normalisation=self.normalisation.value,
        )

    def run(self) -> FunctionWorker | None:
        """Start deblurring the chosen layer; the worker, or None when the input is bad."""
        try:
            settings = self.settings()
            layer, data, origin, full_size = self._chosen_layer()
        except (OSError, ValueError) as error:
            self.status.value = f"error: {error}"
            return None
        self._record = {"checkpoint": str(settings.checkpoint)}
        return self._run_stopping(
            layer, "deblurring", deblur_stack, data, settings, origin=origin, full_size=full_size
        )

    def _returned(self, result: Any) -> None:
        if result is None:
            return
        data, used = result
        self._add_result(data, "deblurred", used, self._record)


class DeconvolveWidget(_CancellableTask):
    """Deconvolve an image layer with a PSF field, no training, as ``coordgate
    deconvolve`` does (Richardson-Lucy or Wiener, :mod:`coordgate.deconvolution`); the
    result is a new layer ``<name> deconvolved`` with the input's scale and translate,
    and the status line gives its fit against the noise.

    The field: the default lens, the Gaussian field, a ``.npz`` file, or one a layer in
    the viewer names (the PSF grid a Calibrate run adds, a field opened with File > Open).
    A translated layer is a crop of the sensor given here, else of the layer's recorded
    one, else of the field's.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        layers = viewer.layers
        self.field = ComboBox(
            label="PSF field",
            choices=lambda _: field_choices((layer.name, layer.metadata) for layer in layers),
        )
        self.field_file = FileEdit(label="field file", mode="r", filter="*.npz", visible=False)
        self.method = ComboBox(label="method", choices=list(METHODS), value="rl")
        self.iterations = SpinBox(label="iterations", min=1, max=100_000, value=DEFAULT_ITERATIONS)
        self.balance = FloatSpinBox(
            # the step sets the decimals shown and kept: the default has six
            label="balance (Wiener)",
            min=1e-6,
            max=100.0,
            step=1e-6,
            value=DEFAULT_BALANCE,
        )
        self.device = ComboBox(label="device", choices=devices(), value="auto")
        fields = [self.field, self.field_file, self.method, self.iterations, self.balance]
        super().__init__(viewer, [*fields, self.device], "Deconvolve")
        self.field.changed.connect(self._field_chosen)
        self.method.changed.connect(self._method_chosen)
        self._method_chosen(self.method.value)
        self._record: dict = {}

    def _refresh_layers(self, _event: Any = None) -> None:
        super()._refresh_layers()
        self.field.reset_choices()

    def _field_chosen(self, choice: str) -> None:
        self.field_file.visible = choice == "file"

    def _method_chosen(self, method: str) -> None:
        self.iterations.enabled = method == "rl"
        self.balance.enabled = method == "wiener"

    def settings(self) -> DeconvolutionSettings:
        """The widget's choices, validated (the other settings are the command's defaults)."""
        return DeconvolutionSettings(
            method=self.method.value, iterations=self.iterations.value, balance=self.balance.value
        )

    def run(self) -> FunctionWorker | None:
        """Start deconvolving the chosen layer; the worker, or None when the input is bad."""
        try:
            field = field_for(self.field.value, self.field_file.value)
            settings = self.settings()
            layer, data, origin, full_size = self._chosen_layer()
        except (OSError, ValueError) as error:
            self.status.value = f"error: {error}"
            return None
        chosen = self.field.value
        described = str(self.field_file.value) if chosen == "file" else chosen
        self._record = {"psf_field": described}
        return self._run_stopping(
            layer,
            "deconvolving",
            deconvolve_stack,
            data,
            field,
            settings,
            origin=origin,
            full_size=full_size,
            device=self.device.value,
        )

    def _returned(self, result: Any) -> None:
        if result is None:
            return
        data, used, summaries = result
        self._add_result(data, "deconvolved", used, {**self._record, "deconvolution": summaries})
        self.status.value += f"; {summaries[0]['description']}"


class SimulateWidget(_LayerTask):
    """Blur an image layer with a PSF field (the default lens, a Gaussian field or a
    ``.npz``, e.g. a calibrated one), optionally with Poisson-Gaussian noise; the result
    is a new layer ``<name> blurred`` where the input lay."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.field = ComboBox(label="PSF field", choices=list(FIELDS))
        self.field_file = FileEdit(label="field file", mode="r", filter="*.npz", visible=False)
        self.noise = CheckBox(label="add noise", value=False)
        self.photons = FloatSpinBox(label="photons at 1", min=1, max=1e9, value=1000.0)
        self.read_noise = FloatSpinBox(label="read noise (e-)", min=0, max=1e6, value=2.0)
        self.seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        fields = [self.field, self.field_file, self.noise, self.photons, self.read_noise]
        super().__init__(viewer, [*fields, self.seed], "Blur")
        self.field.changed.connect(self._field_chosen)
        self.noise.changed.connect(self._noise_chosen)
        self._noise_chosen(False)
        self._record: tuple = (None, {})

    def _field_chosen(self, kind: str) -> None:
        self.field_file.visible = kind == "file"

    def _noise_chosen(self, on: bool) -> None:
        for widget in (self.photons, self.read_noise, self.seed):
            widget.enabled = on

    def run(self) -> FunctionWorker | None:
        """Start blurring the chosen layer; the worker, or None when the input is bad."""
        try:
            field = load_field(self.field.value, self.field_file.value)
            layer, data, origin, full_size = self._chosen_layer()
            if origin is not None and full_size is None:
                raise ValueError(
                    f"{layer.name} lies at sensor position {origin}: give the sensor size"
                )
        except (OSError, ValueError) as error:
            self.status.value = f"error: {error}"
            return None
        noise = (
            {"photons": self.photons.value, "read_noise": self.read_noise.value}
            if self.noise.value
            else {}
        )
        described = str(self.field_file.value) if self.field.value == "file" else self.field.value
        self._input, self._record = layer, (full_size, {"psf_field": described, **noise})
        self.status.value = f"blurring {layer.name} ..."
        return self._start(
            blur_stack,
            data,
            field,
            origin=origin,
            full_size=full_size,
            seed=self.seed.value,
            **noise,
        )

    def _returned(self, result: np.ndarray) -> None:
        self._add_result(result, "blurred", *self._record)


class CalibrateWidget(_LayerTask):
    """Calibrate a PSF field from a bead image layer (one frame or a stack of frames of
    one sensor, each the whole sensor) and save it as a ``.npz``. The used and rejected
    beads appear as points layers, the field's PSF grid as a montage and its FWHM as a
    map over the sensor."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.psf_size = SpinBox(label="PSF size K (odd)", min=3, max=255, step=2, value=21)
        self.snr = FloatSpinBox(label="least bead SNR", min=0.1, max=1e6, value=20.0)
        self.out = FileEdit(label="save field as", mode="w", filter="*.npz")
        super().__init__(viewer, [self.psf_size, self.snr, self.out], "Calibrate", sensor=False)

    def run(self) -> FunctionWorker | None:
        """Start calibrating from the chosen layer; the worker, or None when the input is bad."""
        try:
            layer, data, _, _ = self._chosen_layer()
            out = Path(self.out.value)
            if out.suffix != ".npz":
                raise ValueError("choose where to save the PSF field (a .npz file)")
        except (OSError, ValueError) as error:
            self.status.value = f"error: {error}"
            return None
        self._input = layer
        self.status.value = f"calibrating from {layer.name} ..."
        return self._start(calibrate_beads, data, self.psf_size.value, snr=self.snr.value, out=out)

    def _returned(self, result: Any) -> None:
        layer = self._input
        made = calibration_layers(
            result,
            layer.name,
            stacked=layer.ndim > 2,
            scale=layer.scale,
            translate=layer.translate,
            field_file=Path(self.out.value),
        )
        for data, kwargs, kind in made:
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        counts = result.counts()
        self.status.value = (
            f"done: {counts['used']} beads used, {counts['found'] - counts['used']} rejected; "
            f"field saved to {Path(self.out.value).name}"
        )


def calibrate_widget(viewer: napari.viewer.Viewer) -> Container:
    """The Calibrate widget, or a note saying why calibration is not available here."""
    ok, why = available()
    return CalibrateWidget(viewer) if ok else Container(widgets=[Label(value=why)])


class ExportWidget(_Task):
    """Export a checkpoint as ``coordgate export`` does: a BioImage Model Zoo package
    (tested by ``bioimageio.core`` after writing), ONNX or TorchScript, for the whole
    sensor frame the checkpoint was trained on."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.choice = _CheckpointChoice()
        self.format = ComboBox(label="format", choices=list(SUFFIXES), value="bioimageio")
        self.authors = LineEdit(label="authors (comma-separated)", value="")
        self.license = LineEdit(label="license (SPDX)", value="MIT")
        self.output = FileEdit(label="write to", mode="w", filter="*.zip")
        choice = self.choice
        fields = [choice.reference, choice.checkpoint, choice.about, choice.normalisation]
        super().__init__(
            viewer, [*fields, self.format, self.authors, self.license, self.output], "Export"
        )
        self.format.changed.connect(self._format_chosen)

    def _format_chosen(self, format: str) -> None:
        suffix = SUFFIXES[format]
        self.output.filter = f"*{suffix}"
        if str(self.output.value) not in ("", "."):
            self.output.value = Path(self.output.value).with_suffix(suffix)

    def settings(self) -> ExportSettings:
        """The widget's choices, validated."""
        output = Path(self.output.value)
        if output.suffix != SUFFIXES[self.format.value]:
            raise ValueError(f"choose where to write the {self.format.value} export")
        names = tuple(name.strip() for name in self.authors.value.split(",") if name.strip())
        return ExportSettings(
            checkpoint=self.choice.path(),
            output=output,
            format=self.format.value,
            normalisation=self.choice.normalisation.value,
            authors=names,
            license=self.license.value.strip(),
        )

    def run(self) -> FunctionWorker | None:
        """Start the export; the worker, or None when a choice is bad."""
        try:
            settings = self.settings()
        except (OSError, ValueError) as error:
            self.status.value = f"error: {error}"
            return None
        self.status.value = f"exporting {settings.checkpoint.name} ..."
        return self._start(export_package, settings)

    def _returned(self, result: str) -> None:
        self.status.value = result
