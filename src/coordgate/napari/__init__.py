"""The napari plugin (the optional extra ``coordgate[napari]``).

Widgets to deblur with a trained checkpoint, deconvolve with a PSF field (no training),
simulate a spatially-varying blur and calibrate a PSF field from beads; a reader that
shows a PSF field ``.npz`` as a montage; and sample data. The contributions are declared
in ``napari.yaml`` (npe2), registered under the ``napari.manifest`` entry point.

Each widget only wires napari layers to plain functions of the modules here (``layers``,
``deblur``, ``deconvolve``, ``simulate``, ``fields``, ``calibrate``, ``samples``), which
import neither napari nor Qt and hold the logic the tests check. Only ``widgets``
imports Qt, napari and magicgui. Importing this package imports nothing else, so the
core library keeps working where napari is not installed.
"""
