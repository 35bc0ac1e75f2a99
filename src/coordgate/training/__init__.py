"""Training: the fit/evaluate loop, metrics, checkpoints and distributed runs."""
