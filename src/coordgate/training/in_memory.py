"""A lean trainer for small problems whose data fit in memory as tensors.

Adam (default betas) on a loss, learning rate halved when the validation loss stops
improving (``ReduceLROnPlateau``), training stopped when it has not improved for
``patience`` epochs; the best-validation weights are restored. Used by the 1D study of
paper §IV.A, where the whole data set is a few 10 000 x 30 tensors.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FitResult", "fit_tensors"]

Pair = tuple[torch.Tensor, torch.Tensor]


@dataclass
class FitResult:
    """What ``fit_tensors`` did: best weights, per-epoch history and why it stopped.

    ``stop_reason`` is ``"plateau"`` (validation loss stopped improving), ``"max_epochs"``
    or ``"non-finite"`` (the loss became NaN or infinite; the best weights are kept).
    ``seconds`` is wall time, ``cpu_seconds`` this process's CPU time (about what the run
    takes on an idle core with one torch thread, whatever else the machine was doing).
    """

    best_state: dict[str, torch.Tensor]
    best_val_loss: float
    best_epoch: int
    epochs: int
    stop_reason: str
    seconds: float
    cpu_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


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


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


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
    max_epochs: int = 1000,
    patience: int = 30,
    lr_patience: int = 10,
    lr_factor: float = 0.5,
    min_improvement: float = 1e-3,
    seed: int = 0,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.mse_loss,
    progress: bool = False,
) -> FitResult:
    """Train ``model`` on in-memory ``train`` = (inputs, targets), select on ``val``.

    Inputs and targets are tensors with samples on the first axis, already on the model's
    device. An epoch counts as an improvement when the validation loss falls below
    ``(1 - min_improvement)`` times the best so far; the learning rate is multiplied by
    ``lr_factor`` after ``lr_patience`` epochs without one and training stops after
    ``patience``. ``seed`` fixes the batch order. The model ends with the best weights.
    """
    _check_pair(train, "train")
    _check_pair(val, "val")
    _check_positive(
        batch_size=batch_size, max_epochs=max_epochs, patience=patience, lr_patience=lr_patience
    )
    if not (lr > 0 and 0 < lr_factor < 1 and 0 <= min_improvement < 1):
        raise ValueError(
            f"need lr > 0, 0 < lr_factor < 1 and 0 <= min_improvement < 1, "
            f"got {lr=}, {lr_factor=}, {min_improvement=}"
        )
    x, y = train
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        factor=lr_factor,
        patience=lr_patience,
        threshold=min_improvement,
        threshold_mode="rel",
    )
    generator = torch.Generator().manual_seed(seed)
    best_val, best_epoch, history = math.inf, 0, []
    reference, improved_at = math.inf, 0
    best_state = copy.deepcopy(model.state_dict())
    stop_reason = "max_epochs"
    epochs = range(1, max_epochs + 1)
    if progress:
        from tqdm import tqdm

        epochs = tqdm(epochs, desc="fit", leave=False)
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in epochs:
        model.train()
        order = torch.randperm(len(x), generator=generator).to(x.device)
        train_loss = 0.0
        for begin in range(0, len(x), batch_size):
            index = order[begin : begin + batch_size]
            loss = loss_fn(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            train_loss += loss.item() * len(index)
        val_loss = _evaluate(model, val, loss_fn, max(batch_size, 1024))
        history.append(
            dict(
                epoch=epoch,
                train_loss=train_loss / len(x),
                val_loss=val_loss,
                lr=optimizer.param_groups[0]["lr"],
            )
        )
        if not math.isfinite(val_loss) or not math.isfinite(train_loss):
            stop_reason = "non-finite"
            break
        if val_loss < best_val:
            best_val, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        # Only a relative improvement resets the plateau clock: a loss creeping down by
        # rounding noise is a plateau too.
        if val_loss < reference * (1 - min_improvement):
            reference, improved_at = val_loss, epoch
        elif epoch - improved_at >= patience:
            stop_reason = "plateau"
            break
        scheduler.step(val_loss)
    model.load_state_dict(best_state)
    return FitResult(
        best_state=best_state,
        best_val_loss=best_val,
        best_epoch=best_epoch,
        epochs=len(history),
        stop_reason=stop_reason,
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu_start,
        history=history,
    )
