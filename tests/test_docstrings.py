"""The runnable ``>>>`` examples in the public API's docstrings run and print what they say."""

import doctest
import importlib

import pytest

# module -> the fewest examples it must hold
MODULES = {
    "coordgate.frames": 4,
    "coordgate.inference": 5,
    "coordgate.layers.gate": 4,
    "coordgate.layers.conv": 3,
    "coordgate.layers.coordconv": 3,
    "coordgate.layers.local": 3,
    "coordgate.layers.pac": 2,
    "coordgate.training.fit": 1,
}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= MODULES[name] and result.failed == 0
