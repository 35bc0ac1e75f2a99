"""Deblurring study (paper §IV.B, Figs. 4b, 5, 6, 7): U-Nets with and without CoordGate.

Every model — U-Net(3…6), CG U-Net(3…6), CoordConv-UNet(6), MultiWienerNet(6), LCN- and
PAC-UNet(3) — is trained on the same blurred/sharp pairs (embedded synthetic microscopy
blurred by the default lens, whose defocus grows toward the edge of the field) with the
same schedule and seeds, then evaluated on the test split and on real images that ship
with scikit-image, blurred by the same lens. The ``sensor`` preset is the regime the
paper never tests: large sensor frames, training on random crops that carry their sensor
origin, evaluation on whole frames through :func:`coordgate.inference.predict`.

Three steps: run (this module: train, evaluate, results), claims
(:mod:`._deblur_claims`: each claim's rule and verdict) and report
(:mod:`._deblur_report`: files from the results alone). A study is resumable model by
model and seed by seed: finished runs are reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from coordgate.data.normalization import PercentileNormalizer
from coordgate.data.pairs import CROP_ORIGINS, NoiseModel, PairDataset, build_pairs
from coordgate.data.samples import sample_images
from coordgate.experiments._classical import CLASSICAL, tune_classical
from coordgate.experiments._deblur_claims import deblur_claims
from coordgate.experiments._deblur_report import (
    budget_lines,
    harm_lines,
    schedule_text,
    training_seconds,
    write_outputs,
)
from coordgate.experiments._records import load_record, save_record
from coordgate.frames import coordinate_grid
from coordgate.inference import predict
from coordgate.models import build_model, count_parameters, lookup_model
from coordgate.models.multiwiener import psfs_from_field
from coordgate.optics import DEFAULT_MAX_DEFOCUS, PSFField, SpatiallyVaryingBlur
from coordgate.provenance import environment
from coordgate.timing import median_seconds
from coordgate.training.checkpoint import (
    BEST_CHECKPOINT,
    CheckpointConfig,
    load_checkpoint,
    save_checkpoint,
)
from coordgate.training.fit import CPU_SCHEDULE, FINISHED_FILE, TrainConfig, fit
from coordgate.training.metrics import ssim
from coordgate.training.plateau import doubling_test

__all__ = [
    "ALL_MODELS",
    "CLASSICAL",
    "HEADLINE",
    "PRESETS",
    "SHARED",
    "Preset",
    "add_arguments",
    "add_no_train_argument",
    "add_run_arguments",
    "budget_lines",
    "budget_test",
    "deblur_claims",
    "export_checkpoints",
    "harm_lines",
    "run",
    "run_study",
    "schedule_text",
    "set_threads",
    "study_pairs",
    "train_model",
    "training_seconds",
]

ALL_MODELS = (
    "unet3", "unet4", "unet5", "unet6",
    "cg-unet3", "cg-unet4", "cg-unet5", "cg-unet6",
    "coordconv-unet6", "multiwiener-unet6", "lcn-unet3", "pac-unet3", "care-unet",
)  # fmt: skip
# Weights, gradients and Adam's two moments: bytes of training state per parameter.
_TRAINING_BYTES_PER_PARAMETER = 16


@dataclass(frozen=True)
class Preset:
    """One scale of the study. ``frame``: sensor frame size in pixels; ``crop``: None
    (models train on whole frames) or the side of the random crops they train on, each
    with its sensor origin (the sensor regime; evaluation is always on whole frames,
    through :func:`coordgate.inference.predict`); ``crops_per_frame``: crops drawn from a
    frame per epoch ("area": enough to cover it); ``crop_origins``: how their origins are
    drawn (:data:`~coordgate.data.pairs.CROP_ORIGINS`); ``images``: sharp frames, split 80/10/10
    into train/val/test; ``max_defocus``: the lens's defocus in the corners (RMS waves,
    the project's default lens); ``aberrations``: its other
    :class:`~coordgate.optics.LensField` parameters (astigmatism, coma, spherical, tilt;
    none by default); ``residual``: every model learns the correction to the
    blurred input (output = input + network), which lets the small CPU budgets converge;
    the paper does not say either way. ``seeds``: seeds per model; the headline models
    (:data:`HEADLINE`) get ``headline_seeds``. ``training``: the schedule every run
    follows (its seed, device and progress are each run's). Budgets in tiers: the
    :data:`HEADLINE` models run ``headline_epochs`` (None: ``training.epochs``), the
    others ``training.epochs``; the first seed of each ``budget_test`` model is also
    trained at half its budget (the halving form of the doubling test,
    :func:`budget_test`)."""

    name: str
    frame: int
    images: int
    base_channels: int
    models: tuple[str, ...]
    training: TrainConfig
    headline_epochs: int | None = None
    budget_test: tuple[str, ...] = ()
    max_defocus: float = DEFAULT_MAX_DEFOCUS
    aberrations: dict[str, float] = dataclasses.field(default_factory=dict)
    residual: bool = True
    crop: int | None = None
    crops_per_frame: int | str = "area"
    crop_origins: str = "covering"
    classical: tuple[str, ...] = CLASSICAL
    rl_max_iterations: int = 2000
    noise: bool = False
    seeds: int = 1
    headline_seeds: int = 1

    def epochs_of(self, name: str) -> int:
        """The planned epochs of ``name``'s runs (its tier's budget)."""
        if name in HEADLINE and self.headline_epochs is not None:
            return self.headline_epochs
        return self.training.epochs

    def train_config(
        self, name: str, seed: int, device: str, progress: bool, epochs: int | None = None
    ) -> TrainConfig:
        """How the run of ``name`` with ``seed`` trains: at its tier's budget, or ``epochs``."""
        return replace(
            self.training,
            epochs=epochs or self.epochs_of(name),
            seed=seed,
            device=device,
            progress=progress,
        )

    def with_training(self, **changes) -> Preset:
        """This preset with ``changes`` to its schedule (:class:`TrainConfig`'s fields)."""
        return replace(self, training=replace(self.training, **changes))

    def to_dict(self) -> dict:
        """The preset as ``results.json`` records it: one flat dict, the schedule's fields
        (all but each run's seed, device, progress and workers) beside the preset's own."""
        record = asdict(self)
        training = record.pop("training")
        for run_field in ("seed", "device", "progress", "num_workers"):
            del training[run_field]
        return record | training


#: Models whose comparisons carry the study's headline (trained with ``headline_seeds``).
HEADLINE = ("unet3", "unet6", "cg-unet3", "care-unet")
# the plateau rule's patience is unused under the cosine schedule; float32 unless a preset
# chooses otherwise (the plateau search ran in float32)
_CONVERGING = replace(CPU_SCHEDULE, lr_patience=2, amp=False, channels_last=False)
#: The cosine's length for the cpu and sensor presets. Not a plateau: on the cpu preset no
#: budget up to 1120 epochs passed the doubling test (``results/plateau/cpu``: from 560 to
#: 1120 epochs CG U-Net(3) gained 0.54 dB and U-Net(6) 0.18 dB); the regenerated studies
#: choose their budgets from that search.
CPU_EPOCHS = 280

PRESETS = {
    # the demo: a few minutes on 2 cores; a higher peak rate and a fixed length
    "quick": Preset("quick", frame=64, images=600, base_channels=8,
                    models=("cg-unet3", "unet6"),
                    training=replace(_CONVERGING, epochs=14, lr=3e-3)),
    # bf16 autocast and channels-last: 0.47x (CG U-Net(3)), 0.55x (U-Net(6)), 0.43x
    # (care-unet) a float32 step on whole 64x64 frames (benchmarks/results/precision.json,
    # thread CPU time). Not free at long budgets: at 560 epochs (seed 0) CG U-Net(3) scores
    # 33.46 dB and U-Net(6) 33.55 against 33.70 and 33.67 in float32 (results/plateau/cpu),
    # -0.24 / -0.12 dB (-0.07 at 70 epochs). Kept: bf16 runs about twice the epochs in the
    # same time, and doubling gains more than that (+0.54 / +0.18 dB from 560 to 1120
    # epochs in float32), so at equal time bf16 is expected to lead (not measured)
    "cpu": Preset("cpu", frame=64, images=800, base_channels=8,
                  headline_epochs=2 * CPU_EPOCHS, budget_test=HEADLINE,
                  models=ALL_MODELS, headline_seeds=3,
                  training=replace(_CONVERGING, epochs=CPU_EPOCHS, amp=True,
                                   channels_last=True)),
    # bf16 + channels-last on 64x64 crops with their own origins: 0.74x (CG U-Net(3)),
    # 0.69x (U-Net(6)), 0.41x (care-unet) a float32 step (precision.json, crop_step)
    "sensor": Preset("sensor", frame=256, images=160, base_channels=8,
                     headline_epochs=2 * CPU_EPOCHS, budget_test=HEADLINE,
                     crop=64, crops_per_frame=4,
                     models=("unet3", "unet6", "cg-unet3", "cg-unet6", "coordconv-unet6",
                             "care-unet"),
                     headline_seeds=3,
                     training=replace(_CONVERGING, epochs=CPU_EPOCHS, amp=True,
                                      channels_last=True)),
    "paper": Preset("paper", frame=256, images=20000, base_channels=32, models=ALL_MODELS,
                    training=TrainConfig(epochs=600, batch_size=16, lr_patience=20,
                                         amp=False, channels_last=False)),
}  # fmt: skip
# The noise axis: the headline models and the classical baselines on frames with the
# NoiseModel default (the Poisson-Gaussian noise `coordgate dataset build` adds), at the
# noise-free preset's budgets (their halving tests are not repeated).
for _name in ("cpu", "sensor"):
    PRESETS[f"{_name}-noise"] = replace(
        PRESETS[_name], name=f"{_name}-noise", noise=True, models=HEADLINE, budget_test=()
    )


@dataclass
class SeedOutcome:
    """One trained model of one seed: how its training ended and its per-frame scores."""

    seed: int
    epochs: int
    best_epoch: int
    stopped: str
    plan: dict | None
    train_s: float
    psnr: float
    psnr_frames: list[float]
    centre_psnr_frames: list[float]
    real_psnr_frames: list[float]
    real_inner_psnr_frames: list[float]
    real_edge_psnr_frames: list[float]
    ssim_frames: list[float]
    real_ssim: float
    val_psnr: list[float]


@dataclass
class ModelOutcome:
    """What the study measured for one model (one row of results.json): means over its
    seeds, the first seed's training story, and each seed's per-frame scores."""

    name: str
    params: int
    psnr: float
    psnr_std: float
    psnr_seeds: list[float]
    ssim: float
    ssim_std: float
    real_psnr: float
    real_psnr_std: float
    real_inner_psnr: float
    real_edge_psnr: float
    real_ssim: float
    train_s: float
    infer_ms: float
    frame256_ms: float | None
    budget_epochs: int
    doubling: dict | None
    epochs: int
    best_epoch: int
    stopped: str
    val_psnr: list[float]
    psnr_frames: list[list[float]]
    centre_psnr_frames: list[list[float]]
    real_psnr_frames: list[list[float]]
    real_inner_psnr_frames: list[list[float]]
    runs: list[dict]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="quick",
        help="scale of the study (quick: a few minutes; cpu: whole 64x64 frames; sensor: "
        "64x64 crops of 256x256 frames; *-noise: their headline models on frames with "
        "the default Poisson-Gaussian noise; paper: for a GPU)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=ALL_MODELS,
        default=None,
        help="models to train (default: the preset's)",
    )
    parser.add_argument(
        "--epochs", type=int, help="planned epochs of every run (default: the preset's)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        help="seeds of every model, headline ones included (default: the preset's)",
    )
    parser.add_argument(
        "--crop-origins",
        choices=CROP_ORIGINS,
        help="how training crops are placed on the sensor (default: the preset's, covering)",
    )
    add_no_train_argument(parser)
    add_run_arguments(parser)


def add_no_train_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-train``: score the finished runs only (a study spread over sessions)."""
    parser.add_argument(
        "--no-train",
        action="store_true",
        help="train nothing: score the finished runs, report them and list the rest as "
        "not trained yet (a study spread over several sessions)",
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every training study takes: --out, --seed, --device, --no-progress and
    --threads (applied with :func:`set_threads`)."""
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is fastest on a shared machine)",
    )


def set_threads(threads: int | None) -> None:
    """Apply a study's ``--threads`` option (None: torch's choice)."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    preset = PRESETS[args.preset]
    if args.models:
        preset = replace(preset, models=tuple(args.models))
    if args.epochs is not None:
        if args.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
        preset = preset.with_training(epochs=args.epochs)
    if args.crop_origins:
        preset = replace(preset, crop_origins=args.crop_origins)
    if args.seeds is not None:
        if args.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
        preset = replace(preset, seeds=args.seeds, headline_seeds=args.seeds)
    results = run_study(
        preset, args.out, seed=args.seed, device=args.device, progress=not args.no_progress,
        train=not args.no_train,
    )  # fmt: skip
    print_summary(results, args.out)
    return 0


def print_summary(results: dict, out: Path) -> None:
    """A short table of the study's numbers in the terminal."""
    baseline = results["blurred_input"]
    print(f"\ndeblurring study, preset {results['preset']['name']!r} (test PSNR over seeds):")
    print(f"  {'model':<20}{'params':>10}{'PSNR':>9}{'gain':>8}{'SSIM':>8}{'real PSNR':>11}")
    print(
        f"  {'blurred input':<20}{'':>10}{baseline['psnr']:>9.2f}{'':>8}{baseline['ssim']:>8.3f}"
        f"{baseline['real_psnr']:>11.2f}"
    )
    for row in results["models"]:
        print(
            f"  {row['name']:<20}{row['params']:>10,}{row['psnr']:>9.2f}"
            f"{row['psnr'] - baseline['psnr']:>+8.2f}{row['ssim']:>8.3f}{row['real_psnr']:>11.2f}"
        )
    unjudged = [c for c in results["claims"] if c["evidence"].startswith("not measured")]
    for claim in results["claims"]:
        if claim not in unjudged:
            print(f"  claim: {claim['title']}: {claim['verdict']}")
    if unjudged:
        print(f"  ({len(unjudged)} claims need models this run did not train; see the report)")
    print(f"report: {out / 'report.md'}")


def _model_options(name: str, preset: Preset, field) -> dict:
    options: dict = {"base_channels": preset.base_channels, "residual": preset.residual}
    if "base_channels" not in lookup_model(name).options:  # a fixed configuration (CARE's)
        del options["base_channels"]
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
    with torch.no_grad():
        seconds = median_seconds(lambda: model(blurred), repeats, device=blurred.device)
    return 1000 * seconds / len(blurred)


def _predict_frames(model: torch.nn.Module, blurred: torch.Tensor) -> torch.Tensor:
    """Whole-frame predictions (N, 1, H, W) of ``model`` for frames that each cover the
    whole sensor, run through :func:`~coordgate.inference.predict` as ``coordgate deblur``
    runs them (tiled only where a frame's activations would exceed the memory budget)."""
    return torch.cat([predict(model, frame, tile="auto") for frame in blurred.split(1)])


def _real_pairs(
    frame: int, operator, noise: NoiseModel | None = None
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Real images shipped with scikit-image, cropped to a frame, normalised, blurred by
    the study's lens (and given ``noise``, image i drawn from seed i): (names, sharp
    (M, 1, F, F), blurred (M, 1, F, F))."""
    images = sample_images()
    sharp = []
    for image in images.values():
        sharp.append(centre_frame(torch.as_tensor(image, dtype=torch.float32), frame))
    sharp_t = torch.stack(sharp).unsqueeze(1)
    normaliser = PercentileNormalizer()
    sharp_t = torch.stack([normaliser.fitted_to(s).normalize(s).clamp(0, 1) for s in sharp_t])
    with torch.no_grad():
        blurred = operator.A(sharp_t).clamp_min(0)
    if noise is not None:
        blurred = torch.cat([
            noise.apply(b[None], torch.Generator().manual_seed(i)) for i, b in enumerate(blurred)
        ])  # fmt: skip
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


def _split_frames(cache, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole frames of ``split`` (blurred, sharp), each (M, 1, H, W)."""
    index = cache.indices(split)[:limit]
    blurred = torch.from_numpy(cache.array("blurred")[index].copy()).unsqueeze(1)
    sharp = torch.from_numpy(cache.array("sharp")[index].copy()).unsqueeze(1)
    return blurred, sharp


def run_dir(out: Path, name: str, seed: int, epochs: int | None = None) -> Path:
    """Where the study trains ``name`` with ``seed``: ``runs/NAME/seedS`` at its tier's
    budget, ``runs/NAME/seedS-eE`` at another budget of ``epochs``."""
    return out / "runs" / name / (f"seed{seed}" if epochs is None else f"seed{seed}-e{epochs}")


def train_model(
    name: str,
    preset: Preset,
    cache,
    out: Path,
    *,
    seed: int,
    device: str,
    progress: bool,
    epochs: int | None = None,
) -> tuple[torch.nn.Module, object, dict]:
    """Train (or reuse) one model of the study at its tier's budget (or ``epochs``);
    returns (model, training result, options)."""
    options = _model_options(name, preset, cache.field())
    torch.manual_seed(seed)
    model = build_model(name, **options)
    train = PairDataset(
        cache,
        "train",
        crop=preset.crop,
        crops_per_frame=preset.crops_per_frame if preset.crop else 1,
        crop_origins=preset.crop_origins,
        augment=True,
        seed=seed,
    )
    result = fit(
        model,
        train,
        PairDataset(cache, "val"),
        preset.train_config(name, seed, device, progress, epochs),
        run_dir(out, name, seed, epochs),
        resume=True,
        model_spec={"name": name, "options": options},
        record=CheckpointConfig(
            {"name": name, "options": options},
            normalisation=cache.normalisation(),
            dataset=cache.manifest["parameters"],
            preset=preset.name,
        ),
    )
    return model, result, options


def model_seeds(name: str, preset: Preset, seed: int) -> list[int]:
    """The training seeds of ``name``: ``seed``, ``seed + 1``, ..."""
    count = preset.headline_seeds if name in HEADLINE else preset.seeds
    return [seed + k for k in range(max(1, count))]


@dataclass
class _Frames:
    """The study's evaluation frames: test and real, blurred and sharp, (M, 1, H, W)."""

    test_blurred: torch.Tensor
    test_sharp: torch.Tensor
    real_blurred: torch.Tensor
    real_sharp: torch.Tensor
    real_names: list[str]

    @property
    def centre(self) -> torch.Tensor:
        """(H, W) mask of the pixels within normalised radius 0.5 of the frame centre."""
        coords = coordinate_grid(self.test_sharp.shape[-2:], dtype=torch.float64)
        return coords.square().sum(0).sqrt() < 0.5

    @property
    def edge_band(self) -> int:
        """Pixels of the band along the sensor's edge that :attr:`inner` leaves out: an
        eighth of the frame (32 px of 256)."""
        return max(1, min(self.test_sharp.shape[-2:]) // 8)

    @property
    def inner(self) -> torch.Tensor:
        """(H, W) mask of the pixels more than :attr:`edge_band` px from the frame's edge."""
        h, w = self.test_sharp.shape[-2:]
        band = self.edge_band
        mask = torch.zeros(h, w, dtype=torch.bool)
        mask[band : h - band, band : w - band] = True
        return mask


def _per_frame_psnr(prediction: torch.Tensor, sharp: torch.Tensor, mask=None) -> list[float]:
    error = (prediction.double() - sharp.double()).square()
    mse = error.mean((1, 2, 3)) if mask is None else error[..., mask].mean((1, 2))
    return (10 * torch.log10(1 / mse.clamp_min(1e-12))).tolist()


def _score_seed(model, result, seed: int, frames: _Frames) -> tuple[SeedOutcome, dict]:
    """Evaluate one trained model on the test and real frames: (scores, views)."""
    prediction = _predict_frames(model, frames.test_blurred)
    real_prediction = _predict_frames(model, frames.real_blurred)
    training = {
        "epochs": len(result.history),
        "best_epoch": int(result.best["epoch"]),
        "stopped": str(result.stop_reason),
        "plan": result.plan,
        "train_s": result.train_time_s,
        "val_psnr": result.series("val_psnr"),
    }
    scored = _score(prediction, real_prediction, seed, frames, training)
    return scored, _views(prediction, real_prediction, frames)


def _views(prediction: torch.Tensor, real_prediction: torch.Tensor, frames: _Frames) -> dict:
    """What the figures show of one model (each (H, W)): its first test and real
    outputs and its mean squared error map over the test frames."""
    return {
        "test0": prediction[0, 0],
        "real0": real_prediction[0, 0],
        "error_map": (prediction - frames.test_sharp).square().mean((0, 1)),
    }


def _score(prediction, real_prediction, seed: int, frames: _Frames, training: dict) -> SeedOutcome:
    """The per-frame scores of one seed's test and real predictions."""
    psnr_frames = _per_frame_psnr(prediction, frames.test_sharp)
    return SeedOutcome(
        seed=seed,
        **training,
        psnr=sum(psnr_frames) / len(psnr_frames),
        psnr_frames=psnr_frames,
        centre_psnr_frames=_per_frame_psnr(prediction, frames.test_sharp, frames.centre),
        real_psnr_frames=_per_frame_psnr(real_prediction, frames.real_sharp),
        real_inner_psnr_frames=_per_frame_psnr(real_prediction, frames.real_sharp, frames.inner),
        real_edge_psnr_frames=_per_frame_psnr(real_prediction, frames.real_sharp, ~frames.inner),
        ssim_frames=ssim(prediction, frames.test_sharp, reduce_dims=(1, 2, 3)).tolist(),
        real_ssim=float(ssim(real_prediction, frames.real_sharp)),
    )


def _mean_std(values: list[float]) -> tuple[float, float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    return float(tensor.mean()), float(tensor.std(unbiased=False))


def _outcome(
    name: str,
    seeds: list[SeedOutcome],
    *,
    params: int,
    infer_ms: float,
    frame256_ms: float | None,
    budget_epochs: int = 0,
    doubling: dict | None = None,
) -> ModelOutcome:
    """One row of results: means over seeds, the first seed's training story; ``params``
    and the timings are those of the last seed's model; ``budget_epochs``: the planned
    epochs of its runs; ``doubling``: its budget test (:func:`budget_test`) or None."""
    first = seeds[0]
    psnr_all = [v for s in seeds for v in s.psnr_frames]
    ssim_all = [v for s in seeds for v in s.ssim_frames]
    real_all = [v for s in seeds for v in s.real_psnr_frames]
    psnr_mean, _ = _mean_std(psnr_all)
    ssim_mean, _ = _mean_std(ssim_all)
    real_mean, real_std = _mean_std(real_all)
    return ModelOutcome(
        name=name,
        params=params,
        psnr=psnr_mean,
        psnr_std=_mean_std(first.psnr_frames)[1],
        psnr_seeds=[s.psnr for s in seeds],
        ssim=ssim_mean,
        ssim_std=_mean_std(first.ssim_frames)[1],
        real_psnr=real_mean,
        real_psnr_std=real_std,
        real_inner_psnr=_mean_std([v for s in seeds for v in s.real_inner_psnr_frames])[0],
        real_edge_psnr=_mean_std([v for s in seeds for v in s.real_edge_psnr_frames])[0],
        real_ssim=_mean_std([s.real_ssim for s in seeds])[0],
        train_s=sum(s.train_s for s in seeds) / len(seeds),
        infer_ms=infer_ms,
        frame256_ms=frame256_ms,
        budget_epochs=budget_epochs,
        doubling=doubling,
        epochs=first.epochs,
        best_epoch=first.best_epoch,
        stopped=first.stopped,
        val_psnr=first.val_psnr,
        psnr_frames=[s.psnr_frames for s in seeds],
        centre_psnr_frames=[s.centre_psnr_frames for s in seeds],
        real_psnr_frames=[s.real_psnr_frames for s in seeds],
        real_inner_psnr_frames=[s.real_inner_psnr_frames for s in seeds],
        runs=[
            {k: v for k, v in asdict(s).items() if not k.endswith("_frames") and k != "val_psnr"}
            for s in seeds
        ],
    )


def _frame256_ms(model: torch.nn.Module) -> float | None:
    """Median milliseconds to deblur one 256² sensor frame (None: the model holds weights
    for another fixed frame)."""
    if getattr(model, "frame", None) not in (None, (256, 256)):
        return None
    frame = torch.rand(1, 1, 256, 256)
    model.eval()
    with torch.no_grad():
        return 1000 * median_seconds(lambda: predict(model, frame, tile="auto"), 3)


def _classical_outcome(name, preset, val, operator, field, frames, seed):
    """Tune ``name`` on the ``val`` frames (blurred, sharp) with the true field, score it
    like a network."""
    val_blurred, val_sharp = val
    method = tune_classical(name, val_blurred, val_sharp, operator, field,
                            max_iterations=preset.rl_max_iterations)  # fmt: skip
    start = time.perf_counter()
    prediction = method(frames.test_blurred, operator)
    test_ms = 1000 * (time.perf_counter() - start) / len(frames.test_blurred)
    real_prediction = method(frames.real_blurred, operator)
    training = {
        "epochs": 0,
        "best_epoch": 0,
        "stopped": f"{'balance' if name == 'sv-wiener' else 'iterations'} {method.setting:g}",
        "plan": None,
        "train_s": 0.0,
        "val_psnr": list(method.curve.values()),
    }
    scored = _score(prediction, real_prediction, seed, frames, training)
    outcome = _outcome(name, [scored], params=0, infer_ms=test_ms,
                       frame256_ms=method.frame_ms(256, operator))  # fmt: skip
    return outcome, _views(prediction, real_prediction, frames)


def _too_large(name: str, preset: Preset, field) -> dict | None:
    """Why ``name`` cannot be trained on this machine, or None."""
    params, state_bytes = training_memory(name, _model_options(name, preset, field))
    if state_bytes <= memory_limit():
        return None
    reason = (
        f"{params:,} parameters need about {state_bytes / 2**30:.1f} GiB of training "
        f"state (weights, gradients, Adam moments), more than half of this machine's "
        f"{2 * memory_limit() / 2**30:.1f} GiB"
    )
    return {"name": name, "params": params, "reason": reason}


def study_field(preset: Preset) -> PSFField:
    """The lens of the study."""
    return PSFField.default(max_defocus=preset.max_defocus, **preset.aberrations)


def study_pairs(preset: Preset, out: Path, *, seed: int = 0, progress: bool = True):
    """Build or reuse the study's pair cache in ``out/dataset``: ``preset.images``
    synthetic frames blurred by the study's lens, no noise."""
    out.mkdir(parents=True, exist_ok=True)
    return build_pairs(
        out / "dataset",
        source="synthetic",
        n=preset.images,
        size=preset.frame,
        field=study_field(preset),
        noise=NoiseModel() if preset.noise else None,
        seed=seed,
        progress=progress,
    )


def run_study(
    preset: Preset,
    out: str | Path,
    *,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    export: bool = True,
    train: bool = True,
) -> dict:
    """Build or reuse the data, train or reuse every model and seed, evaluate, judge the
    claims and write the outputs (with ``export``, half-precision copies of the
    :data:`SHARED` models' checkpoints too). Without ``train`` only finished runs are
    scored; a model with a run still to train is listed under ``skipped``. Returns the
    content of ``results.json``."""
    out = Path(out)
    field = study_field(preset)
    cache = study_pairs(preset, out, seed=seed, progress=progress)
    settings = cache.manifest["parameters"]["operator"]
    operator = SpatiallyVaryingBlur(
        field, cache.size, rank=cache.manifest["operator"]["rank"], **settings
    )
    noise = NoiseModel() if preset.noise else None
    real_names, real_sharp, real_blurred = _real_pairs(preset.frame, operator, noise)
    frames = _Frames(*_split_frames(cache, "test"), real_blurred, real_sharp, real_names)
    outcomes, views, skipped, untested = [], {}, [], []
    run = _Runs(preset, cache, out, frames, device=device, progress=progress, train=train)
    for name in preset.models:
        too_large = _too_large(name, preset, field)
        if too_large is not None:
            print(f"== {name} skipped: {too_large['reason']}", flush=True)
            skipped.append(too_large)
            continue
        seeds = []
        try:
            for model_seed in model_seeds(name, preset, seed):
                print(f"== {name} (seed {model_seed})", flush=True)
                scored, facts, model_views = run.scored(name, model_seed)
                seeds.append(scored)
                views.setdefault(name, model_views)
                if export and name in SHARED and model_seed == seed:
                    export_checkpoints(out, [name], seed)
        except PendingRun as pending:
            print(f"== {name} skipped: {pending}", flush=True)
            skipped.append({"name": name, "params": None, "reason": str(pending)})
            views.pop(name, None)
            continue
        doubling = None
        if name in preset.budget_test:
            try:
                doubling = budget_test(run, name, seeds[0].psnr, seed)
            except PendingRun as pending:
                print(f"== {name}: halving test {pending}", flush=True)
                untested.append(name)
        outcomes.append(_outcome(name, seeds, **facts, budget_epochs=preset.epochs_of(name),
                                 doubling=doubling))  # fmt: skip
    val = _split_frames(cache, "val") if preset.classical else None
    for name in preset.classical:
        print(f"== {name} (true field, setting chosen on the val split)", flush=True)
        outcome, views[name] = _classical_outcome(name, preset, val, operator, field, frames, seed)
        outcomes.append(outcome)
    results = {
        "preset": preset.to_dict(),
        "seed": seed,
        "psf_field": field.config(),
        "dataset": {"path": str(cache.path), **cache.manifest["counts"]},
        "real_images": frames.real_names,
        "environment": environment(),
        "blurred_input": _input_baseline(frames),
        "models": [asdict(o) for o in outcomes],
        "skipped": skipped,
        "budget_untested": untested,
        "error_profiles": error_profiles(views, frames.test_sharp),
    }
    results["claims"] = [c.to_dict() for c in deblur_claims(results)]
    write_outputs(results, out, views=views, frames=frames)
    return results


class PendingRun(Exception):
    """A run with neither a record nor a finished run, met by a study told not to train."""


class _Runs:
    """The study's trained and scored runs: each scored once, its record kept under
    ``OUT/scores`` (:mod:`._records`), so a study resumes from records alone. Without
    ``train``, a run with neither a record nor a finished run raises :class:`PendingRun`."""

    def __init__(
        self, preset: Preset, cache, out: Path, frames: _Frames, *, device, progress, train=True
    ):
        self.preset, self.cache, self.out, self.frames = preset, cache, out, frames
        self.device, self.progress, self.train = device, progress, train

    def identity(self, name: str, seed: int, epochs: int | None = None) -> dict:
        """What decides a run's scores: model, training options and data."""
        config = self.preset.train_config(name, seed, self.device, self.progress, epochs)
        options = _model_options(name, self.preset, self.cache.field())
        return {
            "model": {"name": name, "options": options},
            "training": config.identity(),
            "dataset": self.cache.manifest["parameters"],
        }

    def scored(self, name: str, seed: int, epochs: int | None = None):
        """(scores, model facts {params, infer_ms, frame256_ms}, views) of the run of
        ``name`` with ``seed`` at its tier's budget (or ``epochs``): from its record, or
        trained (or reused from its run directory), scored and recorded."""
        key = f"{name}-seed{seed}" + ("" if epochs is None else f"-e{epochs}")
        stem, identity = self.out / "scores" / key, self.identity(name, seed, epochs)
        stored = load_record(stem, identity)
        if stored is not None:
            data, views = stored
            return SeedOutcome(**data["outcome"]), data["model"], views
        finished = (run_dir(self.out, name, seed, epochs) / FINISHED_FILE).is_file()
        if not (self.train or finished):
            raise PendingRun(f"not trained yet ({key}; scored with train=False / --no-train)")
        model, result, _ = train_model(name, self.preset, self.cache, self.out, seed=seed,
                                       device=self.device, progress=self.progress,
                                       epochs=epochs)  # fmt: skip
        model = model.cpu().float()
        scored, views = _score_seed(model, result, seed, self.frames)
        facts = {
            "params": count_parameters(model),
            "infer_ms": _inference_ms(model, self.frames.test_blurred[:8]),
            "frame256_ms": _frame256_ms(model),
        }
        save_record(stem, identity, {"outcome": asdict(scored), "model": facts}, views)
        return scored, facts, views


def budget_test(run: _Runs, name: str, psnr: float, seed: int) -> dict:
    """The halving form of the doubling test at ``name``'s budget ``B``: its first seed
    trained again over ``B / 2`` epochs (same schedule shape). ``doubling_gain_db`` is
    what ``B`` gained over ``B / 2`` (``psnr``: the ``B`` run's test PSNR); ``passed``
    means ``B / 2`` was already at the plateau. As the gain shrinks with the budget, it
    also bounds what doubling ``B`` would gain."""
    budget = run.preset.epochs_of(name)
    if budget % 2:
        raise ValueError(f"the halving test needs an even budget, {name} has {budget} epochs")
    print(f"== {name} (seed {seed}, {budget // 2} epochs: halving test)", flush=True)

    half: list[SeedOutcome] = []

    def score(epochs: int) -> float:
        if epochs == budget:
            return psnr
        half.append(run.scored(name, seed, epochs)[0])
        return half[-1].psnr

    test = doubling_test(score, budget // 2)
    return {"form": "halving", "budget_epochs": budget, **test, "half_train_s": half[0].train_s}


#: Models whose best checkpoint (first seed) a study keeps under ``checkpoints/``.
SHARED = ("unet3", "unet6", "cg-unet3", "cg-unet6", "care-unet")


def export_checkpoints(out: Path, names: list[str], seed: int) -> list[Path]:
    """Half-precision copies of the best checkpoints of ``names`` (first seed) as
    ``out/checkpoints/NAME.safetensors``: small enough to commit, loadable by
    ``coordgate deblur`` / ``evaluate`` (the weights load back as float32). A copy whose
    run directory is gone (a study resumed from its records) is kept as it is."""
    paths = []
    for name in names:
        best = run_dir(out, name, seed) / BEST_CHECKPOINT
        target = out / "checkpoints" / f"{name}.safetensors"
        if not best.is_file() and target.is_file():
            paths.append(target)
            continue
        model, config = load_checkpoint(best)
        paths.append(save_checkpoint(target, model, config, dtype=torch.float16))
    return paths


def _input_baseline(frames: _Frames) -> dict:
    """PSNR / SSIM of the blurred input itself: what a model has to improve on."""
    test_psnr = _per_frame_psnr(frames.test_blurred, frames.test_sharp)
    test_ssim = ssim(frames.test_blurred, frames.test_sharp, reduce_dims=(1, 2, 3)).tolist()
    real_psnr = _per_frame_psnr(frames.real_blurred, frames.real_sharp)
    psnr_mean, psnr_std = _mean_std(test_psnr)
    ssim_mean, ssim_std = _mean_std(test_ssim)
    return {
        "psnr": psnr_mean,
        "psnr_std": psnr_std,
        "ssim": ssim_mean,
        "ssim_std": ssim_std,
        "real_psnr": _mean_std(real_psnr)[0],
        "real_inner_psnr": _mean_std(
            _per_frame_psnr(frames.real_blurred, frames.real_sharp, frames.inner)
        )[0],
        "real_edge_psnr": _mean_std(
            _per_frame_psnr(frames.real_blurred, frames.real_sharp, ~frames.inner)
        )[0],
        "edge_band_px": frames.edge_band,
        "centre_psnr": _mean_std(
            _per_frame_psnr(frames.test_blurred, frames.test_sharp, frames.centre)
        )[0],
    }


def error_profiles(views: dict, sharp: torch.Tensor, bins: int = 12) -> dict:
    """Mean squared error vs distance from the frame centre (normalised radius), per
    model, from each model's error map (``views[name]["error_map"]``, (H, W))."""
    coords = coordinate_grid(sharp.shape[-2:], dtype=torch.float64)
    radius = coords.square().sum(0).sqrt()
    edges = torch.linspace(0, float(radius.max()) + 1e-9, bins + 1, dtype=torch.float64)
    which = torch.bucketize(radius, edges[1:-1])
    profiles = {"radius": ((edges[1:] + edges[:-1]) / 2).tolist()}
    for name, shown in views.items():
        error = shown["error_map"].double()
        profiles[name] = [float(error[which == b].mean()) for b in range(bins)]
    return profiles
