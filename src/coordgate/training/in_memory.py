"""A lean trainer for small problems whose data fit in memory as tensors.

Adam (default betas) on a loss, learning rate halved when the validation loss stops
improving (``ReduceLROnPlateau``), training stopped when it has not improved for
``early_stopping_patience`` epochs; the best-validation weights are restored. Used by the
1D study of paper §IV.A, where the whole data set is a few 10 000 x 30 tensors. It speaks
:func:`~coordgate.training.fit.fit`'s language: its options are a
:class:`~coordgate.training.fit.TrainConfig`, its result a
:class:`~coordgate.training.fit.TrainingResult` (without a run directory: the best
weights come back in ``best_state``), the stop reasons, the plateau rule and the NaN
policy those of :mod:`coordgate.training.stopping`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from coordgate.training.fit import TrainConfig, TrainingResult, loss_function
from coordgate.training.stopping import NonFiniteLossError, Plateau, StopReason

__all__ = ["fit_tensors"]

Pair = tuple[torch.Tensor, torch.Tensor]


def _check_pair(pair: Pair, name: str) -> None:
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(t, torch.Tensor) for t in pair)
    ):
        raise ValueError(f"{name} must be a pair of tensors (inputs, targets), got {type(pair)}")
    x, y = pair
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"{name} inputs and targets need the same, non-zero number of samples, "
            f"got {len(x)} and {len(y)}"
        )


def _evaluate(model: nn.Module, pair: Pair, loss_fn: Callable, batch_size: int) -> float:
    model.eval()
    x, y = pair
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            total += loss_fn(model(xb), yb).item() * len(xb)
    return total / len(x)


#: What the in-memory trainer does not implement: each of these TrainConfig fields must
#: keep this value (it follows the plateau schedule from the first epoch, in the tensors'
#: own device and dtype).
_UNSUPPORTED = {
    "schedule": "plateau",
    "warmup_epochs": 0,
    "steps": None,
    "time_budget_s": None,
    "amp": None,
    "channels_last": None,
}


def fit_tensors(
    model: nn.Module,
    train: Pair,
    val: Pair,
    config: TrainConfig,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> TrainingResult:
    """Train ``model`` on in-memory ``train`` = (inputs, targets), select on ``val``.

    Inputs and targets are tensors with samples on the first axis, already on the model's
    device. ``config`` means what it means to :func:`~coordgate.training.fit.fit` under
    the plateau schedule: ``epochs``, ``batch_size`` and ``lr``; an epoch improves when
    the validation loss falls below ``(1 - min_improvement)`` times the loss of the last
    improvement; the learning rate is multiplied by ``lr_factor`` after ``lr_patience``
    epochs without one and training stops after ``early_stopping_patience`` (None: runs
    all ``epochs``); ``seed`` fixes the batch order; ``loss`` names the loss
    (:func:`~coordgate.training.fit.loss_function`) unless ``loss_fn`` is given. A config
    asking for what this trainer does not do (another schedule, warm-up, a plan by steps
    or time, bf16, channels-last) is an error. The model ends with the best weights,
    which the result also holds; a loss that is not finite raises
    :class:`~coordgate.training.stopping.NonFiniteLossError` with that result.

    >>> from coordgate.models.cnn1d import build_from_label
    >>> x = torch.rand(64, 1, 9)
    >>> config = TrainConfig(epochs=2, batch_size=16, progress=False)
    >>> fit_tensors(build_from_label("CNN(1,3,1)"), (x, x), (x, x), config).stop_reason
    'epochs'
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    unsupported = sorted(k for k, v in _UNSUPPORTED.items() if getattr(config, k) != v)
    if unsupported:
        raise ValueError(
            f"fit_tensors follows the plateau schedule alone: TrainConfig's {unsupported} "
            f"must be {[_UNSUPPORTED[k] for k in unsupported]}, got "
            f"{[getattr(config, k) for k in unsupported]}"
        )
    if loss_fn is not None and config.loss != "auto":
        raise ValueError(f"give a loss_fn or TrainConfig.loss, not both (loss={config.loss!r})")
    _check_pair(train, "train")
    _check_pair(val, "val")
    return _train(model, train, val, config, loss_fn or loss_function(config.loss, model))


def _epochs(config: TrainConfig):
    epochs = range(1, config.epochs + 1)
    if not config.progress:
        return epochs
    from tqdm import tqdm

    return tqdm(epochs, desc="fit", leave=False)


def _train_epoch(model, optimizer, x, y, order, batch_size: int, loss_fn) -> float:
    """One pass over the training pair in ``order``; the mean training loss."""
    model.train()
    train_loss = 0.0
    for begin in range(0, len(x), batch_size):
        index = order[begin : begin + batch_size]
        loss = loss_fn(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        train_loss += loss.item() * len(index)
    return train_loss / len(x)


def _train(
    model: nn.Module, train: Pair, val: Pair, config: TrainConfig, loss_fn: Callable
) -> TrainingResult:
    x, y = train
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        factor=config.lr_factor,
        patience=config.lr_patience,
        threshold=config.min_improvement,
        threshold_mode="rel",
    )
    generator = torch.Generator().manual_seed(config.seed)
    plateau, history = Plateau(config.min_improvement), []
    best_state = copy.deepcopy(model.state_dict())
    stop_reason: StopReason = "epochs"
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in _epochs(config):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        train_loss = _train_epoch(model, optimizer, x, y, order, config.batch_size, loss_fn)
        val_loss = _evaluate(model, val, loss_fn, max(config.batch_size, 1024))
        history.append(
            dict(
                epoch=epoch,
                train_loss=train_loss,
                val_loss=val_loss,
                lr=optimizer.param_groups[0]["lr"],
                elapsed_s=time.perf_counter() - start,
            )
        )
        if not math.isfinite(val_loss) or not math.isfinite(train_loss):
            stop_reason = "non_finite"
            break
        if plateau.update(epoch, val_loss):
            best_state = copy.deepcopy(model.state_dict())
        if plateau.spent(config.early_stopping_patience):
            stop_reason = "early_stopping"
            break
        scheduler.step(val_loss)
    model.load_state_dict(best_state)
    result = TrainingResult(
        history=history,
        best_epoch=plateau.best_epoch,
        stop_reason=stop_reason,
        best_state=best_state,
        cpu_time_s=time.process_time() - cpu_start,
    )
    if stop_reason == "non_finite":
        raise NonFiniteLossError(history[-1]["epoch"], None, result=result)
    return result
