"""The deblurring report's generated lines: who is below the blurred input, and why."""

import pytest

from coordgate.experiments._deblur_report import harm_lines

BANDS = {"real_psnr": 27.0, "real_inner_psnr": 30.0, "real_edge_psnr": 25.0}


@pytest.mark.parametrize("origins", ["uniform", "covering"])
def test_harm_lines_blame_edge_crops_only_where_origins_starve_the_edge(origins):
    row = {"name": "cg-unet3", "params": 32_000, **BANDS, "real_edge_psnr": 24.0}
    results = {
        "blurred_input": BANDS,
        "preset": {"noise": False, "crop": 64, "crop_origins": origins},
        "models": [row],
    }
    lines = harm_lines(results)
    (named,) = [line for line in lines if "cg-unet3" in line]
    assert "edge band" in named and "24.00 vs 25.00 dB" in named
    assert ("few training crops" in named) == (origins == "uniform")
    results["models"] = [{**row, "real_edge_psnr": 25.5}]
    assert harm_lines(results) == [
        "No model is below the blurred input in any band of the real images.",
        "",
    ]
