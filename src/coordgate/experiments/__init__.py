"""Thin drivers that reproduce the paper's experiments from the library pieces."""
