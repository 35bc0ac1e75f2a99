"""Calibration from simulated beads of known fields: accuracy and time over a grid of lenses.

The lenses (``LENSES``, :class:`~coordgate.optics.LensField` keyword arguments, RMS waves in
the frame corners) are a representative set, not a full factorial: the corners of the range
real objectives span (defocus 0.25-0.75, astigmatism 0-0.5, coma 0-0.35, spherical 0-0.3, a
tilted focal plane) one or two at a time, plus the issue-24 lens (strong astigmatism and
coma) and one with every aberration at its maximum. Each lens is simulated at two noise
levels (``NOISE``: the default bead, and a dimmer one, 2000 photo-electrons on a 10 e-/px
background) on one 512 x 512 frame of 120 random beads, and the strongest lenses
(``THREE_FRAME_LENSES``) also on three frames at the default noise. Every case is written as
a TIFF and calibrated by the CLI, ``coordgate calibrate beads.tif --psf-size 21 --out
field.npz --report DIR``, timed in this process (one thread); ``--quick``: 256 x 256 frames
of 40 beads. The field read back with ``PSFField.load`` is compared with the truth (also 21
px) on a 5 x 5 grid of points in [-0.9, 0.9]^2: the median and worst relative L2 error, raw
(``psf_at`` against ``psf_at``) and aligned (the true PSF translated so its centroid matches
the calibrated one's: the shape error without the PSF shift that beads at unknown positions
cannot reveal), and what the report's self-check said (its worst region and warnings).

``python -m benchmarks.bench_calibration --end-to-end`` adds the end-to-end check (the
deblurring study's sensor regime): the astigmatism 0.15 + coma 0.1 lens is calibrated
from two 256 x 256 frames of 50 beads; a CG U-Net(3) is trained with the study's
converging schedule (``CPU_SCHEDULE``, early stopping, at most 30 epochs) on 64 x 64 crops
of 256 x 256 pairs blurred by the calibrated field, another with the same seed on pairs of
the same sharp frames blurred by the true field; both deblur the test frames blurred by
the true field. The gap is the paired per-frame PSNR difference (true - calibrated) with
its standard error over the frames. ``--end-to-end-only`` adds it to an existing
calibration.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from coordgate.atomic import atomic_write_text
from coordgate.cli import main as cli
from coordgate.images import write_tiff
from coordgate.optics import LensField, PSFField
from coordgate.optics.calibration import calibrate, field_errors, simulate_beads

PSF_SIZE = 21
#: Lenses as LensField keyword arguments (RMS waves at the frame corners; tilt: defocus
#: at the left and right edges).
LENSES = {
    "defocus 0.25": {"max_defocus": 0.25},
    "defocus 0.75 (project default)": {"max_defocus": 0.75},
    "astigmatism 0.15 + coma 0.1": {"max_defocus": 0.25, "astigmatism": 0.15, "coma": 0.1},
    "astigmatism 0.5 + coma 0.35 (issue 24)": {
        "max_defocus": 0.25,
        "astigmatism": 0.5,
        "coma": 0.35,
    },
    "spherical 0.3": {"max_defocus": 0.25, "spherical": 0.3},
    "tilted focal plane 0.3 + astigmatism 0.25": {
        "max_defocus": 0.25,
        "tilt": 0.3,
        "astigmatism": 0.25,
    },
    "defocus 0.5 + astigmatism 0.3 + coma 0.2 + spherical 0.15": {
        "max_defocus": 0.5,
        "astigmatism": 0.3,
        "coma": 0.2,
        "spherical": 0.15,
    },
    "everything at its maximum": {
        "max_defocus": 0.75,
        "astigmatism": 0.5,
        "coma": 0.35,
        "spherical": 0.3,
        "tilt": 0.3,
    },
}
#: Bead and sensor noise: photo-electrons per bead (15 % spread), background
#: photo-electrons per pixel, read noise electrons RMS.
NOISE = {
    "default": {"photons": 3000.0, "flux_spread": 0.15, "background": 20.0, "read_noise": 2.0},
    "dim": {"photons": 2000.0, "flux_spread": 0.15, "background": 10.0, "read_noise": 2.0},
}
THREE_FRAME_LENSES = (
    "astigmatism 0.5 + coma 0.35 (issue 24)",
    "defocus 0.5 + astigmatism 0.3 + coma 0.2 + spherical 0.15",
    "everything at its maximum",
)


def _errors(field: PSFField, truth: PSFField) -> dict:
    raw, aligned = field_errors(field, truth), field_errors(field, truth, align=True)
    return {
        "median": raw["median"],
        "worst": raw["worst"],
        "aligned_median": aligned["median"],
        "aligned_worst": aligned["worst"],
        "errors_5x5": raw["errors"],
        "aligned_errors_5x5": aligned["errors"],
    }


def _frames(truth: PSFField, size: int, beads: int, count: int, seed: int, noise: dict):
    return np.stack(
        [simulate_beads(truth, size, beads, seed=seed + k, **noise).image for k in range(count)]
    )


def _one_case(lens: str, noise: str, frames: int, size: int, beads: int, folder: Path) -> dict:
    params = LENSES[lens]
    truth = LensField(PSF_SIZE, **params)
    write_tiff(folder / "beads.tif", _frames(truth, size, beads, frames, 0, NOISE[noise]))
    out, report_dir = folder / "field.npz", folder / "report"
    argv = ["calibrate", str(folder / "beads.tif"), "--psf-size", str(PSF_SIZE), "--out", str(out)]
    start = time.perf_counter()
    if cli([*argv, "--report", str(report_dir)]) != 0:
        raise RuntimeError(f"coordgate calibrate failed for {lens}, {noise}, {frames} frame(s)")
    seconds = time.perf_counter() - start
    report = json.loads((report_dir / "calibration.json").read_text())
    check = report.get("self_check") or {}
    return {
        "lens": lens,
        "lens_params": params,
        "noise": noise,
        "frames": frames,
        "size": size,
        "beads_simulated": beads * frames,
        "beads": report["beads"],
        "model": report["model"],
        "internal_psf_size": report.get("internal_psf_size", PSF_SIZE),
        "calibrate_s": report["seconds"],
        "cli_with_report_s": seconds,
        "self_check": {key: check.get(key) for key in ("worst_region", "warnings", "verdict")},
        **_errors(PSFField.load(out), truth),
    }


def _cases() -> list[tuple[str, str, int]]:
    single = [(lens, noise, 1) for lens in LENSES for noise in NOISE]
    return single + [(lens, "default", 3) for lens in THREE_FRAME_LENSES]


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    size, beads = (256, 40) if quick else (512, 120)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for lens, noise, frames in _cases():
            rows.append(_one_case(lens, noise, frames, size, beads, Path(tmp)))
            row = rows[-1]
            print(
                f"{lens}, {noise} noise, {frames} frame(s): median {row['median']:.3f}, "
                f"worst {row['worst']:.3f}, aligned median {row['aligned_median']:.3f}, "
                f"{row['model']} model, {row['calibrate_s']:.1f} s",
                flush=True,
            )
    return {"psf_size": PSF_SIZE, "noise": NOISE, "lenses": LENSES, "cases": rows}


def end_to_end(frames: int, folder: Path) -> dict:
    """Train CG U-Net(3) on calibrated-field and on true-field pairs; PSNR on true blur."""
    from coordgate.data.pairs import PairDataset, build_pairs
    from coordgate.models import build_model
    from coordgate.training import CPU_SCHEDULE, fit
    from coordgate.training.metrics import psnr

    torch.set_num_threads(1)
    params = LENSES["astigmatism 0.15 + coma 0.1"]
    truth = LensField(PSF_SIZE, **params)
    started = time.perf_counter()
    calibration = calibrate(_frames(truth, 256, 50, 2, 200, NOISE["default"]), PSF_SIZE)
    calibrate_s = time.perf_counter() - started
    caches = {
        name: build_pairs(folder / name, n=frames, size=256, field=field, seed=0, progress=False)
        for name, field in (("true", truth), ("calibrated", calibration.field))
    }
    test = caches["true"].indices("test")
    blurred = torch.from_numpy(caches["true"].array("blurred")[test].copy()).unsqueeze(1)
    sharp = torch.from_numpy(caches["true"].array("sharp")[test].copy()).unsqueeze(1)
    scores, runs = {"input": psnr(blurred, sharp, reduce_dims=(1, 2, 3))}, {}
    for name, cache in caches.items():
        torch.manual_seed(0)
        model = build_model("cg-unet3", base_channels=8, residual=True)
        config = replace(CPU_SCHEDULE, epochs=30, progress=False, seed=0)
        train = PairDataset(cache, "train", crop=64, crops_per_frame=4, seed=0)
        result = fit(model, train, PairDataset(cache, "val"), config, folder / "runs" / name)
        model.eval()
        with torch.no_grad():
            scores[name] = psnr(model(blurred), sharp, reduce_dims=(1, 2, 3))
        runs[name] = {"epochs": len(result.history), "stopped": result.stop_reason,
                      "train_s": result.train_time_s}  # fmt: skip
        print(f"trained on {name}-field pairs: test PSNR {float(scores[name].mean()):.2f} dB")
    gap = (scores["true"] - scores["calibrated"]).double()
    return {
        "field": params,
        "sensor": 256,
        "crop": 64,
        "pairs": frames,
        "test_frames": len(test),
        "calibrate_s": calibrate_s,
        "calibration": {**calibration.counts(), "model": calibration.model_kind},
        "calibration_errors": _errors(calibration.field, truth),
        "runs": runs,
        "psnr_input": float(scores["input"].mean()),
        "psnr_true_field": float(scores["true"].mean()),
        "psnr_calibrated_field": float(scores["calibrated"].mean()),
        "psnr_gap_db": float(gap.mean()),
        "psnr_gap_standard_error_db": float(gap.std() / len(gap) ** 0.5),
    }


def main(argv: list[str] | None = None) -> int:
    from coordgate.provenance import environment

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_calibration")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--end-to-end", action="store_true", help="also the training check")
    parser.add_argument(
        "--end-to-end-only",
        action="store_true",
        help="only the training check, added to an existing calibration.json",
    )
    parser.add_argument("--pairs", type=int, default=160)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    path = args.out / "calibration.json"
    if args.end_to_end_only:
        record = json.loads(path.read_text())
        results = record["results"]
    else:
        results = run(args.quick)
        record = {"benchmark": "calibration", "quick": args.quick, "results": results}
    if args.end_to_end or args.end_to_end_only:
        with tempfile.TemporaryDirectory() as tmp:
            results["end_to_end"] = end_to_end(args.pairs, Path(tmp))
            results["end_to_end"]["environment"] = environment()
    record.setdefault("environment", environment())
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
