"""Fig. 1: position encoding by 'same' zero padding through plain convolutions and U-Nets."""

from __future__ import annotations

import json

import pytest
import torch

from coordgate.cli import main
from coordgate.experiments.padding import (
    convolutions_to_centre,
    judge,
    position_reach,
    rejudge,
    run_study,
    uniform_convolutions,
    uniform_unet,
)


def _reach(network, shape):
    """position_reach of ``network(start, mode=...)`` on a uniform image of ``shape``."""
    image = network(torch.ones(shape, dtype=torch.float64), mode="values")
    return position_reach(image, network(torch.zeros(shape, dtype=torch.float64), mode="padding"))


def test_the_defect_seeps_in_one_pixel_per_convolution():
    image = torch.ones(1, 1, 13, 11, dtype=torch.float64)
    touched = uniform_convolutions(torch.zeros_like(image), 4, mode="padding")
    for k, stage in enumerate(uniform_convolutions(image, 4), 1):
        reach = position_reach(stage, touched[k - 1])
        assert reach["reach_px"] == k
        assert reach["position_fraction"] == pytest.approx(1 - (13 - 2 * k) * (11 - 2 * k) / 143)
        interior = stage[0, 0, k:-k, k:-k]
        torch.testing.assert_close(interior, torch.ones_like(interior))
        assert stage[0, 0, 0, 0] < stage[0, 0, 0, 5] < 1
        torch.testing.assert_close(stage, stage.flip(-1).flip(-2))


def test_reach_is_exact_where_the_defect_is_below_float_resolution():
    # After 40 convolutions the defect 20 px in is ~(1/3)**40, invisible in float64.
    reach = _reach(
        lambda start, mode: uniform_convolutions(start, 20, mode=mode)[-1], (1, 1, 41, 41)
    )
    assert reach["reach_px"] == 20 and reach["position_fraction"] < 1
    assert convolutions_to_centre(41) == 21 and convolutions_to_centre(64, 4) < 21


def test_position_reach_validates_shapes():
    with pytest.raises(ValueError, match="touched"):
        position_reach(torch.ones(1, 1, 9, 9), torch.zeros(1, 1, 9, 8))


@pytest.mark.parametrize("skips", [True, False])
def test_unet_reaches_the_centre_with_few_convolutions(skips):
    shape = (1, 1, 48, 32)
    assert uniform_unet(torch.ones(shape), 3, convs=1, skips=skips).shape == shape
    # 6 convolutions in all, yet the centre (16 px from the border) carries position.
    unet = _reach(
        lambda start, mode: uniform_unet(start, 3, convs=1, skips=skips, mode=mode), shape
    )
    plain = _reach(lambda start, mode: uniform_convolutions(start, 6, mode=mode)[-1], shape)
    assert unet["position_fraction"] == 1.0 and plain["position_fraction"] < 1


def test_unet_skips_change_the_output():
    image = torch.ones(1, 1, 16, 16, dtype=torch.float64)
    assert not torch.allclose(uniform_unet(image, 2), uniform_unet(image, 2, skips=False))


@pytest.mark.parametrize(
    ("image", "depth", "match"),
    [
        (torch.ones(1, 1, 20, 16), 3, "divisible by 8"),
        (torch.ones(1, 1, 16, 16), 0, "depth"),
        (torch.ones(16, 16), 2, r"\(N, 1, H, W\)"),
        (torch.ones(1, 2, 16, 16), 2, r"\(N, 1, H, W\)"),
    ],
)
def test_unet_validates_its_input(image, depth, match):
    with pytest.raises(ValueError, match=match):
        uniform_unet(image, depth)
    with pytest.raises(ValueError, match="mode"):
        uniform_unet(torch.ones(1, 1, 16, 16), 2, mode="exact")


def test_padding_study_cli(tmp_path):
    assert main(["reproduce", "padding", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert [c["verdict"] for c in result["claims"]] == ["supported", "supported"]
    plain = next(c for c in result["cases"] if c["panel"] == "plain")
    assert plain["reach_px"] == plain["convolutions"] == 24
    assert (tmp_path / "fig1_padding.png").stat().st_size > 1000
    assert "verdict: **supported**" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "results.csv").read_text().startswith("name,panel,")


def test_padding_claims_carry_rules_and_rejudging_reproduces_them(tmp_path):
    result = run_study(tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == result and saved["convolutions_to_centre"] == {
        "plain": 32,
        "U-Net(2)": 16,
        "U-Net(4)": 8,
    }
    assert all(claim["rule"] for claim in saved["claims"])
    assert [c.to_dict() for c in judge(saved)] == saved["claims"]
    report = (tmp_path / "report.md").read_text()
    assert report.count("   - Rule: ") == 2
    assert rejudge(tmp_path) == saved
    assert (tmp_path / "report.md").read_text() == report
