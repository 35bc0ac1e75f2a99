"""The ``coordgate train``, ``evaluate`` and ``deblur`` commands, end to end at tiny sizes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from coordgate.cli import main
from coordgate.data.normalization import PercentileNormalizer
from coordgate.images import PixelSize, read_pixel_size, write_tiff
from coordgate.inference import predict
from coordgate.models import build_model
from coordgate.training import CheckpointConfig, load_weights, save_checkpoint

NORMALISER = PercentileNormalizer(vmin=10.0, vmax=200.0)


def checkpoint(tmp_path, name: str = "unet3", **config) -> str:
    torch.manual_seed(2)
    model = build_model(name, base_channels=2)
    record = CheckpointConfig({"name": name, "options": {"base_channels": 2}}, **config)
    return str(save_checkpoint(tmp_path / "ckpt" / "best.safetensors", model, record))


def images(tmp_path) -> tuple[np.ndarray, str, str]:
    pixels = np.random.default_rng(0).integers(0, 256, size=(37, 31), dtype=np.uint8)
    png, tif = tmp_path / "in" / "cells.png", tmp_path / "in" / "stack.tif"
    png.parent.mkdir()
    Image.fromarray(pixels).save(png)
    tifffile.imwrite(tif, np.stack([pixels, pixels[::-1]]).astype(np.uint16))
    return pixels, str(png), str(tif)


def test_deblur_writes_float32_tiffs_in_the_input_range(tmp_path, capsys):
    pixels, png, tif = images(tmp_path)
    ckpt = checkpoint(tmp_path, normalisation=NORMALISER.to_dict())
    out = tmp_path / "out"
    assert main(["deblur", "--checkpoint", ckpt, png, tif, "-o", str(out)]) == 0
    assert "cells.tif" in capsys.readouterr().out

    single, stack = tifffile.imread(out / "cells.tif"), tifffile.imread(out / "stack.tif")
    assert single.dtype == np.float32 and single.shape == (37, 31)
    assert stack.dtype == np.float32 and stack.shape == (2, 37, 31)
    model = build_model("unet3", base_channels=2)
    load_weights(model, ckpt)
    expected = NORMALISER.denormalize(predict(model, NORMALISER.normalize(pixels.astype("f4"))))
    np.testing.assert_allclose(single, expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(stack[0], single, rtol=1e-5, atol=1e-4)


def test_deblur_keeps_the_input_tiffs_pixel_size(tmp_path):
    pixels, png, _ = images(tmp_path)
    tif = write_tiff(tmp_path / "in" / "sized.tif", pixels, pixel_size=PixelSize(0.2, 0.25, "um"))
    ckpt = checkpoint(tmp_path, normalisation=NORMALISER.to_dict())
    out = tmp_path / "out"
    assert main(["deblur", "--checkpoint", ckpt, png, str(tif), "-o", str(out)]) == 0
    assert read_pixel_size(out / "sized.tif") == pytest.approx(PixelSize(0.2, 0.25, "um"))
    assert read_pixel_size(out / "cells.tif") is None  # a PNG records none


def test_deblur_keeps_normalised_output_when_asked(tmp_path):
    pixels, png, _ = images(tmp_path)
    ckpt = checkpoint(tmp_path, normalisation=NORMALISER.to_dict())
    args = ["deblur", "--checkpoint", ckpt, png, "-o", str(tmp_path / "a")]
    assert main(args) == 0
    assert main([*args[:-1], str(tmp_path / "b"), "--keep-normalised", "--tile", "none"]) == 0
    mapped, raw = (tifffile.imread(tmp_path / d / "cells.tif") for d in ("a", "b"))
    np.testing.assert_allclose(NORMALISER.denormalize(raw), mapped, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("missing image", "image file not found"),
        ("truncated checkpoint", "truncated"),
        ("missing checkpoint", "not found"),
        ("no normalisation", "records no normalisation"),
        ("same output name", "would both be written"),
        ("other sensor size", "trained on a 64x64 sensor frame"),
    ],
)
def test_deblur_errors_are_one_line_and_write_nothing(tmp_path, capsys, problem, message):
    _, png, tif = images(tmp_path)
    config = {"normalisation": NORMALISER.to_dict()}
    name = "unet3"
    inputs = [png]
    if problem == "missing image":
        inputs.append(str(tmp_path / "in" / "absent.png"))
    if problem == "no normalisation":
        config = {}
    if problem == "same output name":
        inputs.append(str(tmp_path / "in" / "cells.tif"))
        tifffile.imwrite(inputs[-1], np.zeros((8, 8), np.float32))
    if problem == "other sensor size":
        name, config["full_size"] = "cg-unet3", [64, 64]
    ckpt = checkpoint(tmp_path, name, **config)
    if problem == "truncated checkpoint":
        with open(ckpt, "r+b") as handle:
            handle.truncate(200)
    if problem == "missing checkpoint":
        ckpt = str(tmp_path / "nowhere.safetensors")
    out = tmp_path / "out"
    assert main(["deblur", "--checkpoint", ckpt, *inputs, "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert len(error.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_deblur_places_a_crop_on_the_sensor(tmp_path):
    _, png, _ = images(tmp_path)
    ckpt = checkpoint(tmp_path, "cg-unet3", normalisation=NORMALISER.to_dict(), full_size=[64, 64])
    args = ["deblur", "--checkpoint", ckpt, png, "-o", str(tmp_path / "out")]
    assert main([*args, "--origin", "3", "5", "--full-size", "64", "64"]) == 0
    assert tifffile.imread(tmp_path / "out" / "cells.tif").shape == (37, 31)


@pytest.fixture(scope="module")
def pair_cache(tmp_path_factory):
    from coordgate.data.pairs import build_pairs

    path = tmp_path_factory.mktemp("pairs")
    build_pairs(path, n=8, size=(24, 32), splits=(0.5, 0.25, 0.25), progress=False)
    return str(path)


def train_args(cache: str, out, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        "cg-unet3",
        "--data",
        cache,
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--base-channels",
        "2",
        "--crop",
        "8",
        "--no-progress",
        *extra,
    ]


def test_train_resume_evaluate_and_deblur(pair_cache, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(pair_cache, run, "--epochs", "2")) == 0
    printed = capsys.readouterr().out
    assert "best epoch" in printed and "blurred input: val PSNR" in printed
    assert "dB over the blurred input's" in printed
    config = CheckpointConfig.from_dict(json.loads((run / "best.json").read_text()))
    # the study's defaults: residual learning and its schedule
    assert config.model == {
        "name": "cg-unet3",
        "options": {"base_channels": 2, "residual": True},
    }
    assert config.training["schedule"] == "cosine" and config.training["warmup_epochs"] == 1
    assert config.full_size == (24, 32) and config.dataset["crop"] == [8, 8]
    assert config.normalisation["vmin"] is None  # per-image percentiles
    assert config.psf_field is not None and config.training["epochs"] == 2

    assert main(train_args(pair_cache, run, "--epochs", "2")) == 0
    assert "reused" in capsys.readouterr().out
    assert main(train_args(pair_cache, run, "--epochs", "3")) == 2
    assert "resume" in capsys.readouterr().err
    assert main(train_args(pair_cache, run, "--epochs", "3", "--resume")) == 0
    assert len(json.loads((run / "metrics.json").read_text())["history"]) == 3

    report = tmp_path / "eval.json"
    args = ["evaluate", "--checkpoint", str(run), "--data", pair_cache, "--no-progress"]
    assert main([*args, "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "blurred input" in printed
    metrics = json.loads(report.read_text())["metrics"]
    assert metrics["model"]["images"] == 2 and math.isfinite(metrics["model"]["psnr"])
    assert metrics["blurred"]["psnr"] != metrics["model"]["psnr"]

    from coordgate.data.pairs import PairCache

    frame = tmp_path / "frame.tif"
    tifffile.imwrite(frame, np.asarray(PairCache(pair_cache).array("blurred")[0]))
    assert main(["deblur", "--checkpoint", str(run), str(frame), "-o", str(tmp_path / "o")]) == 0
    assert tifffile.imread(tmp_path / "o" / "frame.tif").shape == (24, 32)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--model", "unet4"], "divisible by 8"),
        (["--model", "no-such-net"], "unknown model"),
        (["--option", "depth"], "KEY=VALUE"),
        (["--epochs", "0"], "epochs"),
    ],
)
def test_train_rejects_bad_arguments_cleanly(pair_cache, tmp_path, capsys, change, message):
    # a repeated option's last value wins
    assert main(train_args(pair_cache, tmp_path / "run", "--crop", "12", *change)) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_train_and_evaluate_need_a_pair_cache(tmp_path, capsys):
    assert main(train_args(str(tmp_path / "nothing"), tmp_path / "run", "--epochs", "1")) == 2
    assert "no pair cache" in capsys.readouterr().err
    ckpt = checkpoint(tmp_path)
    assert main(["evaluate", "--checkpoint", ckpt, "--data", str(tmp_path / "nothing")]) == 2
    assert "no pair cache" in capsys.readouterr().err


def _train_process(cache: str, out, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "coordgate.cli", *train_args(cache, out, *extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_budgeted_run_killed_and_resumed_is_its_planned_run(pair_cache, tmp_path):
    """kill -9 in the middle of a --time-budget run; --resume keeps the plan, and the
    weights equal those of a run of the planned epochs, bit for bit."""
    run, budget = tmp_path / "budget", ("--time-budget", "8s", "--crops-per-frame", "24")
    process = _train_process(pair_cache, run, *budget)
    state = run / "last.state.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        metrics = run / "metrics.json"
        if (
            state.is_file()
            and metrics.is_file()
            and len(json.loads(metrics.read_text())["history"]) >= 3  # planned after 2
        ):
            break
        time.sleep(0.05)
    assert process.poll() is None, process.stdout.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run / "finished.json").exists()
    resumed = _train_process(pair_cache, run, *budget, "--resume")
    printed = resumed.communicate(timeout=240)[0].decode()
    assert resumed.returncode == 0, printed
    finished = json.loads((run / "finished.json").read_text())["result"]
    plan = finished["plan"]
    assert plan["by"] == "time_budget" and len(finished["history"]) == plan["epochs"] > 3
    assert finished["history"][-1]["lr"] == pytest.approx(2e-5)
    assert f"planned {plan['epochs']} epochs (time budget)" in printed

    fixed = tmp_path / "fixed"
    args = train_args(pair_cache, fixed, "--epochs", str(plan["epochs"]), "--crops-per-frame", "24")
    assert main(args) == 0
    a = torch.load(run / "last.state.pt", weights_only=False)["model"]
    b = torch.load(fixed / "last.state.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_help_states_the_config_defaults(capsys):
    from dataclasses import replace

    from coordgate.cli import build_parser
    from coordgate.commands.train import train_config
    from coordgate.training import CPU_SCHEDULE as defaults

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for stated in (
        f"--batch-size BATCH_SIZE (default {defaults.batch_size})",
        f"peak learning rate (default {defaults.lr:g})",
        f"default {defaults.schedule})",
        f"linear warm-up (default {defaults.warmup_epochs})",
        f"plateau schedule only (default {defaults.lr_patience})",
        f"improvement (default {defaults.min_improvement})",
    ):
        assert stated in text
    args = ["train", "--model", "unet3", "--data", "d", "--out", "o", "--epochs", "5"]
    assert train_config(build_parser().parse_args(args)) == replace(defaults, epochs=5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--epochs", "3", "--steps", "5"], "give one of them"),
        (["--time-budget", "soon"], "duration"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--early-stopping", "3"], "plateau"),
    ],
)
def test_train_rejects_conflicting_lengths(pair_cache, tmp_path, capsys, change, message):
    assert main(train_args(pair_cache, tmp_path / "run", *change)) == 2
    assert message in capsys.readouterr().err
