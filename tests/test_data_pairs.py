"""Pair caches: crops of the full blurred frame, reuse vs rebuild, splits, resume, folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

import coordgate.data.pairs as pairs
from coordgate.cli import main
from coordgate.data.pairs import NoiseModel, PairCache, PairDataset, build_pairs
from coordgate.data.sensor import crop_at, dihedral
from coordgate.optics import PSFField, SpatiallyVaryingBlur

SIZE = (37, 31)


@pytest.fixture(scope="module")
def field():
    return PSFField.gaussian(psf_size=9, sigma_centre=0.6, sigma_edge=2.5)


def _build(path, field, **kwargs):
    options = {"n": 10, "size": SIZE, "field": field, "seed": 0, "progress": False}
    return build_pairs(path, **{**options, **kwargs})


def test_sample_is_the_crop_of_the_full_blurred_frame(tmp_path, field):
    cache = _build(tmp_path / "c", field, noise=None)
    sharp, blurred = (torch.from_numpy(np.array(cache.array(k))) for k in ("sharp", "blurred"))
    operator = SpatiallyVaryingBlur(field, SIZE, method="lowrank", padding="reflect")
    torch.testing.assert_close(blurred, operator.A(sharp[:, None])[:, 0].clamp_min(0))

    dataset = PairDataset(cache, "train", crop=(17, 13), seed=1)
    assert len(dataset) == 8
    origins = set()
    for i in range(len(dataset)):
        item = dataset[i]
        k, origin = item["index"], item["origin"]
        assert item["blurred"].shape == item["sharp"].shape == (1, 17, 13)
        assert item["origin"].dtype == torch.long and item["full_size"].tolist() == list(SIZE)
        assert torch.equal(item["blurred"][0], crop_at(blurred[k], origin, (17, 13)))
        assert torch.equal(item["sharp"][0], crop_at(sharp[k], origin, (17, 13)))
        origins.add(tuple(origin.tolist()))
    assert len(origins) > 3
    # Why crops are cut after blurring: the blur of a crop is not the crop of the blur.
    small = SpatiallyVaryingBlur(field, (17, 13), method="lowrank", padding="reflect")
    item = dataset[0]
    assert not torch.allclose(small.A(item["sharp"][None])[0], item["blurred"], atol=1e-3)


def test_several_crops_per_frame_each_epoch(tmp_path, field):
    cache = _build(tmp_path / "c", field, noise=None)
    single = PairDataset(cache, "train", crop=(17, 13), seed=1)
    area = PairDataset(cache, "train", crop=(17, 13), seed=1, crops_per_frame="area")
    # ceil(37 * 31 / (17 * 13)) = 6 crops cover a frame's area
    assert area.crops_per_frame == 6 and len(area) == 6 * len(single)
    items = [area[i] for i in range(6)]
    assert {item["index"] for item in items} == {single[0]["index"]}
    assert len({tuple(item["origin"].tolist()) for item in items}) > 1
    # the first crop of every frame is the one a single-crop epoch draws
    assert torch.equal(items[0]["origin"], single[0]["origin"])
    with pytest.raises(ValueError, match="crops_per_frame"):
        PairDataset(cache, "train", crop=8, crops_per_frame=0)


def test_whole_frames_and_noise(tmp_path, field):
    clean = _build(tmp_path / "clean", field, noise=None)
    noisy = _build(tmp_path / "noisy", field, noise=NoiseModel(photons=100, read_noise=1))
    item = PairDataset(noisy, "val")[0]
    assert item["origin"].tolist() == [0, 0] and item["blurred"].shape == (1, *SIZE)
    np.testing.assert_array_equal(clean.array("sharp"), noisy.array("sharp"))
    residual = noisy.array("blurred") - clean.array("blurred")
    assert 0.01 < residual.std() < 0.2 and abs(residual.mean()) < 0.01


def test_augmentation_only_by_symmetries_of_the_field(tmp_path):
    lens = PSFField.default(psf_size=9, max_defocus=0.5)
    cache = _build(tmp_path / "sym", lens, size=33, n=6, noise=None, method="exact")
    assert cache.symmetries == tuple(range(8))  # rotationally symmetric lens, square sensor
    sharp, blurred = (torch.from_numpy(np.array(cache.array(k))) for k in ("sharp", "blurred"))
    operator = SpatiallyVaryingBlur(lens, (33, 33), method="exact", padding="reflect")
    dataset = PairDataset(cache, "train", crop=15, augment=True, seed=3)
    seen = set()
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            item = dataset[i]
            k, t, origin = item["index"], item["transform"], item["origin"]
            frame_s, frame_b = dihedral(sharp[k], t), dihedral(blurred[k], t)
            assert torch.equal(item["sharp"][0], crop_at(frame_s, origin, (15, 15)))
            assert torch.equal(item["blurred"][0], crop_at(frame_b, origin, (15, 15)))
            # The transformed pair is a true pair: its blurred frame is A(transformed sharp).
            torch.testing.assert_close(
                operator.A(frame_s[None, None])[0, 0].clamp_min(0), frame_b, atol=1e-5, rtol=0
            )
            seen.add(t)
    assert len(seen) > 3

    rng = np.random.default_rng(0)
    skewed = PSFField.from_grid(torch.from_numpy(rng.random((3, 3, 5, 5))))
    asym = _build(tmp_path / "asym", skewed, size=33, n=4, noise=None)
    assert asym.symmetries == (0,)
    data = PairDataset(asym, "train", crop=15, augment=True)
    assert {data[i]["transform"] for i in range(len(data))} == {0}
    rect = _build(tmp_path / "rect", lens, n=4, noise=None)
    assert set(rect.symmetries) == {0, 2, 4, 6}


def test_cache_is_reused_and_rebuilt_when_a_parameter_changes(tmp_path, field, monkeypatch):
    path = tmp_path / "cache"
    first = _build(path, field)
    assert first.built
    stamp = (path / first.files["blurred"]).stat().st_mtime_ns
    calls = []
    real = pairs.synthetic_microscopy
    monkeypatch.setattr(
        pairs, "synthetic_microscopy", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    again = _build(path, field)
    assert not again.built and not calls
    assert (path / first.files["blurred"]).stat().st_mtime_ns == stamp
    old = np.array(first.array("blurred"))

    reseeded = _build(path, field, seed=1)
    assert reseeded.built and calls
    assert not np.array_equal(np.array(reseeded.array("blurred")), old)
    assert reseeded.manifest["parameters"]["seed"] == 1

    wider = PSFField.gaussian(psf_size=9, sigma_centre=0.6, sigma_edge=3.0)
    assert _build(path, wider, seed=1).built
    assert not _build(path, wider, seed=1).built
    assert _build(path, wider, seed=1, noise=NoiseModel(photons=50)).built
    assert _build(path, wider, seed=1, noise=NoiseModel(photons=50), force=True).built
    assert not list(path.glob(".partial-*"))
    # only the last generation's files remain, and the reader opened first still reads its own
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [".lock", "manifest.json", *PairCache(path).files.values()]
    )
    np.testing.assert_array_equal(first.array("blurred"), old)


def test_manifest_records_provenance(tmp_path, field):
    cache = _build(tmp_path / "m", field)
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["parameters"]["field"] == field.config()
    assert manifest["parameters"]["noise"] == {"photons": 1000.0, "read_noise": 2.0}
    assert manifest["source"]["kind"] == "synthetic"
    assert "torch" in manifest["environment"]["versions"]
    assert cache.field().config() == field.config()
    assert repr(cache).startswith("PairCache(")


def test_splits_are_fixed_by_seed(tmp_path, field):
    a = _build(tmp_path / "a", field, n=20)
    b = _build(tmp_path / "b", field, n=20)
    assert a.manifest["counts"] == {"train": 16, "val": 2, "test": 2}
    parts = [a.indices(s) for s in ("train", "val", "test")]
    assert sorted(np.concatenate(parts).tolist()) == list(range(20))
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(a.indices(s), b.indices(s))
    c = _build(tmp_path / "c", field, n=20, seed=5)
    assert not np.array_equal(a.indices("val"), c.indices("val"))


def test_interrupted_build_resumes(tmp_path, field, monkeypatch):
    reference = _build(tmp_path / "ref", field, batch_size=4)
    real = pairs._blur
    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(pairs, "_blur", failing)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "r", field, batch_size=4)
    assert not (tmp_path / "r" / "manifest.json").exists()
    monkeypatch.setattr(pairs, "_blur", lambda *a: calls.append(1) or real(*a))
    resumed = _build(tmp_path / "r", field, batch_size=4)
    assert len(calls) == 4  # 1 done + 1 interrupted + the 2 remaining of 3 batches
    for name in ("sharp", "blurred", "split"):
        np.testing.assert_array_equal(resumed.array(name), reference.array(name))


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for k, shape in enumerate([(40, 44), (50, 41), (41, 60), (45, 45), (60, 50)]):
        image = rng.integers(100, 4000, shape).astype(np.uint16)
        tifffile.imwrite(root / ("sub" if k % 2 else "") / f"im{k}.tif", image)
    stack = rng.integers(100, 4000, (3, 40, 40)).astype(np.uint16)
    tifffile.imwrite(root / "stack.tif", stack, photometric="minisblack")
    return root


def test_folder_source_splits_by_image(tmp_path, field, image_folder):
    cache = _build(tmp_path / "f", field, source=image_folder, n=12, size=(33, 35))
    source_info = cache.manifest["source"]
    assert source_info["kind"] == "folder" and source_info["split_unit"] == "file"
    assert len(source_info["frames"]) == 8 and "stack.tif[2]" in source_info["frames"]
    source = np.array(cache.array("source"))
    files = [name.split("[")[0] for name in source_info["frames"]]
    used = [{files[f] for f in source[cache.indices(s), 0]} for s in ("train", "val", "test")]
    assert all(used)
    assert not (used[0] & used[1] or used[0] & used[2] or used[1] & used[2])
    sharp = np.array(cache.array("sharp"))
    assert sharp.min() >= 0 and 0.3 < np.percentile(sharp, 99) < 1.5
    assert set(source[:, 3].tolist()) <= {0, 2, 4, 6}  # non-square sensor: no quarter turns
    assert not _build(tmp_path / "f", field, source=image_folder, n=12, size=(33, 35)).built
    tifffile.imwrite(image_folder / "new.tif", np.ones((40, 40), np.uint16))
    assert _build(tmp_path / "f", field, source=image_folder, n=12, size=(33, 35)).built


def test_folder_errors(tmp_path, field, image_folder):
    with pytest.raises(ValueError, match=r"im0\.tif is 40x44 pixels, smaller"):
        _build(tmp_path / "x", field, source=image_folder, size=42)
    single = tmp_path / "single"
    single.mkdir()
    tifffile.imwrite(single / "one.tif", np.ones((40, 40), np.uint16))
    with pytest.raises(ValueError, match="own source image"):
        _build(tmp_path / "y", field, source=single)
    tifffile.imwrite(single / "one.tif", np.ones((3, 40, 40), np.uint16), photometric="minisblack")
    stack = _build(tmp_path / "y", field, source=single)
    assert stack.manifest["source"]["split_unit"] == "frame"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        _build(tmp_path / "z", field, source=tmp_path / "empty")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "n must"),
        ({"splits": (0.5, 0.1, 0.1)}, "splits"),
        ({"seed": -3}, "seed"),
        ({"size": (37,)}, "size"),
        ({"field": "lens"}, "PSFField"),
    ],
)
def test_bad_build_arguments(tmp_path, field, kwargs, match):
    options = {"n": 10, "size": SIZE, "field": field, "progress": False}
    with pytest.raises(ValueError, match=match):
        build_pairs(tmp_path / "bad", **{**options, **kwargs})


def test_bad_dataset_arguments(tmp_path, field):
    cache = _build(tmp_path / "d", field)
    with pytest.raises(ValueError, match="split"):
        PairDataset(cache, "training")
    with pytest.raises(ValueError, match="larger than the sensor"):
        PairDataset(cache, crop=40)
    with pytest.raises(FileNotFoundError, match="no pair cache"):
        PairCache(tmp_path / "nothing")


def test_cli_build_and_show(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["dataset", "build", "--n", "5", "--size", "32", "--out", str(out), "--quiet"]
    assert main([*args, "--field", "gaussian", "--no-noise"]) == 0
    assert "built PairCache" in capsys.readouterr().out
    assert main([*args, "--field", "gaussian", "--no-noise"]) == 0
    assert "reused" in capsys.readouterr().out
    assert main(["dataset", "show", str(out), "--count", "3"]) == 0
    printed = capsys.readouterr().out
    assert '"kind": "gaussian"' in printed and (out / "preview.png").is_file()
    assert main(["dataset", "show", str(tmp_path / "missing")]) == 2
    assert "no pair cache" in capsys.readouterr().err


def test_dataset_batches_and_pickles(tmp_path, field):
    import pickle

    from torch.utils.data import DataLoader

    dataset = PairDataset(_build(tmp_path / "p", field), "train", crop=16)
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["blurred"].shape == (4, 1, 16, 16) and batch["origin"].shape == (4, 2)
    copy = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(copy[3]["blurred"], dataset[3]["blurred"])


def _coverage(full: tuple[int, int], crop: int, how: str, draws: int) -> np.ndarray:
    """How often each pixel lies in a crop over ``draws`` origins of ``how``."""
    rng, counts = np.random.default_rng(0), np.zeros(full)
    for _ in range(draws):
        r, c = (pairs.crop_origin(rng, f, crop, how) for f in full)
        counts[r : r + crop, c : c + crop] += 1
    return counts


def test_covering_origins_train_edges_and_corners_as_often_as_the_centre():
    full, crop = (96, 80), 16
    covering = _coverage(full, crop, "covering", 20000)
    centre = covering[40:56, 32:48].mean()
    # at most twice per axis: four times where the two edge bands meet
    assert covering.min() / centre >= 0.85 and covering.max() / centre <= 4.5
    assert covering[crop:-crop, crop:-crop].max() / centre < 1.25
    for corner in (covering[0, 0], covering[0, -1], covering[-1, 0], covering[-1, -1]):
        assert corner / centre >= 0.85
    # the uniform draw starves the first row and the corners
    uniform = _coverage(full, crop, "uniform", 20000)
    assert uniform[0].mean() / uniform[40:56, 32:48].mean() < 0.15
    assert uniform[0, 0] / uniform[40:56, 32:48].mean() < 0.02


def test_an_epoch_of_covering_crops_reaches_every_pixel(tmp_path, field):
    cache = _build(tmp_path / "c", field, noise=None)
    data = PairDataset(cache, "train", crop=9, crops_per_frame=400, seed=2)
    counts = np.zeros(SIZE)
    for i in range(len(data)):
        (r, c), (h, w) = data[i]["origin"].tolist(), data.crop
        counts[r : r + h, c : c + w] += 1
    centre = counts[14:23, 11:20].mean()
    edges = [counts[0], counts[-1], counts[:, 0], counts[:, -1]]
    assert min(edge.mean() for edge in edges) / centre >= 0.9
    assert counts.min() / centre >= 0.5
    with pytest.raises(ValueError, match="crop_origins"):
        PairDataset(cache, "train", crop=9, crop_origins="edges")
