"""Shared fixtures: a ``device`` fixture that adds CUDA when present, and fixed seeds.

Tests use tiny tensors, for which one torch thread is fastest and immune to the thread
oversubscription of a busy 2-core machine.
"""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
