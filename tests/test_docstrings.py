"""The runnable ``>>>`` examples in the public API's docstrings run and print what they say."""

import doctest
import importlib

import pytest

# module -> the fewest examples it must hold
MODULES = {
    "coordgate.frames": 4,
    "coordgate.inference": 5,
    "coordgate.tiling": 6,
    "coordgate.deconvolution": 3,
    "coordgate.optics.blur": 5,
    "coordgate.optics.field": 1,
    "coordgate.optics.noise": 3,
    "coordgate.optics.restoration": 6,
    "coordgate.images": 1,
    "coordgate.layers.gate": 4,
    "coordgate.layers.conv": 3,
    "coordgate.layers.coordconv": 3,
    "coordgate.layers.local": 3,
    "coordgate.layers.pac": 2,
    "coordgate.layers.frozen": 4,
    "coordgate.export.deblurrer": 3,
    "coordgate.training.fit": 1,
    "coordgate.training.in_memory": 4,
    "coordgate.training.plateau": 3,
    "coordgate.training.stopping": 3,
    "coordgate.training.checkpoint": 2,
    "coordgate.devices": 1,
    "coordgate.deblurring": 4,
}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= MODULES[name] and result.failed == 0
