"""Training: the fit/evaluate loop, metrics, checkpoints and distributed runs."""

from coordgate.training.checkpoint import (
    CheckpointConfig,
    CheckpointError,
    load_checkpoint,
    load_weights,
    read_checkpoint_config,
    save_checkpoint,
)
from coordgate.training.distributed import DistributedContext, init_distributed
from coordgate.training.fit import (
    CPU_SCHEDULE,
    BlurredInput,
    TrainConfig,
    TrainingResult,
    evaluate,
    fit,
)
from coordgate.training.in_memory import fit_tensors
from coordgate.training.metrics import psnr, ssim
from coordgate.training.plateau import PlateauSearch, doubling_test, plateau_search
from coordgate.training.stopping import NonFiniteLossError, StopReason

__all__ = [
    "CPU_SCHEDULE",
    "BlurredInput",
    "CheckpointConfig",
    "CheckpointError",
    "DistributedContext",
    "NonFiniteLossError",
    "PlateauSearch",
    "StopReason",
    "TrainConfig",
    "TrainingResult",
    "doubling_test",
    "evaluate",
    "fit",
    "fit_tensors",
    "init_distributed",
    "load_checkpoint",
    "load_weights",
    "plateau_search",
    "psnr",
    "read_checkpoint_config",
    "save_checkpoint",
    "ssim",
]
