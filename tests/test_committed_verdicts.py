"""Every committed study under ``results/`` judged again by today's code: the same verdicts
as its ``results.json`` and ``report.md`` record."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from coordgate.experiments import padding
from coordgate.experiments._conv1d_claims import judge as conv1d_claims
from coordgate.experiments._deblur_claims import deblur_claims
from coordgate.experiments._lenses_claims import lens_claims
from coordgate.experiments.plateau import plateau_claims

RESULTS = Path(__file__).resolve().parent.parent / "results"
PATHS = sorted(RESULTS.rglob("results.json"))
# the study of results/<study>/...; a run of the deblurring study (also one lens of the
# lens study) is known by its error profiles
JUDGES = {
    "conv1d": conv1d_claims,
    "padding": padding.judge,
    "plateau": plateau_claims,
    "lenses": lens_claims,
}
_VERDICT_LINE = re.compile(r"^\d+\. \*\*(.+?)\*\* — verdict: \*\*(.+?)\*\*$", re.M)


def _judge(path: Path, results: dict) -> dict[str, str]:
    if "error_profiles" in results:
        judge = deblur_claims
    else:
        judge = JUDGES[path.relative_to(RESULTS).parts[0]]
    return {claim.title: claim.verdict for claim in judge(results)}


def test_every_study_is_found():
    assert len(PATHS) >= 11


@pytest.mark.parametrize("path", PATHS, ids=lambda p: str(p.parent.relative_to(RESULTS)))
def test_rejudged_verdicts_equal_the_committed_ones(path):
    results = json.loads(path.read_text())
    stored = {c["title"]: c["verdict"] for c in results["claims"]}
    rejudged = _judge(path, results)
    assert {title: rejudged.get(title) for title in stored} == stored
    # claims added since the run was made find nothing to judge in it
    assert {rejudged[t] for t in rejudged.keys() - stored.keys()} <= {"inconclusive"}
    report = path.with_name("report.md").read_text()
    assert dict(_VERDICT_LINE.findall(report)) == stored
