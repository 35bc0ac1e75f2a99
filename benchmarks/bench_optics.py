"""Spatially-varying blur: exact per-pixel operator vs low-rank product-convolution.

For each image size (512 and 1024 px; 128 and 256 with ``--quick``) and the default lens
with 31 x 31 PSFs, every (size, method) case runs in a fresh single-threaded Python
process, which reports:

- ``build_s``: constructing the operator (sampling the PSF grid; SVD for lowrank);
- ``first_call_s``: the first ``A`` call (lowrank computes and caches its spectra);
- ``forward_s`` / ``adjoint_s``: median wall time of further ``A`` / ``A_T`` calls on a
  (1, 1, n, n) float32 image (2 calls for exact, 5 for lowrank);
- ``peak_call_mib``: peak resident memory during the timed calls minus the resident memory
  just before them, i.e. the working memory of a call. The kernel's peak-RSS mark is
  reset first (``/proc/self/clear_refs``), so construction peaks do not hide it;
- ``buffers_mib``: the operator's buffers.

The ratio ``exact / lowrank`` of forward times and the relative L2 error of lowrank
against exact (on the camera test image) come from the same run.

``operators``: the low-rank operator at 1024² (256² with ``--quick``) with 8 eigen-PSFs of
31x31, in this process on one thread, every padding mode's ``A`` and ``A_T`` timed in
turns: adjoint / forward per padding, and each padding's forward over zero padding's.
When deepinv is importable, its ``SpaceVaryingBlur(use_fft=True)`` runs on the same
kernels and multipliers in the same turns (ours / deepinv per padding); deepinv is not a
dependency, and the result says so when it is absent.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.timing import ratios, threads, time_clocks
from coordgate.optics import PADDINGS
from coordgate.timing import median_seconds

PSF_SIZE = 31
OPERATOR_RANK = 8
# deepinv's names for our padding modes
_DEEPINV_PADDING = {
    "zero": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
    "circular": "circular",
}
MIB = 1 << 20
# One thread per case: on a shared machine, oversubscribed OpenMP threads make timings
# (LAPACK's most of all) swing by orders of magnitude; both methods get the same budget.
THREADS = 1


def _status_kib(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", text).group(1))


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _image(size: int) -> np.ndarray:
    from skimage import data, transform

    image = transform.resize(data.camera() / 255.0, (size, size), anti_aliasing=True)
    return image.astype(np.float32)


def case(size: int, method: str, output: Path) -> dict:
    """Measure one (size, method) case in this process; writes A(x) to ``output``."""
    import torch

    from coordgate.optics import PSFField, SpatiallyVaryingBlur

    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    op = SpatiallyVaryingBlur(PSFField.default(psf_size=PSF_SIZE), (size, size), method=method)
    build = time.perf_counter() - start
    x = torch.from_numpy(_image(size))[None, None]
    repeats = 2 if method == "exact" else 5
    with torch.no_grad():
        start = time.perf_counter()
        y = op.A(x)
        first = time.perf_counter() - start
        np.save(output, y[0, 0].numpy())
        del y
        reset = _reset_peak()
        before = _status_kib("VmRSS")
        # the first call above was the warm-up
        forward = median_seconds(lambda: op.A(x), repeats, warmup=0)
        adjoint = median_seconds(lambda: op.A_T(x), repeats, warmup=0)
        peak = _status_kib("VmHWM")
    buffers = sum(b.numel() * b.element_size() for b in op.buffers())
    return {
        "build_s": round(build, 3),
        "first_call_s": round(first, 4),
        "forward_s": round(forward, 4),
        "adjoint_s": round(adjoint, 4),
        "peak_call_mib": round((peak - before) / 1024, 1) if reset else None,
        "buffers_mib": round(buffers / MIB, 1),
        "rank": op.rank,
        "threads": torch.get_num_threads(),
    }


def _deepinv_operators(op, paddings) -> tuple[dict, str]:
    """deepinv's FFT product-convolution on ``op``'s kernels and multipliers, per padding,
    and which deepinv was measured, or ({}, why not)."""
    try:
        import deepinv
    except ImportError as error:
        return {}, f"deepinv is not importable ({error}); optional: pip install deepinv to compare"
    filters, multipliers = op.kernels[None, None], op.weights[None, None]
    built = {}
    try:
        for padding in paddings:
            built[padding] = deepinv.physics.SpaceVaryingBlur(
                filters=filters,
                multipliers=multipliers,
                padding=_DEEPINV_PADDING[padding],
                use_fft=True,
            )
    except Exception as error:  # an API change must not stop the benchmark
        return {}, f"deepinv {deepinv.__version__} could not be set up: {error!r}"
    torchvision = sys.modules.get("torchvision")  # deepinv imports it; provenance
    version = getattr(torchvision, "__version__", "absent")
    return built, f"measured: deepinv {deepinv.__version__}, torchvision {version}"


def operators(quick: bool) -> dict:
    """Forward and adjoint of every padding mode, timed in turns in this process."""
    with threads(THREADS):
        return _operators(quick)


def _operators(quick: bool) -> dict:
    import torch

    from coordgate.optics import PSFField, SpatiallyVaryingBlur

    size = 256 if quick else 1024
    field = PSFField.default(psf_size=PSF_SIZE)
    ops = {
        padding: SpatiallyVaryingBlur(
            field, (size, size), method="lowrank", rank=OPERATOR_RANK, padding=padding
        )
        for padding in PADDINGS
    }
    x = torch.from_numpy(_image(size))[None, None]
    cases = {}
    for padding, op in ops.items():
        cases[f"{padding}/A"] = lambda op=op: op.A(x)
        cases[f"{padding}/A_T"] = lambda op=op: op.A_T(x)
    theirs, deepinv_status = _deepinv_operators(ops["zero"], PADDINGS)
    for padding, physics in theirs.items():
        cases[f"deepinv {padding}/A"] = lambda physics=physics: physics.A(x)
    with torch.no_grad():
        seconds = time_clocks(cases, repeats=3 if quick else 7, warmup=1)
    pairs = {f"{p} adjoint / forward": (f"{p}/A_T", f"{p}/A") for p in PADDINGS}
    pairs.update({f"{p} forward / zero forward": (f"{p}/A", "zero/A") for p in PADDINGS})
    pairs.update({f"deepinv {p} / ours (forward)": (f"deepinv {p}/A", f"{p}/A") for p in theirs})
    found = ratios(seconds, pairs)
    worst = max(v["thread_cpu"] for k, v in found.items() if "adjoint" in k)
    return {
        "size": size,
        "rank": OPERATOR_RANK,
        "psf_size": PSF_SIZE,
        "threads": torch.get_num_threads(),
        "fft_shapes": {p: list(op._lowrank(x).shape) for p, op in ops.items()},
        "seconds": {
            clock: {k: round(v, 4) for k, v in per.items()} for clock, per in seconds.items()
        },
        "ratios": found,
        "deepinv": deepinv_status,
        "targets": {
            "adjoint / forward <= 1.2 (every padding, thread CPU time)": worst <= 1.2,
            "circular forward no slower than zero": found["circular forward / zero forward"][
                "thread_cpu"
            ]
            <= 1.0,
        },
    }


def _run_case(size: int, method: str, output: Path) -> dict:
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "benchmarks.bench_optics", str(size), method, str(output)]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark case {size} {method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool) -> dict:
    sizes = (128, 256) if quick else (512, 1024)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            outputs = {m: Path(tmp) / f"{m}_{size}.npy" for m in ("exact", "lowrank")}
            measured = {m: _run_case(size, m, path) for m, path in outputs.items()}
            exact, lowrank = (np.load(outputs[m]).astype(np.float64) for m in outputs)
            error = np.linalg.norm(lowrank - exact) / np.linalg.norm(exact)
            cases.append(
                {
                    "size": size,
                    **measured,
                    "forward_speedup": round(
                        measured["exact"]["forward_s"] / measured["lowrank"]["forward_s"], 1
                    ),
                    "adjoint_speedup": round(
                        measured["exact"]["adjoint_s"] / measured["lowrank"]["adjoint_s"], 1
                    ),
                    "relative_error": float(f"{error:.3g}"),
                }
            )
            print(json.dumps(cases[-1]), flush=True)
    from coordgate.optics import PSFField

    largest = cases[-1]
    return {
        "operators": operators(quick),
        "psf_size": PSF_SIZE,
        "field": PSFField.default(psf_size=PSF_SIZE).config(),
        "image": "skimage camera, resized, float32, (1, 1, n, n)",
        "padding": "zero",
        "memory": "peak RSS during the timed calls minus RSS before them (VmHWM reset)",
        "cases": cases,
        "target": "lowrank forward >= 20x faster than exact at the largest size",
        "target_met": largest["forward_speedup"] >= 20,
    }


if __name__ == "__main__":
    size_arg, method_arg, output_arg = sys.argv[1:4]
    print(json.dumps(case(int(size_arg), method_arg, Path(output_arg))))
