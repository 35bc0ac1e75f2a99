"""The reference checkpoints committed under ``results/<study>/checkpoints``: every one
loads, records what ``coordgate deblur`` needs, and deblurs frames of its study's lens
better than the blurred input; the napari Deblur widget offers them by name."""

from pathlib import Path

import numpy as np
import pytest
import torch

from coordgate.data.pairs import build_pairs
from coordgate.deblurring import deblur_frame, normaliser_for_config, sensor_frame
from coordgate.napari.deblur import reference_checkpoints
from coordgate.optics import PSFField
from coordgate.training import load_checkpoint
from coordgate.training.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]
#: What the README promises, per study (seed 0 of each study's shared models).
SHIPPED = {"cpu": ("unet3", "unet6", "cg-unet3", "cg-unet6", "care-unet")}
PATHS = sorted(ROOT.glob("results/*/checkpoints/*.safetensors"))


def test_the_promised_checkpoints_are_committed_and_offered_by_name():
    promised = {f"{study}/{name}" for study, names in SHIPPED.items() for name in names}
    offered = reference_checkpoints([ROOT / "results"])
    assert promised <= set(offered), sorted(promised - set(offered))
    total = sum(path.stat().st_size for path in PATHS)
    assert total <= 30 * 2**20, f"{total / 2**20:.1f} MiB of reference checkpoints"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_reference_checkpoint_deblurs_frames_of_its_lens(path, tmp_path):
    model, config = load_checkpoint(path)
    assert config["normalisation"] and config["full_size"] and config["model"]["name"]
    dataset = config["dataset"]
    pairs = build_pairs(
        tmp_path / "pairs",
        source="synthetic",
        n=3,
        size=tuple(config["full_size"]),
        field=PSFField.from_config(dataset["field"]),
        noise=None,
        seed=12345,  # frames the checkpoint never saw
        progress=False,
    )
    normaliser_for = normaliser_for_config(config)  # what `coordgate deblur` uses by default
    gains = []
    for blurred, sharp in zip(pairs.array("blurred"), pairs.array("sharp"), strict=True):
        origin, full_size = sensor_frame(model, config, blurred.shape)
        restored = deblur_frame(model, blurred, normaliser_for(blurred), origin=origin,
                                full_size=full_size)  # fmt: skip
        assert restored.shape == blurred.shape and np.isfinite(restored).all()
        sharp_t = torch.from_numpy(np.array(sharp))
        gains.append(
            float(
                psnr(torch.from_numpy(restored), sharp_t)
                - psnr(torch.from_numpy(np.array(blurred)), sharp_t)
            )
        )
    assert np.mean(gains) > 1.0, gains
