"""What every run records next to its results: versions, machine, time."""

from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

__all__ = ["environment", "package_versions"]

_PACKAGES = ("coordgate", "torch", "numpy", "scikit-image", "tifffile", "safetensors")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on (missing ones omitted)."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else the platform's processor."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, object]:
    """Machine, device and versions, for ``results.json`` files and checkpoints."""
    cuda = torch.cuda.is_available()
    return {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        # float kernels differ between CPU models: same seed, same numbers on the same model
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "numpy": np.__version__,
        "versions": package_versions(),
    }
