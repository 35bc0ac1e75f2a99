"""Folder frames, random crops with origins, and the sensor geometry of transforms."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from coordgate.data.folder import FolderFrames, RandomCrops, find_images
from coordgate.data.sensor import as_size, crop_at, dihedral, dihedral_origin, dihedral_size


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    tifffile.imwrite(
        tmp_path / "a.tif",
        rng.integers(0, 60000, (2, 37, 31), dtype=np.uint16),
        photometric="minisblack",
    )
    Image.fromarray(rng.integers(0, 255, (41, 45), dtype=np.uint8)).save(tmp_path / "sub" / "b.png")
    tifffile.imwrite(tmp_path / "sub" / "deeper" / "c.TIFF", rng.random((33, 39), dtype=np.float32))
    (tmp_path / "readme.txt").write_text("not an image")
    return tmp_path


def test_find_images_is_recursive_and_sorted(folder):
    names = [p.relative_to(folder).as_posix() for p in find_images(folder)]
    assert names == ["a.tif", "sub/b.png", "sub/deeper/c.TIFF"]


def test_folder_frames_reads_every_frame(folder):
    frames = FolderFrames(folder)
    assert len(frames) == 4
    assert frames.sizes == [(37, 31), (37, 31), (41, 45), (33, 39)]
    assert [frames.describe(i) for i in (0, 1, 3)] == [
        "a.tif[0]",
        "a.tif[1]",
        "sub/deeper/c.TIFF[0]",
    ]
    stack = tifffile.imread(folder / "a.tif")
    np.testing.assert_array_equal(frames[1], stack[1].astype(np.float32))
    assert frames[2].shape == (41, 45) and frames[-1].dtype == np.float32


def test_empty_folder_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no images"):
        FolderFrames(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing"):
        find_images(tmp_path / "missing")


def test_images_smaller_than_the_crop(folder):
    with pytest.raises(ValueError, match=r"c\.TIFF is 33x39 pixels, smaller than the 34x30"):
        FolderFrames(folder, min_size=(34, 30))
    with pytest.raises(ValueError, match="smaller than the crop 40x32"):
        RandomCrops(FolderFrames(folder), (40, 32))


def test_corrupt_image_in_folder_is_named(folder):
    (folder / "sub" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="broken.png"):
        FolderFrames(folder)


def test_crops_record_their_origin(folder):
    frames = FolderFrames(folder)
    crops = RandomCrops(frames, (17, 13), samples_per_frame=3, seed=2)
    assert len(crops) == 12
    origins = set()
    for i in range(len(crops)):
        item = crops[i]
        frame = torch.from_numpy(frames[item["frame"]])
        assert item["image"].shape == (1, 17, 13)
        assert item["full_size"].tolist() == list(frame.shape)
        torch.testing.assert_close(item["image"][0], crop_at(frame, item["origin"], (17, 13)))
        origins.add(tuple(item["origin"].tolist()))
    assert len(origins) > 6
    first = crops[5]["origin"]
    assert torch.equal(
        RandomCrops(frames, (17, 13), samples_per_frame=3, seed=2)[5]["origin"], first
    )
    crops.set_epoch(1)
    assert not all(
        torch.equal(
            crops[i]["origin"],
            RandomCrops(frames, (17, 13), samples_per_frame=3, seed=2)[i]["origin"],
        )
        for i in range(len(crops))
    )


def test_augmented_crops_are_transforms_of_the_crop(folder):
    frames = [np.arange(37 * 31, dtype=np.float32).reshape(37, 31)]
    crops = RandomCrops(frames, 11, samples_per_frame=16, seed=0, augment=True)
    seen = set()
    for i in range(len(crops)):
        item = crops[i]
        plain = crop_at(torch.from_numpy(frames[0]), item["origin"], 11)
        torch.testing.assert_close(item["image"][0], dihedral(plain, item["transform"]))
        seen.add(item["transform"])
    assert len(seen) > 3
    rect = RandomCrops(frames, (11, 7), samples_per_frame=16, augment=True)
    assert {rect[i]["transform"] for i in range(16)} <= {0, 2, 4, 6}


# -- sensor geometry ------------------------------------------------------------------


@pytest.mark.parametrize("k", range(8))
@pytest.mark.parametrize("full", [(9, 9), (9, 7)])
def test_dihedral_origin_matches_transformed_frame(k, full):
    frame = torch.arange(full[0] * full[1]).reshape(full)
    if dihedral_size(full, k) != tuple(dihedral(frame, k).shape):
        pytest.fail("dihedral_size disagrees with dihedral")
    origin, size = (2, 1), (4, 3)
    crop = dihedral(crop_at(frame, origin, size), k)
    new_origin = dihedral_origin(origin, size, full, k)
    torch.testing.assert_close(crop, crop_at(dihedral(frame, k), new_origin, crop.shape))


def test_dihedral_group():
    x = torch.arange(12.0).reshape(3, 4)
    assert torch.equal(dihedral(x, 0), x)
    assert torch.equal(dihedral(dihedral(x, 1), 3), x)
    assert torch.equal(dihedral(dihedral(x, 4), 4), x)
    assert (
        len(
            {tuple(dihedral(torch.arange(9).reshape(3, 3), k).flatten().tolist()) for k in range(8)}
        )
        == 8
    )
    with pytest.raises(ValueError, match="0..7"):
        dihedral(x, 8)


def test_sizes_and_crops_validate():
    assert as_size(5) == (5, 5) and as_size((3, 4)) == (3, 4)
    for bad in (0, (3,), (3.0, 4), True, (2, -1)):
        with pytest.raises(ValueError, match="size"):
            as_size(bad)
    with pytest.raises(ValueError, match="does not fit"):
        crop_at(torch.zeros(5, 5), (3, 0), (3, 3))
