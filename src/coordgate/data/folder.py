"""Folders of real images: every 2D frame under a directory, and random crops of them.

A crop records where it was cut: ``origin`` (row, col of its first pixel) and
``full_size`` (the frame's size), in the frame's own pixels. When the frames are sensor
frames, that is the crop's place on the sensor, which a coordinate-aware network needs.

Augmentation (``augment=True``) applies a random flip / 90-degree rotation to each crop's
*content*. That is valid only for sharp scenes that are blurred afterwards (the scene has
no preferred orientation; the blur is applied in sensor coordinates later), which is how
:mod:`coordgate.data.pairs` uses these crops. Do not augment crops of images that are
already blurred by the instrument: rotating them moves the blur to other sensor
positions. For blurred/sharp pairs, :class:`coordgate.data.pairs.PairDataset` applies
only the transforms the PSF field is symmetric under.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from coordgate.data.sensor import as_size, dihedral
from coordgate.images import IMAGE_SUFFIXES, frame_info, read_frames

__all__ = ["FolderFrames", "RandomCrops", "find_images"]


def find_images(root: str | os.PathLike) -> list[Path]:
    """Image files (TIFF, PNG, JPEG) under ``root``, recursively, in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
    return files


class FolderFrames(Sequence):
    """Every 2D frame of every image under ``root``: item ``i`` is float32 (H, W).

    Frame counts and sizes are read from file headers up front, so a frame smaller than
    ``min_size`` is reported before any work starts; pixels are read on access (the last
    file read is kept, so consecutive frames of a stack are read once).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        channel: int | None = None,
        min_size: int | Sequence[int] | None = None,
    ) -> None:
        self.root = Path(root)
        self.channel = channel
        self.files = find_images(self.root)
        self.index: list[tuple[int, int]] = []
        self.sizes: list[tuple[int, int]] = []
        need = as_size(min_size) if min_size is not None else (1, 1)
        for k, path in enumerate(self.files):
            count, size = frame_info(path)
            if size[0] < need[0] or size[1] < need[1]:
                raise ValueError(
                    f"image {path} is {size[0]}x{size[1]} pixels, smaller than the "
                    f"{need[0]}x{need[1]} needed (crop or sensor size)"
                )
            self.index += [(k, f) for f in range(count)]
            self.sizes += [size] * count
        self._cached: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range for {len(self)} frames")
        file, frame = self.index[i]
        if self._cached is None or self._cached[0] != file:
            self._cached = (file, read_frames(self.files[file], channel=self.channel))
        return self._cached[1][frame]

    def describe(self, i: int) -> str:
        """Where frame ``i`` comes from, e.g. ``sub/cells.tif[2]``."""
        file, frame = self.index[i]
        return f"{self.files[file].relative_to(self.root).as_posix()}[{frame}]"


class RandomCrops(Dataset):
    """Random ``crop``-sized windows of 2D frames, with their origin in the frame.

    Item ``i`` is cut from frame ``i % len(frames)`` at a position drawn from
    ``(seed, epoch, i)``: reproducible, and new each epoch after :meth:`set_epoch`.
    Returns a dict: ``image`` (1, h, w) float32, ``origin`` and ``full_size`` (LongTensor
    [2], row and column), ``frame`` (int) and ``transform`` (dihedral index, 0 = none).
    """

    def __init__(
        self,
        frames: Sequence[np.ndarray | torch.Tensor],
        crop: int | Sequence[int],
        *,
        samples_per_frame: int = 1,
        seed: int = 0,
        augment: bool = False,
    ) -> None:
        if len(frames) == 0:
            raise ValueError("RandomCrops needs at least one frame, got none")
        if samples_per_frame < 1:
            raise ValueError(f"samples_per_frame must be >= 1, got {samples_per_frame}")
        self.frames, self.crop = frames, as_size(crop)
        self.samples_per_frame, self.seed, self.augment = samples_per_frame, seed, augment
        self.epoch = 0
        sizes = getattr(frames, "sizes", None) or [tuple(f.shape[-2:]) for f in frames]
        for i, (h, w) in enumerate(sizes):
            if h < self.crop[0] or w < self.crop[1]:
                raise ValueError(
                    f"frame {i} is {h}x{w} pixels, smaller than the crop "
                    f"{self.crop[0]}x{self.crop[1]}"
                )
        # A quarter turn would change a non-square crop's shape: flips and half turns only.
        self.transforms = range(8) if self.crop[0] == self.crop[1] else (0, 2, 4, 6)
        self.sizes = [tuple(int(s) for s in size) for size in sizes]

    def set_epoch(self, epoch: int) -> None:
        """Draw a new set of crop positions (and transforms) for ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.frames) * self.samples_per_frame

    def __getitem__(self, i: int) -> dict[str, object]:
        if not 0 <= i < len(self):
            raise IndexError(f"crop {i} out of range for {len(self)} crops")
        frame = i % len(self.frames)
        (h, w), (ch, cw) = self.sizes[frame], self.crop
        rng = np.random.default_rng([self.seed, self.epoch, i])
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        transform = int(rng.choice(self.transforms)) if self.augment else 0
        image = torch.as_tensor(np.asarray(self.frames[frame]), dtype=torch.float32)
        crop = dihedral(image[top : top + ch, left : left + cw], transform)
        return {
            "image": crop.contiguous()[None],
            "origin": torch.tensor([top, left]),
            "full_size": torch.tensor([h, w]),
            "frame": frame,
            "transform": transform,
        }
