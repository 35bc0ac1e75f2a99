"""The gate width study end to end at a tiny size, and its claim on set numbers."""

import json
from dataclasses import replace

from coordgate.claims import EQUIVALENCE_DB
from coordgate.experiments import gate_width

TINY = replace(
    gate_width.PRESETS["quick"].with_training(epochs=1, batch_size=4), frame=64, crop=32,
    images=10, base_channels=2, crops_per_frame=1, seeds=1, headline_seeds=1,
)  # fmt: skip


def test_both_gate_widths_train_on_each_lens_and_the_outputs_follow(tmp_path):
    results = gate_width.run_study(TINY, tmp_path, lenses=("tilted",), progress=False)
    (lens,) = results["lenses"]
    assert set(lens["models"]) == set(gate_width.MODELS)
    assert lens["models"]["cg-unet3-narrow"]["params"] < lens["models"]["cg-unet3"]["params"]
    assert [(c["a"], c["b"]) for c in lens["comparisons"]] == [("cg-unet3-narrow", "cg-unet3")]
    step = results["training_step"]
    assert set(step["ratios"]) == {"cg-unet3 / unet3", "cg-unet3-narrow / unet3"}
    assert all(ratio > 0 for ratio in step["ratios"].values())
    stored = json.loads((tmp_path / "results.json").read_text())
    (claim,) = stored["claims"]
    (row,) = stored["lenses"][0]["comparisons"]
    like = abs(row["delta"]) <= max(EQUIVALENCE_DB, 2 * row["uncertainty"])
    assert claim["verdict"] == ("supported" if like else "not supported")
    assert claim["rule"] and "tilted" in claim["evidence"]
    report = (tmp_path / "report.md").read_text()
    assert "| tilted |" in report and "Training step" in report


def _results(delta, u):
    row = {"a": "cg-unet3-narrow", "b": "cg-unet3", "delta": delta, "uncertainty": u,
           "seed_deltas": [delta], "verdict": "within noise", "text": "narrow − wide"}  # fmt: skip
    return {"lenses": [{"name": "defocus", "comparisons": [row]}]}


def test_narrow_gates_perform_like_wide_ones_only_within_the_equivalence_margin():
    (like,) = gate_width.gate_width_claims(_results(-0.05, 0.04))
    assert like.verdict == "supported"
    (unlike,) = gate_width.gate_width_claims(_results(-0.6, 0.1))
    assert unlike.verdict == "not supported"
