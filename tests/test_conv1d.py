"""The 1D study of §IV.A: the matrix H of Eq. (5), its data, the trainer and the driver."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import pytest
import torch

from coordgate.cli import main
from coordgate.experiments import conv1d
from coordgate.experiments._conv1d_claims import claims, judge
from coordgate.experiments._conv1d_report import rejudge, write_outputs
from coordgate.experiments._varying_conv1d import (
    effective_matrix,
    make_dataset,
    offset_and_width,
    spatially_varying_matrix,
)
from coordgate.models.cnn1d import build_from_label, parse_label
from coordgate.training import TrainConfig, TrainingResult
from coordgate.training.in_memory import fit_tensors
from coordgate.training.stopping import NonFiniteLossError

# ---------------------------------------------------------------------------- H and data


def test_matrix_follows_the_documented_reading_of_eq5():
    h = spatially_varying_matrix(30)
    assert h.shape == (30, 30)
    delta, sigma = offset_and_width(30)
    assert (delta[0], delta[15], delta[29]) == (1, 0, 0)
    assert (sigma[0], sigma[14], sigma[15]) == (0.5, 0.5, 0.5)
    assert sigma[29] == pytest.approx(0.5 + 1.5 * 14 / 15)
    # Row 0 peaks one sample to the right, rows >= 15 on the diagonal, all with peak 1.
    assert h[0].argmax() == 1 and h[0, 1] == pytest.approx(1)
    assert all(h[x].argmax() == x and h[x, x] == pytest.approx(1) for x in range(15, 30))
    # Row 29 is the widest Gaussian: sigma = 1.9.
    assert h[29, 27] == pytest.approx(math.exp(-4 / (2 * 1.9**2)), rel=1e-6)
    assert h[3].sum() < h[27].sum()


def test_matrix_size_is_validated():
    with pytest.raises(ValueError, match="size"):
        spatially_varying_matrix(1)


def test_dataset_is_seeded_and_split():
    data = make_dataset(101, 17, seed=3)
    m, n = data.train
    assert [len(s[0]) for s in (data.train, data.val, data.test)] == [81, 10, 10]
    assert m.shape == (81, 1, 17) and 0 <= m.min() and m.max() <= 1
    torch.testing.assert_close(n, m @ data.matrix.T)
    torch.testing.assert_close(make_dataset(101, 17, seed=3).test[0], data.test[0])
    assert not torch.equal(make_dataset(101, 17, seed=4).test[0], data.test[0])
    with pytest.raises(ValueError, match="fractions"):
        make_dataset(101, 17, fractions=(0.9, 0.2))


def test_effective_matrix_is_exact_for_a_single_convolution():
    model = build_from_label("CNN(1,5,1)")
    matrix = effective_matrix(model, torch.rand(7, 1, 23))
    weight = model.convs[0].weight.detach().flatten()
    for row in (0, 11, 22):
        expected = torch.zeros(23)
        for tap in range(5):
            column = row + tap - 2
            if 0 <= column < 23:
                expected[column] = weight[tap]
        torch.testing.assert_close(matrix[row], expected)


def test_effective_matrix_of_a_one_layer_coordgate_is_its_linear_map():
    model = build_from_label("CG(1,5,3,2)").eval()
    torch.nn.init.normal_(model.gate.encoder[-1].weight)
    with torch.no_grad():
        bias = model(torch.zeros(1, 1, 19))[0, 0]
        columns = model(torch.eye(19).unsqueeze(1))[:, 0] - bias  # (input j, output i)
    torch.testing.assert_close(effective_matrix(model, torch.rand(5, 1, 19)), columns.T)
    with pytest.raises(ValueError, match=r"\(N, 1, L\)"):
        effective_matrix(model, torch.rand(5, 19))


# ---------------------------------------------------------------------------- trainer


def _linear_problem(samples=240, size=13):
    data = make_dataset(samples, size, seed=1)
    return data.train, data.val


def _config(**options) -> TrainConfig:
    return TrainConfig(**{"progress": False, **options})


def test_fit_tensors_learns_and_is_reproducible():
    train, val = _linear_problem()
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_from_label("CNN(1,5,1)")
        fit = fit_tensors(model, train, val, _config(lr=1e-2, batch_size=32, epochs=15, seed=2))
        results.append((fit, model))
    (fit, model), (fit2, model2) = results
    assert fit.history[-1]["train_loss"] < 0.5 * fit.history[0]["train_loss"]
    assert fit.best_val_loss == min(h["val_loss"] for h in fit.history)
    torch.testing.assert_close(model.state_dict(), fit.best_state)
    torch.testing.assert_close(model.state_dict(), model2.state_dict())
    assert fit.stop_reason == "epochs" and len(fit.history) == 15


def test_fit_tensors_halves_the_learning_rate_and_stops_on_a_plateau():
    train, val = _linear_problem()
    model = build_from_label("CNN(1,1,1)")  # cannot fit H: the loss stalls quickly
    config = _config(lr=0.05, batch_size=64, epochs=500, early_stopping_patience=6, lr_patience=2)
    fit = fit_tensors(model, train, val, config)
    assert fit.stop_reason == "early_stopping" and len(fit.history) < 500
    rates = [h["lr"] for h in fit.history]
    assert rates[0] == 0.05 and min(rates) <= 0.025
    assert all(b in (a, a / 2) for a, b in zip(rates, rates[1:]))


def test_fit_tensors_stops_on_non_finite_loss_and_keeps_the_best_weights():
    train, val = _linear_problem()
    model = build_from_label("CNN(1,3,1)")
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="epoch 1 validation") as caught:
        fit_tensors(model, train, val, _config(epochs=5), loss_fn=lambda p, t: (p - t).sum() / 0)
    fit = caught.value.result
    assert fit.stop_reason == "non_finite" and len(fit.history) == 1
    torch.testing.assert_close(model.state_dict(), start)


def test_fit_tensors_speaks_fits_vocabulary():
    train, val = _linear_problem()
    model = build_from_label("CNN(1,1,1)")  # would stop on a plateau with a patience
    config = _config(lr=0.05, batch_size=64, epochs=12, early_stopping_patience=None)
    fit = fit_tensors(model, train, val, config)
    assert isinstance(fit, TrainingResult) and fit.out_dir is None
    assert fit.stop_reason == "epochs" and len(fit.history) == 12
    assert fit.best["val_loss"] == fit.best_val_loss and fit.cpu_time_s > 0
    assert fit.train_time_s == fit.history[-1]["elapsed_s"] > 0


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(train=(torch.zeros(3, 1, 5),)), "train must be a pair"),
        (dict(val=(torch.zeros(3, 1, 5), torch.zeros(2, 1, 5))), "same, non-zero number"),
        (dict(config={"epochs": 3}), "config must be a TrainConfig"),
        (dict(config=_config(schedule="cosine")), r"\['schedule'\] must be \['plateau'\]"),
        (dict(config=_config(warmup_epochs=1, steps=9)), r"\['steps', 'warmup_epochs'\]"),
        (dict(config=_config(loss="mae"), loss_fn=torch.nn.functional.l1_loss), "not both"),
    ],
)
def test_fit_tensors_validates_its_arguments(options, message):
    train, val = _linear_problem(30, 5)
    arguments = dict(train=train, val=val, config=_config(epochs=1)) | options
    with pytest.raises(ValueError, match=message):
        fit_tensors(build_from_label("CNN(1,3,1)"), **arguments)


def test_fit_tensors_trains_on_the_configs_named_loss():
    train, val = _linear_problem(60, 7)
    fits = {}
    for loss in ("mse", "mae"):
        torch.manual_seed(0)
        fit = fit_tensors(build_from_label("CNN(1,3,1)"), train, val, _config(epochs=1, loss=loss))
        fits[loss] = fit.history[0]["val_loss"]
    torch.manual_seed(0)
    mae = fit_tensors(
        build_from_label("CNN(1,3,1)"),
        train,
        val,
        _config(epochs=1),
        loss_fn=torch.nn.functional.l1_loss,
    )
    assert fits["mae"] == mae.history[0]["val_loss"] != fits["mse"]


# ---------------------------------------------------------------------------- the study


def test_time_inference_measures_every_model():
    models = {label: build_from_label(label) for label in ("CNN(1,3,1)", "CG(1,3,2,1)")}
    times = conv1d.time_inference(models, torch.rand(50, 1, 17), repeats=3)
    assert set(times) == set(models) and all(t > 0 for t in times.values())
    with pytest.raises(ValueError, match="repeats"):
        conv1d.time_inference(models, torch.rand(5, 1, 17), repeats=0)


TINY = conv1d.Preset(
    "tiny",
    ("CNN(1,5,1)", "CNN(2,5,2)", "CG(1,5,3,2)", "CG-random(1,5,3,2)", "PAC(1,5,1)", "LCN(1,5)"),
    seeds=1,
    ablation=("CG(1,5,3,2)", "CG(1,5,2,1)"),
    samples=300,
    training=dataclasses.replace(conv1d.SCHEDULE, batch_size=60, epochs=3),
    infer_batch=50,
    infer_repeats=2,
)


def test_tiny_study_writes_results_figures_and_report(tmp_path):
    result = conv1d.run_study(TINY, tmp_path / "a", progress=False)
    out = tmp_path / "a"
    saved = json.loads((out / "results.json").read_text())
    assert saved["preset"] == "tiny" and saved["seeds"] == [0]
    assert saved["environment"]["torch_threads"] == 1
    names = [m["name"] for m in saved["models"]]
    assert names == list(TINY.models)
    keys = {
        "name",
        "family",
        "psnr_median",
        "psnr_min",
        "psnr_max",
        "params",
        "infer_ms",
        "train_s",
    }
    for row in saved["models"]:
        assert keys <= set(row)
        assert row["psnr_min"] <= row["psnr_median"] <= row["psnr_max"]
        assert row["infer_ms"] > 0 and row["params"] > 0
    assert [m["family"] for m in saved["models"]] == [
        "cnn",
        "cnn",
        "cg",
        "cg-random",
        "pac",
        "lcn",
    ]
    # The ablation reuses CG(1,5,3,2)'s run and adds one run for its other cell.
    ablation = saved["ablation"]
    assert ablation["seeds"] == [0] and len(list((out / "runs").glob("*.pt"))) == 7
    assert [(m["channels"], m["encoder_layers"]) for m in ablation["models"]] == [(3, 2), (2, 1)]
    assert ablation["models"][0]["psnr_median"] == saved["models"][2]["psnr_median"]
    assert ablation["models"][1]["gate_params"] == 2 + 2  # one Linear layer 1 -> 2
    assert "gate_size.png" in saved["figures"]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["name"] for r in rows] == names
    for figure in saved["figures"]:
        assert (out / figure).stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert report.count("verdict: **") == len(saved["claims"]) == 7
    assert "Preset **tiny**" in report and "| CG(1,5,3,2) |" in report
    assert "Gate-size ablation:" in report and "| CG(1,5,2,1) | 2 | 1 | 4 |" in report
    # Resuming reuses the finished runs; the same seed gives the same numbers.
    again = conv1d.run_study(TINY, out, progress=False)
    assert [m["train_s"] for m in again["models"]] == [m["train_s"] for m in result["models"]]
    fresh = conv1d.run_study(TINY, tmp_path / "b", progress=False)
    assert [m["psnr_median"] for m in fresh["models"]] == [
        m["psnr_median"] for m in result["models"]
    ]


def test_rejudging_a_finished_study_reproduces_its_claims_and_report(tmp_path, capsys):
    preset = dataclasses.replace(TINY, models=("CNN(1,5,1)", "CG(1,5,3,2)"), ablation_seeds=0)
    result = conv1d.run_study(preset, tmp_path, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["claims"] == result["claims"] == [c.to_dict() for c in judge(saved)]
    assert all(claim["rule"] for claim in saved["claims"])
    report = (tmp_path / "report.md").read_text()
    assert report.count("   - Rule: ") == len(saved["claims"])
    assert rejudge(tmp_path) == saved
    assert (tmp_path / "report.md").read_text() == report
    assert main(["reproduce", "conv1d", "--out", str(tmp_path), "--rejudge"]) == 0
    assert "CG(1,5,3,2)" in capsys.readouterr().out
    assert json.loads((tmp_path / "results.json").read_text()) == saved


def test_write_outputs_returns_new_results_and_leaves_its_input_alone(tmp_path):
    preset = dataclasses.replace(TINY, models=("CNN(1,5,1)",), ablation_seeds=0)
    conv1d.run_study(preset, tmp_path / "study", progress=False)
    saved = json.loads((tmp_path / "study" / "results.json").read_text())
    given = {k: v for k, v in saved.items() if k not in ("claims", "figures")}
    before = json.loads(json.dumps(given))
    matrix = spatially_varying_matrix(preset.size)
    run = {"psnr": saved["models"][0]["psnr_median"], "val_loss": [0.5, 0.25, 0.2]}
    (tmp_path / "again").mkdir()
    written = write_outputs(
        tmp_path / "again", given, matrix, {"CNN(1,5,1)": matrix}, {"CNN(1,5,1)": run}
    )
    assert given == before and "claims" not in given and "figures" not in given
    assert written == saved


def test_changed_settings_retrain_instead_of_reusing_runs(tmp_path):
    preset = dataclasses.replace(TINY, models=("CNN(1,5,1)",))
    first = conv1d.run_study(preset, tmp_path, progress=False)
    longer = conv1d.run_study(preset.with_training(epochs=4), tmp_path, progress=False)
    assert first["models"][0]["epochs_median"] == 3 and longer["models"][0]["epochs_median"] == 4
    slower = preset.with_training(epochs=4, lr_factor=0.1)
    assert conv1d.run_study(slower, tmp_path, progress=False)["resumed_runs"] == 0


def test_runs_recorded_in_the_old_words_are_reused(tmp_path):
    preset = dataclasses.replace(TINY, models=("CNN(1,5,1)",), ablation_seeds=0)
    first = conv1d.run_study(preset, tmp_path, progress=False)
    (path,) = (tmp_path / "runs").glob("*.pt")
    record = torch.load(path, weights_only=True)
    old = {k: v for k, v in record["config"].items() if k not in ("lr_factor", "loss")}
    old["max_epochs"], old["patience"] = old.pop("epochs"), old.pop("early_stopping_patience")
    torch.save({**record, "config": old}, path)
    again = conv1d.run_study(preset, tmp_path, progress=False)
    assert again["resumed_runs"] == 1
    assert again["models"][0]["train_s"] == first["models"][0]["train_s"]
    # a record of another schedule in the old words is not
    torch.save({**record, "config": {**old, "max_epochs": 9}}, path)
    assert conv1d.run_study(preset, tmp_path, progress=False)["resumed_runs"] == 0


def test_study_rejects_repeated_models(tmp_path):
    preset = dataclasses.replace(TINY, models=("CNN(1,5,1)", "CNN(1,5,1)"))
    with pytest.raises(ValueError, match="distinct"):
        conv1d.run_study(preset, tmp_path, progress=False)
    with pytest.raises(ValueError, match="gate-size ablation takes CG"):
        conv1d.run_study(dataclasses.replace(TINY, ablation=("CNN(1,5,1)",)), tmp_path)
    with pytest.raises(ValueError, match="ablation_seeds must be an integer >= 0"):
        conv1d.run_study(dataclasses.replace(TINY, ablation_seeds=-1), tmp_path)


def test_study_without_ablation_says_so(tmp_path):
    preset = dataclasses.replace(TINY, models=("CNN(1,5,1)",), ablation_seeds=0)
    result = conv1d.run_study(preset, tmp_path, progress=False)
    assert result["ablation"] == {"seeds": [], "models": []}
    assert "gate_size.png" not in result["figures"] and not (tmp_path / "gate_size.png").exists()
    assert "No gate-size ablation" in (tmp_path / "report.md").read_text()


def test_full_preset_has_the_baselines_and_the_gate_size_grid():
    full = conv1d.PRESETS["full"]
    assert {"PAC(1,13,1)", "PAC(3,7,4)", "LCN(1,7)", "LCN(1,13)"} <= set(full.models)
    cells = {parse_label(label)[1]["channels"] for label in full.ablation}
    layers = {parse_label(label)[1]["encoder_layers"] for label in full.ablation}
    assert len(full.ablation) == 12 and cells == {3, 4, 8, 16} and layers == {1, 2, 3}


def test_cli_rejects_a_bad_model_cleanly(tmp_path, capsys):
    code = main(
        ["reproduce", "conv1d", "--quick", "--models", "CNN(0,7,1)", "--out", str(tmp_path)]
    )
    assert code == 2
    assert "layers must be a positive integer" in capsys.readouterr().err
    assert main(["reproduce", "conv1d", "--quick", "--seeds", "0", "--out", str(tmp_path)]) == 2
    bad_ablation = ["--ablation-seeds", "-1", "--out", str(tmp_path)]
    assert main(["reproduce", "conv1d", "--quick", *bad_ablation]) == 2
    assert "ablation_seeds must be an integer >= 0" in capsys.readouterr().err


# ---------------------------------------------------------------------------- claims


def _row(name, family, layers, kernel, channels, psnr, params, infer_ms, spread=0.2):
    return dict(
        train_cpu_s=params / 10,
        name=name,
        family=family,
        layers=layers,
        kernel=kernel,
        channels=channels,
        psnr_median=psnr,
        psnr_min=psnr - spread,
        psnr_max=psnr + spread,
        params=params,
        infer_ms=infer_ms,
        failed_runs=0,
        capped_runs=0,
    )


def _rows(ccnn_psnr=18.0, wide_psnr=18.5, random_psnr=7.0, lcn_psnr=30.5, pac_psnr=25.0):
    return [
        _row("LCN(1,7)", "lcn", 1, 7, 1, lcn_psnr, 240, 2.0),
        _row("PAC(4,7,4)", "pac", 4, 7, 4, pac_psnr, 393, 9.0),
        _row("CNN(1,7,1)", "cnn", 1, 7, 1, 6.0, 8, 0.3),
        _row("CNN(4,7,4)", "cnn", 4, 7, 4, 18.0, 293, 3.0),
        _row("CNN(4,7,20)", "cnn", 4, 7, 20, wide_psnr, 5941, 40.0),
        _row("CCNN(4,7,4)", "ccnn", 4, 7, 4, ccnn_psnr, 384, 6.0),
        _row("CG(1,7,3,3)", "cg", 1, 7, 3, 30.0, 58, 1.5),
        _row("CG-random(1,7,3,3)", "cg-random", 1, 7, 3, random_psnr, 58, 1.5),
    ]


def test_claims_follow_the_numbers():
    verdicts = [c.verdict for c in claims(_rows(), negligible_db=1.0)]
    assert verdicts == ["supported"] * 7
    against = [c.verdict for c in claims(_rows(25.0, 24.0, 29.5), negligible_db=1.0)]
    assert against[1:4] == ["not supported"] * 3
    assert against[0] == "supported"  # CG still beats the best CCNN's best seed


def test_claims_without_the_models_they_need_are_inconclusive():
    rows = [r for r in _rows() if r["family"] == "cnn" and r["layers"] == 1]
    assert {c.verdict for c in claims(rows, negligible_db=1.0)} == {"inconclusive"}


@pytest.mark.parametrize("negligible_db", [1.0, 0.5])
def test_every_claim_states_its_rule_with_its_threshold(negligible_db):
    inconclusive = [r for r in _rows() if r["family"] == "cnn" and r["layers"] == 1]
    for rows in (_rows(), inconclusive):
        checked = claims(rows, negligible_db=negligible_db)
        assert all(claim.rule and claim.to_dict()["rule"] == claim.rule for claim in checked)
        # Each rule names the threshold it applies, as given.
        assert all(f"{negligible_db:g} dB" in claim.rule for claim in checked)


def test_baseline_claims_follow_the_numbers():
    lcn, pac = (claims(_rows(lcn_psnr=45.0, pac_psnr=32.0), negligible_db=1.0))[5:]
    assert lcn.verdict == "partly supported" and "no CG comes within 1 dB" in lcn.evidence
    assert "4.1x fewer parameters" in lcn.evidence  # CG(1,7,3,3): 58 vs the LCN's 240
    assert pac.verdict == "not supported" and "PAC(4,7,4) vs CNN(4,7,4): +14.00 dB" in pac.evidence
    slow_cg = [dict(r, infer_ms=20.0) if r["family"] == "cg" else r for r in _rows()]
    assert [c.verdict for c in claims(slow_cg, negligible_db=1.0)[5:]] == [
        "partly supported",
        "partly supported",
    ]
