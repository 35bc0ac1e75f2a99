"""Data: sharp images (synthetic microscopy, folders, bundled samples), normalisation, and
blurred/sharp pair datasets that keep each sample's sensor position (image files are read
and written by :mod:`coordgate.images`)."""

from coordgate.data.folder import FolderFrames, RandomCrops, find_images
from coordgate.data.normalization import PercentileNormalizer
from coordgate.data.pairs import SPLITS, NoiseModel, PairCache, PairDataset, build_pairs
from coordgate.data.samples import SAMPLES, sample_image, sample_images
from coordgate.data.sensor import as_size, crop_at, dihedral, dihedral_origin, dihedral_size
from coordgate.data.synthetic import MicroscopyStyle, SyntheticMicroscopy, synthetic_microscopy

__all__ = [
    "SAMPLES",
    "SPLITS",
    "FolderFrames",
    "MicroscopyStyle",
    "NoiseModel",
    "PairCache",
    "PairDataset",
    "PercentileNormalizer",
    "RandomCrops",
    "SyntheticMicroscopy",
    "as_size",
    "build_pairs",
    "crop_at",
    "dihedral",
    "dihedral_origin",
    "dihedral_size",
    "find_images",
    "sample_image",
    "sample_images",
    "synthetic_microscopy",
]
