"""End to end in a real ``napari.Viewer``: open the synthetic sample, deblur it with the
Deblur dock widget, show input and result side by side (grid mode) and save a screenshot;
and deconvolve the sample with the Deconvolve dock widget and the default lens, as
``coordgate deconvolve`` does.

The viewer needs an X display and OpenGL: the test runs this file as a script in a child
process under ``xvfb-run`` (Debian's xvfb, Mesa's software OpenGL) when it is installed,
else on ``$DISPLAY``; with neither it skips and says why. ``COORDGATE_REQUIRE_NAPARI=1``
(CI) turns every such skip into a failure. ``COORDGATE_NAPARI_SCREENSHOT=PATH`` keeps a
copy of the screenshot (``docs/napari_screenshot.png`` comes from here). The checkpoint
is ``COORDGATE_NAPARI_CHECKPOINT`` when set (a reference name such as ``sensor/cg-unet3``,
or a path), else a committed reference checkpoint (a
CoordGate U-Net first), else a tiny untrained model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REQUIRED = os.environ.get("COORDGATE_REQUIRE_NAPARI") == "1"
SAMPLE = "synthetic (blurred, default lens)"
TIMEOUT_S = 240


def _skip(reason: str) -> None:
    (pytest.fail if REQUIRED else pytest.skip)(reason)


def _display() -> list[str] | None:
    """The command prefix that gives the child a display, or None when there is none."""
    if shutil.which("xvfb-run"):
        return ["xvfb-run", "--auto-servernum", "--server-args=-screen 0 1600x1000x24"]
    if os.environ.get("DISPLAY"):
        return []
    return None


def _tiny_checkpoint(directory: Path) -> str:
    import torch

    from coordgate.models import build_model
    from coordgate.training import CheckpointConfig, save_checkpoint

    torch.manual_seed(0)
    model = build_model("cg-unet3", base_channels=4)
    config = CheckpointConfig(
        {"name": "cg-unet3", "options": {"base_channels": 4}},
        normalisation={"low": 1.0, "high": 99.8, "vmin": None, "vmax": None},
    )
    return str(save_checkpoint(directory / "tiny.safetensors", model, config))


def test_deblur_in_a_real_viewer_and_screenshot(tmp_path):
    screenshot = tmp_path / "napari_screenshot.png"
    report = _child(str(screenshot), _tiny_checkpoint(tmp_path))
    assert report["status"] == f"done: {SAMPLE} deblurred"
    assert report["layers"][-2:] == [SAMPLE, f"{SAMPLE} deblurred"]
    assert report["grid"] and report["result_shape"] == [256, 256]
    # every panel of the canvas shows an image, not the background
    assert min(report["panel_std"]) > 5, report["panel_std"]
    from PIL import Image

    with Image.open(screenshot) as image:
        assert image.width >= 800 and image.height >= 400
    if os.environ.get("COORDGATE_NAPARI_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["COORDGATE_NAPARI_SCREENSHOT"])


def _child(*args: str) -> dict:
    """Run this file with ``args`` in a child process with a display; its JSON report."""
    try:
        import napari  # noqa: F401
    except ImportError:
        _skip("napari is not installed (make napari-env): no real-viewer test")
    prefix = _display()
    if prefix is None:
        _skip(
            "no display for the real napari viewer: install Xvfb (apt-get install xvfb xauth "
            "libgl1-mesa-dri) or set DISPLAY"
        )
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "OMP_NUM_THREADS": "1"}
    command = [*prefix, sys.executable, __file__, *args]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_deconvolve_in_a_real_viewer(tmp_path):
    import numpy as np
    import torch

    from coordgate.training.metrics import psnr
    from tests.helpers import cli_deconvolve

    report = _child("--deconvolve", str(tmp_path))
    assert report["status"].startswith(f"done: {SAMPLE} deconvolved; Richardson-Lucy")
    assert report["layers"][-1] == f"{SAMPLE} deconvolved" and report["placed_as_input"]
    assert report["progress"] == [100, 100]
    blurred, result, sharp = (np.load(tmp_path / f"{n}.npy") for n in ("input", "result", "sharp"))
    expected = cli_deconvolve(tmp_path / "cli", "default", blurred)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)
    before, after = (
        float(psnr(torch.from_numpy(x), torch.from_numpy(sharp))) for x in (blurred, result)
    )
    assert after > before + 2, (before, after)


def _wait_for(widget, app, seconds: float) -> None:
    """Keep the GUI turning until the widget's worker is done, at most ``seconds``."""
    import time

    deadline = time.monotonic() + seconds
    while widget.running and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)


def _run_deconvolve(out: str) -> dict:
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="coordgate: deconvolve in napari")
    viewer.open_sample("coordgate", "synthetic")
    _, widget = viewer.window.add_plugin_dock_widget("coordgate", "Deconvolve")
    layer = viewer.layers[SAMPLE]
    widget.image.value = layer
    widget.field.value = "default lens"
    widget.run_button.native.click()
    _wait_for(widget, QApplication.instance(), TIMEOUT_S - 60)
    result = viewer.layers[-1]
    for name, data in (("input", layer.data), ("result", result.data)):
        np.save(Path(out) / f"{name}.npy", data)
    np.save(Path(out) / "sharp.npy", viewer.layers["synthetic (sharp)"].data)
    report = {
        "status": widget.status.value,
        "layers": [layer.name for layer in viewer.layers],
        "placed_as_input": bool(
            np.array_equal(result.scale, layer.scale)
            and np.array_equal(result.translate, layer.translate)
        ),
        "progress": [widget.progress.value, widget.progress.max],
    }
    viewer.close()
    return report


def _pick_checkpoint(widget, fallback: str) -> str:
    """The checkpoint to deblur with (see the module docstring); its name."""
    from coordgate.napari.deblur import reference_checkpoints

    chosen = os.environ.get("COORDGATE_NAPARI_CHECKPOINT")
    references = reference_checkpoints()
    if chosen in references:  # a name from the widget's reference list, e.g. sensor/cg-unet3
        widget.reference.value = widget.reference.get_choice(chosen)
        return chosen
    if chosen:
        widget.checkpoint.value = chosen
        return chosen
    names = sorted(references, key=lambda name: ("cg-unet" not in name, name))
    if names:
        widget.reference.value = widget.reference.get_choice(names[0])
        return names[0]
    widget.checkpoint.value = fallback
    return "tiny untrained cg-unet3"


def _run_viewer(screenshot: str, fallback: str) -> dict:
    import time

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="coordgate: deblur in napari")
    viewer.window.resize(1500, 760)
    viewer.open_sample("coordgate", "synthetic")
    viewer.layers.remove("synthetic (sharp)")
    _, widget = viewer.window.add_plugin_dock_widget("coordgate", "Deblur")
    widget.image.value = viewer.layers[SAMPLE]
    used = _pick_checkpoint(widget, fallback)
    widget.sensor.rows.value = widget.sensor.columns.value = 256  # the frame is the sensor
    widget.run_button.native.click()
    app = QApplication.instance()
    _wait_for(widget, app, TIMEOUT_S - 60)
    viewer.grid.enabled = True
    viewer.grid.shape = (1, len(viewer.layers))
    viewer.grid.spacing = 0.05
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    canvas = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3]
    panels = np.array_split(canvas.mean(axis=-1), len(viewer.layers), axis=1)
    viewer.screenshot(screenshot, canvas_only=False, flash=False)
    report = {
        "checkpoint": used,
        "status": widget.status.value,
        "layers": [layer.name for layer in viewer.layers],
        "grid": viewer.grid.enabled,
        "result_shape": list(viewer.layers[-1].data.shape),
        "panel_std": [float(panel.std()) for panel in panels],
    }
    viewer.close()
    return report


if __name__ == "__main__":
    if sys.argv[1] == "--deconvolve":
        print(json.dumps(_run_deconvolve(sys.argv[2])))
    else:
        print(json.dumps(_run_viewer(sys.argv[1], sys.argv[2])))
