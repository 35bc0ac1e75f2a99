"""The Export widget's logic: write a checkpoint as ``coordgate export`` does.

:func:`export_package` calls :func:`coordgate.export.export_checkpoint`, the function the
command runs, and for a BioImage Model Zoo package then runs ``bioimageio.core``'s own test
of it, so the widget and the command write the same files and report the same result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ExportSettings", "export_package"]


@dataclass(frozen=True)
class ExportSettings:
    """The Export widget's choices: the checkpoint, the file to write, its ``format``
    (:data:`coordgate.export.FORMATS`), the normalisation built in
    (:data:`coordgate.deblurring.NORMALISATIONS`), and the package's ``authors`` (empty:
    the user's login name) and ``license`` (an SPDX identifier)."""

    checkpoint: Path
    output: Path
    format: str = "bioimageio"
    normalisation: str = "checkpoint"
    authors: tuple[str, ...] = field(default_factory=tuple)
    license: str = "MIT"

    def __post_init__(self) -> None:
        from coordgate.deblurring import NORMALISATIONS
        from coordgate.export import FORMATS

        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}"
            )
        if not self.license.strip():
            raise ValueError("give the package a license (an SPDX identifier such as MIT)")


def export_package(settings: ExportSettings) -> str:
    """Write the export ``settings`` ask for; one line saying what was written and, for a
    bioimageio package, the status of ``bioimageio.core``'s test of it."""
    from coordgate.export import export_checkpoint

    path = export_checkpoint(
        settings.checkpoint,
        settings.output,
        settings.format,
        normalisation=settings.normalisation,
        authors=list(settings.authors) or None,
        license=settings.license,
    )
    if settings.format != "bioimageio":
        return f"wrote {path.name} ({settings.format})"
    from coordgate.export.bioimageio import zoo_test

    status = zoo_test(path).status
    return f"wrote {path.name}; bioimageio.core test: {status}"
