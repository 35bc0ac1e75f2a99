"""MultiWienerNet (Yanny et al., Optica 2022): learnable Wiener deconvolutions + a U-Net.

The PSF is measured at K field points; one Wiener deconvolution per PSF gives K images,
each sharp near where its PSF was measured, and a U-Net(6) with K input channels
combines and refines them (paper §IV.B). Both the Wiener filters (initialised from the
PSFs) and their regularisers are learned; the regularisers stay positive through a
softplus. The deconvolution runs in the frequency domain on the image zero-padded by
``padding`` pixels per side, so that light from one edge does not wrap around onto the
other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coordgate.frames import FrameLike
from coordgate.models.registry import register_model
from coordgate.models.unet import UNet, check_image, zero_head

__all__ = ["MultiWienerNet", "WienerDeconvolution", "psfs_from_field"]


def _as_psf_stack(psfs: Any) -> torch.Tensor:
    """PSFs (K, k, k) or (ny, nx, k, k) as a tensor, array or nested lists (JSON configs)
    -> float32 (K, k, k), each with unit sum."""
    try:
        if isinstance(psfs, torch.Tensor):
            stack = psfs.detach().to(device="cpu", dtype=torch.float64)
        else:
            stack = torch.from_numpy(np.asarray(psfs, dtype=np.float64))
    except (TypeError, ValueError) as error:
        raise ValueError(f"psfs must be numbers of shape (K, k, k): {error}") from None
    if stack.ndim == 4:
        stack = stack.reshape(-1, *stack.shape[2:])
    if stack.ndim != 3 or stack.shape[0] < 1 or stack.shape[1] != stack.shape[2]:
        raise ValueError(
            f"psfs must be (K, k, k) or (ny, nx, k, k) square PSFs, got {tuple(stack.shape)}"
        )
    sums = stack.sum(dim=(1, 2))
    if not torch.isfinite(stack).all() or (sums <= 0).any():
        raise ValueError("psfs must be finite with a positive sum each")
    return (stack / sums[:, None, None]).float()


def psfs_from_field(psf_field: Any = None, grid: int = 3) -> torch.Tensor:
    """The PSFs (grid * grid, k, k) of a PSF field on a grid x grid of field points.

    ``psf_field``: a :class:`coordgate.optics.PSFField`, its ``config()`` dict, or None
    for the default lens (``PSFField.default()``).
    """
    from coordgate.optics.field import PSFField

    if psf_field is None:
        psf_field = PSFField.default()
    elif isinstance(psf_field, Mapping):
        psf_field = PSFField.from_config(dict(psf_field))
    elif not isinstance(psf_field, PSFField):
        raise ValueError(
            f"psf_field must be a PSFField, its config dict or None, got {type(psf_field).__name__}"
        )
    return _as_psf_stack(psf_field.grid(grid))


class WienerDeconvolution(nn.Module):
    """K learnable Wiener deconvolutions of a one-channel image.

    x: (N, 1, H, W) -> (N, K, H, W); channel k is ``F^-1[conj(H_k) Y / (|H_k|^2 + l_k)]``
    with H_k the spectrum of the learnable filter k (initialised from PSF k, centred on its
    middle pixel) and l_k = softplus(rho_k) > 0.
    """

    def __init__(
        self, psfs: torch.Tensor, regularization: float = 1e-2, padding: int | None = None
    ) -> None:
        super().__init__()
        stack = _as_psf_stack(psfs)
        if not (isinstance(regularization, (int, float)) and regularization > 0):
            raise ValueError(f"regularization must be a positive number, got {regularization!r}")
        size = stack.shape[-1]
        padding = size if padding is None else padding
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
        self.padding, self.psf_size = padding, size
        self.psfs = nn.Parameter(stack)
        # softplus^-1, so that the regulariser starts at exactly ``regularization``
        rho = math.log(math.expm1(regularization))
        self.rho = nn.Parameter(torch.full((stack.shape[0],), rho))

    @property
    def channels(self) -> int:
        return self.psfs.shape[0]

    @property
    def regularization(self) -> torch.Tensor:
        """The non-negative regularisers l_k, shape (K,)."""
        return F.softplus(self.rho)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, psf_size={self.psf_size}, padding={self.padding}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, H, W) -> (N, K, H, W)."""
        from coordgate.optics.fourier import fast_size, kernel_spectra

        h, w = x.shape[-2:]
        p = self.padding
        shape = tuple(fast_size(max(n + 2 * p, self.psf_size)) for n in (h, w))
        # FFTs in at least float32: half precision spectra lose the small regularisers
        compute = torch.promote_types(x.dtype, torch.float32)
        spectra = kernel_spectra(self.psfs.to(compute), shape)
        regularization = self.regularization.to(compute)[:, None, None]
        wiener = spectra.conj() / (spectra.real.square() + spectra.imag.square() + regularization)
        image = torch.fft.rfft2(F.pad(x.to(compute), (p, p, p, p)), s=shape)
        y = torch.fft.irfft2(image * wiener, s=shape)
        return y[..., p : p + h, p : p + w].to(x.dtype)


class MultiWienerNet(nn.Module):
    """Wiener deconvolutions with K PSFs feeding a U-Net(depth) with K input channels.

    x: (N, 1, H, W) -> (N, out_channels, H, W), H and W divisible by ``required_multiple``.
    ``origin`` / ``full_size`` are accepted and ignored: the PSFs carry the positions.
    ``residual=True`` adds the input image to the output, as for :class:`UNet`.
    """

    uses_coordinates = False
    in_channels = 1
    model_spec: dict[str, object] | None = None

    def __init__(
        self,
        psfs: torch.Tensor,
        *,
        depth: int = 6,
        base_channels: int = 16,
        out_channels: int = 1,
        regularization: float = 1e-2,
        padding: int | None = None,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if residual and out_channels != 1:
            raise ValueError(f"residual=True needs out_channels == 1, got {out_channels}")
        self.residual = bool(residual)
        self.wiener = WienerDeconvolution(psfs, regularization, padding)
        self.unet = UNet(depth, self.wiener.channels, out_channels, base_channels)
        if self.residual:
            zero_head(self.unet.head)
        self.out_channels, self.depth = out_channels, depth

    @property
    def required_multiple(self) -> int:
        return self.unet.required_multiple

    @property
    def receptive_field(self) -> int:
        """The U-Net's receptive field widened by the padded Wiener window (approximate:
        a Wiener filter reaches further, but its tails beyond the padding are small)."""
        return self.unet.receptive_field + 2 * self.wiener.padding

    @property
    def activation_channels(self) -> int:
        """Peak floats per input pixel: the U-Net's plus the K Wiener outputs and their
        complex spectra on the padded grid (about 6 per channel)."""
        return self.unet.activation_channels + 6 * self.wiener.channels

    def forward(
        self, x: torch.Tensor, origin: FrameLike = None, full_size: FrameLike = None
    ) -> torch.Tensor:
        """x: (N, 1, H, W) -> (N, out_channels, H, W)."""
        check_image(x, 1, self.required_multiple, f"MultiWienerNet(U-Net({self.depth}))")
        y = self.unet(self.wiener(x))
        return y + x if self.residual else y


@register_model(
    "multiwiener-unet6",
    "MultiWienerNet: learnable Wiener deconvolutions with a grid of PSFs + U-Net(6): "
    "psfs (K,k,k) or psf_field + grid (default lens, 3x3), base_channels, regularization",
    ("psfs", "psf_field", "grid", "base_channels", "regularization", "padding", "residual"),
)
def multiwiener_unet6(
    *,
    psfs: torch.Tensor | np.ndarray | list | None = None,
    psf_field: Any = None,
    grid: int = 3,
    base_channels: int = 16,
    regularization: float = 1e-2,
    padding: int | None = None,
    residual: bool = False,
) -> MultiWienerNet:
    if psfs is not None and psf_field is not None:
        raise ValueError("give psfs or psf_field, not both")
    stack = psfs_from_field(psf_field, grid) if psfs is None else psfs
    return MultiWienerNet(
        stack,
        base_channels=base_channels,
        regularization=regularization,
        padding=padding,
        residual=residual,
    )
