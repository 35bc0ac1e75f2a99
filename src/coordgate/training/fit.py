"""The training engine: ``fit`` a deblurring network on (blurred, sharp) pairs.

Paper §IV.B: MSE loss, Adam (lr 1e-3), learning rate halved when the validation loss has
not improved for ``lr_patience`` epochs. Every epoch ends with validation PSNR and SSIM,
a row in ``metrics.csv`` / ``metrics.json``, ``last.safetensors`` (+ ``last.state.pt`` for
resuming) and, when the validation loss improved, ``best.safetensors``; a finished run
leaves ``finished.json``. One process or many under ``torchrun`` (see
:mod:`coordgate.training.distributed`); only rank 0 writes.

Items of the data sets are dicts with ``"blurred"`` and ``"sharp"`` (1, h, w) tensors and
optionally ``"origin"`` (2,) and ``"full_size"`` (2,): where the patch was cut from the
sensor frame, passed on to the model so coordinate-aware layers see sensor coordinates.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from coordgate.atomic import atomic_write
from coordgate.devices import resolve_device, supports_bf16
from coordgate.provenance import environment
from coordgate.training.checkpoint import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    CheckpointConfig,
    CheckpointError,
    load_training_state,
    load_weights,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    save_training_state,
)
from coordgate.training.distributed import (
    DistributedContext,
    init_distributed,
    shard,
    training_sampler,
    wrap_model,
)
from coordgate.training.metrics import psnr, ssim
from coordgate.training.stopping import NonFiniteLossError, Plateau, StopReason

__all__ = [
    "CPU_SCHEDULE",
    "SCHEDULES",
    "BlurredInput",
    "TrainConfig",
    "TrainingResult",
    "evaluate",
    "fit",
    "loss_function",
]

STATE_FILE = "last.state.pt"
FINISHED_FILE = "finished.json"

#: Losses by name: the paper's MSE, or CARE's mean absolute error.
LOSSES = {"mse": F.mse_loss, "mae": F.l1_loss}
#: Learning-rate schedules (see :class:`TrainConfig`).
Schedule = Literal["plateau", "cosine"]
SCHEDULES: tuple[Schedule, ...] = get_args(Schedule)


@dataclass
class TrainConfig:
    """How to train.

    Length (what the run plans; recorded as the run's ``plan``): ``epochs``, or ``steps``
    optimiser steps rounded up to whole epochs, or ``time_budget_s`` seconds: the epochs
    that fit are planned from the measured duration of the first epochs (those of the
    warm-up and the first of the schedule, whose learning rates do not depend on the
    plan), at most ``epochs``. A resumed run keeps its plan, so a budgeted run is the
    run of its planned epochs, bit for bit.

    ``schedule``: ``"cosine"`` (after ``warmup_epochs`` of linear warm-up from
    ``lr / steps`` to ``lr``, a cosine from ``lr`` down to ``lr * final_lr_fraction`` at
    the last planned epoch; it runs to the end of its plan, so it takes no early
    stopping) or ``"plateau"`` (the paper's: multiply by ``lr_factor`` after
    ``lr_patience`` epochs without improvement; ``early_stopping_patience`` such epochs
    end the run; under a time budget no epoch is started that is not expected to end
    within it). ``min_improvement``: the relative drop of the validation loss below the
    loss of the last improvement that counts as one for the plateau rules (1e-4 is
    torch's ``ReduceLROnPlateau`` default); the best checkpoint follows every drop.
    ``loss``: ``"mse"`` (paper), ``"mae"``, or ``"auto"``: the model's ``training_loss``
    attribute when it has one (``care-unet``: mae), else mse.
    ``amp``: bf16 autocast; None turns it on where bf16 has fast kernels
    (:func:`~coordgate.devices.supports_bf16`: CUDA with bf16, CPUs with oneDNN bf16).
    ``channels_last``: the model's weights and the training batches in channels-last
    memory; None: on when bf16 autocast runs on the CPU. Checkpoints are float32 and
    contiguous either way. On this project's AVX-512-BF16 CPU, one thread, idle
    (``benchmarks/results/precision.json``), a step in bf16 + channels-last takes 0.34-0.54
    of the float32 time on whole 64² frames and 0.31-0.75 on 64² crops with new per-sample
    origins every step (CG U-Net(3) 0.75, U-Net(6) 0.59, care-unet 0.31). Quality: +0.02
    dB validation PSNR after 20 epochs (the benchmark's quality run), -0.07 dB test PSNR
    after 70 epochs on the cpu data, but -0.24 dB (CG U-Net(3), its gates then still in
    bf16) and -0.12 dB (U-Net(6)) after 560 (``results/cpu`` against the float32 runs of
    ``results/plateau/cpu``, seed 0): at equal epochs bf16 costs a little at long budgets;
    it runs 1.3-3x the epochs in the same time. ``--no-amp`` for float32."""

    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    lr_factor: float = 0.5
    lr_patience: int = 10
    early_stopping_patience: int | None = None
    warmup_epochs: int = 0
    min_improvement: float = 1e-4
    schedule: Schedule = "plateau"
    final_lr_fraction: float = 0.01
    steps: int | None = None
    time_budget_s: float | None = None
    loss: str = "auto"
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    channels_last: bool | None = None
    num_workers: int = 0
    progress: bool = True

    # neither changes what is learned, so a finished run is reused whatever they are
    _RUNTIME_FIELDS = ("num_workers", "progress")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            _require(name, getattr(self, name), lambda v: _is_int(v) and v >= 1, "an integer >= 1")
        for name in ("lr_patience", "num_workers", "seed", "warmup_epochs"):
            _require(name, getattr(self, name), lambda v: _is_int(v) and v >= 0, "an integer >= 0")
        _require("lr", self.lr, lambda v: _is_number(v) and v > 0, "a positive number")
        _require("lr_factor", self.lr_factor, lambda v: _is_number(v) and 0 < v < 1, "in (0, 1)")
        _require(
            "min_improvement",
            self.min_improvement,
            lambda v: _is_number(v) and 0 <= v < 1,
            "in [0, 1)",
        )
        _require(
            "early_stopping_patience",
            self.early_stopping_patience,
            lambda v: v is None or (_is_int(v) and v >= 1),
            "None or an integer >= 1",
        )
        _require(
            "time_budget_s",
            self.time_budget_s,
            lambda v: v is None or (_is_number(v) and v > 0),
            "None or a positive number of seconds",
        )
        _require("schedule", self.schedule, lambda v: v in SCHEDULES, f"one of {list(SCHEDULES)}")
        _require("steps", self.steps, lambda v: v is None or (_is_int(v) and v >= 1),
                 "None or an integer >= 1")  # fmt: skip
        _require(
            "loss", self.loss, lambda v: v in ("auto", *LOSSES), f"auto or one of {list(LOSSES)}"
        )
        if self.steps is not None and self.time_budget_s is not None:
            raise ValueError(
                f"TrainConfig plans a run by steps or by time_budget_s, not both; got steps="
                f"{self.steps} and time_budget_s={self.time_budget_s}"
            )
        if self.schedule == "cosine" and self.early_stopping_patience is not None:
            raise ValueError(
                "TrainConfig.early_stopping_patience needs schedule='plateau': early stopping "
                "under the cosine schedule would end a run before its learning rate is "
                f"annealed (got {self.early_stopping_patience}); plan a shorter run instead"
            )
        _require(
            "final_lr_fraction",
            self.final_lr_fraction,
            lambda v: _is_number(v) and 0 < v <= 1,
            "in (0, 1]",
        )
        _require("amp", self.amp, lambda v: v is None or isinstance(v, bool), "None, True or False")
        _require(
            "channels_last",
            self.channels_last,
            lambda v: v is None or isinstance(v, bool),
            "None, True or False",
        )
        _require("device", self.device, lambda v: isinstance(v, str), "a device string")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """The config of ``values`` (as :meth:`to_dict` writes); unknown keys are an error.

        >>> TrainConfig.from_dict({"epochs": 5, "schedule": "cosine"}).epochs
        5
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; known: {sorted(known)}")
        return cls(**values)

    def identity(self) -> dict:
        """The options that decide what a run learns (for reusing finished runs)."""
        return {k: v for k, v in self.to_dict().items() if k not in self._RUNTIME_FIELDS}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(name: str, value, valid, expected: str) -> None:
    if not valid(value):
        raise ValueError(f"TrainConfig.{name} must be {expected}, got {value!r}")


#: ``coordgate train``'s schedule and the studies' base: batches of 16, one epoch of
#: warm-up to lr 2e-3, then a cosine down to 2e-5 that fills the planned length of the run
#: (``epochs``, ``steps`` or ``time_budget_s``), so the learning rate is annealed when the
#: run ends.
CPU_SCHEDULE = TrainConfig(batch_size=16, lr=2e-3, warmup_epochs=1, schedule="cosine")


@dataclass
class TrainingResult:
    """A run's outcome: one ``history`` row per epoch (keys: epoch, lr, train_loss,
    val_loss, val_psnr, val_psnr_std, val_ssim, val_ssim_std, train_time_s, epoch_time_s,
    elapsed_s, images_per_s), the best epoch (lowest validation loss), why it stopped
    (:data:`~coordgate.training.stopping.StopReason`), and its ``plan`` (see
    :class:`TrainConfig`): ``{"by": "epochs" | "steps" | "time_budget", "epochs",
    "steps", "steps_per_epoch"}``, with ``"planned_after_epoch"`` and ``"epoch_s"`` when
    planned from a time budget. ``reused``: loaded from an earlier finished run instead of
    trained.

    The in-memory trainer (:func:`~coordgate.training.in_memory.fit_tensors`) returns one
    too, with history rows of epoch, lr, train_loss, val_loss and elapsed_s, no
    ``out_dir``, the best weights in ``best_state`` and the process's CPU time in
    ``cpu_time_s`` (about what the run takes on an idle core with one torch thread)."""

    out_dir: Path | None = None
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stop_reason: StopReason = "epochs"
    reused: bool = False
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    cpu_time_s: float | None = None
    plan: dict | None = None

    @property
    def best(self) -> dict:
        """The history row of the best epoch."""
        return next(row for row in self.history if row["epoch"] == self.best_epoch)

    @property
    def best_val_loss(self) -> float:
        """The lowest validation loss (infinite when no epoch gave a finite one)."""
        return self.best["val_loss"] if self.best_epoch else math.inf

    @property
    def best_checkpoint(self) -> Path:
        return Path(self.out_dir) / BEST_CHECKPOINT

    @property
    def train_time_s(self) -> float:
        return self.history[-1]["elapsed_s"] if self.history else 0.0

    def series(self, key: str) -> list[float]:
        """One history column, e.g. ``series("val_psnr")`` to plot against epochs."""
        return [row[key] for row in self.history]

    def to_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "history": self.history,
            "best_epoch": self.best_epoch,
            "stop_reason": self.stop_reason,
            "plan": self.plan,
        }

    @classmethod
    def from_dict(cls, values: dict, reused: bool = False) -> TrainingResult:
        return cls(
            Path(values["out_dir"]),
            values["history"],
            values["best_epoch"],
            values["stop_reason"],
            reused,
            plan=values.get("plan"),
        )


def _frame(batch: dict) -> tuple[torch.Tensor | None, tuple[int, ...] | None]:
    """The batch's per-sample origins (N, 2) and its one shared full_size."""
    full_size = batch.get("full_size")
    if full_size is not None:
        full_size = torch.as_tensor(full_size).reshape(-1, 2)
        if not bool((full_size == full_size[0]).all()):
            raise ValueError(
                f"all items of a batch must come from one sensor frame size, got full_size "
                f"rows {sorted({tuple(r) for r in full_size.tolist()})}"
            )
        full_size = tuple(int(v) for v in full_size[0])
    return batch.get("origin"), full_size


def _predict(
    model: nn.Module, batch: dict, device: torch.device, amp: bool, channels_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on a batch: (prediction, sharp), both float32 on ``device``."""
    blurred = batch["blurred"].to(device, non_blocking=True)
    if channels_last:
        blurred = blurred.contiguous(memory_format=torch.channels_last)
    sharp = batch["sharp"].to(device, non_blocking=True).float()
    origin, full_size = _frame(batch)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        prediction = model(blurred, origin=origin, full_size=full_size)
    if prediction.shape != sharp.shape:
        raise ValueError(
            f"the model maps blurred {tuple(blurred.shape)} to {tuple(prediction.shape)}, "
            f"but the sharp targets are {tuple(sharp.shape)}"
        )
    return prediction.float(), sharp


def _use_amp(amp: bool | None, device: torch.device) -> bool:
    if amp is not None:
        return amp
    return supports_bf16(device)


def _precision(config: TrainConfig, device: torch.device) -> tuple[bool, bool]:
    """(bf16 autocast, channels-last) of a run of ``config`` on ``device``."""
    amp = _use_amp(config.amp, device)
    channels_last = config.channels_last
    if channels_last is None:
        channels_last = amp and device.type == "cpu"
    return amp, channels_last


def _check_dataset(dataset: Dataset, name: str) -> dict:
    """The first item of ``dataset``, after checking it is a pair item."""
    try:
        size = len(dataset)
    except TypeError as error:
        raise ValueError(f"{name} must be a map-style dataset with a length") from error
    if size == 0:
        raise ValueError(f"{name} is empty")
    item = dataset[0]
    if not isinstance(item, dict) or not {"blurred", "sharp"} <= set(item):
        keys = sorted(item) if isinstance(item, dict) else type(item).__name__
        raise ValueError(f"{name} items must be dicts with 'blurred' and 'sharp', got {keys}")
    for key in ("blurred", "sharp"):
        if not isinstance(item[key], torch.Tensor) or item[key].ndim != 3:
            shape = getattr(item[key], "shape", type(item[key]).__name__)
            raise ValueError(f"{name} item {key!r} must be a (C, H, W) tensor, got {shape}")
    return item


def _sensor_size(item: dict) -> tuple[int, int]:
    """The sensor frame (H, W) the training items come from, recorded for inference: their
    ``full_size``, or for items without one their own size (each is a whole frame)."""
    full_size = item.get("full_size")
    if full_size is None:
        return tuple(item["blurred"].shape[-2:])
    return tuple(int(v) for v in torch.as_tensor(full_size).tolist())


class BlurredInput:
    """The 'no restoration' baseline for :func:`evaluate`: returns the blurred input, so
    ``evaluate(BlurredInput(), data)`` scores what a model has to improve on."""

    def __call__(self, x, origin=None, full_size=None):
        return x

    def eval(self):
        return self


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    amp: bool | None = False,
    num_workers: int = 0,
    progress: bool = False,
    context: DistributedContext | None = None,
) -> dict[str, float]:
    """Mean validation loss (MSE) and per-image PSNR / SSIM (data range 1) of ``model``.

    Returns ``{"loss", "psnr", "psnr_std", "ssim", "ssim_std", "images"}``. Under a
    distributed ``context`` each process evaluates its share and the sums are combined.
    ``amp``: bf16 autocast (default off: scores in float32; None: as training would).
    """
    _check_dataset(dataset, "dataset")
    context = context or DistributedContext(device=resolve_device(device))
    use_amp = _use_amp(amp, context.device)
    loader = DataLoader(shard(dataset, context), batch_size=batch_size, num_workers=num_workers)
    model.eval()
    # sums of: squared error, pixels, psnr, psnr^2, ssim, ssim^2, images
    sums = torch.zeros(7, dtype=torch.float64)
    for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        prediction, sharp = _predict(model, batch, context.device, use_amp)
        image_psnr = psnr(prediction, sharp, reduce_dims=(1, 2, 3)).cpu()
        image_ssim = ssim(prediction, sharp, reduce_dims=(1, 2, 3)).cpu()
        sums += torch.stack(
            [
                (prediction - sharp).double().square().sum().cpu(),
                torch.tensor(float(sharp.numel()), dtype=torch.float64),
                image_psnr.sum(),
                image_psnr.square().sum(),
                image_ssim.sum(),
                image_ssim.square().sum(),
                torch.tensor(float(len(sharp)), dtype=torch.float64),
            ]
        )
    sq_error, pixels, psnr_sum, psnr_sq, ssim_sum, ssim_sq, images = context.all_reduce_sum(
        sums
    ).tolist()

    def spread(total: float, squares: float) -> tuple[float, float]:
        mean = total / images
        return mean, math.sqrt(max(squares / images - mean * mean, 0.0))

    psnr_mean, psnr_std = spread(psnr_sum, psnr_sq)
    ssim_mean, ssim_std = spread(ssim_sum, ssim_sq)
    return {
        "loss": sq_error / pixels,
        "psnr": psnr_mean,
        "psnr_std": psnr_std,
        "ssim": ssim_mean,
        "ssim_std": ssim_std,
        "images": int(images),
    }


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; derive numpy/python from it so
    # augmentations drawn from those generators are reproducible too
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_spec(model: nn.Module, spec: dict | None) -> dict:
    """The model spec to record; a named spec must build a model of ``model``'s shapes."""
    if spec is None:
        return {"name": None, "options": {}}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(f"model_spec must be {{'name': str, 'options': dict}}, got {spec!r}")
    spec = {"name": spec["name"], "options": dict(spec.get("options") or {})}
    from coordgate.models import build_model

    def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}

    if shapes(build_model(spec["name"], **spec["options"])) != shapes(model):
        raise ValueError(
            f"model_spec {spec} builds a model whose parameters differ from the model "
            "given to fit; pass the spec the model was built from"
        )
    return spec


def _write_metrics(out_dir: Path, spec: dict, history: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write(out_dir / "metrics.csv", text.getvalue().encode())
    record = {"model": spec, "history": history}
    atomic_write(out_dir / "metrics.json", json.dumps(record, indent=2).encode())


class _Run:
    """One call of :func:`fit`: the model, its optimiser and the run's bookkeeping."""

    def __init__(self, model, train_set, val_set, config, out_dir, record, context):
        self.model, self.config, self.out_dir = model, config, out_dir
        self.record, self.context = record, context
        self.train_set, self.val_set = train_set, val_set
        self.device = context.device
        self.amp, self.channels_last = _precision(config, self.device)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.parallel = wrap_model(model, context)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            mode="min",
            factor=config.lr_factor,
            patience=config.lr_patience,
            threshold=config.min_improvement,
        )
        self.loss = loss_function(config.loss, model)
        self.history: list[dict] = []
        self.plateau = Plateau(config.min_improvement)
        self.sampler = training_sampler(train_set, context, config.seed)
        self.generator = torch.Generator()
        self.loader = DataLoader(
            train_set,
            batch_size=config.batch_size,
            sampler=self.sampler,
            num_workers=config.num_workers,
            generator=self.generator,
            worker_init_fn=_seed_worker,
            pin_memory=self.device.type == "cuda",
        )
        self.plan = _fixed_plan(config, len(self.loader))

    @property
    def epoch(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0

    @property
    def spec(self) -> dict:
        return self.record.model

    def resume(self, state: dict) -> None:
        if state["model_spec"] != self.spec:
            raise CheckpointError(
                f"{self.out_dir} holds a run of model {state['model_spec']}, not {self.spec}; "
                "choose another output directory"
            )
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise CheckpointError(
                f"the training state in {self.out_dir} does not fit the model: {error}"
            ) from error
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"])
        self.history = state["history"]
        self.plateau = Plateau(
            self.config.min_improvement,
            best_loss=state["best_loss"],
            best_epoch=state["best_epoch"],
            reference=state.get("plateau_loss", state["best_loss"]),
            stale_epochs=state["stale_epochs"],
        )
        stored = state.get("plan")
        if self.plan is None and stored and stored.get("budget_s") == self.config.time_budget_s:
            # a budgeted run keeps its plan; a run resumed with another length is replanned
            self.plan = stored

    def train_epoch(self, epoch: int) -> tuple[float, int]:
        """One pass over the training set: (mean loss over all processes, images seen)."""
        # the order (and the crops of datasets with set_epoch) depend on (seed, epoch)
        # only, so a resumed run repeats the uninterrupted one exactly
        self.sampler.set_epoch(epoch)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        self.generator.manual_seed(self.config.seed + epoch)
        self.parallel.train()
        sums = torch.zeros(2, dtype=torch.float64)
        bar = tqdm(
            self.loader,
            desc=f"epoch {epoch}/{self.config.epochs}",
            leave=False,
            disable=not (self.config.progress and self.context.is_main),
        )
        for step, batch in enumerate(bar):
            self.warm_up(epoch, step)
            prediction, sharp = _predict(
                self.parallel, batch, self.device, self.amp, self.channels_last
            )
            loss = self.loss(prediction, sharp)
            value = loss.item()
            if self.context.any(not math.isfinite(value)):
                last = self.out_dir / LAST_CHECKPOINT
                raise NonFiniteLossError(epoch, step, last if self.epoch else None)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            sums += torch.tensor([value * len(sharp), len(sharp)], dtype=torch.float64)
            bar.set_postfix(loss=f"{value:.4g}", refresh=False)
        loss_sum, images = self.context.all_reduce_sum(sums).tolist()
        return loss_sum / images, int(images)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def warm_up(self, epoch: int, step: int) -> None:
        """During the warm-up epochs, set this step's linearly rising learning rate."""
        if epoch > self.config.warmup_epochs:
            return
        steps = self.config.warmup_epochs * len(self.loader)
        done = (epoch - 1) * len(self.loader) + step + 1
        self.set_lr(self.config.lr * done / steps)

    @property
    def planned_epochs(self) -> int:
        """The run's length: its plan's, or before a time budget is planned the cap."""
        return self.config.epochs if self.plan is None else self.plan["epochs"]

    def anneal(self, epoch: int) -> None:
        """Under the cosine schedule, set the learning rate of ``epoch`` (after warm-up):
        ``lr`` at the first epoch after warm-up, the floor at the last planned epoch."""
        config = self.config
        if config.schedule != "cosine" or epoch <= config.warmup_epochs:
            return
        span = max(1, self.planned_epochs - config.warmup_epochs - 1)
        progress = min(1.0, (epoch - config.warmup_epochs - 1) / span)
        floor = config.lr * config.final_lr_fraction
        self.set_lr(floor + (config.lr - floor) * (1 + math.cos(math.pi * progress)) / 2)

    def run_epoch(self, epoch: int) -> dict:
        self.anneal(epoch)
        start = time.perf_counter()
        train_loss, images = self.train_epoch(epoch)
        train_time = time.perf_counter() - start
        lr = self.optimizer.param_groups[0]["lr"]  # the epoch's last step's (warm-up rises)
        val = evaluate(
            self.model,
            self.val_set,
            batch_size=self.config.batch_size,
            amp=self.amp,
            num_workers=self.config.num_workers,
            context=self.context,
        )
        if not math.isfinite(val["loss"]):
            last = self.out_dir / LAST_CHECKPOINT
            raise NonFiniteLossError(epoch, None, last if self.epoch else None)
        epoch_time = time.perf_counter() - start
        if self.config.schedule == "plateau" and epoch > self.config.warmup_epochs:
            self.scheduler.step(val["loss"])
        return {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train_loss,
            "val_loss": val["loss"],
            "val_psnr": val["psnr"],
            "val_psnr_std": val["psnr_std"],
            "val_ssim": val["ssim"],
            "val_ssim_std": val["ssim_std"],
            "train_time_s": train_time,
            "epoch_time_s": epoch_time,
            "elapsed_s": (self.history[-1]["elapsed_s"] if self.history else 0.0) + epoch_time,
            "images_per_s": images / train_time,
        }

    def checkpoint_config(self, kind: str, row: dict) -> CheckpointConfig:
        return replace(self.record, kind=kind, epoch=row["epoch"], metrics=row)

    def save(self, row: dict, improved: bool) -> None:
        """Write this epoch's checkpoints and metrics (rank 0), best first: a crash
        in between leaves a state from which the resumed run rewrites the same files."""
        if improved:
            save_checkpoint(
                self.out_dir / BEST_CHECKPOINT, self.model, self.checkpoint_config("best", row)
            )
        save_checkpoint(
            self.out_dir / LAST_CHECKPOINT, self.model, self.checkpoint_config("last", row)
        )
        save_training_state(
            self.out_dir / STATE_FILE,
            {
                "model_spec": self.spec,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng_state(),
                "history": self.history,
                "best_loss": self.plateau.best_loss,
                "best_epoch": self.plateau.best_epoch,
                "stale_epochs": self.plateau.stale_epochs,
                "plateau_loss": self.plateau.reference,
                "plan": self.plan,
            },
        )
        _write_metrics(self.out_dir, self.spec, self.history)

    def plan_budget(self) -> None:
        """Under a time budget, once the epochs whose learning rates do not depend on the
        plan have run (warm-up and the schedule's first), plan the epochs that fit: from
        their mean duration, leaving out the first epoch's start-up when there are more.
        Rank 0's clock decides, so every process plans the same run."""
        budget, done = self.config.time_budget_s, self.epoch
        if budget is None or self.plan is not None or done < self.config.warmup_epochs + 1:
            return
        timed = [row["epoch_time_s"] for row in self.history[1:]] or [
            self.history[0]["epoch_time_s"]
        ]
        epoch_s = self.context.broadcast_float(sum(timed) / len(timed))
        fits = done + int((budget - self.history[-1]["elapsed_s"]) // epoch_s)
        epochs = min(self.config.epochs, max(done, fits))
        self.plan = {
            **_plan("time_budget", epochs, len(self.loader)),
            "planned_after_epoch": done,
            "epoch_s": epoch_s,
            "budget_s": budget,
        }

    def stop_reason(self) -> StopReason | None:
        if self.epoch >= self.planned_epochs:
            return "epochs"
        if self.plateau.spent(self.config.early_stopping_patience):
            return "early_stopping"
        budget = self.config.time_budget_s
        elapsed = self.history[-1]["elapsed_s"]
        # rank 0's clock decides, so every process stops after the same epoch
        if (
            budget is not None
            and self.config.schedule == "plateau"
            and self.context.from_main(elapsed + elapsed / len(self.history) > budget)
        ):
            return "time_budget"
        return None

    def result(self, reason: StopReason) -> TrainingResult:
        return TrainingResult(
            self.out_dir, self.history, self.plateau.best_epoch, reason, plan=self.plan
        )

    def train(self) -> TrainingResult:
        show = self.config.progress and self.context.is_main
        bar = tqdm(total=self.planned_epochs, initial=self.epoch, desc="training", disable=not show)
        reason = self.stop_reason() if self.history else None
        while reason is None:
            try:
                row = self.run_epoch(self.epoch + 1)
            except NonFiniteLossError as error:
                error.result = self.result("non_finite")
                raise
            improved = self.plateau.update(row["epoch"], row["val_loss"])
            self.history.append(row)
            if self.context.is_main:
                self.save(row, improved)
            bar.update(1)
            bar.set_postfix(
                val_psnr=f"{row['val_psnr']:.2f}", val_ssim=f"{row['val_ssim']:.3f}", refresh=False
            )
            if self.plan is None and self.config.schedule == "cosine":
                self.plan_budget()
                if self.plan is not None:
                    bar.total = self.plan["epochs"]
                    if show:
                        tqdm.write(_describe_plan(self.plan))
            reason = self.stop_reason()
        bar.close()
        result = self.result(reason)
        if self.context.is_main:
            finished = {
                "model": self.spec,
                "training": self.config.identity(),
                "result": result.to_dict(),
            }
            atomic_write(self.out_dir / FINISHED_FILE, json.dumps(finished, indent=2).encode())
        self.context.barrier()
        return result


def _plan(by: str, epochs: int, steps_per_epoch: int) -> dict:
    return {"by": by, "epochs": epochs, "steps": epochs * steps_per_epoch,
            "steps_per_epoch": steps_per_epoch}  # fmt: skip


def _fixed_plan(config: TrainConfig, steps_per_epoch: int) -> dict | None:
    """The plan of a run whose length is known before it starts (None: a time budget,
    planned after the first epochs; or the plateau schedule under one, which stops by
    the clock)."""
    if config.steps is not None:
        return _plan("steps", max(1, math.ceil(config.steps / steps_per_epoch)), steps_per_epoch)
    if config.time_budget_s is None:
        return _plan("epochs", config.epochs, steps_per_epoch)
    return None


def _describe_plan(plan: dict) -> str:
    return (
        f"planned {plan['epochs']} epochs ({plan['steps']} steps) in the {plan['budget_s']:.0f} s "
        f"budget at {plan['epoch_s']:.2f} s per epoch (measured over epochs 1-"
        f"{plan['planned_after_epoch']})"
    )


def loss_function(name: str, model: nn.Module):
    """The training loss: ``name``, or for "auto" the model's ``training_loss`` (mse)."""
    if name == "auto":
        name = getattr(model, "training_loss", "mse")
    if name not in LOSSES:
        raise ValueError(f"unknown training loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name]


def _finished_run(out_dir: Path, spec: dict, config: TrainConfig, resume: bool):
    """The result of a finished run in ``out_dir`` of this spec and config, if any."""
    marker = out_dir / FINISHED_FILE
    if not (marker.is_file() and (out_dir / BEST_CHECKPOINT).is_file()):
        return None
    finished = json.loads(marker.read_text())
    if finished["model"] != spec:
        raise ValueError(
            f"{out_dir} holds a finished run of model {finished['model']}, not {spec}; "
            "choose another output directory"
        )
    if finished["training"] == config.identity():
        return TrainingResult.from_dict(finished["result"], reused=True)
    if resume:
        return None
    changed = sorted(k for k, v in config.identity().items() if finished["training"].get(k, v) != v)
    raise ValueError(
        f"{out_dir} holds a finished run with other training options ({', '.join(changed)}); "
        "resume it to continue with the new options, or choose another output directory"
    )


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    config: TrainConfig | None = None,
    out_dir: str | Path = "runs/run",
    *,
    resume: bool = False,
    model_spec: dict | None = None,
    record: CheckpointConfig | None = None,
) -> TrainingResult:
    """Train ``model`` on ``train_set``, validating on ``val_set`` after every epoch.

    ``model(blurred (N, C, H, W), origin=(N, 2) | None, full_size=(2,) | None)`` must return
    the sharp estimate (N, C, H, W). ``model_spec = {"name", "options"}`` (the registry
    name and options the model was built with) makes the checkpoints loadable with
    :func:`~coordgate.training.checkpoint.load_checkpoint`. ``record``: what every
    checkpoint records of the data (its ``normalisation``, ``psf_field``, ``dataset``,
    ``preset``); the run writes the rest of the
    :class:`~coordgate.training.checkpoint.CheckpointConfig` (model, sensor size, epoch,
    metrics, training options, environment), and a ``record`` that sets one of those to
    another value is an error.

    ``out_dir`` already holding the same finished run: nothing is trained, its result is
    returned (``reused=True``). ``resume=True`` continues an interrupted run from its last
    epoch (bit-identically on the CPU), or starts afresh when there is none; without it,
    an unfinished run in ``out_dir`` is an error. On return ``model`` holds the weights of
    the best epoch, also when the loss stops being finite and
    :class:`~coordgate.training.stopping.NonFiniteLossError` is raised (see the NaN
    policy of :mod:`coordgate.training.stopping`).
    """
    config = config or TrainConfig()
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    sensor = _sensor_size(_check_dataset(train_set, "train_set"))
    _check_dataset(val_set, "val_set")
    out_dir = Path(out_dir)
    spec = _check_spec(model, model_spec)
    context = init_distributed(config.device)
    record = _run_record(record, spec, sensor, config, context.device)

    finished = _finished_run(out_dir, spec, config, resume)
    if finished is not None:
        load_weights(model, finished.best_checkpoint)
        return finished
    state_path = out_dir / STATE_FILE
    if state_path.is_file() and not resume:
        raise ValueError(
            f"{out_dir} already holds a run; resume it or choose another output directory"
        )
    run = _Run(model, train_set, val_set, config, out_dir, record, context)
    if resume and state_path.is_file():
        run.resume(load_training_state(state_path))
        if context.is_main:
            (out_dir / FINISHED_FILE).unlink(missing_ok=True)
    else:
        _seed_everything(config.seed)
    try:
        result = run.train()
    except NonFiniteLossError as error:
        if error.result.best_epoch:
            _restore_best(model, error.result)
        raise
    _restore_best(model, result)
    return result


def _run_record(
    record: CheckpointConfig | None,
    spec: dict,
    sensor: tuple[int, int],
    config: TrainConfig,
    device: torch.device,
) -> CheckpointConfig:
    """The caller's ``record`` (what it knows of the data) completed with what the run
    writes itself: the model spec, sensor size, training options, seed and environment
    (bf16 and channels-last as resolved on ``device``; each checkpoint adds its kind, epoch
    and metrics). A field of those that ``record`` sets otherwise is an error, not silently
    replaced."""
    if record is not None and not isinstance(record, CheckpointConfig):
        raise ValueError(f"record must be a CheckpointConfig, got {type(record).__name__}")
    record = record or CheckpointConfig(spec)
    amp, channels_last = _precision(config, device)
    training = replace(config, amp=amp, channels_last=channels_last).to_dict()
    written = dict(model=spec, full_size=sensor, training=training, seed=config.seed)
    given = {"training": (training, config.to_dict())}  # as resolved, or as configured
    clashing = [
        name
        for name in (*written, "environment", "kind", "epoch", "metrics")
        if getattr(record, name) not in (None, *given.get(name, (written.get(name),)))
    ]
    if clashing:
        raise ValueError(
            f"record sets {clashing}, which fit writes itself: the model from model_spec "
            f"({spec}), full_size from the training items ({sensor}), training and seed from "
            "config, environment, kind, epoch and metrics from the run; leave them unset"
        )
    return replace(record, **written, environment=environment())


def _restore_best(model: nn.Module, result: TrainingResult) -> None:
    model.to(memory_format=torch.contiguous_format)
    load_weights(model, result.best_checkpoint)
