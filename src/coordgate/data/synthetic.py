"""Procedural fluorescence-microscopy images: the embedded default training data.

The paper trains on BBBC and FMD live-cell images, which cannot be downloaded here. This
module draws images with the ingredients of such data: cells of varied size, shape and
brightness with a textured cytoplasm, brighter nuclei with chromatin texture, filaments
and puncta confined to the cells, out-of-focus haze, an uneven background and
vignetting.

Every image is a deterministic function of ``(seed, index)``: its random parameters come
from a numpy generator seeded with both, so an image does not depend on which batch it
was drawn in. Rendering is vectorised over all cells of a batch (each cell is drawn in a
small patch and scattered into its image), so thousands of images take seconds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from coordgate.data.sensor import as_size
from coordgate.frames import coordinate_grid

__all__ = ["MicroscopyStyle", "SyntheticMicroscopy", "synthetic_microscopy"]

# Distinguishes this module's random stream from other users of the same (seed, index).
_STREAM = 0xC311
# Samples per filament: fine enough (about 0.5 px apart) for the longest filament the style
# allows, and fixed so that an image never depends on its batch.
_FILAMENT_SAMPLES = 64
_HARMONICS = 3
# Per-image scalars, in the order of _Params.scalars.
_SCALARS = (
    "cyto_weight",
    "nucleus_weight",
    "filament_weight",
    "puncta_weight",
    "spot_sigma",
    "cyto_texture_sigma",
    "cyto_texture",
    "chromatin_sigma",
    "chromatin",
    "haze",
    "haze_sigma",
    "background",
    "vignetting",
    "vignetting_y",
    "vignetting_x",
    "peak",
)


@dataclass(frozen=True)
class MicroscopyStyle:
    """Ranges the generator draws from (pixels unless stated; (low, high) pairs).

    Cell sizes are in pixels, not relative to the image, so a larger image shows more
    cells at the same magnification (as a larger sensor would).
    """

    cell_radius: tuple[float, float] = (5.0, 14.0)
    coverage: tuple[float, float] = (0.2, 1.0)
    nucleus_ratio: tuple[float, float] = (0.35, 0.65)
    filaments_per_cell: float = 6.0
    puncta_per_cell: float = 25.0
    spot_sigma: tuple[float, float] = (0.6, 1.1)
    background: tuple[float, float] = (0.0, 0.08)
    haze: tuple[float, float] = (0.0, 0.3)
    haze_sigma: tuple[float, float] = (3.0, 6.0)
    vignetting: tuple[float, float] = (0.0, 0.3)
    peak: tuple[float, float] = (0.6, 0.95)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            pair = value if isinstance(value, tuple) else (0.0, value)
            if len(pair) != 2 or not 0 <= pair[0] <= pair[1]:
                raise ValueError(
                    f"MicroscopyStyle.{field.name} must be a non-negative (low, high) range "
                    f"with low <= high, got {value!r}"
                )
        if self.cell_radius[0] <= 0 or self.peak[1] > 1:
            raise ValueError(
                f"MicroscopyStyle needs cell_radius > 0 and peak <= 1, got "
                f"cell_radius={self.cell_radius}, peak={self.peak}"
            )

    def to_dict(self) -> dict[str, object]:
        """JSON-able parameters, for manifests."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> MicroscopyStyle:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass
class _Params:
    """Random parameters of one image; per-cell arrays have one row per cell."""

    # (K, 10 + 2 * _HARMONICS): centre y, x; semi-axes a, b; angle; cytoplasm and nucleus
    # brightness; nucleus size ratio; nucleus shift (2); boundary harmonics' amplitudes, phases
    cells: np.ndarray
    filaments: np.ndarray  # (F, 7): Bezier control points P0, P1, P2 (y, x) and brightness
    puncta: np.ndarray  # (Q, 3): y, x, brightness
    scalars: np.ndarray  # (len(_SCALARS),) per-image weights and scales
    noise: np.ndarray  # (2, Hp, Wp) white noise for the two textures
    coarse: np.ndarray  # (5, 5) background variation


def _draw(seed: int, index: int, canvas: tuple[int, int], pad: int, style: MicroscopyStyle):
    """All random parameters of image ``index``; positions are in canvas pixels."""
    rng = np.random.default_rng([seed, index, _STREAM])
    hp, wp = canvas
    u = rng.uniform
    scale = u(*style.cell_radius)
    count = max(1, rng.poisson(u(*style.coverage) * hp * wp / (math.pi * scale**2)))
    radius = scale * u(0.75, 1.25, count)
    aspect = np.exp(u(0.0, 0.5, count))
    centre = np.stack([u(0, hp, count), u(0, wp, count)], axis=1)
    # One cell always lies in the visible image, so no image is background only.
    centre[0] = [u(pad, hp - pad), u(pad, wp - pad)]
    ratio = u(*style.nucleus_ratio, count)
    nucleus_shift = u(-0.3, 0.3, (count, 2)) * (1 - ratio)[:, None]
    # Log-normal brightness, with an occasional very bright (e.g. mitotic) nucleus.
    bright = rng.lognormal(0.0, 0.4, count)
    nuclear = rng.lognormal(0.0, 0.35, count) * np.where(u(size=count) < 0.05, 3.0, 1.0)
    cells = np.column_stack(
        [
            centre,
            radius * np.sqrt(aspect),
            radius / np.sqrt(aspect),
            u(0, math.pi, count),
            bright,
            nuclear,
            ratio,
            nucleus_shift,
            u(0, 0.1, (count, _HARMONICS)),
            u(0, 2 * math.pi, (count, _HARMONICS)),
        ]
    )

    n_fil = rng.poisson(u(0, style.filaments_per_cell) * count)
    owner = rng.integers(0, count, n_fil)
    start = centre[owner] + _in_disc(rng, radius[owner] * 0.6)
    angle = u(0, 2 * math.pi, n_fil)
    length = radius[owner] * u(0.6, 1.6, n_fil)
    end = start + length[:, None] * np.stack([np.sin(angle), np.cos(angle)], axis=1)
    bend = (
        length[:, None]
        * u(-0.4, 0.4, (n_fil, 1))
        * np.stack([np.cos(angle), -np.sin(angle)], axis=1)
    )
    filaments = np.column_stack(
        [start, (start + end) / 2 + bend, end, rng.lognormal(0.0, 0.3, n_fil)]
    )

    n_punct = rng.poisson(u(0, style.puncta_per_cell) * count)
    owner = rng.integers(0, count, n_punct)
    puncta = np.column_stack(
        [centre[owner] + _in_disc(rng, radius[owner] * 0.9), rng.lognormal(0.0, 0.5, n_punct)]
    )

    scalars = {
        "cyto_weight": u(0.1, 1.0),
        "nucleus_weight": u(0.3, 1.2),
        # Not every stain shows filaments or puncta.
        "filament_weight": u(0.0, 1.0) * (u() < 0.7),
        "puncta_weight": u(0.0, 1.0) * (u() < 0.7),
        "spot_sigma": u(*style.spot_sigma),
        "cyto_texture_sigma": u(1.0, 3.0),
        "cyto_texture": u(0.1, 0.8),
        "chromatin_sigma": u(0.6, 1.5),
        "chromatin": u(0.2, 0.7),
        "haze": u(*style.haze),
        "haze_sigma": u(*style.haze_sigma),
        "background": u(*style.background),
        "vignetting": u(*style.vignetting),
        "vignetting_y": u(-0.2, 0.2),
        "vignetting_x": u(-0.2, 0.2),
        "peak": u(*style.peak),
    }
    noise = rng.standard_normal((2, hp, wp), dtype=np.float32)
    coarse = rng.standard_normal((5, 5))
    values = np.array([scalars[name] for name in _SCALARS])
    return _Params(cells, filaments, puncta, values, noise, coarse)


def _in_disc(rng: np.random.Generator, radius: np.ndarray) -> np.ndarray:
    """Uniform offsets (n, 2) inside discs of the given radii."""
    r = radius * np.sqrt(rng.uniform(size=radius.shape))
    phi = rng.uniform(0, 2 * math.pi, radius.shape)
    return np.stack([r * np.sin(phi), r * np.cos(phi)], axis=1)


def _stack(rows: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate per-image rows into one float tensor plus each row's image index."""
    owner = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)])
    values = torch.as_tensor(np.concatenate(rows), dtype=torch.float32, device=device)
    return values, torch.as_tensor(owner, dtype=torch.long, device=device)


def _render_cells(cells: torch.Tensor, owner: torch.Tensor, canvas: tuple[int, int], batch: int):
    """Scatter every cell into three layers: (B, 3, Hp, Wp) cytoplasm, nucleus, cell mask.

    Each cell is evaluated in a square patch around its centre. Cells are grouped by
    size so that small cells get small patches; the layers fall to exactly zero before
    the patch edge, so the grouping (which depends on the batch) changes no pixel.
    """
    hp, wp = canvas
    # One extra slot at the end collects the patch pixels that fall off the canvas.
    out = torch.zeros(batch * 3 * hp * wp + 1, device=cells.device)
    # Layers vanish 3 px beyond the boundary; one more pixel for the patch's integer grid.
    reach = cells[:, 2] * (1 + cells[:, 10 : 10 + _HARMONICS].sum(1)) + 4
    half = 2 * torch.ceil(reach / 2)
    for size in half.unique().tolist():
        chosen = half == size
        layers, index = _cell_patches(cells[chosen], owner[chosen], int(size), canvas, len(out) - 1)
        out.index_add_(0, index.reshape(-1), layers.reshape(-1))
    return out[:-1].view(batch, 3, hp, wp)


def _cell_patches(
    cells: torch.Tensor, owner: torch.Tensor, half: int, canvas: tuple[int, int], trash: int
):
    """Layers (K, 3, P, P) of cells drawn in patches of side P = 2 * half + 1, and the
    flat indices of those pixels in a (B, 3, Hp, Wp) output (off-canvas ones: one past it)."""
    hp, wp = canvas
    cy, cx, a, b, theta, bright, nuclear, ratio, sy, sx = (
        c[:, None, None] for c in cells[:, :10].T
    )
    amp, phase = cells[:, 10 : 10 + _HARMONICS], cells[:, 10 + _HARMONICS :]
    steps = torch.arange(-half, half + 1, device=cells.device, dtype=torch.float32)
    py = torch.floor(cy) + steps[:, None]  # (K, P, 1) canvas rows
    px = torch.floor(cx) + steps[None, :]  # (K, 1, P) canvas columns
    dy, dx = py - cy, px - cx
    cos, sin = torch.cos(theta), torch.sin(theta)
    s, t = (cos * dx + sin * dy) / a, (cos * dy - sin * dx) / b
    rho = torch.sqrt(s * s + t * t)
    # Boundary radius 1 + sum_m amp_m cos(m phi + phase_m), with cos/sin(m phi) built by
    # angle addition from cos/sin(phi) (cheaper than atan2 and cos on every pixel).
    c1, s1 = s / (rho + 1e-6), t / (rho + 1e-6)
    cm, sm = c1 * c1 - s1 * s1, 2 * c1 * s1
    boundary = 1.0
    for m in range(_HARMONICS):
        a_m = (amp[:, m] * torch.cos(phase[:, m]))[:, None, None]
        b_m = (amp[:, m] * torch.sin(phase[:, m]))[:, None, None]
        boundary = boundary + a_m * cm - b_m * sm
        cm, sm = cm * c1 - sm * s1, sm * c1 + cm * s1
    # Soft edge about a pixel wide, cut to zero 3 px out (where it is below 0.3 %).
    edge = (boundary - rho) * a
    mask = torch.sigmoid(edge * 2.0) * (edge > -3)
    profile = 0.6 + 0.4 * (1 - rho / boundary).clamp(0, 1)
    ns, nt = (s - sy) / ratio, (t - sx) / ratio
    nedge = (1 - torch.sqrt(ns * ns + nt * nt)) * a * ratio
    nucleus = torch.sigmoid(nedge * 2.0) * (nedge > -3)
    # Cytoplasmic stains are partly excluded from the nucleus.
    cyto = bright * mask * profile * (1 - 0.6 * nucleus)
    layers = torch.stack([cyto, nuclear * nucleus, mask], dim=1)
    base = owner[:, None] * 3 + torch.arange(3, device=cells.device)  # (K, 3)
    index = base[:, :, None, None] * (hp * wp) + (py * wp + px).long()[:, None]
    inside = ((py >= 0) & (py < hp) & (px >= 0) & (px < wp))[:, None]
    return layers, torch.where(inside, index, trash)


def _splat(points: torch.Tensor, weight: torch.Tensor, owner: torch.Tensor, canvas, batch):
    """Bilinearly splat weighted points (n, 2) into (B, Hp, Wp) images."""
    hp, wp = canvas
    out = torch.zeros(batch * hp * wp, device=points.device)
    base = torch.floor(points)
    frac = points - base
    for oy in (0, 1):
        for ox in (0, 1):
            y, x = base[:, 0] + oy, base[:, 1] + ox
            w = (frac[:, 0] if oy else 1 - frac[:, 0]) * (frac[:, 1] if ox else 1 - frac[:, 1])
            ok = (y >= 0) & (y < hp) & (x >= 0) & (x < wp)
            index = owner * (hp * wp) + (y.clamp(0, hp - 1) * wp + x.clamp(0, wp - 1)).long()
            out.index_add_(0, index, weight * w * ok)
    return out.view(batch, hp, wp)


def _filament_points(filaments: torch.Tensor, owner: torch.Tensor):
    """Points along quadratic Bezier filaments; weight per point keeps brightness per pixel."""
    t = torch.linspace(0, 1, _FILAMENT_SAMPLES, device=filaments.device)[:, None]
    p0, p1, p2 = filaments[:, None, 0:2], filaments[:, None, 2:4], filaments[:, None, 4:6]
    points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # (F, S, 2)
    length = (p2 - p0).norm(dim=-1) + 1e-6  # chord, close enough for the gentle bends used
    weight = filaments[:, 6:7] * length / _FILAMENT_SAMPLES
    return (
        points.reshape(-1, 2),
        weight.expand(-1, _FILAMENT_SAMPLES).reshape(-1),
        owner.repeat_interleave(_FILAMENT_SAMPLES),
    )


def _fast_length(n: int) -> int:
    """Smallest 5-smooth integer >= n (FFT lengths with small prime factors are fast)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur (B, L, H, W) with per-(image, layer) Gaussian widths ``sigma`` (B, L) via FFT.

    The FFT runs on a zero-padded fast size; the padding also keeps light from wrapping
    around (the canvas margin keeps the texture fields' fading edge out of the image).
    """
    h, w = images.shape[-2:]
    shape = (_fast_length(h), _fast_length(w))
    fy = torch.fft.fftfreq(shape[0], device=images.device)[:, None]
    fx = torch.fft.rfftfreq(shape[1], device=images.device)[None, :]
    transfer = torch.exp(-2 * math.pi**2 * sigma[..., None, None] ** 2 * (fy**2 + fx**2))
    spectrum = torch.fft.rfft2(images, s=shape) * transfer
    return torch.fft.irfft2(spectrum, s=shape)[..., :h, :w]


def _scale_to_top(images: torch.Tensor) -> torch.Tensor:
    """Scale (B, H, W) so each image's 99.8th percentile is 1.

    A percentile rather than the maximum keeps a few bright puncta from darkening the whole
    image; at most 0.2 % of pixels end above 1 and are clipped by the caller.
    """
    flat = images.flatten(1)
    k = max(1, int(math.ceil(0.998 * flat.shape[1])))
    top = flat.kthvalue(k, dim=1).values.clamp_min(1e-12)
    return images / top[:, None, None]


def _render(params: list[_Params], size: tuple[int, int], pad: int, device) -> torch.Tensor:
    """Compose a batch of images (B, 1, H, W) in [0, 1] from their parameters."""
    batch, (h, w) = len(params), size
    canvas = (h + 2 * pad, w + 2 * pad)
    cells, cell_owner = _stack([p.cells for p in params], device)
    layers = _render_cells(cells, cell_owner, canvas, batch)
    cyto, nucleus, mask = layers.unbind(1)

    fil, fil_owner = _stack([p.filaments for p in params], device)
    fil_points, fil_weight, fil_point_owner = _filament_points(fil, fil_owner)
    punct, punct_owner = _stack([p.puncta for p in params], device)
    table = torch.as_tensor(np.stack([p.scalars for p in params]), dtype=torch.float32)
    v = {name: table[:, i].to(device) for i, name in enumerate(_SCALARS)}
    fil_weight = fil_weight * v["filament_weight"][fil_point_owner]
    fine = _splat(fil_points, fil_weight, fil_point_owner, canvas, batch)
    punct_weight = punct[:, 2] * v["puncta_weight"][punct_owner]
    fine = fine + _splat(punct[:, :2], punct_weight, punct_owner, canvas, batch)

    noise = torch.as_tensor(np.stack([p.noise for p in params]), device=device)
    stacked = torch.stack([noise[:, 0], noise[:, 1], fine, cyto + nucleus], dim=1)
    names = ("cyto_texture_sigma", "chromatin_sigma", "spot_sigma", "haze_sigma")
    sigma = torch.stack([v[name] for name in names], dim=1)
    tex_c, tex_n, fine, haze = _gaussian_blur(stacked, sigma).unbind(1)
    tex_c = tex_c / tex_c.std(dim=(-2, -1), keepdim=True)
    tex_n = tex_n / tex_n.std(dim=(-2, -1), keepdim=True)

    v = {name: value[:, None, None] for name, value in v.items()}  # (B, 1, 1) per image
    image = (
        v["cyto_weight"] * cyto * (1 + v["cyto_texture"] * tex_c).clamp_min(0)
        + v["nucleus_weight"] * nucleus * (1 + v["chromatin"] * tex_n).clamp_min(0)
        + fine * mask.clamp(0, 1)
        + v["haze"] * haze
    )
    image = _scale_to_top(image[:, pad : pad + h, pad : pad + w])

    coarse = torch.as_tensor(np.stack([p.coarse for p in params]), dtype=torch.float32)
    variation = F.interpolate(coarse[:, None].to(device), size=(h, w), mode="bicubic")[:, 0]
    background = v["background"] * (1 + 0.5 * variation).clamp_min(0)
    grid = coordinate_grid((h, w), device=device, dtype=torch.float32)
    r2 = (grid[0] - v["vignetting_y"]) ** 2 + (grid[1] - v["vignetting_x"]) ** 2
    # Normalised so the falloff reaches ``vignetting`` in the corners (r2 = 2).
    vignette = (1 - v["vignetting"] * r2 / 2).clamp_min(0)
    image = (image + background) * vignette
    return (_scale_to_top(image) * v["peak"]).clamp_max(1)[:, None]


def synthetic_microscopy(
    indices: int | Sequence[int],
    size: int | Sequence[int],
    *,
    seed: int = 0,
    style: MicroscopyStyle | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> torch.Tensor:
    """Images ``indices`` (an int ``n`` means ``range(n)``) of the synthetic data set.

    Returns (N, 1, H, W) with values in [0, 1]; image ``i`` depends only on
    ``(seed, i, size, style)``.
    """
    h, w = as_size(size)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(indices, (int, np.integer)):
        if indices < 0:
            raise ValueError(f"number of images must be >= 0, got {indices}")
        indices = range(int(indices))
    indices = [int(i) for i in indices]
    if any(i < 0 for i in indices):
        raise ValueError(f"image indices must be >= 0, got {min(indices)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    style = style or MicroscopyStyle()
    # Cells just outside the frame still send out-of-focus haze into it.
    pad = int(math.ceil(2 * style.haze_sigma[1]))
    canvas = (h + 2 * pad, w + 2 * pad)
    device = torch.device(device) if device is not None else torch.device("cpu")
    out = torch.empty(len(indices), 1, h, w, dtype=dtype, device=device)
    starts = range(0, len(indices), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="synthetic microscopy", unit="batch")
    for start in starts:
        chunk = indices[start : start + batch_size]
        params = [_draw(seed, i, canvas, pad, style) for i in chunk]
        out[start : start + len(chunk)] = _render(params, (h, w), pad, device).to(dtype)
    return out


class SyntheticMicroscopy(Dataset):
    """Dataset view of :func:`synthetic_microscopy`: item ``i`` is a (1, H, W) image."""

    def __init__(
        self,
        n: int,
        size: int | Sequence[int],
        *,
        seed: int = 0,
        style: MicroscopyStyle | None = None,
    ) -> None:
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        self.n, self.size, self.seed = int(n), as_size(size), seed
        self.style = style or MicroscopyStyle()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} images")
        return synthetic_microscopy([index % self.n], self.size, seed=self.seed, style=self.style)[
            0
        ]
