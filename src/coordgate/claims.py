"""Claims as data, for every study: one comparison rule, one rule type, one verdict combiner.

A study's claim is a :class:`Rule` (the paper's statement, how the verdict follows from
the evidence, and a judge that reads the results) and becomes a
:class:`coordgate.report.Claim` by :meth:`Rule.claim`; a claim made of several checks
combines their verdicts with :func:`combine_verdicts`.

A comparison of model A with model B uses the paired per-frame difference of a metric
(PSNR of each test frame, averaged over each model's seeds): its mean ``Δ`` and its
uncertainty ``u``, the larger of the standard error over frames and, when both models
have two or more seeds, the standard error of the per-seed differences. ``A > B`` is
*supported* when ``Δ > 2u`` and every seed pair agrees in sign, *not supported* when
``Δ < -2u`` with the same agreement, and *within noise* otherwise. A study that judges
per lens stores each comparison as a row of ``results.json`` (:func:`comparison_row`)
and judges it again from that row (:func:`per_lens_claim`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from coordgate.report import Claim

__all__ = [
    "COMPARISON_RULE",
    "EQUIVALENCE_DB",
    "Comparison",
    "Rule",
    "best_network",
    "combine_verdicts",
    "compare",
    "comparison",
    "comparison_row",
    "from_row",
    "model_row",
    "per_lens_claim",
]

COMPARISON_RULE = (
    "paired per-frame difference Δ of the test PSNR (each frame averaged over a model's "
    "seeds), u = max(standard error over frames, standard error over paired seeds); "
    "'A beats B' is supported if Δ > 2u and all seed pairs agree in sign, not supported if "
    "Δ < −2u likewise, within noise otherwise"
)
#: "performs like / matches": |Δ| no larger than this (dB) or than 2u
EQUIVALENCE_DB = 0.25


@dataclass(frozen=True)
class Comparison:
    """Model ``a`` against model ``b`` on one per-frame metric (dB)."""

    a: str
    b: str
    delta: float
    uncertainty: float
    seed_deltas: tuple[float, ...]

    @property
    def signs_agree(self) -> bool:
        signs = {d > 0 for d in self.seed_deltas}
        return len(signs) <= 1

    @property
    def verdict(self) -> str:
        """Verdict on "a beats b" by the module's rule."""
        if self.delta > 2 * self.uncertainty and self.signs_agree:
            return "supported"
        if self.delta < -2 * self.uncertainty and self.signs_agree:
            return "not supported"
        return "within noise"

    @property
    def equivalent(self) -> bool:
        return abs(self.delta) <= max(EQUIVALENCE_DB, 2 * self.uncertainty)

    def text(self) -> str:
        seeds = (
            f", per-seed Δ {', '.join(f'{d:+.2f}' for d in self.seed_deltas)}"
            if len(self.seed_deltas) > 1
            else ""
        )
        return f"{self.a} − {self.b}: Δ = {self.delta:+.2f} ± {self.uncertainty:.2f} dB{seeds}"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _standard_error(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def compare(results: dict, a: str, b: str, key: str = "psnr_frames") -> Comparison:
    """Paired comparison of models ``a`` and ``b`` on the per-frame, per-seed ``key``
    (``psnr_frames``, ``centre_psnr_frames`` or ``real_psnr_frames``)."""
    row_a, row_b = model_row(results, a), model_row(results, b)
    frames_a = [_mean(column) for column in zip(*row_a[key])]
    frames_b = [_mean(column) for column in zip(*row_b[key])]
    differences = [x - y for x, y in zip(frames_a, frames_b)]
    seed_deltas = tuple(_mean(x) - _mean(y) for x, y in zip(row_a[key], row_b[key]))
    uncertainty = _standard_error(differences)
    if len(row_a[key]) > 1 and len(row_b[key]) > 1:
        uncertainty = max(uncertainty, _standard_error(seed_deltas))
    return Comparison(a, b, _mean(differences), uncertainty, seed_deltas)


def model_row(results: dict, name: str) -> dict:
    """The row of model ``name`` in ``results["models"]``."""
    return next(r for r in results["models"] if r["name"] == name)


def best_network(results: dict) -> str:
    """The trained model with the best validation PSNR: chosen without the test frames."""
    networks = [r for r in results["models"] if r["params"] and r.get("val_psnr")]
    if not networks:
        raise ValueError("no trained network in these results (none has a val_psnr)")
    return max(networks, key=lambda r: max(r["val_psnr"]))["name"]


def combine_verdicts(verdicts: Sequence[str]) -> str:
    """One verdict for a claim made of several checks: their verdict if they all agree;
    else partly supported if one of them is supported (or partly), not supported if one
    of them is not supported, within noise otherwise."""
    if not verdicts:
        raise ValueError("combine_verdicts needs at least one verdict")
    if len(set(verdicts)) == 1:
        return verdicts[0]
    if "supported" in verdicts or "partly supported" in verdicts:
        return "partly supported"
    return "not supported" if "not supported" in verdicts else "within noise"


@dataclass(frozen=True)
class Rule:
    """A claim before judging: the paper's statement, the models it ``needs`` (judged
    inconclusive without them), ``judge(results) -> (verdict, evidence)`` and ``rule``,
    how the verdict follows from the evidence."""

    title: str
    paper: str
    needs: tuple[str, ...]
    judge: Callable[[dict], tuple[str, str]]
    rule: str = COMPARISON_RULE

    def claim(self, results: dict) -> Claim:
        have = {r["name"] for r in results["models"]}
        missing = sorted(set(self.needs) - have)
        if missing:
            evidence = f"not measured: this run lacks {', '.join(missing)}"
            return Claim(self.title, self.paper, evidence, "inconclusive", self.rule)
        verdict, evidence = self.judge(results)
        return Claim(self.title, self.paper, evidence, verdict, self.rule)


def comparison_row(comparison: Comparison) -> dict:
    """A comparison as stored in results.json, with its verdict and text."""
    return {
        "a": comparison.a,
        "b": comparison.b,
        "delta": comparison.delta,
        "uncertainty": comparison.uncertainty,
        "seed_deltas": list(comparison.seed_deltas),
        "verdict": comparison.verdict,
        "text": comparison.text(),
    }


def from_row(row: dict) -> Comparison:
    """A stored comparison row back as a :class:`Comparison`."""
    return Comparison(
        row["a"], row["b"], row["delta"], row["uncertainty"], tuple(row["seed_deltas"])
    )


def comparison(lens: dict, a: str, b: str) -> dict | None:
    """The stored comparison ``a − b`` of one lens, or None."""
    return next((c for c in lens["comparisons"] if (c["a"], c["b"]) == (a, b)), None)


def per_lens_claim(title: str, paper: str, a: str, b: str, equivalence: bool = False):
    """A claim judged lens by lens from the stored comparison ``a − b``: 'a beats b', or
    with ``equivalence`` 'a performs like b' (:attr:`Comparison.equivalent`)."""
    rule = COMPARISON_RULE
    if equivalence:
        rule = f"per lens supported if |Δ| ≤ max({EQUIVALENCE_DB} dB, 2u), Δ and u as in: " + rule

    def claim(results: dict) -> Claim:
        parts, verdicts = [], []
        for lens in results["lenses"]:
            row = comparison(lens, a, b)
            if row is None:
                continue
            judged = from_row(row)
            verdict = judged.verdict
            if equivalence:
                verdict = "supported" if judged.equivalent else "not supported"
            verdicts.append(verdict)
            parts.append(f"{lens['name']}: {row['text']} ({verdict})")
        if not verdicts:
            return Claim(title, paper, f"not measured: no lens has {a} and {b}", "inconclusive")
        return Claim(title, paper, "; ".join(parts), combine_verdicts(verdicts), rule)

    return claim
