"""Speed of the embedded data: the synthetic microscopy generator and pair building.

Target (issue 5): 2000 synthetic images of 128x128 in under 20 s on 2 cores.
"""

from __future__ import annotations

import tempfile
import time

import torch

from coordgate.data import build_pairs, synthetic_microscopy


def run(quick: bool = False) -> dict:
    n = 200 if quick else 2000
    start = time.perf_counter()
    images = synthetic_microscopy(range(n), 128, seed=0)
    generate_s = time.perf_counter() - start
    pairs_n = 100 if quick else 500
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_pairs(tmp, n=pairs_n, size=64, noise=None, progress=False)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        reused = build_pairs(tmp, n=pairs_n, size=64, noise=None, progress=False)
        reuse_s = time.perf_counter() - start
    return {
        "threads": torch.get_num_threads(),
        "generator": {
            "images": n,
            "size": 128,
            "seconds": generate_s,
            "images_per_s": n / generate_s,
            "mean": float(images.mean()),
            "max": float(images.max()),
        },
        "pairs": {
            "n": pairs_n,
            "size": 64,
            "build_s": build_s,
            "reuse_s": reuse_s,
            "reused": not reused.built,
        },
    }
