"""``coordgate export``: ONNX and TorchScript equal ``coordgate deblur`` on the same frame,
refuse a crop, and the BioImage Model Zoo package passes bioimageio.core's own test, offline."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from coordgate.cli import main
from coordgate.data.normalization import PercentileNormalizer
from coordgate.export import FrameDeblurrer, PercentileBounds, export_onnx, export_torchscript
from coordgate.layers import CoordGate
from coordgate.layers.frozen import FrozenGate, freeze_gates
from coordgate.models import build_model
from coordgate.training import CheckpointConfig, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = sorted(ROOT.glob("results/*/checkpoints/*.safetensors"))
SENSOR = (40, 36)


def tiny_checkpoint(tmp_path, name: str, normalisation: PercentileNormalizer | None) -> str:
    """A tiny model's checkpoint, its weights (and gates) away from their initial values."""
    torch.manual_seed(5)
    model = build_model(name, **({} if name == "care-unet" else {"base_channels": 2}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.03 * torch.randn_like(p))
    config = CheckpointConfig(
        model.model_spec,
        full_size=SENSOR,
        normalisation=None if normalisation is None else normalisation.to_dict(),
    )
    return str(save_checkpoint(tmp_path / f"{name}.safetensors", model, config))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> str:
    """A run directory of ``coordgate train`` (cg-unet3, one epoch on a tiny pair cache)."""
    from coordgate.data.pairs import build_pairs

    root = tmp_path_factory.mktemp("trained")
    build_pairs(root / "pairs", n=6, size=(24, 32), splits=(0.5, 0.25, 0.25), progress=False)
    args = ["train", "--model", "cg-unet3", "--data", str(root / "pairs"), "--out"]
    args += [str(root / "run"), "--base-channels", "2", "--batch-size", "2", "--epochs", "1"]
    assert main([*args, "--no-progress"]) == 0
    return str(root / "run")


def frame_of(checkpoint: str, seed: int = 0) -> np.ndarray:
    """A raw frame of the checkpoint's sensor size, far from the [0, 1] range."""
    from coordgate.training import read_checkpoint_config

    size = read_checkpoint_config(checkpoint).full_size
    return (np.random.default_rng(seed).random(size) * 300 + 20).astype(np.float32)


def cli_deblur(tmp_path, checkpoint: str, frame: np.ndarray, *options: str) -> np.ndarray:
    source, out = tmp_path / "frame.tif", tmp_path / "deblurred"
    tifffile.imwrite(source, frame)
    assert main(["deblur", "--checkpoint", checkpoint, str(source), "-o", str(out), *options]) == 0
    return tifffile.imread(out / "frame.tif")


def run_onnx(path: Path, frame: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"frame": frame[None, None]})[0][0, 0]


def run_torchscript(path: Path, frame: np.ndarray) -> np.ndarray:
    module = torch.jit.load(str(path))
    with torch.no_grad():
        return module(torch.from_numpy(frame)[None, None])[0, 0].numpy()


RUNNERS = {"onnx": (".onnx", run_onnx), "torchscript": (".pt", run_torchscript)}


@pytest.mark.parametrize("format", RUNNERS)
def test_export_of_a_trained_checkpoint_equals_coordgate_deblur(trained, format, tmp_path):
    suffix, run = RUNNERS[format]
    out = tmp_path / f"model{suffix}"
    assert main(["export", trained, "--format", format, "-o", str(out)]) == 0
    frame = frame_of(trained)
    expected = cli_deblur(tmp_path, trained, frame)
    assert np.abs(expected - frame).max() > 0.1  # the trained model changes the frame
    difference = np.abs(run(out, frame) - expected).max()
    print(f"max |{format} - coordgate deblur| = {difference:.3g}")
    assert difference < 1e-4


@pytest.mark.parametrize(
    ("name", "normalisation", "option"),
    [
        ("unet3", PercentileNormalizer(vmin=20.0, vmax=320.0), "checkpoint"),  # fixed mapping
        ("care-unet", PercentileNormalizer(low=2, high=99, clip=True), "checkpoint"),
        ("cg-unet3", None, "none"),
    ],
)
def test_exports_build_in_each_normalisation(name, normalisation, option, tmp_path):
    checkpoint = tiny_checkpoint(tmp_path, name, normalisation)
    frame = frame_of(checkpoint, seed=1) / (300 if option == "none" else 1)
    expected = cli_deblur(tmp_path, checkpoint, frame, "--normalisation", option)
    deblurrer, _ = FrameDeblurrer.from_checkpoint(checkpoint, option)
    for format, (suffix, run) in RUNNERS.items():
        path = tmp_path / f"{name}{suffix}"
        (export_onnx if format == "onnx" else export_torchscript)(deblurrer, path)
        np.testing.assert_allclose(run(path, frame), expected, atol=1e-4, rtol=1e-4)


def test_the_onnx_graph_holds_the_gates_as_constants(tmp_path):
    onnx = pytest.importorskip("onnx")
    checkpoint = tiny_checkpoint(tmp_path, "cg-unet3", PercentileNormalizer())
    deblurrer, _ = FrameDeblurrer.from_checkpoint(checkpoint)
    proto = onnx.load(str(export_onnx(deblurrer, tmp_path / "m.onnx")))
    operators = {node.op_type for node in proto.graph.node}
    assert "Gelu" not in operators and "Gemm" not in operators  # no coordinate encoder
    assert "Mul" in operators and "TopK" in operators  # gates; per-frame percentiles
    (shape,) = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
    assert shape == [1, 1, *SENSOR]
    metadata = json.loads({p.key: p.value for p in proto.metadata_props}["coordgate"])
    assert metadata["uses_coordinates"] and metadata["input_shape"] == [1, 1, *SENSOR]


def test_a_crop_without_its_position_is_refused(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    checkpoint = tiny_checkpoint(tmp_path, "cg-unet3", PercentileNormalizer())
    crop = frame_of(checkpoint)[:32, :32]  # a valid U-Net size, the wrong sensor position
    for format, (suffix, run) in RUNNERS.items():
        out = tmp_path / f"m{suffix}"
        assert main(["export", checkpoint, "--format", format, "-o", str(out)]) == 0
        refusal = ort.capi.onnxruntime_pybind11_state.InvalidArgument
        expected = refusal if format == "onnx" else torch.jit.Error
        with pytest.raises(expected, match="invalid dimensions|the whole sensor frame"):
            run(out, crop)


def test_frozen_gates_equal_the_live_ones_and_refuse_another_frame():
    model = build_model("cg-unet3", base_channels=2).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.rand(1, 1, *SENSOR)
    frozen = freeze_gates(model, x.shape)
    assert sum(isinstance(m, FrozenGate) for m in frozen.modules()) == 4
    assert not any(isinstance(m, CoordGate) for m in frozen.modules())
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), model(x), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="frozen for"):
        frozen(x, origin=(8, 0), full_size=(80, 36))


@pytest.mark.parametrize("pixels", [37 * 29, (1 << 20) + 3 * 1000])
def test_percentile_bounds_are_the_normalisers_own(pixels):
    frame = torch.from_numpy(np.random.default_rng(2).gamma(2.0, size=pixels).astype("f4"))
    normaliser = PercentileNormalizer(low=1, high=99.8)
    fitted = normaliser.fitted_to(frame)
    vmin, scale = PercentileBounds(normaliser, pixels)(frame[None])
    assert abs(float(vmin) - fitted.vmin) < 1e-5
    assert abs(float(scale) - (fitted.vmax - fitted.vmin)) < 1e-4


def test_export_errors_say_what_to_do(tmp_path, capsys):
    bare = tiny_checkpoint(tmp_path, "unet3", None)
    args = ["export", bare, "--format", "onnx", "-o", str(tmp_path / "m.onnx")]
    assert main(args) == 2
    assert "records no normalisation" in capsys.readouterr().err
    assert main([*args[:-1], str(tmp_path / "m.pt"), "--normalisation", "none"]) == 2
    assert "written to a .onnx file" in capsys.readouterr().err


def _require_bioimageio() -> None:
    """Skip where the bioimageio extra is not installed; CI installs it and sets
    ``COORDGATE_REQUIRE_BIOIMAGEIO=1``, where a missing one is an error."""
    if os.environ.get("COORDGATE_REQUIRE_BIOIMAGEIO") != "1":
        pytest.importorskip("bioimageio.core", reason="the bioimageio extra is not installed")


def _offline(monkeypatch) -> list:
    """No connection can be opened; the attempts (which a library may turn into mere
    warnings) are listed in the returned list."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:2] or args[:1])
        raise OSError(f"network use in an offline test: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_bioimageio_package_passes_the_zoos_own_test_offline(trained, tmp_path, monkeypatch):
    _require_bioimageio()
    from zipfile import ZipFile

    from coordgate.export.bioimageio import TOLERANCE, zoo_test

    attempts = _offline(monkeypatch)
    out = tmp_path / "package.zip"
    args = ["export", trained, "--format", "bioimageio", "-o", str(out), "--no-test"]
    assert main([*args, "--author", "A. Tester"]) == 0
    summary = zoo_test(out)
    print(summary.format())
    assert summary.status == "passed", summary.format()
    assert not attempts  # it fetched nothing, not even in vain
    tested = {d.name for d in summary.details if d.status == "passed"}
    assert {f"Reproduce test outputs from test inputs ({w})" for w in RUNNERS} <= tested
    with ZipFile(out) as package:
        names = set(package.namelist())
        readme = package.read("README.md").decode()
        test_input = np.load(package.open("test_input.npy"))
    assert {"rdf.yaml", "weights.onnx", "weights.pt", "cover.png"} <= names
    for fact in ("Validation", "PSNR", "24x32", "Lens", "Training data", "2401.04680"):
        assert fact in readme
    # the test input is a real frame; the package's output is coordgate deblur's
    expected = cli_deblur(tmp_path, trained, test_input[0, 0])
    with ZipFile(out) as package:
        package.extract("weights.onnx", tmp_path)
    assert np.abs(run_onnx(tmp_path / "weights.onnx", test_input[0, 0]) - expected).max() < (
        TOLERANCE
    )
    tifffile.imwrite(tmp_path / "crop.tif", test_input[0, 0, :16])
    assert main([*args, "--frame", str(tmp_path / "crop.tif")]) == 2  # not a whole frame


@pytest.mark.skipif(not REFERENCES, reason="no reference checkpoint committed yet")
def test_a_reference_checkpoint_exports_in_every_format(tmp_path):
    reference = str(next((p for p in REFERENCES if p.stem == "cg-unet3"), REFERENCES[0]))
    frame = frame_of(reference)
    expected = cli_deblur(tmp_path, reference, frame)
    for format, (suffix, run) in RUNNERS.items():
        out = tmp_path / f"reference{suffix}"
        assert main(["export", reference, "--format", format, "-o", str(out)]) == 0
        # raw units: outputs reach ~1e3, where float32's own step is ~6e-5; so 1e-5 of the
        # output's range (measured: 1.4e-6 of it for ONNX)
        assert np.abs(run(out, frame) - expected).max() < 1e-5 * np.ptp(expected)
    _require_bioimageio()
    out = tmp_path / "reference.zip"
    assert main(["export", reference, "--format", "bioimageio", "-o", str(out)]) == 0
