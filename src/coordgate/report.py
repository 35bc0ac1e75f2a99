"""Building blocks for a study's outputs: ``results.json``, ``results.csv`` and ``report.md``.

Reports are generated from results, never typed by hand: a study collects rows (one dict
per model) and claims (the paper's statement, our evidence, a verdict) and renders them
with these helpers.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from coordgate.atomic import atomic_write_text

__all__ = [
    "VERDICTS",
    "Claim",
    "Column",
    "claims_markdown",
    "environment_markdown",
    "environment_section",
    "format_value",
    "markdown_table",
    "rejudge",
    "write_csv",
    "write_json",
]

VERDICTS = ("supported", "partly supported", "within noise", "not supported", "inconclusive")


@dataclass(frozen=True)
class Column:
    """A table column: the row key, its header and how to format its values
    (a format spec such as ``".2f"`` or a callable returning a string)."""

    key: str
    header: str
    format: str | Callable[[object], str] = ""


@dataclass(frozen=True)
class Claim:
    """One claim of the paper checked against our numbers; ``rule``: how the verdict
    follows from the evidence (shown in the report and stored in ``results.json``)."""

    title: str
    paper: str
    evidence: str
    verdict: str
    rule: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def to_dict(self) -> dict[str, str]:
        return {
            "title": self.title,
            "paper": self.paper,
            "evidence": self.evidence,
            "verdict": self.verdict,
            "rule": self.rule,
        }


def format_value(value: object, spec: str | Callable[[object], str] = "") -> str:
    """``value`` as table text: ``None`` and NaN as an en dash, else by ``spec``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if callable(spec):
        return spec(value)
    return format(value, spec)


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[Column]) -> str:
    """A GitHub-flavoured markdown table of ``rows`` with the given ``columns``."""
    if not columns:
        raise ValueError("markdown_table needs at least one column")
    lines = [
        "| " + " | ".join(c.header for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = (format_value(row.get(c.key), c.format).replace("|", "\\|") for c in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_markdown(claims: Sequence[Claim]) -> str:
    """A numbered list of claims: the paper's words, our evidence, the verdict."""
    blocks = []
    for number, claim in enumerate(claims, 1):
        rule = f"\n   - Rule: {claim.rule}" if claim.rule else ""
        blocks.append(
            f"{number}. **{claim.title}** — verdict: **{claim.verdict}**\n"
            f"   - Paper: {claim.paper}\n"
            f"   - Ours: {claim.evidence}{rule}"
        )
    return "\n".join(blocks)


def environment_section(environment: Mapping[str, object]) -> str:
    """A report's closing "Environment" section: heading and :func:`environment_markdown`."""
    return f"## Environment\n\n{environment_markdown(environment)}\n"


def environment_markdown(environment: Mapping[str, object]) -> str:
    """A bullet list of the machine and versions from ``provenance.environment()``."""
    versions = environment.get("versions", {})
    version_text = ", ".join(f"{k} {v}" for k, v in dict(versions).items()) or "unknown"
    return "\n".join(
        [
            f"- Machine: {environment.get('cpu_model', environment.get('processor', '?'))}, "
            f"{environment.get('cpu_count', '?')} "
            f"CPUs, {environment.get('platform', '?')}",
            f"- Device: {environment.get('device', '?')}, "
            f"torch threads: {environment.get('torch_threads', '?')}",
            f"- Python {environment.get('python', '?')}; {version_text}",
            f"- Run at: {environment.get('time', '?')}",
        ]
    )


def write_json(data: object, path: str | Path) -> Path:
    """Write ``data`` as indented JSON (NaN written as null) and return the path."""
    return atomic_write_text(path, json.dumps(_nan_to_none(data), indent=2) + "\n")


def _nan_to_none(data: object) -> object:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, Mapping):
        return {k: _nan_to_none(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_nan_to_none(v) for v in data]
    return data


def rejudge(
    out: str | Path,
    judge: Callable[[Mapping[str, object]], Sequence[Claim]],
    render: Callable[[Mapping[str, object]], str],
) -> dict[str, object]:
    """Judge and report a finished study again from ``out/results.json`` alone, with no
    training: the claims of ``judge(results)`` replace the stored ones (rules included)
    and ``render(results)`` rewrites ``report.md``. Returns the new results."""
    out = Path(out)
    results = json.loads((out / "results.json").read_text())
    results = {**results, "claims": [claim.to_dict() for claim in judge(results)]}
    write_json(results, out / "results.json")
    atomic_write_text(out / "report.md", render(results))
    return results


def write_csv(
    rows: Sequence[Mapping[str, object]], path: str | Path, keys: Sequence[str] | None = None
) -> Path:
    """Write ``rows`` as CSV with columns ``keys`` (default: the first row's keys)."""
    if keys is None:
        keys = list(rows[0]) if rows else []
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(keys), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, text.getvalue())
