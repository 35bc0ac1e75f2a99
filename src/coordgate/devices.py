"""Where a model runs: the one reading of a ``--device`` / ``device=`` option.

>>> resolve_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "supports_bf16"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; anything else is checked to exist."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but CUDA is not available here")
    return resolved


def supports_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast has fast kernels on ``device``: a CUDA device with bf16, or a
    CPU on which oneDNN runs bf16 (AVX-512 on x86, bf16 extensions on Arm)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False
