"""Deblurring study (paper §IV.B, Figs. 4b, 5, 6, 7): U-Nets with and without CoordGate.

Every model — U-Net(3…6), CG U-Net(3…6), CoordConv-UNet(6), MultiWienerNet(6) — is
trained on the same blurred/sharp pairs (embedded synthetic microscopy blurred by the
default lens, whose defocus grows toward the edge of the field) with the same schedule,
then evaluated on the test split and on real images that ship with scikit-image,
blurred by the same lens. A study is resumable model by model: finished runs are reused.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from coordgate.data.normalization import PercentileNormalizer
from coordgate.data.pairs import PairDataset, build_pairs
from coordgate.data.samples import sample_images
from coordgate.layers.coords import coordinate_grid
from coordgate.models import build_model, count_parameters
from coordgate.models.multiwiener import psfs_from_field
from coordgate.optics import PSFField, SpatiallyVaryingBlur
from coordgate.plots.deblur import (
    error_map_figure,
    metric_vs_params_figure,
    reconstruction_figure,
    validation_curves_figure,
)
from coordgate.provenance import environment
from coordgate.report import (
    Claim,
    Column,
    claims_markdown,
    environment_markdown,
    markdown_table,
    write_csv,
    write_json,
)
from coordgate.training.fit import TrainConfig, evaluate, fit
from coordgate.training.metrics import psnr, ssim

__all__ = ["ALL_MODELS", "PRESETS", "Preset", "add_arguments", "run", "run_study"]

ALL_MODELS = (
    "unet3", "unet4", "unet5", "unet6",
    "cg-unet3", "cg-unet4", "cg-unet5", "cg-unet6",
    "coordconv-unet6", "multiwiener-unet6", "lcn-unet3", "pac-unet3",
)  # fmt: skip
# Weights, gradients and Adam's two moments: bytes of training state per parameter.
_TRAINING_BYTES_PER_PARAMETER = 16


@dataclass(frozen=True)
class Preset:
    """One scale of the study. ``frame``: sensor frame size in pixels (models see whole
    frames); ``images``: sharp frames, split 80/10/10 into train/val/test;
    ``max_defocus``: the default lens's defocus in the corners (RMS waves; 0.75 makes the
    corners visibly blurred at these frame sizes, the centre in focus); ``residual``:
    every model learns the correction to the blurred input (output = input + network),
    which lets the small CPU budgets converge; the paper does not say either way."""

    name: str
    frame: int
    images: int
    base_channels: int
    epochs: int
    batch_size: int
    lr_patience: int
    early_stopping_patience: int | None
    models: tuple[str, ...]
    time_budget_s: float | None = None
    max_defocus: float = 0.75
    residual: bool = True


PRESETS = {
    "quick": Preset("quick", frame=64, images=480, base_channels=4, epochs=12, batch_size=16,
                    lr_patience=4, early_stopping_patience=None,
                    models=("unet3", "unet6", "cg-unet3"), time_budget_s=60),
    "cpu": Preset("cpu", frame=64, images=1200, base_channels=8, epochs=40, batch_size=16,
                  lr_patience=5, early_stopping_patience=10, models=ALL_MODELS,
                  time_budget_s=600),
    "paper": Preset("paper", frame=256, images=20000, base_channels=32, epochs=600,
                    batch_size=16, lr_patience=20, early_stopping_patience=None,
                    models=ALL_MODELS),
}  # fmt: skip


@dataclass
class ModelOutcome:
    """What the study measured for one model (one row of results.json)."""

    name: str
    params: int
    psnr: float
    psnr_std: float
    ssim: float
    ssim_std: float
    real_psnr: float
    real_psnr_std: float
    real_ssim: float
    train_s: float
    infer_ms: float
    epochs: int
    best_epoch: int
    stopped: str
    val_psnr: list[float]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="quick",
        help="scale of the study (quick: minutes; cpu: about an hour on 2 cores; paper: for a GPU)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=ALL_MODELS,
        default=None,
        help="models to train (default: the preset's)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is fastest on a shared machine)",
    )


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    if args.models:
        preset = replace(preset, models=tuple(args.models))
    results = run_study(
        preset, args.out, seed=args.seed, device=args.device, progress=not args.no_progress
    )
    print_summary(results, args.out)
    return 0


def print_summary(results: dict, out: Path) -> None:
    """A short table of the study's numbers in the terminal."""
    print(f"\ndeblurring study, preset {results['preset']['name']!r}:")
    print(f"  {'model':<20}{'params':>10}{'PSNR':>9}{'SSIM':>8}{'real PSNR':>11}")
    for row in results["models"]:
        print(
            f"  {row['name']:<20}{row['params']:>10,}{row['psnr']:>9.2f}{row['ssim']:>8.3f}"
            f"{row['real_psnr']:>11.2f}"
        )
    print(f"report: {out / 'report.md'}")


def _model_options(name: str, preset: Preset, field) -> dict:
    options: dict = {"base_channels": preset.base_channels, "residual": preset.residual}
    if name.startswith("multiwiener"):
        options["psfs"] = psfs_from_field(field, grid=3).tolist()
    if name.startswith("lcn"):
        options["frame"] = preset.frame
    return options


def training_memory(name: str, options: dict) -> tuple[int, int]:
    """(parameters, bytes of training state) of a model, counted on the meta device so
    that a model too large for this machine is never allocated."""
    with torch.device("meta"):
        params = count_parameters(build_model(name, **options))
    return params, _TRAINING_BYTES_PER_PARAMETER * params


def memory_limit() -> int:
    """Half of this machine's physical memory: the most a model's training state may take."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def _inference_ms(model: torch.nn.Module, blurred: torch.Tensor, repeats: int = 5) -> float:
    """Median milliseconds per image for a batch of whole frames, gates cached (eval)."""
    model.eval()
    timings = []
    with torch.no_grad():
        model(blurred)
        for _ in range(repeats):
            start = time.perf_counter()
            model(blurred)
            timings.append(time.perf_counter() - start)
    return 1000 * sorted(timings)[len(timings) // 2] / len(blurred)


def _predict_frames(model: torch.nn.Module, blurred: torch.Tensor, batch: int = 16):
    """Whole-frame predictions (N, 1, H, W) of ``model`` for frames at origin 0."""
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat(
            [
                model(blurred[i : i + batch].to(device)).float().cpu()
                for i in range(0, len(blurred), batch)
            ]
        )


def _real_pairs(frame: int, operator) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Real images shipped with scikit-image, cropped to a frame, normalised, blurred by
    the study's lens: (names, sharp (M, 1, F, F), blurred (M, 1, F, F))."""
    images = sample_images()
    sharp = []
    for image in images.values():
        sharp.append(centre_frame(torch.as_tensor(image, dtype=torch.float32), frame))
    sharp_t = torch.stack(sharp).unsqueeze(1)
    normaliser = PercentileNormalizer()
    sharp_t = torch.stack([normaliser.fitted_to(s).normalize(s).clamp(0, 1) for s in sharp_t])
    with torch.no_grad():
        blurred = operator.A(sharp_t)
    return list(images), sharp_t, blurred


def centre_frame(image: torch.Tensor, frame: int) -> torch.Tensor:
    """The central ``frame``×``frame`` window of a 2-D image, resampled down first (area)
    so that the window shows a good part of the image when it is much larger."""
    scale = max(1, min(image.shape) // (2 * frame))
    if scale > 1:
        image = torch.nn.functional.avg_pool2d(image[None, None], scale)[0, 0]
    if min(image.shape) < frame:
        raise ValueError(
            f"real image of shape {tuple(image.shape)} is smaller than the frame {frame}"
        )
    top, left = (image.shape[0] - frame) // 2, (image.shape[1] - frame) // 2
    return image[top : top + frame, left : left + frame]


def _test_frames(cache, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole test frames (blurred, sharp), each (M, 1, H, W)."""
    index = cache.indices("test")[:limit]
    blurred = torch.from_numpy(cache.array("blurred")[index].copy()).unsqueeze(1)
    sharp = torch.from_numpy(cache.array("sharp")[index].copy()).unsqueeze(1)
    return blurred, sharp


def train_model(
    name: str, preset: Preset, cache, out: Path, *, seed: int, device: str, progress: bool
) -> tuple[torch.nn.Module, object, dict]:
    """Train (or reuse) one model of the study; returns (model, training result, options)."""
    options = _model_options(name, preset, cache.field())
    model = build_model(name, **options)
    config = TrainConfig(
        epochs=preset.epochs,
        batch_size=preset.batch_size,
        lr_patience=preset.lr_patience,
        early_stopping_patience=preset.early_stopping_patience,
        time_budget_s=preset.time_budget_s,
        seed=seed,
        device=device,
        progress=progress,
    )
    result = fit(
        model,
        PairDataset(cache, "train", augment=True, seed=seed),
        PairDataset(cache, "val"),
        config,
        out / "runs" / name,
        resume=True,
        model_spec={"name": name, "options": options},
        extra_config={"preset": preset.name, "dataset": cache.manifest["parameters"]},
    )
    return model, result, options


def run_study(
    preset: Preset, out: str | Path, *, seed: int = 0, device: str = "auto", progress: bool = True
) -> dict:
    """Build or reuse the data, train or reuse every model, evaluate, write the outputs.

    Returns the content of ``results.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    field = PSFField.default(max_defocus=preset.max_defocus)
    cache = build_pairs(
        out / "dataset",
        source="synthetic",
        n=preset.images,
        size=preset.frame,
        field=field,
        noise=None,
        seed=seed,
        progress=progress,
    )
    settings = cache.manifest["parameters"]["operator"]
    operator = SpatiallyVaryingBlur(
        field, cache.size, rank=cache.manifest["operator"]["rank"], **settings
    )
    real_names, real_sharp, real_blurred = _real_pairs(preset.frame, operator)
    test_blurred, test_sharp = _test_frames(cache)
    outcomes, predictions = [], {}
    skipped = []
    for name in preset.models:
        print(f"== {name}", flush=True)
        params, state_bytes = training_memory(name, _model_options(name, preset, field))
        if state_bytes > memory_limit():
            reason = (
                f"{params:,} parameters need about {state_bytes / 2**30:.1f} GiB of training "
                f"state (weights, gradients, Adam moments), more than half of this machine's "
                f"{2 * memory_limit() / 2**30:.1f} GiB"
            )
            print(f"   skipped: {reason}", flush=True)
            skipped.append({"name": name, "params": params, "reason": reason})
            continue
        model, result, _ = train_model(
            name, preset, cache, out, seed=seed, device=device, progress=progress
        )
        model = model.cpu().float()
        metrics = evaluate(model, PairDataset(cache, "test"), device="cpu")
        prediction = _predict_frames(model, test_blurred)
        real_prediction = _predict_frames(model, real_blurred)
        real_psnr = psnr(real_prediction, real_sharp, reduce_dims=(1, 2, 3))
        real_ssim = ssim(real_prediction, real_sharp, reduce_dims=(1, 2, 3))
        predictions[name] = {"test": prediction, "real": real_prediction}
        outcomes.append(
            ModelOutcome(
                name=name,
                params=count_parameters(model),
                psnr=metrics["psnr"],
                psnr_std=metrics["psnr_std"],
                ssim=metrics["ssim"],
                ssim_std=metrics["ssim_std"],
                real_psnr=float(real_psnr.mean()),
                real_psnr_std=float(real_psnr.std()),
                real_ssim=float(real_ssim.mean()),
                train_s=result.train_time_s,
                infer_ms=_inference_ms(model, test_blurred[:8]),
                epochs=len(result.history),
                best_epoch=int(result.best["epoch"]),
                stopped=str(result.stop_reason),
                val_psnr=result.series("val_psnr"),
            )
        )
    results = {
        "preset": asdict(preset),
        "seed": seed,
        "psf_field": field.config(),
        "dataset": {"path": str(cache.path), **cache.manifest["counts"]},
        "real_images": real_names,
        "environment": environment(),
        "blurred_input": _input_baseline(test_blurred, test_sharp, real_blurred, real_sharp),
        "models": [asdict(o) for o in outcomes],
        "skipped": skipped,
    }
    results["error_profiles"] = error_profiles(predictions, test_sharp)
    write_outputs(
        results,
        out,
        predictions=predictions,
        test=(test_blurred, test_sharp),
        real=(real_blurred, real_sharp),
    )
    return results


def _input_baseline(test_blurred, test_sharp, real_blurred, real_sharp) -> dict:
    """PSNR / SSIM of the blurred input itself: what a model has to improve on."""
    test_psnr = psnr(test_blurred, test_sharp, reduce_dims=(1, 2, 3))
    test_ssim = ssim(test_blurred, test_sharp, reduce_dims=(1, 2, 3))
    real_psnr = psnr(real_blurred, real_sharp, reduce_dims=(1, 2, 3))
    return {
        "psnr": float(test_psnr.mean()),
        "psnr_std": float(test_psnr.std()),
        "ssim": float(test_ssim.mean()),
        "ssim_std": float(test_ssim.std()),
        "real_psnr": float(real_psnr.mean()),
    }


def error_profiles(predictions: dict, sharp: torch.Tensor, bins: int = 12) -> dict:
    """Mean squared error vs distance from the frame centre (normalised radius), per model."""
    coords = coordinate_grid(sharp.shape[-2:], dtype=torch.float64)
    radius = coords.square().sum(0).sqrt()
    edges = torch.linspace(0, float(radius.max()) + 1e-9, bins + 1, dtype=torch.float64)
    which = torch.bucketize(radius, edges[1:-1])
    profiles = {"radius": ((edges[1:] + edges[:-1]) / 2).tolist()}
    for name, outputs in predictions.items():
        error = (outputs["test"] - sharp).double().square().mean((0, 1))
        profiles[name] = [float(error[which == b].mean()) for b in range(bins)]
    return profiles


def write_outputs(results: dict, out: Path, *, predictions: dict, test: tuple, real: tuple) -> None:
    """results.json / results.csv, the figures and report.md."""
    rows = results["models"]
    write_json(results, out / "results.json")
    write_csv(rows, out / "results.csv", keys=[k for k in rows[0] if k != "val_psnr"])
    images = results["dataset"]["test"]
    metric_vs_params_figure(rows, "psnr", "test PSNR (dB)", out / "fig4b.png", images)
    metric_vs_params_figure(rows, "ssim", "test SSIM", out / "fig7.png", images)
    validation_curves_figure(rows, out / "fig6.png")
    blurred, sharp = test
    index = 0
    outputs = {name: p["test"][index, 0] for name, p in predictions.items()}
    scores = {name: float(psnr(o, sharp[index, 0])) for name, o in outputs.items()}
    scores["blurred"] = float(psnr(blurred[index, 0], sharp[index, 0]))
    reconstruction_figure(sharp[index, 0], blurred[index, 0], outputs, out / "fig5.png", scores)
    real_blurred, real_sharp = real
    real_outputs = {name: p["real"][0, 0] for name, p in predictions.items()}
    reconstruction_figure(real_sharp[0, 0], real_blurred[0, 0], real_outputs, out / "fig5_real.png")
    pair = [n for n in ("unet6", "cg-unet3") if n in predictions]
    if pair:
        maps = {n: (predictions[n]["test"] - sharp).square().mean((0, 1)) for n in pair}
        profiles = results["error_profiles"]
        error_map_figure(maps, profiles, profiles["radius"], out / "error_vs_position.png")
    (out / "report.md").write_text(report_markdown(results))


def _row(results: dict, name: str) -> dict | None:
    return next((r for r in results["models"] if r["name"] == name), None)


def _missing(*names: str) -> str:
    return f"not measured: this run lacks {', '.join(names)}"


def _compare(results: dict, winner: str, loser: str, metric: str = "psnr") -> tuple[bool, str]:
    a, b = _row(results, winner), _row(results, loser)
    delta = a[metric] - b[metric]
    unit = " dB" if metric.endswith("psnr") else ""
    text = (
        f"{winner} {a[metric]:.3f}{unit} vs {loser} {b[metric]:.3f}{unit} (Δ = {delta:+.3f}{unit})"
    )
    return delta > 0, text


def deblur_claims(results: dict) -> list[Claim]:
    """Each claim of §IV.B beside our numbers, with a verdict."""
    have = {r["name"] for r in results["models"]}
    claims = []

    def claim(title, paper, needs, judge):
        if not set(needs) <= have:
            claims.append(Claim(title, paper, _missing(*sorted(set(needs) - have)), "inconclusive"))
            return
        verdict, evidence = judge()
        claims.append(Claim(title, paper, evidence, verdict))

    def cg3_beats_unet6():
        better, text = _compare(results, "cg-unet3", "unet6")
        ratio = _row(results, "unet6")["params"] / _row(results, "cg-unet3")["params"]
        return (
            "supported" if better else "not supported"
        ), f"{text}; U-Net(6) has {ratio:.0f}× the parameters"

    def depth_helps():
        depths = [f"unet{d}" for d in range(3, 7)]
        values = [_row(results, n)["psnr"] for n in depths]
        rising = all(b > a for a, b in zip(values, values[1:]))
        text = ", ".join(f"{n} {v:.2f} dB" for n, v in zip(depths, values))
        last_gain = values[-1] - values[-2]
        text += f"; U-Net(6) − U-Net(5) = {last_gain:+.2f} dB"
        steps = sum(b > a for a, b in zip(values, values[1:]))
        return (
            "supported" if rising else "partly supported" if steps >= 2 else "not supported"
        ), text

    def coordconv_like_unet6():
        a, b = _row(results, "coordconv-unet6"), _row(results, "unet6")
        delta = a["psnr"] - b["psnr"]
        spread = b["psnr_std"] / max(1, results["dataset"].get("test", 1)) ** 0.5
        close = abs(delta) <= max(0.25, 2 * spread)
        return ("supported" if close else "not supported"), (
            f"coordconv-unet6 {a['psnr']:.3f} dB vs unet6 {b['psnr']:.3f} dB "
            f"(Δ = {delta:+.3f} dB; 'nearly identical' taken as |Δ| ≤ max(0.25 dB, "
            f"2 standard errors = {2 * spread:.3f} dB))"
        )

    def multiwiener_between():
        above, t1 = _compare(results, "multiwiener-unet6", "unet6")
        below, t2 = _compare(results, "cg-unet3", "multiwiener-unet6")
        verdict = (
            "supported"
            if above and below
            else "partly supported"
            if above or below
            else "not supported"
        )
        return verdict, f"{t1}; {t2}"

    def cg6_beats_cg3():
        better, text = _compare(results, "cg-unet6", "cg-unet3")
        return ("supported" if better else "not supported"), text

    def centre_error():
        profiles = results["error_profiles"]
        inner = [i for i, r in enumerate(profiles["radius"]) if r < 0.5]
        cg = sum(profiles["cg-unet3"][i] for i in inner) / len(inner)
        un = sum(profiles["unet6"][i] for i in inner) / len(inner)
        outer = [i for i, r in enumerate(profiles["radius"]) if r >= 1.0]
        cg_o = sum(profiles["cg-unet3"][i] for i in outer) / max(1, len(outer))
        un_o = sum(profiles["unet6"][i] for i in outer) / max(1, len(outer))
        return ("supported" if cg < un else "not supported"), (
            f"mean squared error within radius 0.5: cg-unet3 {cg:.2e} vs unet6 {un:.2e} "
            f"({un / cg:.2f}×); beyond radius 1 (corners): {cg_o:.2e} vs {un_o:.2e}"
        )

    def ssim_follows_psnr():
        rows = results["models"]
        rank_p = _ranks([r["psnr"] for r in rows])
        rank_s = _ranks([r["ssim"] for r in rows])
        n = len(rows)
        if n < 3:
            return "inconclusive", f"a rank correlation needs 3 or more models, this run has {n}"
        rho = 1 - 6 * sum((a - b) ** 2 for a, b in zip(rank_p, rank_s)) / (n * (n * n - 1))
        return (
            "supported" if rho >= 0.8 else "partly supported" if rho >= 0.5 else "not supported"
        ), (f"Spearman rank correlation of PSNR and SSIM over the {n} models: ρ = {rho:.2f}")

    def real_images():
        better, text = _compare(results, "cg-unet3", "unet6", "real_psnr")
        return ("supported" if better else "not supported"), f"on real images: {text}"

    def gate_helps_each_depth():
        pairs = [
            (f"cg-unet{d}", f"unet{d}") for d in range(3, 7) if {f"cg-unet{d}", f"unet{d}"} <= have
        ]
        deltas = [_row(results, a)["psnr"] - _row(results, b)["psnr"] for a, b in pairs]
        wins = sum(d > 0 for d in deltas)
        verdict = (
            "supported"
            if wins == len(deltas)
            else "partly supported"
            if wins > len(deltas) / 2
            else "not supported"
        )
        text = ", ".join(f"{a} − {b} = {d:+.2f} dB" for (a, b), d in zip(pairs, deltas))
        return verdict, f"{text} ({wins} of {len(deltas)} depths better with CoordGate)"

    def versus_adaptive_baselines():
        cg = _row(results, "cg-unet3")
        parts, wins = [], 0
        for name in ("lcn-unet3", "pac-unet3"):
            other = _row(results, name)
            delta = cg["psnr"] - other["psnr"]
            wins += delta >= -0.1
            parts.append(
                f"{name} {other['psnr']:.2f} dB, {other['params']:,} parameters, "
                f"{other['train_s']:.0f} s training, {other['infer_ms']:.2f} ms/frame "
                f"(cg-unet3 {delta:+.2f} dB with {cg['params']:,} parameters, "
                f"{cg['train_s']:.0f} s, {cg['infer_ms']:.2f} ms)"
            )
        verdict = "supported" if wins == 2 else "partly supported" if wins else "not supported"
        return verdict, "; ".join(parts)

    claim(
        "(§II) CoordGate matches locally-connected and pixel-adaptive U-Nets at lower cost",
        "LCNs need far more parameters and run slowly; PAC's fixed pairwise form cannot use "
        "fast convolutions (counted as matched within 0.1 dB)",
        ["cg-unet3", "lcn-unet3", "pac-unet3"],
        versus_adaptive_baselines,
    )
    claim(
        "Adding CoordGate improves the U-Net it is added to",
        "the addition of CoordGate causes a large increase in performance and efficiency",
        ["cg-unet3", "unet3"],
        gate_helps_each_depth,
    )
    claim(
        "CG U-Net(3) beats U-Net(6) with ~60× fewer parameters",
        "CG U-Net(3) outperforms U-Net(6) despite 60× fewer parameters",
        ["cg-unet3", "unet6"],
        cg3_beats_unet6,
    )
    claim(
        "PSNR grows with U-Net depth, U-Net(6) only marginally above U-Net(5)",
        "PSNR increases with depth; U-Net(6) only marginally better than U-Net(5)",
        [f"unet{d}" for d in range(3, 7)],
        depth_helps,
    )
    claim(
        "CoordConv-UNet performs like U-Net(6)",
        "CoordConv-UNet performed nearly identically to U-Net(6)",
        ["coordconv-unet6", "unet6"],
        coordconv_like_unet6,
    )
    claim(
        "MultiWienerNet beats U-Net(6) but loses to CG U-Net(3)",
        "MultiWienerNet improves over U-Net(6) but is outperformed by the shallower "
        "CoordGate model",
        ["multiwiener-unet6", "unet6", "cg-unet3"],
        multiwiener_between,
    )
    claim(
        "CG U-Net(6) beats CG U-Net(3)",
        "CG U-Net(6) performs better than CG U-Net(3)",
        ["cg-unet6", "cg-unet3"],
        cg6_beats_cg3,
    )
    claim(
        "CoordGate's error is much lower near the centre",
        "significantly lower loss close to the centre of the image for CoordGate",
        ["cg-unet3", "unet6"],
        centre_error,
    )
    claim(
        "SSIM follows PSNR",
        "SSIM results follow the trend of the PSNR (appendix, Fig. 7)",
        [],
        ssim_follows_psnr,
    )
    claim(
        "(ours) the advantage carries over to real images blurred by the same lens",
        "not in the paper: real microscopy/astronomy images shipped with scikit-image",
        ["cg-unet3", "unet6"],
        real_images,
    )
    return claims


def _ranks(values: list[float]) -> list[int]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0] * len(values)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return ranks


COLUMNS = (
    Column("name", "model"),
    Column("params", "parameters", ","),
    Column("psnr", "PSNR (dB)", ".2f"),
    Column("psnr_std", "± std", ".2f"),
    Column("ssim", "SSIM", ".3f"),
    Column("ssim_std", "± std", ".3f"),
    Column("real_psnr", "real PSNR (dB)", ".2f"),
    Column("real_ssim", "real SSIM", ".3f"),
    Column("epochs", "epochs"),
    Column("best_epoch", "best epoch"),
    Column("train_s", "train (s)", ".0f"),
    Column("infer_ms", "infer (ms/img)", ".2f"),
)


def skipped_lines(skipped: list[dict]) -> list[str]:
    """Report lines for the models this machine could not train (none: no lines)."""
    if not skipped:
        return []
    return ["Not trained here:", ""] + [f"- {s['name']}: {s['reason']}" for s in skipped] + [""]


def convergence_note(rows: list[dict]) -> str:
    """Say which models were still improving when training stopped: their numbers are
    lower bounds, and comparisons between them also measure speed of convergence."""
    still = [r["name"] for r in rows if r["best_epoch"] == r["epochs"] and r["epochs"] > 1]
    if not still:
        return "Every model stopped improving before its last epoch (converged at this scale)."
    return (
        f"**Not converged:** {len(still)} of {len(rows)} models had their best validation "
        f"loss in their last epoch ({', '.join(still)}), so their scores are lower bounds and "
        "differences between them also reflect how fast each model learns within this budget."
    )


def report_markdown(results: dict) -> str:
    """The study's report, generated from ``results`` (no numbers typed by hand)."""
    preset = results["preset"]
    dataset = results["dataset"]
    lines = [
        "# Deblurring study (paper §IV.B, Figs. 4b, 5, 6, 7)",
        "",
        f"Preset **{preset['name']}**: {preset['frame']}×{preset['frame']} sensor frames, "
        f"{preset['images']} synthetic microscopy frames (train {dataset.get('train')}, "
        f"val {dataset.get('val')}, test {dataset.get('test')}), base width "
        f"{preset['base_channels']}, up to {preset['epochs']} epochs (batch "
        f"{preset['batch_size']}, Adam lr 1e-3 halved after {preset['lr_patience']} epochs "
        f"without validation improvement, early stopping after "
        f"{preset['early_stopping_patience']}, time budget per model "
        f"{preset['time_budget_s']} s), seed {results['seed']}. Blur: the default lens "
        f"{results['psf_field']}, no noise (as in the paper). Residual learning "
        f"(output = input + network): {preset['residual']}. Real images: "
        f"{', '.join(results['real_images'])}.",
        "",
        markdown_table(results["models"], COLUMNS),
        "",
        convergence_note(results["models"]),
        "",
        f"The blurred input itself scores {results['blurred_input']['psnr']:.2f} ± "
        f"{results['blurred_input']['psnr_std']:.2f} dB PSNR and "
        f"{results['blurred_input']['ssim']:.3f} SSIM on the test frames, "
        f"{results['blurred_input']['real_psnr']:.2f} dB on the real images.",
        "",
        "PSNR and SSIM: mean ± standard deviation over the test frames (whole frames, data "
        "range 1). Inference: milliseconds per 1-channel frame, CPU, eval mode (gates cached).",
        "",
        *skipped_lines(results.get("skipped", [])),
        "## The paper's claims at this scale",
        "",
        claims_markdown(deblur_claims(results)),
        "",
        "## Figures",
        "",
        "- `fig4b.png` PSNR vs log10(parameters); `fig7.png` SSIM vs log10(parameters) "
        "(bars: standard error of the mean over the test frames)",
        "- `fig5.png` one test frame: sharp, blurred, every model (corner zoomed); "
        "`fig5_real.png` the same for a real image",
        "- `fig6.png` validation PSNR per epoch",
        "- `error_vs_position.png` mean squared error per pixel and vs radius, "
        "U-Net(6) vs CG U-Net(3)",
        "",
        "## Environment",
        "",
        environment_markdown(results["environment"]),
        "",
    ]
    return "\n".join(lines)
