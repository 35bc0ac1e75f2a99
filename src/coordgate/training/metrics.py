"""Image-quality metrics on tensors with values in [0, data_range]: PSNR and SSIM."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim"]


def _check_pair(name: str, prediction: torch.Tensor, target: torch.Tensor) -> None:
    if prediction.shape != target.shape:
        raise ValueError(
            f"{name} needs prediction and target of one shape, got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )


def _reduce(values: torch.Tensor, reduce_dims: tuple[int, ...] | None) -> torch.Tensor:
    return values.mean() if reduce_dims is None else values.mean(dim=reduce_dims)


def psnr(
    prediction: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    reduce_dims: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` (paper §IV.A).

    The MSE is taken over ``reduce_dims`` (default: every axis, a scalar); pass e.g.
    ``(1, 2, 3)`` for one PSNR per image of an (N, C, H, W) batch.
    """
    _check_pair("psnr", prediction, target)
    mse = _reduce((prediction - target).double().square(), reduce_dims)
    return 10 * torch.log10(data_range**2 / mse)


def ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    reduce_dims: tuple[int, ...] | None = None,
    *,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) over the last two axes (H, W).

    prediction, target: (..., H, W). The definition is scikit-image's
    ``structural_similarity`` default: a ``win_size`` x ``win_size`` uniform window,
    sample (co)variances, constants ``(k1 * data_range)^2`` and ``(k2 * data_range)^2``,
    and the SSIM map averaged over the interior where the window fits (the border of
    ``win_size // 2`` pixels is left out, so padding never matters). The map, of shape
    (..., H - win_size + 1, W - win_size + 1), is averaged over ``reduce_dims`` (default:
    every axis, a scalar); ``(1, 2, 3)`` gives one SSIM per image of an (N, C, H, W)
    batch, the mean over channels as scikit-image's ``channel_axis`` does.
    """
    _check_pair("ssim", prediction, target)
    if prediction.ndim < 2:
        raise ValueError(f"ssim needs inputs of shape (..., H, W), got {tuple(prediction.shape)}")
    if win_size < 2 or win_size % 2 == 0:
        raise ValueError(f"ssim win_size must be odd and at least 3, got {win_size}")
    *lead, height, width = prediction.shape
    if min(height, width) < win_size:
        raise ValueError(
            f"ssim needs images of at least {win_size}x{win_size} pixels, got {height}x{width}"
        )
    if data_range <= 0:
        raise ValueError(f"ssim data_range must be positive, got {data_range}")
    # float64 keeps the variance differences (E[x^2] - E[x]^2) accurate
    x = prediction.double().reshape(-1, 1, height, width)
    y = target.double().reshape(-1, 1, height, width)
    window = F.avg_pool2d(
        torch.cat([x, y, x * x, y * y, x * y], dim=1), kernel_size=win_size, stride=1
    )
    ux, uy, uxx, uyy, uxy = window.unbind(dim=1)
    cov_norm = win_size**2 / (win_size**2 - 1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return _reduce(ssim_map.reshape(*lead, *ssim_map.shape[-2:]), reduce_dims)
