import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from coordgate.cli import main
from coordgate.optics import PSFField


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((37, 31)) * 255).astype(np.uint8)).save(folder / "gray.png")
    Image.fromarray((rng.random((33, 29, 3)) * 255).astype(np.uint8)).save(folder / "rgb.png")
    tifffile.imwrite(folder / "stack.tif", rng.random((2, 35, 27)).astype(np.float32))
    return folder


def test_simulate_a_folder_writes_float32_tiffs_and_a_psf_grid(images, tmp_path, capsys):
    field = PSFField.gaussian(9, sigma_centre=0.7, sigma_edge=2.0).save(tmp_path / "field.npz")
    out = tmp_path / "out"
    argv = ["simulate", "--in", str(images), "--out", str(out), "--psf-field", str(field)]
    assert main([*argv, "--photons", "500", "--read-noise", "1", "--grid", "3"]) == 0
    shapes = {"gray": (37, 31), "rgb": (33, 29, 3), "stack": (2, 35, 27)}
    for stem, shape in shapes.items():
        blurred = tifffile.imread(out / f"{stem}.tif")
        assert blurred.shape == shape and blurred.dtype == np.float32
    grid = np.asarray(Image.open(out / "psf_grid.png"))
    assert grid.ndim == 2 and grid.max() == 255
    manifest = json.loads((out / "simulate.json").read_text())
    assert manifest["field"]["kind"] == "gaussian" and manifest["noise"]["photons"] == 500
    assert PSFField.load(out / "field.npz").config() == manifest["field"]
    assert "gray.tif" in capsys.readouterr().out


def test_simulate_without_noise_blurs_like_the_operator(images, tmp_path):
    import torch

    from coordgate.optics import SpatiallyVaryingBlur

    out = tmp_path / "out"
    argv = ["simulate", "--in", str(images / "gray.png"), "--out", str(out), "--method", "exact"]
    assert main([*argv, "--padding", "zero"]) == 0
    sharp = np.asarray(Image.open(images / "gray.png"), dtype=np.float32) / 255
    expected = SpatiallyVaryingBlur(PSFField.default(), (37, 31)).A(
        torch.from_numpy(sharp)[None, None]
    )
    assert np.allclose(tifffile.imread(out / "gray.tif"), expected[0, 0].numpy(), atol=1e-5)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--in", "{tmp}/missing.png"], "not found"),
        (["--in", "{tmp}/empty"], "no images"),
        (["--in", "{tmp}/bad.png"], "cannot read image"),
        (["--in", "{tmp}/in", "--psf-field", "lens.json"], "--psf-field"),
        (["--in", "{tmp}/in", "--psf-field", "{tmp}/nope.npz"], "not found"),
        (["--in", "{tmp}/in", "--method", "exact", "--rank", "2"], "rank"),
    ],
)
def test_simulate_errors_are_one_clean_line(images, tmp_path, capsys, argv, match):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.png").write_text("not an image")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["simulate", *argv, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("coordgate simulate: error:") and match in error
    assert "\n" not in error
