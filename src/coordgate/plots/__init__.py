"""Figures of the studies (matplotlib, no pyplot state): shared helpers in ``common``,
one module per study (``conv1d``, ``padding``, ``deblur``)."""

__all__: list[str] = []
