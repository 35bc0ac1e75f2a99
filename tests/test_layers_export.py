"""A small network with CoordGateConv exports to ONNX and TorchScript and runs the same."""

import numpy as np
import pytest
import torch
from torch import nn

from coordgate import CoordGateConv
from tests.helpers import randomise


class TinyNet(nn.Module):
    def __init__(self, mode: str) -> None:
        super().__init__()
        options = dict(mode=mode, size=(24, 20)) if mode == "map" else dict(mode=mode)
        self.body = CoordGateConv(1, 4, 3, basis_channels=6, **options)
        self.head = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


@pytest.mark.parametrize("mode", ["mlp", "lowres", "map"])
def test_onnx_export_matches_pytorch(mode, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = randomise(TinyNet(mode)).eval()
    x = torch.randn(2, 1, 24, 20)
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(onnx_out, expected, atol=1e-4)


def test_torch_jit_trace_and_export():
    model = randomise(TinyNet("mlp")).eval()
    x = torch.randn(1, 1, 24, 20)
    with torch.no_grad():
        expected = model(x)
        traced = torch.jit.trace(model, (x,))
        assert torch.allclose(traced(x), expected, atol=1e-6)
        exported = torch.export.export(model, (x,))
        assert torch.allclose(exported.module()(x), expected, atol=1e-6)
