"""The reference checkpoints committed under ``results/<study>/checkpoints``: every one
loads, records what ``coordgate deblur`` needs, deblurs frames of its study's lens
better than the blurred input and a fixed frame as it did when it was committed
(``tests/data/reference_deblur.json``); the napari Deblur widget offers them by name."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from coordgate.data.pairs import build_pairs
from coordgate.deblurring import Deblurrer
from coordgate.napari.deblur import reference_checkpoints
from coordgate.optics import PSFField
from coordgate.training.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]
#: What the README promises, per study (seed 0 of each study's shared models).
SHIPPED = {
    study: ("unet3", "unet6", "cg-unet3", "cg-unet6", "care-unet") for study in ("cpu", "sensor")
}
PATHS = sorted(ROOT.glob("results/*/checkpoints/*.safetensors"))
#: Each one's deblurring of a fixed frame when it was committed: mean, std and every 8th pixel.
DEBLURRED = json.loads((ROOT / "tests" / "data" / "reference_deblur.json").read_text())


def test_the_promised_checkpoints_are_committed_and_offered_by_name():
    promised = {f"{study}/{name}" for study, names in SHIPPED.items() for name in names}
    offered = reference_checkpoints([ROOT / "results"])
    assert promised <= set(offered), sorted(promised - set(offered))
    total = sum(path.stat().st_size for path in PATHS)
    assert total <= 30 * 2**20, f"{total / 2**20:.1f} MiB of reference checkpoints"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_reference_checkpoint_deblurs_frames_of_its_lens(path, tmp_path):
    deblurrer = Deblurrer.from_checkpoint(path, device="cpu")  # `coordgate deblur`'s defaults
    config = deblurrer.config
    assert config.normalisation and config.full_size and config.model["name"]
    pairs = build_pairs(
        tmp_path / "pairs",
        source="synthetic",
        n=3,
        size=config.full_size,
        field=PSFField.from_config(config.dataset["field"]),
        noise=None,
        seed=12345,  # frames the checkpoint never saw
        progress=False,
    )
    gains = []
    for blurred, sharp in zip(pairs.array("blurred"), pairs.array("sharp"), strict=True):
        restored = deblurrer.deblur(blurred)
        assert restored.shape == blurred.shape and np.isfinite(restored).all()
        sharp_t = torch.from_numpy(np.array(sharp))
        gains.append(
            float(
                psnr(torch.from_numpy(restored), sharp_t)
                - psnr(torch.from_numpy(np.array(blurred)), sharp_t)
            )
        )
    assert np.mean(gains) > 1.0, gains


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_reference_checkpoint_deblurs_as_when_committed(path):
    deblurrer = Deblurrer.from_checkpoint(path, device="cpu")
    size = deblurrer.config.full_size
    frame = (np.random.default_rng(0).random(size) * 300 + 20).astype(np.float32)
    restored = deblurrer.deblur(frame)
    expected = DEBLURRED[str(path.relative_to(ROOT))]
    assert restored.mean() == pytest.approx(expected["mean"], rel=1e-5)
    assert restored.std() == pytest.approx(expected["std"], rel=1e-5)
    np.testing.assert_allclose(_grid(restored), expected["grid"], rtol=1e-5, atol=1e-3)


def _grid(image: np.ndarray) -> np.ndarray:
    """An 8 x 8 grid of the image's pixels, whatever its size."""
    return image[:: image.shape[0] // 8, :: image.shape[1] // 8]


def test_every_committed_checkpoint_has_a_recorded_deblurring():
    assert sorted(DEBLURRED) == sorted(str(p.relative_to(ROOT)) for p in PATHS)
