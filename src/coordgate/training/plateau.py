"""Convergence that is tested, not declared: the doubling test and the plateau search.

A run of ``E`` epochs (warm-up and a cosine stretched over them) is at its plateau when
the same schedule stretched over ``2 E`` epochs gains less than ``tolerance`` (0.15 dB)
of test PSNR. :func:`doubling_test` runs the pair; :func:`plateau_search` doubles the
budget from ``start`` until a pair passes (or the budget would pass ``limit``) and names the
smallest budget that passed. A stopping rule that fires because the learning rate has
been annealed to nothing is not a plateau; this is the test that replaces it.

``score(epochs) -> float`` trains (or reuses) the run of that length and returns its test
PSNR: the studies pass a function over their own data and run directories, so a search
resumes run by run.

>>> scores = {10: 20.0, 20: 21.0, 40: 21.1, 80: 21.12}
>>> search = plateau_search(scores.__getitem__, start=10, limit=80)
>>> search.plateau_epochs, round(search.doubling_gain_db, 2)
(20, 0.1)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

__all__ = ["DOUBLING_TOLERANCE_DB", "PlateauSearch", "doubling_test", "plateau_search"]

#: Doubling the budget must gain less than this (dB of test PSNR) at a plateau.
DOUBLING_TOLERANCE_DB = 0.15


def doubling_test(
    score: Callable[[int], float], epochs: int, tolerance: float = DOUBLING_TOLERANCE_DB
) -> dict:
    """Score runs of ``epochs`` and ``2 * epochs``: ``{"epochs", "psnr", "doubled_psnr",
    "doubling_gain_db", "passed"}`` (passed: the gain is below ``tolerance``)."""
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    psnr, doubled = float(score(epochs)), float(score(2 * epochs))
    gain = doubled - psnr
    return {
        "epochs": epochs,
        "psnr": psnr,
        "doubled_psnr": doubled,
        "doubling_gain_db": gain,
        "passed": gain < tolerance,
    }


@dataclass
class PlateauSearch:
    """The budgets tried (``rungs``: epochs and test PSNR, doubling from the first), the
    smallest budget whose doubling gained less than ``tolerance`` (None: none within
    ``limit``, the largest budget the search may score) and that doubling's gain (or the
    last pair's, when none passed)."""

    rungs: list[dict] = field(default_factory=list)
    plateau_epochs: int | None = None
    doubling_gain_db: float | None = None
    tolerance: float = DOUBLING_TOLERANCE_DB
    limit: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def plateau_search(
    score: Callable[[int], float],
    *,
    start: int,
    limit: int,
    tolerance: float = DOUBLING_TOLERANCE_DB,
) -> PlateauSearch:
    """Double the budget from ``start`` epochs until doubling gains less than
    ``tolerance``, scoring no budget above ``limit`` epochs (see the module's docstring)."""
    if not isinstance(start, int) or start < 1 or limit < 2 * start:
        raise ValueError(
            f"the search needs start >= 1 and limit >= 2 * start, got start={start!r} "
            f"and limit={limit!r}"
        )
    search = PlateauSearch(tolerance=tolerance, limit=limit)
    epochs = start
    search.rungs.append({"epochs": epochs, "psnr": float(score(epochs))})
    while 2 * epochs <= limit:
        psnr = float(score(2 * epochs))
        gain = psnr - search.rungs[-1]["psnr"]
        search.rungs[-1]["doubling_gain_db"] = gain
        search.rungs.append({"epochs": 2 * epochs, "psnr": psnr})
        search.doubling_gain_db = gain
        if gain < tolerance:
            search.plateau_epochs = epochs
            break
        epochs *= 2
    return search
