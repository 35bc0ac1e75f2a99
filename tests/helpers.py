"""What several test modules share: tiny data sets, frames blurred by a lens, tiny
checkpoints and the command line run on one image. Not a test module: test modules import
from here, never from each other."""

from __future__ import annotations

import numpy as np
import tifffile
import torch
import torch.nn.functional as F

from coordgate.cli import main
from coordgate.data.normalization import PercentileNormalizer
from coordgate.data.pairs import NoiseModel
from coordgate.data.synthetic import synthetic_microscopy
from coordgate.models import build_model
from coordgate.optics import PSFField, SpatiallyVaryingBlur
from coordgate.training import CheckpointConfig, save_checkpoint

#: the sensor frame of :class:`PairSet`'s crops
FRAME = (48, 60)
NORMALISER = PercentileNormalizer(vmin=0.1, vmax=0.9)


class PairSet(torch.utils.data.Dataset):
    """Tiny (blurred, sharp) crops of 12 x 20 pixels from a 48 x 60 sensor frame."""

    def __init__(
        self, n: int, seed: int, size: tuple[int, int] = (12, 20), augment: bool = False
    ) -> None:
        # augment: add noise from the global torch and numpy generators, as random
        # augmentations do, which a resumed run must draw identically
        self.augment = augment
        g = torch.Generator().manual_seed(seed)
        self.sharp = F.avg_pool2d(torch.rand(n, 1, size[0] + 2, size[1] + 2, generator=g), 3, 1)
        self.blurred = F.avg_pool2d(self.sharp, 3, 1, padding=1, count_include_pad=False)
        self.origin = torch.stack(
            [
                torch.randint(0, FRAME[0] - size[0] + 1, (n,), generator=g),
                torch.randint(0, FRAME[1] - size[1] + 1, (n,), generator=g),
            ],
            dim=1,
        )

    def __len__(self) -> int:
        return len(self.sharp)

    def __getitem__(self, i: int) -> dict:
        blurred = self.blurred[i]
        if self.augment:
            noise = 0.01 * torch.randn(blurred.shape) + float(np.random.uniform(0, 0.01))
            blurred = blurred + noise
        return {
            "blurred": blurred,
            "sharp": self.sharp[i],
            "origin": self.origin[i],
            "full_size": torch.tensor(FRAME),
        }


def randomise(module: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    """Move a layer away from its identity initialisation so tests can see the gate."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def sharp_and_blurred(field, size=(96, 84), noise=True, index=2, **frame):
    """(sharp, blurred) (H, W) numpy frames: synthetic microscopy through the field's exact
    operator, with the NoiseModel default noise unless ``noise`` is False."""
    sharp = synthetic_microscopy([index], size, seed=4)
    blurred = SpatiallyVaryingBlur(field, size, padding="reflect", **frame).A(sharp)
    if noise:
        blurred = NoiseModel().apply(blurred.clamp_min(0), torch.Generator().manual_seed(0))
    return sharp[0, 0].numpy(), blurred[0, 0].numpy()


def lens_frames(shape, seed=9) -> np.ndarray:
    """Frames (..., H, W) of the default lens at the default noise, as a layer holds them."""
    count = int(np.prod(shape[:-2], dtype=int))
    field = PSFField.default()
    frames = [sharp_and_blurred(field, shape[-2:], index=seed + i)[1] for i in range(count)]
    return np.stack(frames).reshape(shape)


def save_tiny(
    path, name="cg-unet3", full_size=(64, 64), normalisation=NORMALISER, base_channels=2
) -> str:
    """A checkpoint of a tiny model, its gates away from identity as after training."""
    torch.manual_seed(3)
    model = build_model(name, base_channels=base_channels)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    options = {"base_channels": base_channels}
    config = CheckpointConfig(
        {"name": name, "options": options},
        full_size=full_size,
        normalisation=None if normalisation is None else normalisation.to_dict(),
    )
    return str(save_checkpoint(path / "ckpt" / f"{name}.safetensors", model, config))


def cli_deblur(tmp_path, checkpoint: str, image: np.ndarray, *options: str) -> np.ndarray:
    """What ``coordgate deblur`` writes for ``image``."""
    source = tmp_path / "input.tif"
    tifffile.imwrite(source, image)
    out = tmp_path / "cli"
    assert main(["deblur", "--checkpoint", checkpoint, str(source), "-o", str(out), *options]) == 0
    return tifffile.imread(out / "input.tif")


def cli_deconvolve(tmp_path, field: str, image: np.ndarray, *options: str) -> np.ndarray:
    """What ``coordgate deconvolve`` writes for ``image`` with the PSF field ``field``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = tmp_path / "input.tif"
    tifffile.imwrite(source, image)
    out = tmp_path / "cli"
    args = ["deconvolve", str(source), "--psf-field", field, "-o", str(out), *options]
    assert main(args) == 0
    return tifffile.imread(out / "input.tif")
