"""Speed and memory measurements (not tests). ``python -m benchmarks [NAME ...]`` runs them."""
