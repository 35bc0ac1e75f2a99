"""The deblurring study end to end at a tiny size: outputs, report, reuse of trained models."""

import json
import shutil
from dataclasses import replace

import pytest

from coordgate.cli import main
from coordgate.experiments.deblur import PRESETS, deblur_claims, run_study
from coordgate.training import load_checkpoint

TINY = replace(
    PRESETS["quick"].with_training(epochs=2, batch_size=4, time_budget_s=None), frame=32,
    images=20, base_channels=2, models=("unet3", "cg-unet3"), headline_seeds=2,
    rl_max_iterations=3,
)  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("deblur")
    return out, run_study(TINY, out, progress=False)


def test_outputs_and_results_shape(study):
    out, results = study
    for name in (
        "results.json",
        "results.csv",
        "report.md",
        "fig4b.png",
        "fig5.png",
        "fig5_real.png",
        "fig6.png",
        "fig7.png",
        "error_vs_position.png",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["preset"]["name"] == "quick"
    assert [m["name"] for m in saved["models"]] == ["unet3", "cg-unet3", "sv-wiener", "sv-rl"]
    networks, classical = saved["models"][:2], saved["models"][2:]
    for row in classical:  # tuned on the val split: the setting and the curve it was chosen on
        assert row["params"] == 0 and row["epochs"] == 0 and row["val_psnr"]
        assert row["stopped"].startswith(("balance", "iterations"))
        assert len(row["psnr_frames"]) == 1 and row["psnr"] > saved["blurred_input"]["psnr"] - 3
    assert classical[1]["stopped"] in {f"iterations {k}" for k in (1, 2, 3)}
    for row in networks:
        for key in (
            "params",
            "psnr",
            "psnr_std",
            "ssim",
            "real_psnr",
            "train_s",
            "infer_ms",
            "epochs",
        ):
            assert row[key] is not None, key
        assert row["epochs"] == 2 and len(row["val_psnr"]) == 2
        assert 0 < row["psnr"] < 60 and -1 <= row["ssim"] <= 1
        # headline models: one test PSNR and one set of per-frame scores per seed
        assert len(row["psnr_seeds"]) == len(row["runs"]) == len(row["psnr_frames"]) == 2
        assert [run["seed"] for run in row["runs"]] == [0, 1]
        assert row["stopped"] == row["runs"][0]["stopped"] == "epochs"
        assert len(row["psnr_frames"][0]) == saved["dataset"]["test"]
        assert row["psnr"] == pytest.approx(sum(row["psnr_seeds"]) / 2)
    assert saved["models"][0]["psnr_seeds"][0] != saved["models"][0]["psnr_seeds"][1]
    assert saved["models"][1]["params"] > saved["models"][0]["params"]
    assert saved["blurred_input"]["psnr"] > 0
    assert len(saved["error_profiles"]["radius"]) == len(saved["error_profiles"]["unet3"])
    assert [c["title"] for c in saved["claims"]] == [c.title for c in deblur_claims(saved)]
    # the shared checkpoints: half precision, loadable, of the first seed's best epoch
    for name in ("unet3", "cg-unet3"):
        model, config = load_checkpoint(out / "checkpoints" / f"{name}.safetensors")
        assert config.model["name"] == name and config.seed == 0
        assert config.normalisation["low"] == 1.0  # coordgate deblur needs no flag
    assert all(c["rule"] and c["verdict"] for c in saved["claims"])


def test_report_answers_each_claim(study):
    out, results = study
    report = (out / "report.md").read_text()
    claims = deblur_claims(results)
    assert len(claims) == 13
    verdicts = {c.title: c.verdict for c in claims}
    assert verdicts["CoordConv-UNet performs like U-Net(6)"] == "inconclusive"
    assert verdicts["CG U-Net(3) beats U-Net(6) with ~60× fewer parameters"] == "inconclusive"
    assert "not measured: this run lacks" in report
    assert f"{results['models'][0]['psnr']:.2f}" in report


def test_rerun_reuses_trained_models(study):
    out, results = study
    finished = out / "runs" / "cg-unet3" / "seed1" / "finished.json"
    stamp = finished.stat().st_mtime_ns
    again = run_study(TINY, out, progress=False)
    assert finished.stat().st_mtime_ns == stamp
    assert [m["psnr"] for m in again["models"]] == [m["psnr"] for m in results["models"]]
    assert [m["train_s"] for m in again["models"]] == [m["train_s"] for m in results["models"]]


def test_budget_tiers_halving_test_and_resuming_from_records_alone(tmp_path):
    tiers = replace(TINY.with_training(epochs=1), models=("unet4", "cg-unet3"), headline_epochs=2,
                    budget_test=("cg-unet3",), headline_seeds=1, classical=())  # fmt: skip
    results = run_study(tiers, tmp_path, progress=False)
    other, headline = results["models"]
    assert (other["budget_epochs"], other["epochs"], other["doubling"]) == (1, 1, None)
    assert headline["runs"][0]["plan"]["epochs"] == 2  # every run's plan is recorded
    assert (headline["budget_epochs"], headline["epochs"]) == (2, 2)
    test = headline["doubling"]
    assert test["form"] == "halving" and test["epochs"] == 1 and test["budget_epochs"] == 2
    assert test["doubled_psnr"] == headline["psnr"]
    assert test["doubling_gain_db"] == pytest.approx(headline["psnr"] - test["psnr"])
    assert (tmp_path / "runs" / "cg-unet3" / "seed0-e1" / "finished.json").is_file()
    assert (tmp_path / "scores" / "cg-unet3-seed0-e1.json").is_file()
    # a fresh clone keeps the records and the exported checkpoints, not the runs
    shutil.rmtree(tmp_path / "runs")
    again = run_study(tiers, tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()
    assert again["models"] == results["models"]
    # scoring without training: what is finished is reported, the rest listed as pending
    partial = run_study(replace(tiers, headline_seeds=2), tmp_path, progress=False, train=False)
    assert [m["name"] for m in partial["models"]] == ["unet4"]
    assert partial["skipped"][0]["name"] == "cg-unet3"
    assert "not trained yet (cg-unet3-seed1" in partial["skipped"][0]["reason"]
    assert not (tmp_path / "runs").exists()
    # a model whose half-budget run is missing is reported, its budget marked untested
    (tmp_path / "scores" / "cg-unet3-seed0-e1.json").unlink()
    partial = run_study(tiers, tmp_path, progress=False, train=False)
    assert partial["models"][1]["doubling"] is None and partial["budget_untested"] == ["cg-unet3"]
    assert "Halving test not run yet" in (tmp_path / "report.md").read_text()
    # a record of other training options is refused, not reused
    with pytest.raises(ValueError, match="scored for another run"):
        run_study(tiers.with_training(lr=1e-2), tmp_path, progress=False)


def test_sensor_regime_trains_on_crops_and_evaluates_whole_frames(tmp_path):
    sensor = replace(
        PRESETS["sensor"].with_training(epochs=1, batch_size=4, time_budget_s=None), frame=64,
        crop=32, crops_per_frame=2, images=10, base_channels=2, models=("cg-unet3",),
        headline_seeds=1, classical=(), headline_epochs=None, budget_test=(),
    )  # fmt: skip
    results = run_study(sensor, tmp_path, progress=False)
    (row,) = results["models"]
    assert results["preset"]["crop"] == 32 and results["preset"]["frame"] == 64
    # whole 64x64 test frames were scored, one PSNR each
    assert len(row["psnr_frames"][0]) == results["dataset"]["test"] == 1
    history = json.loads((tmp_path / "runs" / "cg-unet3" / "seed0" / "metrics.json").read_text())
    # 8 training frames, 2 crops each: 16 samples an epoch
    first = history["history"][0]
    assert round(first["images_per_s"] * first["train_time_s"]) == 16
    assert "random 32×32 crops" in (tmp_path / "report.md").read_text()


def test_bad_arguments_are_clean_errors(tmp_path, capsys):
    code = main(["reproduce", "deblur", "--out", str(tmp_path), "--threads", "0"])
    assert code == 2
    assert "--threads must be >= 1" in capsys.readouterr().err


def test_model_too_large_for_the_machine_is_reported_not_trained(tmp_path, monkeypatch):
    from coordgate.experiments import deblur

    monkeypatch.setattr(deblur, "memory_limit", lambda: 16 * 20_000)
    tiny = replace(TINY, models=("unet3", "lcn-unet3"), classical=())
    results = run_study(tiny, tmp_path, progress=False)
    assert [m["name"] for m in results["models"]] == ["unet3"]
    (skipped,) = results["skipped"]
    assert skipped["name"] == "lcn-unet3" and skipped["params"] > 20_000
    assert "lcn-unet3" in (tmp_path / "report.md").read_text()


def test_real_images_are_also_scored_away_from_the_sensor_edge(study):
    _, results = study
    baseline = results["blurred_input"]
    assert baseline["edge_band_px"] == TINY.frame // 8
    for row in results["models"]:
        inner, whole = row["real_inner_psnr_frames"], row["real_psnr_frames"]
        assert len(inner) == len(whole) and len(inner[0]) == len(results["real_images"])
        # a different set of pixels gives different scores
        assert inner != whole
