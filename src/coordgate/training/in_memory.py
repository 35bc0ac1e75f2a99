"""A lean trainer for small problems whose data fit in memory as tensors.

Adam (default betas) on a loss, learning rate halved when the validation loss stops
improving (``ReduceLROnPlateau``), training stopped when it has not improved for
``early_stopping_patience`` epochs; the best-validation weights are restored. Used by the
1D study of paper §IV.A, where the whole data set is a few 10 000 x 30 tensors. It speaks
:func:`~coordgate.training.fit.fit`'s language: the options are
:class:`~coordgate.training.fit.TrainConfig`'s, the result a
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
import torch.nn.functional as F
from torch import nn

from coordgate.training.fit import TrainConfig, TrainingResult
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


def fit_tensors(
    model: nn.Module,
    train: Pair,
    val: Pair,
    *,
    lr: float = 1e-3,
    batch_size: int = 256,
    epochs: int = 1000,
    early_stopping_patience: int | None = 30,
    lr_patience: int = 10,
    lr_factor: float = 0.5,
    min_improvement: float = 1e-3,
    seed: int = 0,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.mse_loss,
    progress: bool = False,
) -> TrainingResult:
    """Train ``model`` on in-memory ``train`` = (inputs, targets), select on ``val``.

    Inputs and targets are tensors with samples on the first axis, already on the model's
    device. The options mean what the :class:`~coordgate.training.fit.TrainConfig` fields
    of the same names mean (and are validated by it): an epoch counts as an improvement
    when the validation loss falls below ``(1 - min_improvement)`` times the loss of the
    last improvement; the learning rate is multiplied by ``lr_factor`` after
    ``lr_patience`` epochs without one and training stops after
    ``early_stopping_patience`` (None: runs all ``epochs``). ``seed`` fixes the batch
    order. The model ends with the best weights, which the result also holds; a loss
    that is not finite raises :class:`~coordgate.training.stopping.NonFiniteLossError`
    with that result.
    """
    _check_pair(train, "train")
    _check_pair(val, "val")
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_factor=lr_factor,
        lr_patience=lr_patience,
        early_stopping_patience=early_stopping_patience,
        min_improvement=min_improvement,
        seed=seed,
        progress=progress,
    )
    return _train(model, train, val, config, loss_fn)


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
