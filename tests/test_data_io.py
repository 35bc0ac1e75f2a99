"""Image I/O, percentile normalisation and the bundled sample images."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from coordgate.data.normalization import PercentileNormalizer
from coordgate.data.samples import SAMPLES, sample_image, sample_images
from coordgate.images import (
    PixelSize,
    frame_info,
    montage,
    read_frames,
    read_image,
    read_pixel_size,
    write_png_preview,
    write_tiff,
)

RNG = np.random.default_rng(0)


def _image(dtype, shape=(37, 31)):
    if np.issubdtype(dtype, np.integer):
        return RNG.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    return RNG.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_round_trip(tmp_path, dtype):
    image = _image(dtype)
    tifffile.imwrite(tmp_path / "a.tif", image)
    read = read_image(tmp_path / "a.tif")
    assert read.dtype == dtype and np.array_equal(read, image)
    frames = read_frames(tmp_path / "a.tif")
    assert frames.shape == (1, 37, 31) and frames.dtype == np.float32
    np.testing.assert_array_equal(frames[0], image.astype(np.float32))
    write_tiff(tmp_path / "b.tiff", torch.from_numpy(image.astype(np.float32)))
    back = read_image(tmp_path / "b.tiff")
    assert back.dtype == np.float32 and np.array_equal(back, image.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_png_round_trip(tmp_path, dtype):
    image = _image(dtype)
    if dtype == np.float32:
        image = (image - image.min()) / (image.max() - image.min())
    write_png_preview(tmp_path / "a.png", image, percentiles=None)
    read = read_image(tmp_path / "a.png")
    if dtype == np.float32:  # 8-bit preview: quantised to 1/255
        np.testing.assert_allclose(read / 255, image, atol=0.5 / 255 + 1e-6)
    else:
        assert read.dtype == dtype and np.array_equal(read, image)


def test_png_preview_stretches_percentiles(tmp_path):
    image = np.linspace(10, 20, 37 * 31, dtype=np.float32).reshape(37, 31)
    read = read_image(write_png_preview(tmp_path / "p.png", image))
    assert read.dtype == np.uint8 and read.min() == 0 and read.max() == 255


def test_jpeg_rgb_is_averaged_or_selected(tmp_path):
    rgb = np.zeros((37, 31, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=100)
    mean = read_frames(tmp_path / "c.jpg")
    red = read_frames(tmp_path / "c.jpg", channel=0)
    assert mean.shape == red.shape == (1, 37, 31)
    assert abs(red.mean() - 200) < 3 and abs(mean.mean() - 200 / 3) < 3
    with pytest.raises(ValueError, match="3 channel"):
        read_frames(tmp_path / "c.jpg", channel=3)


def test_multipage_and_hyperstack_tiff(tmp_path):
    stack = _image(np.uint16, (4, 37, 31))
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    frames = read_frames(tmp_path / "s.tif")
    assert frames.shape == (4, 37, 31)
    np.testing.assert_array_equal(frames[2], stack[2])
    assert frame_info(tmp_path / "s.tif") == (4, (37, 31))
    # ImageJ hyperstack: T=2, C=3 channels, averaged per frame.
    hyper = _image(np.uint8, (2, 3, 37, 31))
    tifffile.imwrite(tmp_path / "h.tif", hyper, imagej=True, metadata={"axes": "TCYX"})
    frames = read_frames(tmp_path / "h.tif")
    assert frames.shape == (2, 37, 31)
    np.testing.assert_allclose(frames[1], hyper[1].mean(0), rtol=1e-6)
    assert frame_info(tmp_path / "h.tif") == (2, (37, 31))
    np.testing.assert_array_equal(read_frames(tmp_path / "h.tif", channel=2)[0], hyper[0, 2])


def test_write_tiff_multipage(tmp_path):
    stack = _image(np.float32, (3, 37, 31))
    write_tiff(tmp_path / "m.tif", stack)
    np.testing.assert_array_equal(read_frames(tmp_path / "m.tif"), stack)
    with pytest.raises(ValueError, match="write_tiff"):
        write_tiff(tmp_path / "bad.tif", np.zeros(5))


@pytest.mark.parametrize("name, content", [("bad.tif", b"not a tiff"), ("bad.png", b"\x89PNG")])
def test_corrupt_file_names_the_file(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=name):
        read_image(tmp_path / name)
    with pytest.raises(ValueError, match=name):
        frame_info(tmp_path / name)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="notes.txt.*unsupported"):
        read_frames(tmp_path / "notes.txt")


def test_montage_layout():
    tiles = [np.full((3, 4), k, np.float32) for k in range(5)]
    grid = montage(tiles, 2, gap=1, fill=-1)
    assert grid.shape == (3 * 3 + 2, 2 * 4 + 1)
    assert grid[0, 0] == 0 and grid[0, 5] == 1 and grid[8, 0] == 4 and grid[8, 5] == -1
    with pytest.raises(ValueError, match="montage"):
        montage([], 2)


# -- normalisation --------------------------------------------------------------------


def test_percentile_normalizer_maps_percentiles_and_inverts():
    x = torch.linspace(0, 1000, 1001).reshape(7, 143)
    norm = PercentileNormalizer(1, 99).fit(x)
    assert norm.vmin == pytest.approx(10) and norm.vmax == pytest.approx(990)
    y = norm.normalize(x)
    assert y.dtype == torch.float32
    assert y[0, 10].item() == pytest.approx(0, abs=1e-6)
    torch.testing.assert_close(norm.denormalize(y), x)
    restored = PercentileNormalizer.from_dict(norm.to_dict())
    assert restored == norm
    np.testing.assert_allclose(restored.normalize(x.numpy()), y.numpy(), rtol=1e-6)


def test_percentile_normalizer_fits_collections_and_clips():
    images = [np.full((5, 5), 2.0), np.full((5, 5), 4.0)]
    norm = PercentileNormalizer(0, 100, clip=True).fit(images)
    assert (norm.vmin, norm.vmax) == (2.0, 4.0)
    assert norm.normalize(np.array([0.0, 3.0, 9.0])).tolist() == [0.0, 0.5, 1.0]
    per_image = PercentileNormalizer().fitted_to(np.full((3, 3), 7.0))
    assert np.isfinite(per_image.normalize(np.full(3, 7.0))).all()


def test_percentile_normalizer_errors():
    with pytest.raises(ValueError, match="not fitted"):
        PercentileNormalizer().normalize(np.zeros(3))
    with pytest.raises(ValueError, match="percentiles"):
        PercentileNormalizer(50, 10)
    with pytest.raises(ValueError, match="finite"):
        PercentileNormalizer().fit(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="unknown"):
        PercentileNormalizer.from_dict({"low": 1, "colour": 2})


# -- bundled samples ------------------------------------------------------------------


def test_sample_images_load_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("sample images must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    images = sample_images()
    assert set(images) == set(SAMPLES)
    assert {s.kind for s in SAMPLES.values()} == {"microscopy", "astronomy"}
    for name, image in images.items():
        assert image.ndim == 2 and image.dtype == np.float32 and min(image.shape) >= 64, name
        assert image.min() == 0 and image.max() == 1 and image.std() > 0.02, name
    assert set(sample_images("astronomy")) == {"hubble_deep_field", "moon"}
    with pytest.raises(ValueError, match="unknown sample"):
        sample_image("kidney")
    with pytest.raises(ValueError, match="kind"):
        sample_images("biology")


@pytest.mark.parametrize(
    "pixel_size",
    [PixelSize(0.65, 0.5, "um"), PixelSize(1e-4, 2e-4, "cm"), PixelSize(3.0, 3.0, ""), None],
)
@pytest.mark.parametrize("shape", [(9, 7), (3, 9, 7)])
def test_tiffs_keep_their_pixel_size(tmp_path, pixel_size, shape):
    image = RNG.random(shape).astype(np.float32)
    path = write_tiff(tmp_path / "a.tif", image, pixel_size=pixel_size)
    read = read_pixel_size(path)
    if pixel_size is None:
        assert read is None
    else:
        assert read.unit == pixel_size.unit
        np.testing.assert_allclose(read[:2], pixel_size[:2], rtol=1e-6)
    np.testing.assert_array_equal(read_frames(path), image.reshape(-1, 9, 7))


def test_pixel_size_of_imagej_and_other_files(tmp_path):
    image = RNG.random((9, 7)).astype(np.float32)
    tifffile.imwrite(
        tmp_path / "ij.tif", image, imagej=True, resolution=(4, 2), metadata={"unit": "um"}
    )
    assert read_pixel_size(tmp_path / "ij.tif") == PixelSize(0.5, 0.25, "um")
    Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / "a.png")
    assert read_pixel_size(tmp_path / "a.png") is None
    with pytest.raises(ValueError, match="positive"):
        write_tiff(tmp_path / "b.tif", image, pixel_size=PixelSize(0.0, 1.0, "um"))
