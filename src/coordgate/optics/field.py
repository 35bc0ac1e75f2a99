"""PSF fields: the PSF as a smooth function of position on the sensor.

Positions are normalised sensor coordinates (``coordgate.frames``): ``y`` along
the image height, ``x`` along its width, the frame's outer edges at -1 and +1. The field
radius ``h = sqrt((y**2 + x**2) / 2)`` is 0 at the centre and 1 in the corners.

Three kinds of field share one interface:

- :class:`LensField` (``PSFField.default``): a diffraction PSF whose Zernike aberrations
  vary over the field like a rotationally symmetric lens's (Seidel field dependence):
  defocus ``max_defocus * h**2`` (field curvature), astigmatism ``~ h**2`` and coma
  ``~ h`` oriented along the radial direction, spherical aberration constant.
- :class:`GaussianField` (``PSFField.gaussian``): a Gaussian whose sigma grows as ``h**2``.
- :class:`MeasuredField` (``PSFField.from_grid`` / ``PSFField.load``): PSFs measured on a
  rectilinear grid of field points (e.g. bead scans), bilinearly interpolated between
  them and taken from the nearest edge of the grid outside it. A measured field may
  record the ``sensor_size`` (H, W) in pixels it was measured on (a calibration does):
  its positions mean pixels of that sensor only.

The default lens (21 px PSFs, Nyquist-sampled pupil, ``DEFAULT_MAX_DEFOCUS`` = 0.75 waves
RMS defocus in the corners) is diffraction-limited at the centre (Airy core FWHM ~2 px,
RMS radius 2.2 px) and blurred to a defocus disc of RMS radius 8.7 px in the corners
(6.6 px at the edge midpoints), so a 64-256 px frame is visibly sharp in the middle and
blurred toward the edges (paper Fig. 5). The PSF is tied to pixels, not to the frame:
larger frames see the same pixel blur.

PSFs are returned as float64 CPU tensors with unit sum.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from coordgate.atomic import replace_atomically
from coordgate.optics.interpolation import bracket, check_grid_positions
from coordgate.optics.psf import (
    ABERRATIONS,
    check_psf,
    diffraction_psfs,
    gaussian_psfs,
)

__all__ = [
    "BUILT_IN_FIELDS",
    "DEFAULT_GRID_SIZE",
    "DEFAULT_MAX_DEFOCUS",
    "GaussianField",
    "LensField",
    "MeasuredField",
    "PSFField",
    "field_radius",
]

#: Grid of field points an analytic field is sampled on when no size is asked for.
DEFAULT_GRID_SIZE = 17
#: The project's default lens: RMS waves of defocus in the corners of the frame. One value
#: everywhere (optics, ``coordgate dataset build``, ``simulate``, the studies).
DEFAULT_MAX_DEFOCUS = 0.75


def field_radius(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Normalised field radius: 0 at the centre, 1 in the corners of the frame."""
    return torch.sqrt((y**2 + x**2) / 2)


def _positions(y: Any, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    x = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
    if y.shape != x.shape:
        raise ValueError(
            f"y and x must hold the same number of positions, got {len(y)} and {len(x)}"
        )
    if not (torch.isfinite(y).all() and torch.isfinite(x).all()):
        raise ValueError("field positions must be finite")
    return y, x


def _sensor_size(value: Any) -> tuple[int, int] | None:
    """None, or a sensor size as two positive integers (H, W)."""
    if value is None:
        return None
    size = np.asarray(value).reshape(-1).tolist()
    if len(size) != 2 or not all(float(v).is_integer() and v >= 1 for v in size):
        raise ValueError(f"sensor_size must be two positive integers (H, W), got {value!r}")
    return int(size[0]), int(size[1])


class PSFField:
    """A PSF that varies smoothly over the sensor (see the module docstring)."""

    kind: ClassVar[str] = ""

    def __init__(self, psf_size: int) -> None:
        if isinstance(psf_size, bool) or not isinstance(psf_size, int) or psf_size < 1:
            raise ValueError(f"psf_size must be a positive odd integer, got {psf_size!r}")
        if psf_size % 2 == 0:
            raise ValueError(f"psf_size must be odd so the PSF has a centre pixel, got {psf_size}")
        self.psf_size = psf_size
        #: The sensor (H, W) px the field was measured on; None: it applies to any frame.
        self.sensor_size: tuple[int, int] | None = None
        self._grids: dict[int | None, torch.Tensor] = {}

    def _psfs(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _parameters(self) -> dict[str, Any]:
        raise NotImplementedError

    def psfs_at(self, y: Any, x: Any) -> torch.Tensor:
        """PSFs at field positions y, x (M,) -> (M, k, k), float64, unit sum."""
        return self._psfs(*_positions(y, x))

    def psf_at(self, y: float, x: float) -> torch.Tensor:
        """The PSF (k, k) at one field position (normalised coordinates)."""
        return self.psfs_at([float(y)], [float(x)])[0]

    def grid_positions(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Field positions (y (n,), x (n,)) of an n x n grid spanning the frame, edges included.

        ``n = 1`` is the centre alone; ``None`` gives ``DEFAULT_GRID_SIZE``.
        """
        n = DEFAULT_GRID_SIZE if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"grid size must be a positive integer, got {n!r}")
        line = (
            torch.linspace(-1, 1, n, dtype=torch.float64)
            if n > 1
            else torch.zeros(1, dtype=torch.float64)
        )
        return line, line.clone()

    def grid(self, n: int | None = None) -> torch.Tensor:
        """PSFs at the grid of :meth:`grid_positions`: (ny, nx, k, k), unit sum."""
        # Fields are immutable and every operator samples one, so grids are kept.
        cache = self._grids
        if n not in cache:
            y, x = self.grid_positions(n)
            yy, xx = torch.meshgrid(y, x, indexing="ij")
            psfs = self._psfs(yy.reshape(-1), xx.reshape(-1))
            cache[n] = psfs.reshape(len(y), len(x), self.psf_size, self.psf_size)
        return cache[n].clone()

    def config(self) -> dict[str, Any]:
        """JSON-able description of the field (for manifests and checkpoints)."""
        return {"kind": self.kind, "psf_size": self.psf_size, **self._parameters()}

    def save(self, path: str | Path, grid_size: int | None = None) -> Path:
        """Write ``psfs`` (ny, nx, k, k), their positions ``y``, ``x``, ``config`` and the
        ``sensor_size`` (when known) to .npz.

        Analytic fields are rebuilt exactly from ``config`` by :meth:`load`; the grid is
        stored alongside so the file can be inspected or edited into a measured field.
        """
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"a PSF field is saved as a .npz file, got {path.name!r}")
        y, x = self.grid_positions(grid_size)
        arrays = {
            "psfs": self.grid(grid_size).numpy(),
            "y": y.numpy(),
            "x": x.numpy(),
            "config": np.array(json.dumps(self.config())),
        }
        if self.sensor_size is not None:
            arrays["sensor_size"] = np.array(self.sensor_size)
        return replace_atomically(path, lambda tmp: np.savez(tmp, **arrays))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "kind")
        return f"{type(self).__name__}({args})"

    @staticmethod
    def default(
        psf_size: int = 21,
        max_defocus: float = DEFAULT_MAX_DEFOCUS,
        pupil_scale: float = 1.0,
        *,
        astigmatism: float = 0.0,
        coma: float = 0.0,
        spherical: float = 0.0,
        tilt: float = 0.0,
    ) -> LensField:
        """The paper's lens: in focus at the centre, defocus growing toward the corners."""
        return LensField(
            psf_size,
            max_defocus=max_defocus,
            pupil_scale=pupil_scale,
            astigmatism=astigmatism,
            coma=coma,
            spherical=spherical,
            tilt=tilt,
        )

    @staticmethod
    def gaussian(
        psf_size: int = 21, sigma_centre: float = 0.6, sigma_edge: float = 3.0
    ) -> GaussianField:
        """A quick Gaussian field: sigma from ``sigma_centre`` to ``sigma_edge`` (corners)."""
        return GaussianField(psf_size, sigma_centre=sigma_centre, sigma_edge=sigma_edge)

    @staticmethod
    def from_spec(spec: str | Path, option: str = "a PSF field") -> PSFField:
        """The field a user names: one of :data:`BUILT_IN_FIELDS` (``"default"``: the
        default lens; ``"gaussian"``: the quick Gaussian field) or a ``.npz`` file
        (:meth:`load`). ``option`` names what was given in the error for anything else.

        >>> PSFField.from_spec("gaussian").config() == PSFField.gaussian().config()
        True
        """
        if isinstance(spec, str) and spec in BUILT_IN_FIELDS:
            return BUILT_IN_FIELDS[spec]()
        if Path(spec).suffix != ".npz":
            names = ", ".join(repr(name) for name in BUILT_IN_FIELDS)
            raise ValueError(f"{option} must be {names} or a .npz file, got {str(spec)!r}")
        return PSFField.load(spec)

    @staticmethod
    def from_grid(psfs: Any, y: Any = None, x: Any = None) -> MeasuredField:
        """A field from PSFs measured on a grid: psfs (ny, nx, k, k), positions y (ny,), x (nx,)."""
        return MeasuredField(psfs, y, x)

    @staticmethod
    def from_config(config: dict[str, Any]) -> PSFField:
        """Rebuild an analytic field from :meth:`config` (measured fields need their .npz)."""
        kinds = {cls.kind: cls for cls in (LensField, GaussianField)}
        params = dict(config)
        kind = params.pop("kind", None)
        if kind not in kinds:
            raise ValueError(
                f"config kind must be one of {sorted(kinds)} to rebuild a field, got {kind!r}"
                " (a measured field is loaded from its .npz file)"
            )
        try:
            return kinds[kind](**params)
        except TypeError as error:
            raise ValueError(f"bad parameters for a {kind!r} field: {error}") from None

    @staticmethod
    def load(path: str | Path) -> PSFField:
        """Read a field written by :meth:`save`, or a user's measured grid.

        A user file needs ``psfs`` (ny, nx, k, k) and may give ``y`` (ny,) and ``x`` (nx,)
        positions in normalised coordinates (default: evenly from -1 to 1) and the
        ``sensor_size`` (H, W) they were measured on.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"PSF field file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read PSF field {path} as .npz: {error}") from None
        config = json.loads(str(arrays["config"])) if "config" in arrays else {}
        if config.get("kind") in (LensField.kind, GaussianField.kind):
            return PSFField.from_config(config)
        if "psfs" not in arrays:
            raise ValueError(f"{path} holds no 'psfs' array (ny, nx, k, k); found {sorted(arrays)}")
        return MeasuredField(
            torch.from_numpy(np.asarray(arrays["psfs"], dtype=np.float64)),
            arrays.get("y"),
            arrays.get("x"),
            sensor_size=arrays.get("sensor_size"),
        )


class LensField(PSFField):
    """Diffraction PSFs with Seidel-like field-dependent Zernike aberrations (RMS waves).

    At field radius ``h`` (1 in the corners), azimuth ``phi`` and normalised column ``x``:
    defocus ``max_defocus * h**2 + tilt * x`` (field curvature, and a focal plane tilted
    about the sensor's vertical centre line: in front of focus on one side, behind it on
    the other); astigmatism ``astigmatism * h**2`` and coma ``coma * h``, both oriented
    along ``phi``; spherical aberration ``spherical`` everywhere (which makes the PSFs on
    either side of focus differ in form, not only in width).
    """

    kind: ClassVar[str] = "lens"

    def __init__(
        self,
        psf_size: int = 21,
        *,
        max_defocus: float = DEFAULT_MAX_DEFOCUS,
        pupil_scale: float = 1.0,
        astigmatism: float = 0.0,
        coma: float = 0.0,
        spherical: float = 0.0,
        tilt: float = 0.0,
    ) -> None:
        super().__init__(psf_size)
        if not 0 < pupil_scale <= 1:
            raise ValueError(
                f"pupil_scale must be in (0, 1] (1 = Nyquist-sampled), got {pupil_scale}"
            )
        self.aberrations = {
            "max_defocus": float(max_defocus),
            "astigmatism": float(astigmatism),
            "coma": float(coma),
            "spherical": float(spherical),
            "tilt": float(tilt),
        }
        for name, value in self.aberrations.items():
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite (RMS waves), got {value}")
        self.pupil_scale = float(pupil_scale)

    def _parameters(self) -> dict[str, Any]:
        return {"pupil_scale": self.pupil_scale, **self.aberrations}

    def zernike_coefficients(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Aberrations at field positions y, x (M,) -> (M, len(ABERRATIONS)) RMS waves."""
        y, x = _positions(y, x)
        h, phi = field_radius(y, x), torch.atan2(y, x)
        a = self.aberrations
        terms = {
            "defocus": a["max_defocus"] * h**2 + a["tilt"] * x,
            "astigmatism_cos": a["astigmatism"] * h**2 * torch.cos(2 * phi),
            "astigmatism_sin": a["astigmatism"] * h**2 * torch.sin(2 * phi),
            "coma_cos": a["coma"] * h * torch.cos(phi),
            "coma_sin": a["coma"] * h * torch.sin(phi),
            "spherical": torch.full_like(h, a["spherical"]),
        }
        return torch.stack([terms[name] for name in ABERRATIONS], dim=1)

    def _psfs(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return diffraction_psfs(
            self.psf_size, self.zernike_coefficients(y, x), pupil_scale=self.pupil_scale
        )


class GaussianField(PSFField):
    """Gaussian PSFs, sigma = sigma_centre + (sigma_edge - sigma_centre) * h**2 (px)."""

    kind: ClassVar[str] = "gaussian"

    def __init__(
        self, psf_size: int = 21, *, sigma_centre: float = 0.6, sigma_edge: float = 3.0
    ) -> None:
        super().__init__(psf_size)
        for name, value in (("sigma_centre", sigma_centre), ("sigma_edge", sigma_edge)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of pixels, got {value}")
        self.sigma_centre, self.sigma_edge = float(sigma_centre), float(sigma_edge)

    def _parameters(self) -> dict[str, Any]:
        return {"sigma_centre": self.sigma_centre, "sigma_edge": self.sigma_edge}

    def _psfs(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sigma = self.sigma_centre + (self.sigma_edge - self.sigma_centre) * field_radius(y, x) ** 2
        return gaussian_psfs(self.psf_size, sigma)


class MeasuredField(PSFField):
    """PSFs measured on a rectilinear grid of field points, bilinearly interpolated.

    psfs: (ny, nx, k, k), non-negative (each normalised to unit sum); y (ny,), x (nx,):
    strictly increasing positions inside the frame [-1, 1] (default: evenly spaced,
    edges included). Outside the grid the nearest grid edge's PSFs apply. sensor_size:
    the sensor (H, W) px the positions refer to, or None.
    """

    kind: ClassVar[str] = "measured"

    def __init__(self, psfs: Any, y: Any = None, x: Any = None, *, sensor_size: Any = None) -> None:
        psfs = torch.as_tensor(psfs)
        check_psf(psfs, "measured PSF grid", batch_dims=2)
        super().__init__(psfs.shape[-1])
        self.sensor_size = _sensor_size(sensor_size)
        psfs = psfs.to(torch.float64)
        ny, nx = psfs.shape[:2]
        y = self._axis(y, ny, "y")
        x = self._axis(x, nx, "x")
        self.psfs = psfs / psfs.sum(dim=(-2, -1), keepdim=True)
        self.y, self.x = y, x

    def _axis(self, positions: Any, n: int, name: str) -> torch.Tensor:
        if positions is None:
            return super().grid_positions(n)[0]
        positions = check_grid_positions(positions, f"grid positions {name}")
        if positions.numel() != n:
            raise ValueError(
                f"grid positions {name} must give one position per PSF row/column ({n}), "
                f"got {positions.numel()}"
            )
        if positions.abs().max() > 1:
            raise ValueError(
                f"grid positions {name} must lie inside the frame [-1, 1] (normalised sensor "
                f"coordinates), got {positions.tolist()}"
            )
        return positions

    def _parameters(self) -> dict[str, Any]:
        grid = {"grid_shape": list(self.psfs.shape[:2]), "y": self.y.tolist(), "x": self.x.tolist()}
        sensor = {} if self.sensor_size is None else {"sensor_size": list(self.sensor_size)}
        return {**grid, **sensor}

    def grid_positions(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The measured positions when ``n`` is None, else an evenly spaced n x n grid."""
        return (self.y.clone(), self.x.clone()) if n is None else super().grid_positions(n)

    def grid(self, n: int | None = None) -> torch.Tensor:
        """The measured PSFs when ``n`` is None, else PSFs interpolated to an n x n grid."""
        return self.psfs.clone() if n is None else super().grid(n)

    def _psfs(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y0, y1, ty = bracket(y, self.y)
        x0, x1, tx = bracket(x, self.x)
        ty, tx = ty[:, None, None], tx[:, None, None]
        top = (1 - tx) * self.psfs[y0, x0] + tx * self.psfs[y0, x1]
        bottom = (1 - tx) * self.psfs[y1, x0] + tx * self.psfs[y1, x1]
        return (1 - ty) * top + ty * bottom


#: The fields built into the project, by the names the command line gives them (see
#: :meth:`PSFField.from_spec`).
BUILT_IN_FIELDS: dict[str, Callable[[], PSFField]] = {
    "default": PSFField.default,
    "gaussian": PSFField.gaussian,
}
