"""When a training run stops, in the words both trainers use.

:func:`~coordgate.training.fit.fit` and the in-memory
:func:`~coordgate.training.in_memory.fit_tensors` stop for one of the
:data:`StopReason` s and track improvement with one :class:`Plateau`: an epoch improves
when its validation loss falls below ``(1 - min_improvement)`` times the loss of the last
improvement (a loss creeping down by rounding noise is a plateau too), and
``early_stopping_patience`` epochs without one end the run. The best weights follow every
drop of the validation loss, however small.

The NaN policy, the same for both: a training or validation loss that is not finite ends
the run at once; the model is given back the weights of its best epoch (when one
finished) and :class:`NonFiniteLossError` is raised, carrying the run's result (stop
reason ``"non_finite"``), so a diverged run is never mistaken for a finished one. A
:func:`~coordgate.training.fit.fit` run directory keeps its last good epoch and resumes
from it.

>>> plateau = Plateau(min_improvement=0.1)
>>> [plateau.update(epoch, loss) for epoch, loss in enumerate([1.0, 0.95, 0.8, 0.9], 1)]
[True, True, True, False]
>>> plateau.best_epoch, plateau.stale_epochs, plateau.spent(patience=1)
(3, 1, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from coordgate.training.fit import TrainingResult

__all__ = ["STOP_REASONS", "NonFiniteLossError", "Plateau", "StopReason"]

#: Why a run stopped: its planned ``epochs`` ran; ``early_stopping``: the plateau rule's
#: patience ran out; ``time_budget``: the next epoch would not end within the budget
#: (plateau schedule); ``non_finite``: the loss became NaN or infinite.
StopReason = Literal["epochs", "early_stopping", "time_budget", "non_finite"]
STOP_REASONS: tuple[StopReason, ...] = ("epochs", "early_stopping", "time_budget", "non_finite")


@dataclass
class Plateau:
    """The validation losses of a run so far: the best (``best_loss`` at ``best_epoch``),
    the ``reference`` loss of the last improvement by more than ``min_improvement``
    (relative) and the ``stale_epochs`` since it."""

    min_improvement: float
    best_loss: float = math.inf
    best_epoch: int = 0
    reference: float = math.inf
    stale_epochs: int = 0

    def update(self, epoch: int, loss: float) -> bool:
        """Count ``epoch``'s validation ``loss``; True when it is the best so far."""
        if loss < self.reference * (1 - self.min_improvement):
            self.reference, self.stale_epochs = loss, 0
        else:
            self.stale_epochs += 1
        improved = loss < self.best_loss
        if improved:
            self.best_loss, self.best_epoch = loss, epoch
        return improved

    def spent(self, patience: int | None) -> bool:
        """Whether ``patience`` epochs without improvement have passed (None: never)."""
        return patience is not None and self.stale_epochs >= patience


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped (see the module's NaN policy).

    ``result``: the run up to its last finite epoch (stop reason ``"non_finite"``);
    ``checkpoint``: a run directory's last good checkpoint, if one was written."""

    def __init__(
        self,
        epoch: int,
        step: int | None,
        checkpoint: Path | None = None,
        result: TrainingResult | None = None,
    ) -> None:
        where = f"epoch {epoch}, step {step}" if step is not None else f"epoch {epoch} validation"
        if checkpoint is not None:
            kept = f"the last good checkpoint is {checkpoint}"
        elif result is not None and result.best_epoch:
            kept = f"the model holds the weights of its best epoch, {result.best_epoch}"
        else:
            kept = "no epoch finished before it (no checkpoint was written)"
        super().__init__(
            f"the loss became NaN or infinite at {where}; training stopped and {kept} "
            "(try a lower learning rate or check the data for NaN/Inf)"
        )
        self.epoch, self.step, self.checkpoint, self.result = epoch, step, checkpoint, result
