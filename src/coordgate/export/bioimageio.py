"""A BioImage Model Zoo package (model description format 0.5) of a checkpoint.

:func:`export_bioimageio` writes one zip that deepImageJ, QuPath, ilastik, napari and
BioEngine can read: ``rdf.yaml`` (written and validated by ``bioimageio.spec``) with ONNX
and TorchScript weights of the same :class:`~coordgate.export.deblurrer.FrameDeblurrer`,
test input and output tensors made from a real frame (:mod:`coordgate.export.sample`), a
cover image, a README (:mod:`coordgate.export.documentation`), license, authors and the
CoordGate paper as citation. :func:`zoo_test` runs ``bioimageio.core``'s own test of a
package (it loads each weight format and reproduces the test output). Neither needs the
network: the description names no URL (the citation is a DOI, which is not resolved), so
validation reads only the package's own files.

The description declares the input as the whole sensor frame with fixed axis sizes and
no halo, and no pre- or post-processing: the normalisation is inside the weights (see
:mod:`coordgate.export.deblurrer` for why).

Needs the optional extra: ``pip install 'coordgate[bioimageio]'``.
"""

from __future__ import annotations

import getpass
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from coordgate.export.deblurrer import FrameDeblurrer
from coordgate.export.documentation import CITATION, package_readme, package_title
from coordgate.export.formats import (
    INPUT_NAME,
    ONNX_OPSET,
    OUTPUT_NAME,
    export_onnx,
    export_torchscript,
)
from coordgate.export.sample import TestFrame, sample_frame
from coordgate.training.checkpoint import CheckpointConfig

__all__ = ["TOLERANCE", "export_bioimageio", "zoo_test"]

#: The largest difference the package allows between a weight format's output and the
#: test output (absolute, in the frame's intensities; and relative).
TOLERANCE = 1e-4
_FILES = {
    "onnx": "weights.onnx",
    "torchscript": "weights.pt",
    "input": "test_input.npy",
    "output": "test_output.npy",
    "input_sample": "sample_input.tif",
    "output_sample": "sample_output.tif",
    "cover": "cover.png",
    "readme": "README.md",
}


def _require_bioimageio():
    try:
        import bioimageio.core  # noqa: F401
        import bioimageio.spec
    except ImportError as error:
        raise RuntimeError(
            "the bioimageio format needs bioimageio.core: pip install 'coordgate[bioimageio]'"
        ) from error
    return bioimageio.spec


def _axes(deblurrer: FrameDeblurrer, channels: int, name: str) -> list[dict]:
    h, w = deblurrer.frame_size
    return [
        {"type": "batch", "size": 1},
        {"type": "channel", "channel_names": [f"{name}{i}" for i in range(channels)]},
        {"type": "space", "id": "y", "size": h, "description": "sensor rows"},
        {"type": "space", "id": "x", "size": w, "description": "sensor columns"},
    ]


def _tensors(deblurrer: FrameDeblurrer) -> dict[str, list[dict]]:
    h, w = deblurrer.frame_size
    return {
        "inputs": [
            {
                "id": INPUT_NAME,
                "description": f"the whole {h}x{w} sensor frame, in its own intensities",
                "axes": _axes(deblurrer, deblurrer.shape[1], "blurred"),
                "test_tensor": {"source": _FILES["input"]},
                "sample_tensor": {"source": _FILES["input_sample"]},
                "data": {"type": "float32"},
            }
        ],
        "outputs": [
            {
                "id": OUTPUT_NAME,
                "description": "the deblurred frame, in the input's intensities",
                "axes": _axes(deblurrer, deblurrer.out_channels, "deblurred"),
                "test_tensor": {"source": _FILES["output"]},
                "sample_tensor": {"source": _FILES["output_sample"]},
                "data": {"type": "float32"},
            }
        ],
    }


def _description(
    config: CheckpointConfig, deblurrer: FrameDeblurrer, authors: Sequence[str], license: str
) -> dict:
    """The rdf.yaml content (format 0.5), its files named relative to the package."""
    from coordgate.models import count_parameters

    pytorch = torch.__version__.split("+")[0]
    return {
        "format_version": "0.5.12",
        "type": "model",
        "name": package_title(config, deblurrer),
        "description": (
            "Deblurs whole sensor frames of one instrument whose lens blurs with a static, "
            "spatially-varying PSF; a coordgate U-Net, normalisation built in."
        ),
        "authors": [{"name": name} for name in authors],
        "cite": [CITATION],
        "license": license,
        "documentation": {"source": _FILES["readme"]},
        "covers": [{"source": _FILES["cover"]}],
        "tags": ["deblurring", "deconvolution", "spatially-varying", "coordgate", "2d"],
        **_tensors(deblurrer),
        "weights": {
            "torchscript": {"source": _FILES["torchscript"], "pytorch_version": pytorch},
            "onnx": {
                "source": _FILES["onnx"],
                "opset_version": ONNX_OPSET,
                "parent": "torchscript",
                "comment": "exported by coordgate from the same PyTorch module (torch.export)",
            },
        },
        "config": {
            "bioimageio": {
                "reproducibility_tolerance": [
                    {"absolute_tolerance": TOLERANCE, "relative_tolerance": TOLERANCE}
                ],
                "model_parameter_count": count_parameters(deblurrer.network),
                "architecture_type": config.model["name"],
                "task": "deblurring",
            },
            "coordgate": deblurrer.metadata(),
        },
    }


def _cover(frame: np.ndarray, restored: np.ndarray, path: Path) -> None:
    """The cover: the test frame beside its deblurred result (2:1 for a square sensor),
    both on the frame's percentile range, at least 256 pixels high."""
    from PIL import Image

    low, high = np.percentile(frame, [0.5, 99.5])
    pair = np.concatenate([frame, restored], axis=1)
    grey = (np.clip((pair - low) / max(high - low, 1e-12), 0, 1) * 255).astype(np.uint8)
    scale = max(1, -(-256 // frame.shape[0]))
    image = Image.fromarray(grey).resize((grey.shape[1] * scale, grey.shape[0] * scale))
    image.save(path)


def _scores(frame: TestFrame, restored: np.ndarray) -> dict[str, float] | None:
    from coordgate.training.metrics import psnr

    if frame.sharp is None:
        return None
    sharp = torch.from_numpy(frame.sharp)
    return {
        "input": float(psnr(torch.from_numpy(frame.blurred), sharp)),
        "output": float(psnr(torch.from_numpy(restored), sharp)),
    }


def _write_files(
    folder: Path, config: CheckpointConfig, deblurrer: FrameDeblurrer, frame: TestFrame
) -> None:
    """The package's files, written into ``folder``."""
    from coordgate.images import write_tiff

    x = torch.from_numpy(np.ascontiguousarray(frame.blurred, dtype=np.float32))
    if tuple(x.shape[-2:]) != deblurrer.frame_size or x.numel() != np.prod(deblurrer.shape):
        raise ValueError(
            f"the test frame has shape {tuple(x.shape)}; the model takes the whole sensor "
            f"frame {deblurrer.frame_size}"
        )
    x = x.reshape(deblurrer.shape)
    with torch.no_grad():
        y = deblurrer(x)
    np.save(folder / _FILES["input"], x.numpy())
    np.save(folder / _FILES["output"], y.numpy())
    write_tiff(folder / _FILES["input_sample"], x[0, 0].numpy())
    write_tiff(folder / _FILES["output_sample"], y[0, 0].numpy())
    export_onnx(deblurrer, folder / _FILES["onnx"])
    export_torchscript(deblurrer, folder / _FILES["torchscript"])
    restored = y[0, 0].numpy()
    _cover(x[0, 0].numpy(), restored, folder / _FILES["cover"])
    readme = package_readme(config, deblurrer, frame, _scores(frame, restored))
    (folder / _FILES["readme"]).write_text(readme, encoding="utf-8")


def export_bioimageio(
    checkpoint: str | Path,
    path: str | Path,
    *,
    normalisation: str = "checkpoint",
    frame: np.ndarray | None = None,
    authors: Sequence[str] | None = None,
    license: str = "MIT",
) -> Path:
    """Write the zoo package of ``checkpoint`` to ``path`` (a .zip); returns the path.

    ``normalisation`` as for ``coordgate deblur``; ``frame``: a whole (H, W) sensor frame
    of the user's for the test tensors (default: :func:`~coordgate.export.sample.sample_frame`);
    ``authors``: names (default: the user's login name); ``license``: an SPDX identifier.
    Raises ``ValueError`` with bioimageio.spec's report when the description is invalid.
    """
    spec = _require_bioimageio()
    from bioimageio.spec import InvalidDescr, ValidationContext, build_description

    deblurrer, config = FrameDeblurrer.from_checkpoint(checkpoint, normalisation)
    if frame is None:
        test = sample_frame(config, deblurrer.frame_size)
    else:
        test = TestFrame(np.asarray(frame, dtype=np.float32), None, "a frame of the user's")
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="coordgate-bioimageio-") as folder:
        folder = Path(folder)
        _write_files(folder, config, deblurrer, test)
        content = _description(config, deblurrer, authors or [getpass.getuser()], license)
        context = ValidationContext(root=folder, perform_io_checks=True)
        description = build_description(content, context=context)
        if isinstance(description, InvalidDescr):
            raise ValueError(
                "bioimageio.spec rejects the package description:\n"
                + description.validation_summary.format()
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        spec.save_bioimageio_package(description, output_path=path)
    return path


def zoo_test(path: str | Path):
    """``bioimageio.core``'s test of the package at ``path`` (format, loading, and each
    weight format reproducing the test output): its ``ValidationSummary``
    (``.status == "passed"`` when it passes)."""
    _require_bioimageio()
    from bioimageio.core import test_model

    return test_model(Path(path))
