"""Blur operators: a forward model ``A`` with its adjoint ``A_T`` on (N, C, H, W) images.

Every source pixel ``q`` spreads its light as its own PSF centred on itself,
``y(p) = sum_q x(q) h_q(p - q)`` (the physical superposition), so a unit impulse at ``q``
maps to ``h_q``. ``padding`` (see :mod:`coordgate.optics.boundary`) states what the
object is outside the frame; no operator wraps around unless ``padding="circular"``,
which makes the whole operator periodic over the frame: light leaving one edge re-enters
at the other with the PSF of the pixel it left from, exactly what an FFT of the frame's
own size computes (the low-rank and shift-invariant operators use one, with no margin).

Per-pixel PSFs of a :class:`FieldBlur` are the bilinear interpolation of the field's PSFs
on a grid of field points (``field.grid(grid_size)``); sources outside the frame take the
PSF of the nearest grid edge. Both of its operators share that definition, so ``exact``
vs ``lowrank`` differences are the low-rank truncation alone (at full rank they agree to
rounding); :func:`SpatiallyVaryingBlur` builds either by its ``method``:

- :class:`ExactBlur` (``"exact"``): each pixel's PSF is blended from its four grid
  neighbours and scattered (``A``) or gathered (``A_T``), a few rows at a time so memory
  stays under ``chunk_bytes`` whatever the image size.
- :class:`LowRankBlur` (``"lowrank"``): product-convolution over eigen-PSFs,
  ``y = sum_k h_k * (w_k . x)``, with ``h_k`` the leading right singular vectors of the
  (grid points, k*k) PSF matrix scaled by their singular values and ``w_k`` the bilinear
  interpolation of the matching left singular vectors to every pixel.

:class:`TiledBlur` is the low-rank operator computed in overlapping windows of a large
frame, each at its own sensor origin, sharing one set of kernel spectra.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any, ClassVar, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import nn

from coordgate.frames import FrameLike, coordinate_grid, resolve_frame
from coordgate.optics.boundary import Padding, check_padding, extend, extend_adjoint
from coordgate.optics.field import PSFField
from coordgate.optics.fourier import (
    adjoint_spectra,
    adjoint_weights,
    kernel_spectra,
    linear_fft_shape,
    product_convolution,
    product_convolution_adjoint,
)
from coordgate.optics.interpolation import bracket, interpolation_matrix
from coordgate.optics.psf import check_psf
from coordgate.tiling import balanced_tile, blend_windows, plan_windows

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_RANK_TOLERANCE",
    "MAX_AUTO_RANK",
    "METHODS",
    "BlurOperator",
    "ExactBlur",
    "FieldBlur",
    "LowRankBlur",
    "Method",
    "ShiftInvariantBlur",
    "SpatiallyVaryingBlur",
    "TiledBlur",
]

#: How a :func:`SpatiallyVaryingBlur` is computed: :class:`ExactBlur` or :class:`LowRankBlur`.
Method = Literal["exact", "lowrank"]
METHODS: tuple[Method, ...] = get_args(Method)
#: ``rank=None`` keeps the fewest eigen-PSFs whose discarded share of the PSF grid's
#: Frobenius norm is at most this, capped at ``MAX_AUTO_RANK`` (noisy measured grids).
DEFAULT_RANK_TOLERANCE = 1e-4
MAX_AUTO_RANK = 16
#: Working memory of one row chunk of the exact operator.
DEFAULT_CHUNK_BYTES = 1 << 27


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """FFTs and folds need float32 or float64; other float types compute in float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _check_image(x: Any, name: str, operator: str, size: Sequence[int] | None) -> None:
    expected = "(N, C, H, W)" if size is None else f"(N, C, {size[0]}, {size[1]})"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{operator} expects {name} of shape {expected}, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(
            f"{operator} expects a 4-D {name} of shape {expected}, "
            f"got a {x.ndim}-D tensor of shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{operator} expects a floating-point {name}, got dtype {x.dtype}")
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        raise ValueError(
            f"{operator} was built for {size[0]}x{size[1]} images, "
            f"got {name} of shape {tuple(x.shape)}"
        )


class _LinearMap(torch.autograd.Function):
    """A linear map whose backward is its given transpose.

    Keeps the exact operator's chunked in-place loops out of the autograd graph; the
    backward calls the transpose through this Function again, so it is differentiable too.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, apply: Any, transpose: Any) -> torch.Tensor:
        ctx.maps = (apply, transpose)
        return apply(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        apply, transpose = ctx.maps
        return _LinearMap.apply(grad, transpose, apply), None, None


class BlurOperator(nn.Module):
    """A linear blur with ``A`` (forward, also ``forward``) and its adjoint ``A_T``.

    x: (N, C, H, W) -> (N, C, H, W). Computation runs in the input's dtype (float32 for
    half types) on the input's device; buffers follow ``.to()``.
    """

    padding: Padding
    psf_size: int

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[tuple, Any] = {}

    def _image_size(self) -> tuple[int, int] | None:
        return None

    def _apply_A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _apply_A_T(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _run(self, fn: Any, x: torch.Tensor, name: str) -> torch.Tensor:
        size = self._image_size()
        _check_image(x, name, type(self).__name__, size)
        if size is None and min(x.shape[-2:]) < self.psf_size:
            raise ValueError(
                f"{type(self).__name__}: a {self.psf_size}x{self.psf_size} PSF does not fit "
                f"{name} of shape {tuple(x.shape)}"
            )
        return fn(x.to(_compute_dtype(x.dtype))).to(x.dtype)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Blur: x (N, C, H, W) -> y (N, C, H, W)."""
        return self._run(self._apply_A, x, "x")

    def A_T(self, y: torch.Tensor) -> torch.Tensor:
        """Adjoint blur: y (N, C, H, W) -> (N, C, H, W), with <A x, y> = <x, A_T y>."""
        return self._run(self._apply_A_T, y, "y")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`A`: (N, C, H, W) -> (N, C, H, W)."""
        return self.A(x)

    @property
    def margin(self) -> int:
        """Pixels of object assumed beyond the frame (0 for zero padding)."""
        return 0 if self.padding == "zero" else self.psf_size // 2

    @property
    def fft_margin(self) -> int:
        """The margin of the FFT-based operators: none for circular padding, whose FFT grid
        is the frame itself."""
        return 0 if self.padding == "circular" else self.margin

    def _fft_shape(self, size: tuple[int, int]) -> tuple[int, int]:
        if self.padding == "circular":
            return tuple(size)
        return linear_fft_shape(size, self.margin, self.psf_size)

    def _apply(self, fn: Any, recurse: bool = True) -> BlurOperator:
        # Cached spectra and casts belong to the old device/dtype of the buffers.
        self._cache.clear()
        return super()._apply(fn, recurse)


class ShiftInvariantBlur(BlurOperator):
    """Convolution with one PSF (k, k) everywhere, via FFT without wrap-around.

    The PSF is used as given (validated, not renormalised). Spectra are cached per
    (image size, device, dtype).
    """

    def __init__(self, psf: torch.Tensor, padding: Padding = "zero") -> None:
        super().__init__()
        check_psf(psf, "psf")
        self.padding = check_padding(padding)
        self.psf_size = psf.shape[-1]
        self.register_buffer("psf", psf.detach().clone())

    def _spectra(self, size: tuple[int, int], like: torch.Tensor) -> tuple[Any, torch.Tensor]:
        key = (size, like.device, like.dtype)
        if key not in self._cache:
            shape = self._fft_shape(size)
            self._cache[key] = (shape, kernel_spectra(self.psf.to(like)[None], shape))
        return self._cache[key]

    def _apply_A(self, x: torch.Tensor) -> torch.Tensor:
        shape, spectra = self._spectra(tuple(x.shape[-2:]), x)
        margin = self.fft_margin
        return product_convolution(extend(x, margin, self.padding), spectra, None, shape, margin)

    def _apply_A_T(self, y: torch.Tensor) -> torch.Tensor:
        shape, spectra = self._spectra(tuple(y.shape[-2:]), y)
        z = product_convolution_adjoint(y, spectra, None, shape, self.fft_margin)
        return extend_adjoint(z, self.fft_margin, self.padding)

    def extra_repr(self) -> str:
        return f"psf_size={self.psf_size}, padding={self.padding!r}"


def _image_size(image_size: Any) -> tuple[int, int]:
    """(H, W) from a pair of positive integers or one integer (a square frame)."""
    size = tuple(image_size) if isinstance(image_size, Sequence) else (image_size,) * 2
    if len(size) != 2 or not all(
        isinstance(s, Integral) and not isinstance(s, bool) and s >= 1 for s in size
    ):
        raise ValueError(f"image_size must be two positive integers (H, W), got {image_size!r}")
    return int(size[0]), int(size[1])


def _check_fit(field: Any, image_size: Any) -> tuple[tuple[int, int], int]:
    """The (H, W) of an operator of ``field`` (checked to be a PSFField) for ``image_size``,
    and the PSF size k, checked to fit that frame."""
    if not isinstance(field, PSFField):
        raise ValueError(f"field must be a PSFField, got {type(field).__name__}")
    size, k = _image_size(image_size), field.psf_size
    if k > min(size):
        raise ValueError(
            f"the PSF grid's {k}x{k} PSFs do not fit a {size[0]}x{size[1]} image; "
            "use a smaller psf_size or a larger image"
        )
    return size, k


def _source_coords(
    n: int, origin: float, full: float, margin: int, padding: Padding
) -> torch.Tensor:
    """Normalised coordinates of the frame's pixels plus ``margin`` on each side (for
    circular padding, the coordinates of the frame pixels the margin wraps around to)."""
    core = coordinate_grid((n,), origin=origin, full_size=full, dtype=torch.float64)[0]
    if padding == "circular":
        return core[torch.arange(-margin, n + margin).remainder(n)]
    step = 2 / full * torch.arange(1, margin + 1, dtype=torch.float64)
    return torch.cat([core[0] - step.flip(0), core, core[-1] + step])


def _eigen_psfs(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of the (grid points, k*k) PSF matrix M = U S V^T, through the eigenvectors of
    the small Gram matrix M M^T (LAPACK's SVD of this nearly low-rank matrix can be slow).

    Returns singular values S (r,), coefficients U (P, r) and scaled eigen-PSFs
    S V^T = U^T M (r, k*k), r = min(P, k*k), strongest first, each eigen-PSF with a
    positive sum.
    ``U[:, :K] @ (U^T M)[:K]`` is the best rank-K approximation of M; no division by small
    singular values is needed, so full rank reproduces M to rounding.
    """
    r = min(matrix.shape)
    eigenvalues, u = torch.linalg.eigh(matrix @ matrix.T)
    eigenvalues, u = eigenvalues.flip(0)[:r].clamp_min(0), u.flip(1)[:, :r]
    kernels = u.T @ matrix
    sign = torch.where(kernels.sum(1) < 0, -1.0, 1.0).to(matrix)
    return eigenvalues.sqrt(), u * sign, kernels * sign[:, None]


def _choose_rank(singular_values: torch.Tensor, rank: int | None) -> int:
    full = singular_values.numel()
    if rank is None:
        tail = (singular_values**2).flip(0).cumsum(0).flip(0).sqrt() / singular_values.norm()
        within = (tail <= DEFAULT_RANK_TOLERANCE).nonzero()
        return min(int(within[0]) if len(within) else full, MAX_AUTO_RANK, full)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= full:
        raise ValueError(
            f"rank must be an integer from 1 to {full} (grid points or PSF pixels, whichever "
            f"is fewer), got {rank!r}"
        )
    return rank


def _sampled_grid(
    field: PSFField, grid_size: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The field's PSFs on its grid (ny, nx, k, k), each of unit sum, and the grid's
    positions y (ny,), x (nx,)."""
    psfs = field.grid(grid_size)
    check_psf(psfs, "field.grid()", batch_dims=2)
    grid_y, grid_x = field.grid_positions(grid_size)
    return psfs / psfs.sum(dim=(-2, -1), keepdim=True), grid_y, grid_x


def _low_rank(
    psfs: torch.Tensor, rank: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The eigen-PSFs of a PSF grid (ny, nx, k, k): all singular values, the kernels of the
    ``rank`` strongest (K, k, k) and their coefficients on the grid (K, ny, nx)."""
    ny, nx, k = psfs.shape[:3]
    singular_values, coefficients, kernels = _eigen_psfs(psfs.reshape(-1, k * k))
    rank = _choose_rank(singular_values, rank)
    coefficients = coefficients[:, :rank].T.reshape(rank, ny, nx)
    return singular_values, kernels[:rank].reshape(rank, k, k), coefficients


def _weights(
    coefficients: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    grid_y: torch.Tensor,
    grid_x: torch.Tensor,
) -> torch.Tensor:
    """The coefficients (K, ny, nx) interpolated to the source pixels at normalised
    coordinates ``rows`` (Sh,) and ``cols`` (Sw,): the weights (K, Sh, Sw)."""
    return interpolation_matrix(rows, grid_y) @ coefficients @ interpolation_matrix(cols, grid_x).T


def _paired_spectra(
    kernels: torch.Tensor, shape: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (forward, adjoint) spectra of kernels (K, k, k) on the FFT grid ``shape``."""
    return kernel_spectra(kernels, shape), adjoint_spectra(kernels, shape)


class _LowRank(NamedTuple):
    """What the low-rank operator caches per device and dtype: the FFT grid, the kernels'
    spectra and weights (K, Sh, Sw) of the forward, and their paired forms of the adjoint
    (:func:`~coordgate.optics.fourier.adjoint_spectra`, ``adjoint_weights``)."""

    shape: tuple[int, int]
    spectra: torch.Tensor
    weights: torch.Tensor
    adjoint_spectra: torch.Tensor
    adjoint_weights: torch.Tensor

    @staticmethod
    def of(
        shape: tuple[int, int], spectra: tuple[torch.Tensor, torch.Tensor], weights: torch.Tensor
    ) -> _LowRank:
        """From the FFT grid, the (forward, adjoint) spectra and the weights (K, Sh, Sw)."""
        return _LowRank(shape, spectra[0], weights, spectra[1], adjoint_weights(weights))


def _lowrank_A(x: torch.Tensor, lowrank: _LowRank, margin: int, padding: Padding) -> torch.Tensor:
    """Product-convolution of x (N, C, H, W), extended by ``margin`` under ``padding``."""
    xs = extend(x, margin, padding)
    return product_convolution(xs, lowrank.spectra, lowrank.weights, lowrank.shape, margin)


def _lowrank_A_T(y: torch.Tensor, lowrank: _LowRank, margin: int, padding: Padding) -> torch.Tensor:
    """The adjoint of :func:`_lowrank_A`: (N, C, H, W) -> (N, C, H, W)."""
    z = product_convolution_adjoint(
        y, lowrank.adjoint_spectra, lowrank.adjoint_weights, lowrank.shape, margin
    )
    return extend_adjoint(z, margin, padding)


class _Axis(NamedTuple):
    """One axis of a :class:`FieldBlur`'s sources: their normalised coordinates (S,) and
    the PSF grid's positions along it (n,)."""

    coords: torch.Tensor
    grid: torch.Tensor


class FieldBlur(BlurOperator):
    """The blur of an ``image_size`` frame by a :class:`PSFField`, its PSFs sampled on a
    grid of field points and blended bilinearly to each source pixel (see the module
    docstring). The shared frame and grid of :class:`ExactBlur` and :class:`LowRankBlur`,
    which differ in how they apply it.

    x: (N, C, H, W) -> (N, C, H, W), (H, W) = ``image_size``.

    Options of both: field: the PSF field; image_size: (H, W); padding: boundary
    assumption; grid_size: field points per axis the PSFs are sampled on (None: the
    field's own grid, ``DEFAULT_GRID_SIZE`` for analytic fields); origin, full_size: where
    this image sits on the sensor (default: the whole frame).
    """

    method: ClassVar[Method]
    #: Eigen-PSFs the operator applies (None: every per-pixel PSF in full).
    rank: int | None

    def __init__(
        self,
        field: PSFField,
        image_size: Sequence[int],
        *,
        padding: Padding = "zero",
        origin: FrameLike = None,
        full_size: FrameLike = None,
    ) -> None:
        super().__init__()
        self.image_size, self.psf_size = _check_fit(field, image_size)
        self.padding = check_padding(padding)
        self.origin, self.full_size = resolve_frame(self.image_size, origin, full_size)

    def _sample(
        self, field: PSFField, grid_size: int | None, margin: int
    ) -> tuple[torch.Tensor, _Axis, _Axis]:
        """The field's unit-sum PSFs on its grid (ny, nx, k, k) and, per axis, the
        normalised coordinates of the frame's pixels plus ``margin`` of sources on each
        side with the grid's positions along it."""
        psfs, grid_y, grid_x = _sampled_grid(field, grid_size)
        self.grid_shape = tuple(psfs.shape[:2])
        rows, cols = (
            _Axis(_source_coords(n, o, f, margin, self.padding), grid)
            for n, o, f, grid in zip(self.image_size, self.origin, self.full_size, (grid_y, grid_x))
        )
        return psfs, rows, cols

    def _image_size(self) -> tuple[int, int]:
        return self.image_size

    def pixel_psf(self, i: int, j: int) -> torch.Tensor:
        """The PSF (k, k) this operator spreads from source pixel (i, j) of the image."""
        h, w = self.image_size
        if not (0 <= i < h and 0 <= j < w):
            raise ValueError(f"pixel ({i}, {j}) is outside the {h}x{w} image")
        return self._pixel_psf(i, j)

    def _pixel_psf(self, i: int, j: int) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        rank = "" if self.rank is None else f", rank={self.rank}"
        return (
            f"image_size={self.image_size}, method={self.method!r}{rank}, "
            f"psf_size={self.psf_size}, grid={self.grid_shape}, padding={self.padding!r}"
        )


class ExactBlur(FieldBlur):
    """The exact :class:`FieldBlur`: each source pixel's PSF blended from its four grid
    neighbours and scattered (``A``) or gathered (``A_T``) a few rows at a time, so that
    working memory stays under ``chunk_bytes`` whatever the image size.

    x: (N, C, H, W) -> (N, C, H, W). field, image_size, padding, grid_size, origin,
    full_size: as for :class:`FieldBlur`; device, dtype: of the buffers (default: CPU,
    the default dtype).

    >>> from coordgate.optics import PSFField
    >>> blur = ExactBlur(PSFField.gaussian(psf_size=7), (20, 17), padding="reflect")
    >>> blur.A(torch.ones(1, 1, 20, 17)).shape
    torch.Size([1, 1, 20, 17])
    """

    method = "exact"
    rank = None

    def __init__(
        self,
        field: PSFField,
        image_size: Sequence[int],
        *,
        padding: Padding = "zero",
        grid_size: int | None = None,
        origin: FrameLike = None,
        full_size: FrameLike = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        super().__init__(field, image_size, padding=padding, origin=origin, full_size=full_size)
        self.chunk_bytes = int(chunk_bytes)
        psfs, rows, cols = self._sample(field, grid_size, self.margin)
        # Sampling runs in float64; buffers are stored like nn.Linear's weights.
        dtype = dtype or torch.get_default_dtype()
        # Layout (ny, k*k, nx): a row's PSFs are then one batched matrix product away.
        k = self.psf_size
        self.register_buffer(
            "grid", psfs.reshape(*self.grid_shape, k * k).transpose(1, 2).to(dtype)
        )
        i0, i1, t = bracket(*rows)
        self.register_buffer("row_i0", i0)
        self.register_buffer("row_i1", i1)
        self.register_buffer("row_t", t.to(dtype))
        self.register_buffer("col_weights", interpolation_matrix(*cols).to(dtype))
        if device is not None:
            self.to(device)

    # The PSF of source pixel (r, w) is row_grid[r] @ col_weights[w]: the grid blended to
    # row r, then across.

    def _pixel_psf(self, i: int, j: int) -> torch.Tensor:
        k = self.psf_size
        r, c = i + self.margin, j + self.margin
        return (self._row_grid(r, r + 1, self.grid.dtype)[0] @ self.col_weights[c]).reshape(k, k)

    def _row_grid(self, r0: int, r1: int, dtype: torch.dtype) -> torch.Tensor:
        """The grid blended to source rows r0:r1 -> (rows, k*k, nx)."""
        grid = self.grid.to(dtype)
        t = self.row_t[r0:r1, None, None].to(dtype)
        return torch.lerp(grid[self.row_i0[r0:r1]], grid[self.row_i1[r0:r1]], t)

    def _chunk_rows(self, batch: int, width: int, itemsize: int) -> int:
        # Per source row: the spread light (or gathered patches) of each image, plus slack.
        per_row = itemsize * self.psf_size**2 * width * (batch + 1)
        return max(1, self.chunk_bytes // per_row)

    def _scatter(self, xs: torch.Tensor) -> torch.Tensor:
        """(B, Sh, Sw) sources -> (B, Sh + 2c, Sw + 2c) light, each source's PSF around it."""
        b, sh, sw = xs.shape
        k = self.psf_size
        cols = self.col_weights.to(xs.dtype).T
        out = xs.new_zeros(b, sh + k - 1, sw + k - 1)
        step = self._chunk_rows(b, sw, xs.element_size())
        for r0 in range(0, sh, step):
            r1 = min(r0 + step, sh)
            # light[b, r, (dy, dx), w] = x[b, r, w] * PSF(r, w)[dy, dx]
            light = self._row_grid(r0, r1, xs.dtype) @ (cols * xs[:, r0:r1, None, :])
            light = light.view(b, r1 - r0, k, k, sw)
            # Adding PSF-pixel planes at their offsets is a col2im that needs no transpose.
            for dy in range(k):
                for dx in range(k):
                    out[:, r0 + dy : r1 + dy, dx : dx + sw].add_(light[:, :, dy, dx])
        return out

    def _gather(self, z: torch.Tensor) -> torch.Tensor:
        """Transpose of :meth:`_scatter`: (B, Sh + 2c, Sw + 2c) -> (B, Sh, Sw)."""
        b = z.shape[0]
        k = self.psf_size
        sh, sw = z.shape[1] - k + 1, z.shape[2] - k + 1
        cols = self.col_weights.to(z.dtype)
        step = self._chunk_rows(b, sw, z.element_size())
        parts = []
        for r0 in range(0, sh, step):
            r1 = min(r0 + step, sh)
            # patches[b, r, (dy, dx), w] = z[b, r + dy, w + dx]
            windows = z[:, r0 : r1 + k - 1].unfold(1, k, 1).unfold(2, k, 1)
            patches = windows.permute(0, 1, 3, 4, 2).reshape(b, r1 - r0, k * k, sw)
            # Sum over PSF pixels against the row-blended grid, then blend across columns.
            blended = patches.transpose(-1, -2) @ self._row_grid(r0, r1, z.dtype)
            parts.append((blended * cols).sum(-1))
        return torch.cat(parts, 1)

    def _apply_A(self, x: torch.Tensor) -> torch.Tensor:
        n, ch, h, w = x.shape
        xs = extend(x, self.margin, self.padding)
        c0 = self.margin + self.psf_size // 2
        light = _LinearMap.apply(xs.reshape(n * ch, *xs.shape[-2:]), self._scatter, self._gather)
        return light[:, c0 : c0 + h, c0 : c0 + w].reshape(n, ch, h, w)

    def _apply_A_T(self, y: torch.Tensor) -> torch.Tensor:
        n, ch = y.shape[:2]
        c0 = self.margin + self.psf_size // 2
        z = _LinearMap.apply(F.pad(y, (c0,) * 4).flatten(0, 1), self._gather, self._scatter)
        z = z.reshape(n, ch, *z.shape[-2:])
        return extend_adjoint(z, self.margin, self.padding)


class LowRankBlur(FieldBlur):
    """The low-rank :class:`FieldBlur`: product-convolution over eigen-PSFs,
    ``y = sum_k h_k * (w_k . x)``, by FFT with the kernels' spectra cached per device and
    dtype (circular padding: an FFT of the frame itself, with no margin of sources).

    x: (N, C, H, W) -> (N, C, H, W). rank: eigen-PSFs kept (None: automatic, see
    ``DEFAULT_RANK_TOLERANCE``); field, image_size, padding, grid_size, origin, full_size:
    as for :class:`FieldBlur`; device, dtype: of the buffers (default: CPU, the default
    dtype). Buffers: ``singular_values`` (all of the PSF grid's), ``kernels`` (K, k, k),
    ``weights`` (K, H + 2m, W + 2m) with m = ``fft_margin``.

    >>> from coordgate.optics import PSFField
    >>> blur = LowRankBlur(PSFField.gaussian(psf_size=7), (20, 17), rank=3, padding="reflect")
    >>> blur.rank, tuple(blur.weights.shape)
    (3, (3, 26, 23))
    """

    method = "lowrank"

    def __init__(
        self,
        field: PSFField,
        image_size: Sequence[int],
        *,
        rank: int | None = None,
        padding: Padding = "zero",
        grid_size: int | None = None,
        origin: FrameLike = None,
        full_size: FrameLike = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(field, image_size, padding=padding, origin=origin, full_size=full_size)
        psfs, rows, cols = self._sample(field, grid_size, self.fft_margin)
        # Sampling and SVD run in float64; buffers are stored like nn.Linear's weights.
        dtype = dtype or torch.get_default_dtype()
        singular_values, kernels, coefficients = _low_rank(psfs, rank)
        self.rank = len(kernels)
        weights = _weights(coefficients, rows.coords, cols.coords, rows.grid, cols.grid)
        self.register_buffer("singular_values", singular_values.to(dtype))
        self.register_buffer("kernels", kernels.to(dtype))
        self.register_buffer("weights", weights.to(dtype))
        if device is not None:
            self.to(device)

    def _pixel_psf(self, i: int, j: int) -> torch.Tensor:
        r, c = i + self.fft_margin, j + self.fft_margin
        return (self.weights[:, r, c, None, None] * self.kernels).sum(0)

    def _lowrank(self, like: torch.Tensor) -> _LowRank:
        """The cached spectra and weights for ``like``'s device and dtype."""
        key = (like.device, like.dtype)
        if key not in self._cache:
            shape = self._fft_shape(self.image_size)
            spectra = _paired_spectra(self.kernels.to(like), shape)
            self._cache[key] = _LowRank.of(shape, spectra, self.weights.to(like))
        return self._cache[key]

    def _apply_A(self, x: torch.Tensor) -> torch.Tensor:
        return _lowrank_A(x, self._lowrank(x), self.fft_margin, self.padding)

    def _apply_A_T(self, y: torch.Tensor) -> torch.Tensor:
        return _lowrank_A_T(y, self._lowrank(y), self.fft_margin, self.padding)


# A factory named like the classes it builds: callers have always called it as a class.
def SpatiallyVaryingBlur(
    field: PSFField,
    image_size: Sequence[int],
    *,
    method: Method = "exact",
    rank: int | None = None,
    **options: Any,
) -> FieldBlur:
    """The blur of an ``image_size`` frame by ``field`` computed by ``method``: an
    :class:`ExactBlur` (``"exact"``) or a :class:`LowRankBlur` (``"lowrank"``, which keeps
    ``rank`` eigen-PSFs; None: automatic).

    x: (N, C, H, W) -> (N, C, H, W). options: those of the class, ``padding``,
    ``grid_size``, ``origin``, ``full_size``, ``device``, ``dtype`` (and ``chunk_bytes``
    for ``exact``).

    >>> from coordgate.optics import PSFField
    >>> blur = SpatiallyVaryingBlur(PSFField.gaussian(psf_size=7), (20, 17), method="lowrank")
    >>> type(blur).__name__, blur.method, blur.padding
    ('LowRankBlur', 'lowrank', 'zero')
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "exact":
        if rank is not None:
            raise ValueError(
                f"rank applies to method='lowrank' only, got rank={rank!r} with 'exact'"
            )
        return ExactBlur(field, image_size, **options)
    return LowRankBlur(field, image_size, rank=rank, **options)


#: Window weights a :class:`TiledBlur` keeps between calls (the rest are recomputed).
DEFAULT_CACHE_BYTES = 1 << 30


class TiledBlur(BlurOperator):
    """The low-rank blur of an ``image_size`` frame computed in overlapping windows, each
    at its own sensor origin: :class:`LowRankBlur`'s result (to rounding) in the FFT
    working memory of one window.

    An output pixel of ``A`` or ``A_T`` depends on the pixels within ``psf_size // 2`` of
    it (one more for ``A_T`` with reflect padding, which folds the margin back onto the
    pixels it mirrors), so a window's result is exact but within ``psf_size // 2 + 1`` of
    an edge it shares with a neighbour. Windows overlap by twice that and are stitched by
    :func:`coordgate.tiling.blend_windows`, which takes nothing from those bands. All
    windows have one size and share one set of kernel spectra, computed once per device
    and dtype; a window's weights (the eigen-PSF coefficients at its pixels' sensor
    coordinates) are kept while all kept weights fit ``cache_bytes``, else recomputed at
    each call.

    field, image_size, rank, padding, grid_size, origin, full_size, device, dtype: as for
    :class:`LowRankBlur` (``"circular"`` padding wraps around the whole frame and
    takes one window); tile: the largest window side in pixels, one int or (H, W), at
    least twice the PSF size (None: the whole frame); the windows share each axis evenly
    (:func:`coordgate.tiling.balanced_tile`).

    >>> from coordgate.optics import PSFField
    >>> field = PSFField.gaussian(psf_size=9)
    >>> tiled = TiledBlur(field, (100, 90), tile=40, padding="reflect")
    >>> whole = LowRankBlur(field, (100, 90), padding="reflect")
    >>> x = torch.rand(1, 1, 100, 90)
    >>> bool((tiled.A(x) - whole.A(x)).abs().max() < 1e-5), tiled.windows
    (True, 9)
    """

    def __init__(
        self,
        field: PSFField,
        image_size: Sequence[int],
        *,
        tile: int | Sequence[int] | None = None,
        rank: int | None = None,
        padding: Padding = "zero",
        grid_size: int | None = None,
        origin: FrameLike = None,
        full_size: FrameLike = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        size, k = _check_fit(field, image_size)
        self.padding = check_padding(padding)
        self.psf_size = k
        largest = size if tile is None else _image_size(tile)
        if tile is not None and min(largest) < 2 * k:
            raise ValueError(f"tile must be at least twice the PSF size ({2 * k}), got {tile!r}")
        self.image_size, self.cache_bytes = size, int(cache_bytes)
        self.frame = resolve_frame(size, origin, full_size)
        band = k // 2 + 1
        self.rows, self.cols = (
            plan_windows(n, balanced_tile(n, t, 2 * band, 1), 2 * band, 1, band)
            for n, t in zip(size, largest)
        )
        if self.padding == "circular" and self.windows > 1:
            raise ValueError("circular padding wraps around the whole frame: use tile=None")
        psfs, grid_y, grid_x = _sampled_grid(field, grid_size)
        singular_values, kernels, coefficients = _low_rank(psfs, rank)
        self.rank = len(kernels)
        dtype = dtype or torch.get_default_dtype()
        self.register_buffer("singular_values", singular_values.to(dtype))
        self.register_buffer("kernels", kernels.to(dtype))
        # Each window's weights are interpolated from these on the CPU in float64 (as
        # LowRankBlur's are), then moved: not buffers, so .to() leaves them here.
        self._coefficients, self._grid = coefficients, (grid_y, grid_x)
        if device is not None:
            self.to(device)

    @property
    def windows(self) -> int:
        """The number of windows the frame is computed in."""
        return len(self.rows.starts) * len(self.cols.starts)

    def _image_size(self) -> tuple[int, int]:
        return self.image_size

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, tile={(self.rows.size, self.cols.size)}, "
            f"windows={self.windows}, rank={self.rank}, psf_size={self.psf_size}, "
            f"padding={self.padding!r}"
        )

    def _spectra(self, like: torch.Tensor) -> tuple[tuple[int, int], tuple]:
        """The FFT grid of a window and the (forward, adjoint) kernel spectra on it."""
        key = ("spectra", like.device, like.dtype)
        if key not in self._cache:
            shape = self._fft_shape((self.rows.size, self.cols.size))
            self._cache[key] = (shape, _paired_spectra(self.kernels.to(like), shape))
        return self._cache[key]

    def _window(self, i: int, j: int, like: torch.Tensor) -> _LowRank:
        """Window (i, j)'s spectra and weights for ``like``'s device and dtype."""
        key = (i, j, like.device, like.dtype)
        if key in self._cache:
            return self._cache[key]
        margin, (origin, full) = self.fft_margin, self.frame
        rows, cols = (
            _source_coords(plan.size, o + plan.starts[index], f, margin, self.padding)
            for plan, index, o, f in zip((self.rows, self.cols), (i, j), origin, full)
        )
        weights = _weights(self._coefficients, rows, cols, *self._grid)
        window = _LowRank.of(*self._spectra(like), weights.to(like))
        kept = sum(v.weights.nbytes + v.adjoint_weights.nbytes for v in self._windows_kept())
        if kept + window.weights.nbytes + window.adjoint_weights.nbytes <= self.cache_bytes:
            self._cache[key] = window
        return window

    def _windows_kept(self) -> list[_LowRank]:
        return [v for v in self._cache.values() if isinstance(v, _LowRank)]

    def _apply_A(self, x: torch.Tensor) -> torch.Tensor:
        margin = self.fft_margin
        return blend_windows(
            x,
            self.rows,
            self.cols,
            lambda i, j, xw: _lowrank_A(xw, self._window(i, j, xw), margin, self.padding),
        )

    def _apply_A_T(self, y: torch.Tensor) -> torch.Tensor:
        margin = self.fft_margin
        return blend_windows(
            y,
            self.rows,
            self.cols,
            lambda i, j, yw: _lowrank_A_T(yw, self._window(i, j, yw), margin, self.padding),
        )
