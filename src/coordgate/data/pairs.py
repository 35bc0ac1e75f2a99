"""Blurred/sharp pairs that keep their place on the sensor, cached on disk with a manifest.

:func:`build_pairs` makes ``n`` sharp sensor frames (synthetic microscopy, or crops of
a folder of real images), blurs each *whole frame* with a spatially-varying optics
operator, adds noise, and stores both in a cache directory::

    manifest.json   what was built and how (source, PSF field, operator, noise, seed,
                    splits, allowed augmentations, package versions) and the names of
                    this generation's files; written last
    sharp-G.npy     (n, H, W) float32 sharp frames (G: the build's generation)
    blurred-G.npy   (n, H, W) float32 blurred, noisy frames
    split-G.npy     (n,) int8: 0 train, 1 val, 2 test
    source-G.npy    (n, 4) int64: source frame, row, col of the sensor frame in it, and
                    the flip/rotation applied to it before blurring
    field-G.npz     the PSF field (``PSFField.load``), for models that need the PSFs

A hash of the parameters decides reuse: building again with the same parameters
returns the cache untouched; any change (seed, PSF field, noise, source files, ...)
rebuilds it. Building is resumable: work goes to a ``.partial-<hash>`` directory with
a progress file, and an interrupted build continues where it stopped. Every random draw
comes from ``(seed, index)``, so a sample does not depend on batching or resumption.

Concurrent use. One build at a time per directory (:func:`~coordgate.locking.
directory_lock`): a second build waits for the first, then reuses its cache when the
parameters match. A rebuild never rewrites a file in place: each build writes files of
its own generation, then swaps the manifest atomically and deletes the previous
generation's files, so a reader that opened the cache before keeps reading the old
arrays to its end (its memory maps hold their inodes), and one that opens after sees the
new manifest and arrays together. :class:`PairCache` maps a generation's arrays when it
is opened and checks that they fit the manifest.

:class:`PairDataset` serves one split; crops are cut from the stored full frames, so a
sample is exactly the crop of the full blurred frame at its recorded ``origin`` (the
blur of a crop would differ near its edges, and by position).

Augmentation. Before blurring, any flip/rotation of a sharp scene is valid (the blur is
applied afterwards), so folder sources are augmented there. After blurring, a flip or
rotation of a pair is valid only if the PSF field is symmetric under it: the build
tests ``A(T x) == T(A x)`` for the eight transforms ``T`` and records those that hold
(all eight for the default lens on a square sensor, whose field is rotationally
symmetric; the flips for a non-square one). :class:`PairDataset` (``augment=True``)
draws only from those and moves ``origin`` to where the transformed crop sits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from coordgate.atomic import atomic_write_text
from coordgate.data.normalization import PercentileNormalizer
from coordgate.data.sensor import as_size, crop_at, dihedral, dihedral_origin, dihedral_size
from coordgate.data.synthetic import MicroscopyStyle, synthetic_microscopy
from coordgate.locking import directory_lock

if TYPE_CHECKING:
    from coordgate.optics import Method, Padding

__all__ = [
    "CROP_ORIGINS",
    "SPLITS",
    "NoiseModel",
    "PairCache",
    "PairDataset",
    "build_pairs",
    "crop_origin",
]

SPLITS = ("train", "val", "test")
FORMAT = 1
_MANIFEST = "manifest.json"
# The cache's files by name; "field" is the PSF field (.npz), the others are arrays (.npy).
_FILES = ("sharp", "blurred", "split", "source", "field")
_ARRAYS = ("sharp", "blurred", "split", "source")
# Separate random streams for the draws made from the same (seed, index).
_SPLIT_STREAM, _NOISE_STREAM, _CROP_STREAM, _SAMPLE_STREAM = 1, 2, 3, 4
# Relative error under which A(T x) == T(A x) counts as a symmetry of the operator.
_SYMMETRY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class NoiseModel:
    """Poisson-Gaussian sensor noise (:func:`coordgate.optics.poisson_gaussian`):
    ``photons`` expected photo-electrons at intensity 1, Gaussian ``read_noise`` in
    electrons RMS."""

    photons: float = 1000.0
    read_noise: float = 2.0

    def __post_init__(self) -> None:
        if not self.photons > 0:
            raise ValueError(f"photons must be positive, got {self.photons}")
        if not self.read_noise >= 0:
            raise ValueError(f"read_noise must be >= 0 (electrons RMS), got {self.read_noise}")

    def apply(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Noisy copy of a blurred batch y (N, 1, H, W), y >= 0."""
        from coordgate.optics import poisson_gaussian

        return poisson_gaussian(
            y, photons=self.photons, read_noise=self.read_noise, generator=generator
        )


def _seed(*entropy: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence mixes them well)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, np.uint64)[0] >> 1)


def _allocate(total: int, fractions: Sequence[float], at_least_one: bool = False) -> list[int]:
    """Split ``total`` into counts proportional to ``fractions`` (largest remainder)."""
    base = [1 if at_least_one and f > 0 else 0 for f in fractions]
    rest = total - sum(base)
    if rest < 0:
        raise ValueError(
            f"cannot give each of the {sum(base)} non-empty splits its own source image: "
            f"only {total} image frame(s); add images or set splits with fewer non-zero parts"
        )
    exact = [f * rest for f in fractions]
    counts = [int(np.floor(e)) for e in exact]
    for i in sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])[: rest - sum(counts)]:
        counts[i] += 1
    return [b + c for b, c in zip(base, counts)]


def _labels(total: int, counts: Sequence[int], seed: int) -> np.ndarray:
    """Split label (int8) of each of ``total`` items, shuffled by ``seed``."""
    labels = np.repeat(np.arange(len(counts), dtype=np.int8), counts)
    return labels[np.random.default_rng(seed).permutation(total)]


def _check_splits(splits: Sequence[float]) -> tuple[float, float, float]:
    splits = tuple(float(s) for s in splits)
    if len(splits) != 3 or min(splits) < 0 or abs(sum(splits) - 1) > 1e-6 or splits[0] <= 0:
        raise ValueError(
            f"splits must be three fractions (train, val, test) >= 0 summing to 1 with "
            f"train > 0, got {splits}"
        )
    return splits


# -- sources: where the sharp frames come from ----------------------------------------


class _SyntheticSource:
    """Sharp frames from :func:`synthetic_microscopy`; frame ``i`` is image ``i``."""

    def __init__(self, style: MicroscopyStyle) -> None:
        self.style = style

    def describe(self) -> dict[str, Any]:
        return {"kind": "synthetic", "style": self.style.to_dict()}

    def key(self) -> dict[str, Any]:
        return self.describe()

    def plan(self, n: int, size, labels: np.ndarray, seed: int) -> np.ndarray:
        return np.column_stack([np.arange(n), np.zeros((n, 3), dtype=np.int64)])

    def fill(self, sharp: np.ndarray, plan: np.ndarray, seed: int, start: int, stop: int):
        frames = synthetic_microscopy(
            range(start, stop), sharp.shape[1:], seed=seed, style=self.style
        )
        sharp[start:stop] = frames[:, 0].numpy()


class _FolderSource:
    """Sharp frames cut from a folder of images, each frame percentile-normalised first.

    Image files are split into train/val/test before any crop is cut, so no image (nor
    another frame of the same stack) contributes to two splits. With fewer files than
    non-empty splits, the frames of the stack(s) are split instead.
    """

    def __init__(
        self,
        root: Path,
        size: tuple[int, int],
        splits: Sequence[float],
        channel: int | None,
        augment: bool,
    ):
        from coordgate.data.folder import FolderFrames

        self.frames = FolderFrames(root, channel=channel, min_size=size)
        self.root, self.channel, self.augment = Path(root).resolve(), channel, augment
        self.normalizer = PercentileNormalizer()
        few_files = len(self.frames.files) < sum(f > 0 for f in splits)
        self.split_unit = "frame" if few_files else "file"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "folder",
            "root": str(self.root),
            "channel": self.channel,
            "augment": self.augment,
            "normalization": {**self.normalizer.to_dict(), "scope": "per source frame"},
            "split_unit": self.split_unit,
            "frames": [self.frames.describe(i) for i in range(len(self.frames))],
        }

    def key(self) -> dict[str, Any]:
        stats = [
            (p.relative_to(self.frames.root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in self.frames.files
        ]
        return {**self.describe(), "files": stats}

    def plan(self, n: int, size, labels: np.ndarray, seed: int) -> np.ndarray:
        """Per pair: source frame, crop row, crop col, dihedral transform."""
        splits = len(SPLITS)
        fractions = [np.mean(labels == s) for s in range(splits)]
        if self.split_unit == "file":
            unit = np.array([file for file, _ in self.frames.index])
        else:
            unit = np.arange(len(self.frames))
        n_units = int(unit.max()) + 1
        counts = _allocate(n_units, fractions, at_least_one=True)
        unit_labels = _labels(n_units, counts, _seed(seed, _SPLIT_STREAM, 1))
        groups = [np.flatnonzero(unit_labels[unit] == s) for s in range(splits)]
        plan = np.zeros((n, 4), dtype=np.int64)
        seen = np.zeros(splits, dtype=np.int64)
        square = size[0] == size[1]
        for i, s in enumerate(labels):
            frame = groups[s][seen[s] % len(groups[s])]
            seen[s] += 1
            rng = np.random.default_rng([seed, i, _CROP_STREAM])
            h, w = self.frames.sizes[frame]
            transform = int(rng.choice(8 if square else [0, 2, 4, 6])) if self.augment else 0
            crop = dihedral_size(size, transform)
            plan[i] = (
                frame,
                rng.integers(0, h - crop[0] + 1),
                rng.integers(0, w - crop[1] + 1),
                transform,
            )
        return plan

    def fill(self, sharp: np.ndarray, plan: np.ndarray, seed: int, start: int, stop: int):
        # Visit pairs grouped by source frame, so each frame is read and normalised once.
        size = sharp.shape[1:]
        current, image = -1, None
        for i in sorted(range(start, stop), key=lambda i: plan[i, 0]):
            frame_id, row, col, transform = (int(v) for v in plan[i])
            if frame_id != current:
                frame = torch.from_numpy(self.frames[frame_id])
                # Shot noise needs a non-negative signal: values below the low percentile
                # go to 0; bright values above the high one are kept.
                image = self.normalizer.fitted_to(frame).normalize(frame).clamp_min(0)
                current = frame_id
            crop = crop_at(image, (row, col), dihedral_size(size, transform))
            sharp[i] = dihedral(crop, transform).numpy()


# -- the cache ------------------------------------------------------------------------


class PairCache:
    """A built pair cache: its ``manifest`` and arrays (opened read-only, memory-mapped).

    ``built`` is True when this object's :func:`build_pairs` call computed the pairs,
    False when it reused them.
    """

    def __init__(self, path: str | os.PathLike, *, built: bool = False) -> None:
        self.path = Path(path)
        manifest = self.path / _MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"no pair cache at {self.path} (missing {_MANIFEST})")
        try:
            self.manifest = json.loads(manifest.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"corrupt manifest {manifest}: {error}") from error
        if self.manifest.get("format") != FORMAT:
            raise ValueError(
                f"{manifest} has format {self.manifest.get('format')!r}, expected {FORMAT}; "
                "rebuild it"
            )
        self.files = {name: self.manifest.get("files", {}).get(name, "") for name in _FILES}
        self.built = built
        self._open()

    def _open(self) -> None:
        """Map this generation's arrays and check that they fit the manifest."""
        missing = [
            f or name for name, f in self.files.items() if not f or not (self.path / f).is_file()
        ]
        if missing:
            raise FileNotFoundError(
                f"pair cache {self.path} (generation {self.generation}) is incomplete: missing "
                f"{missing}; it was rebuilt or removed since it was opened, or its build did "
                "not finish: open it again or rebuild it"
            )
        self._maps = {
            name: np.load(self.path / self.files[name], mmap_mode="r") for name in _ARRAYS
        }
        n, size = len(self), self.size
        expected = {"sharp": (n, *size), "blurred": (n, *size), "split": (n,), "source": (n, 4)}
        wrong = {k: v.shape for k, v in self._maps.items() if v.shape != expected[k]}
        if wrong:
            raise ValueError(
                f"pair cache {self.path}: the manifest (generation {self.generation}: n={n}, "
                f"size={size}) and its arrays do not belong together: shapes {wrong}, expected "
                f"{ {k: expected[k] for k in wrong} }; rebuild it with --force"
            )

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers reopen the same generation's files instead of pickling maps
        return {**self.__dict__, "_maps": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    @property
    def generation(self) -> str:
        """Which build wrote the arrays (``"1"`` for caches from before generations)."""
        return str(self.manifest.get("generation", "1"))

    def __len__(self) -> int:
        return int(self.manifest["parameters"]["n"])

    @property
    def size(self) -> tuple[int, int]:
        """Sensor frame size (H, W)."""
        return tuple(self.manifest["parameters"]["size"])

    @property
    def symmetries(self) -> tuple[int, ...]:
        """Dihedral transforms (0-7) the blur commutes with: the valid pair augmentations."""
        return tuple(self.manifest["symmetries"])

    def array(self, name: str) -> np.ndarray:
        """``sharp``, ``blurred``, ``split`` or ``source``, memory-mapped read-only (the
        generation mapped when the cache was opened)."""
        if name not in _ARRAYS:
            raise ValueError(
                f"unknown cache array {name!r}, expected sharp, blurred, split or source"
            )
        return self._maps[name]

    def indices(self, split: str) -> np.ndarray:
        """Sample indices of ``split`` (``train``, ``val`` or ``test``), ascending."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return np.flatnonzero(self.array("split") == SPLITS.index(split))

    def normalisation(self) -> dict[str, Any]:
        """How the frames were normalised, for ``coordgate deblur``: the percentile
        normaliser of the cache's source, unfitted (per image), as sources are normalised
        frame by frame (a checkpoint's ``normalisation`` entry)."""
        recorded = dict(self.manifest.get("source", {}).get("normalization") or {})
        recorded.pop("scope", None)
        return PercentileNormalizer.from_dict(recorded).to_dict()

    def field(self):
        """The PSF field the pairs were blurred with."""
        from coordgate.optics import PSFField

        path = self.path / self.files["field"]
        if not path.is_file():
            raise FileNotFoundError(
                f"pair cache {self.path}: the PSF field of generation {self.generation} is "
                "gone (the cache was rebuilt since it was opened); open it again"
            )
        return PSFField.load(path)

    def __repr__(self) -> str:
        counts = self.manifest["counts"]
        return f"PairCache({str(self.path)!r}, n={len(self)}, size={self.size}, splits={counts})"


def _field_key(field) -> dict[str, Any]:
    """What identifies a PSF field: its config, plus its PSFs' digest when the config
    alone cannot rebuild it (measured fields)."""
    from coordgate.optics import PSFField

    config = field.config()
    try:
        PSFField.from_config(config)
        return config
    except ValueError:
        digest = hashlib.sha256(np.ascontiguousarray(field.grid().numpy()).tobytes()).hexdigest()
        return {**config, "psf_sha256": digest}


def _symmetries(operator, size: tuple[int, int], seed: int) -> list[int]:
    """Dihedral transforms T with A(T x) == T(A x) on a random frame (to tolerance)."""
    generator = torch.Generator().manual_seed(_seed(seed, _SAMPLE_STREAM))
    x = torch.rand(1, 1, *size, generator=generator)
    y = operator.A(x)
    found = []
    for k in range(8):
        if dihedral_size(size, k) != size:
            continue
        error = (operator.A(dihedral(x, k)) - dihedral(y, k)).norm() / y.norm()
        if error <= _SYMMETRY_TOLERANCE:
            found.append(k)
    return found


def _check_counts(n: int, seed: int, batch_size: int) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _existing_cache(out_dir: Path, key: str) -> PairCache | None:
    """The complete cache of ``key`` already in ``out_dir``, if there is one."""
    if not (out_dir / _MANIFEST).is_file():
        return None
    try:
        cache = PairCache(out_dir)
    except (ValueError, FileNotFoundError):
        return None  # an unreadable or incomplete cache is rebuilt
    return cache if cache.manifest.get("key") == key else None


def build_pairs(
    out_dir: str | os.PathLike,
    *,
    source: str | os.PathLike = "synthetic",
    n: int,
    size: int | Sequence[int],
    field=None,
    noise: NoiseModel | None = NoiseModel(),
    seed: int = 0,
    splits: Sequence[float] = (0.8, 0.1, 0.1),
    method: Method = "lowrank",
    padding: Padding = "reflect",
    style: MicroscopyStyle | None = None,
    channel: int | None = None,
    augment: bool = True,
    batch_size: int = 32,
    progress: bool = True,
    force: bool = False,
    wait: bool = True,
) -> PairCache:
    """Build (or reuse) a cache of ``n`` blurred/sharp pairs of ``size`` sensor frames.

    source: ``"synthetic"`` or a directory of images (frames must be at least ``size``);
    field: a ``PSFField`` (default ``PSFField.default()``); noise: ``NoiseModel`` or None;
    method / padding: the ``SpatiallyVaryingBlur`` options; style: synthetic look;
    channel: which channel of multichannel folder images (default: their mean);
    augment: random flips/rotations of folder crops before blurring; force: rebuild;
    wait: when another process is building into ``out_dir``, wait for it (then reuse its
    cache if the parameters match) rather than raise
    :class:`~coordgate.locking.DirectoryBusyError`.
    """
    from coordgate.optics import PSFField, SpatiallyVaryingBlur

    size = as_size(size)
    _check_counts(n, seed, batch_size)
    splits = _check_splits(splits)
    field = PSFField.default() if field is None else field
    if not isinstance(field, PSFField):
        raise ValueError(f"field must be a PSFField, got {type(field).__name__}")
    if str(source) == "synthetic":
        src = _SyntheticSource(style or MicroscopyStyle())
    else:
        src = _FolderSource(Path(source), size, splits, channel, augment)

    parameters = {
        "n": int(n),
        "size": list(size),
        "seed": int(seed),
        "splits": list(splits),
        "field": _field_key(field),
        "operator": {"method": method, "padding": padding},
        "noise": None if noise is None else asdict(noise),
    }
    key = hashlib.sha256(
        json.dumps({"format": FORMAT, **parameters, "source": src.key()}, sort_keys=True).encode()
    ).hexdigest()
    out_dir = Path(out_dir)
    cache = None if force else _existing_cache(out_dir, key)
    if cache is not None:
        return cache
    with directory_lock(out_dir, what="build", wait=wait):
        # a build that held the lock meanwhile may have made this very cache
        cache = None if force else _existing_cache(out_dir, key)
        if cache is not None:
            return cache
        operator = SpatiallyVaryingBlur(field, size, method=method, padding=padding)
        job = _Job(out_dir, key, parameters, src, operator, field, noise)
        return _build(job, batch_size=batch_size, progress=progress, force=force)


@dataclass(frozen=True)
class _Job:
    """What one build makes: where, its key and parameters, source, operator and noise."""

    out_dir: Path
    key: str
    parameters: dict[str, Any]
    source: Any
    operator: Any
    field: Any
    noise: NoiseModel | None


def _build(job: _Job, *, batch_size: int, progress: bool, force: bool) -> PairCache:
    """Compute the pairs in a partial directory and swap them in (the lock held)."""
    from coordgate.provenance import environment

    out_dir, key, src, operator, field, noise = (
        job.out_dir, job.key, job.source, job.operator, job.field, job.noise
    )  # fmt: skip
    parameters = job.parameters
    n, seed, splits = parameters["n"], parameters["seed"], parameters["splits"]
    size = tuple(parameters["size"])

    partial = out_dir / f".partial-{key[:16]}"
    # Unfinished builds of other parameters (or of these, when forced) are discarded.
    for stale in out_dir.glob(".partial-*"):
        if force or stale != partial:
            shutil.rmtree(stale)
    partial.mkdir(parents=True, exist_ok=True)
    labels = _labels(n, _allocate(n, splits), _seed(seed, _SPLIT_STREAM))
    plan = src.plan(n, size, labels, seed)
    np.save(partial / "split.npy", labels)
    np.save(partial / "source.npy", plan)
    field.save(partial / "field.npz")
    _run_batches(
        partial / "sharp.npy",
        n,
        size,
        batch_size,
        progress,
        lambda target, a, b: src.fill(target, plan, seed, a, b),
    )
    _run_batches(
        partial / "blurred.npy",
        n,
        size,
        batch_size,
        progress,
        lambda target, a, b: _blur(partial / "sharp.npy", target, operator, noise, seed, a, b),
    )

    manifest = {
        "format": FORMAT,
        "key": key,
        "parameters": parameters,
        "operator": {"rank": operator.rank, "repr": repr(operator)},
        "source": src.describe(),
        "counts": {name: int((labels == i).sum()) for i, name in enumerate(SPLITS)},
        "symmetries": _symmetries(operator, size, seed),
        "environment": environment(),
    }
    _swap_in(out_dir, partial, manifest)
    return PairCache(out_dir, built=True)


def _swap_in(out_dir: Path, partial: Path, manifest: dict) -> None:
    """Move the partial build's files in under names of a new generation, write the
    manifest that names them (atomically), then delete the previous generation's files:
    no file that a reader may have mapped is ever rewritten."""
    previous = out_dir / _MANIFEST
    try:
        old_files = json.loads(previous.read_text()).get("files", {}).values()
    except (OSError, json.JSONDecodeError):
        old_files = []
    generation = f"{manifest['key'][:8]}{uuid.uuid4().hex[:8]}"
    files = {name: f"{name}-{generation}.{'npz' if name == 'field' else 'npy'}" for name in _FILES}
    for name, target in files.items():
        source = partial / ("field.npz" if name == "field" else f"{name}.npy")
        os.replace(source, out_dir / target)
    atomic_write_text(
        previous, json.dumps({**manifest, "generation": generation, "files": files}, indent=2)
    )
    for name in old_files:
        if name not in files.values():
            (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(partial)


def _run_batches(path: Path, n: int, size, batch_size: int, progress: bool, step) -> None:
    """Fill ``path`` (an (n, H, W) float32 .npy) with ``step(target, start, stop)`` batch
    by batch; a ``.done`` file beside it records progress, so a rerun resumes."""
    done_path = path.with_suffix(".done")
    done = int(done_path.read_text()) if done_path.is_file() and path.is_file() else 0
    target = np.lib.format.open_memmap(
        path, mode="r+" if done else "w+", dtype=np.float32, shape=(n, *size)
    )
    starts = range(done, n, batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"{path.stem} frames", unit="batch")
    for start in starts:
        stop = min(start + batch_size, n)
        step(target, start, stop)
        target.flush()
        atomic_write_text(done_path, str(stop))
    del target


def _blur(sharp: Path, blurred, operator, noise: NoiseModel | None, seed: int, start, stop):
    """Blur the whole sensor frames ``start:stop`` of ``sharp`` (.npy) into ``blurred``
    and add each frame's own noise."""
    frames = np.array(np.load(sharp, mmap_mode="r")[start:stop])
    with torch.no_grad():
        # A truncated low-rank operator can undershoot zero slightly;
        # light is non-negative (and shot noise needs it to be).
        y = operator.A(torch.from_numpy(frames)[:, None]).clamp_min(0)
    for j, i in enumerate(range(start, stop)):
        frame = y[j : j + 1]
        if noise is not None:
            frame = noise.apply(frame, torch.Generator().manual_seed(_seed(seed, i, _NOISE_STREAM)))
        blurred[i] = frame[0, 0].numpy()


# -- the dataset ----------------------------------------------------------------------


#: How crop origins are drawn along each axis of a frame of F pixels, for crops of h:
#: ``"covering"``: from [-(h - 1), F - 1], clipped to [0, F - h], so every pixel, edges
#: and corners included, lies in a crop at least as often as a central one (a pixel
#: within h of an edge up to twice as often per axis, four times where two edge bands
#: meet; density h / (F + h - 1) per draw in the centre); ``"uniform"``: every valid
#: origin equally likely, which trains the first row 1 / h as often as the centre.
CROP_ORIGINS = ("covering", "uniform")


def crop_origin(rng: np.random.Generator, full: int, crop: int, how: str = "covering") -> int:
    """One crop origin along an axis of ``full`` pixels (see :data:`CROP_ORIGINS`).

    >>> rng = np.random.default_rng(0)
    >>> sorted({crop_origin(rng, 6, 4) for _ in range(200)})
    [0, 1, 2]
    """
    if how == "uniform" or crop == full:  # a whole frame: one origin, the same draw
        return int(rng.integers(0, full - crop + 1))
    return int(min(max(int(rng.integers(-(crop - 1), full)), 0), full - crop))


def _crops_per_frame(value: int | str, crop: tuple[int, int], full: tuple[int, int]) -> int:
    if value == "area":
        return math.ceil(full[0] * full[1] / (crop[0] * crop[1]))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"crops_per_frame must be an integer >= 1 or 'area', got {value!r}")
    return value


class PairDataset(Dataset):
    """One split of a pair cache as (blurred, sharp, origin) samples.

    cache: a :class:`PairCache` or its directory; split: ``train``/``val``/``test``;
    crop: None (whole frames) or a crop size, cut at a position drawn from
    ``(seed, epoch, index, k)``; crops_per_frame: crops ``k`` drawn from each frame per
    epoch (the data set's length is frames × crops_per_frame), ``"area"`` for as many as
    cover the frame's area, ``ceil(H·W / (h·w))``; crop_origins: how origins are drawn
    (:data:`CROP_ORIGINS`: ``"covering"`` trains every sensor pixel at least as often as
    a central one); augment: random flips/rotations among the cache's
    ``symmetries`` (none if the field has none), with ``origin`` moved accordingly.

    Item: dict with ``blurred`` and ``sharp`` (1, h, w) float32, ``origin`` and
    ``full_size`` (LongTensor [2]: row, col), ``index`` (sample in the cache) and
    ``transform`` (dihedral index applied, 0 = none).
    """

    def __init__(
        self,
        cache: PairCache | str | os.PathLike,
        split: str = "train",
        *,
        crop: int | Sequence[int] | None = None,
        augment: bool = False,
        seed: int = 0,
        crops_per_frame: int | str = 1,
        crop_origins: str = "covering",
    ) -> None:
        if crop_origins not in CROP_ORIGINS:
            raise ValueError(f"crop_origins must be one of {CROP_ORIGINS}, got {crop_origins!r}")
        self.crop_origins = crop_origins
        self.cache = cache if isinstance(cache, PairCache) else PairCache(cache)
        self.split, self.seed, self.epoch = split, int(seed), 0
        self.indices = self.cache.indices(split)
        self.full_size = self.cache.size
        self.crop = self.full_size if crop is None else as_size(crop, "crop")
        if self.crop[0] > self.full_size[0] or self.crop[1] > self.full_size[1]:
            raise ValueError(f"crop {self.crop} is larger than the sensor frame {self.full_size}")
        self.crops_per_frame = _crops_per_frame(crops_per_frame, self.crop, self.full_size)
        symmetries = self.cache.symmetries if augment else (0,)
        # Quarter turns of a non-square crop would change its shape.
        self.transforms = tuple(k for k in symmetries if dihedral_size(self.crop, k) == self.crop)

    def set_epoch(self, epoch: int) -> None:
        """New crop positions and transforms for ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices) * self.crops_per_frame

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for the {len(self)} {self.split} samples")
        frame, k = divmod(i, self.crops_per_frame)
        index = int(self.indices[frame])
        key = [self.seed, self.epoch, index, _SAMPLE_STREAM] + ([k] if k else [])
        rng = np.random.default_rng(key)
        (fh, fw), (h, w) = self.full_size, self.crop
        origin = (
            crop_origin(rng, fh, h, self.crop_origins),
            crop_origin(rng, fw, w, self.crop_origins),
        )
        transform = int(rng.choice(self.transforms))
        sample = {}
        for name in ("sharp", "blurred"):
            array = self.cache.array(name)
            window = array[index, origin[0] : origin[0] + h, origin[1] : origin[1] + w]
            sample[name] = dihedral(torch.from_numpy(np.array(window)), transform)[
                None
            ].contiguous()
        return {
            **sample,
            "origin": torch.tensor(dihedral_origin(origin, self.crop, self.full_size, transform)),
            "full_size": torch.tensor(dihedral_size(self.full_size, transform)),
            "index": index,
            "transform": transform,
        }
