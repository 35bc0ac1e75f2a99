"""Scored runs that outlive their weights: a study's per-run record.

A study scores every trained run once and keeps what its results and figures need (the
per-frame scores, the timings, a few small images) in ``OUT/scores/KEY.json`` and
``KEY.npz``, beside the ``identity`` that produced them (model spec and training
options). A later run of the study, on this machine or on a fresh clone where only the
committed records survive, reuses a record whose identity matches and trains nothing;
one whose identity differs is an error, as a finished run with other options is in
:func:`~coordgate.training.fit.fit`.

>>> import tempfile, torch
>>> folder = Path(tempfile.mkdtemp())
>>> save_record(folder / "unet3-seed0", {"epochs": 4}, {"psnr": 30.0}, {"map": torch.ones(2, 2)})
>>> data, arrays = load_record(folder / "unet3-seed0", {"epochs": 4})
>>> data["psnr"], arrays["map"].shape
(30.0, torch.Size([2, 2]))
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from coordgate.atomic import atomic_write_text, replace_atomically

__all__ = ["load_record", "save_record"]


def save_record(stem: Path, identity: dict, data: dict, arrays: dict[str, torch.Tensor]) -> None:
    """Write ``stem.npz`` (``arrays`` as float32) and then ``stem.json`` (``identity`` and
    ``data``): a record counts only once its json exists, so a crash leaves none."""
    stem = Path(stem)
    values = {k: v.detach().cpu().float().numpy() for k, v in arrays.items()}
    replace_atomically(stem.with_suffix(".npz"), lambda tmp: np.savez_compressed(tmp, **values))
    text = json.dumps({"identity": identity, "data": data}, indent=1)
    atomic_write_text(stem.with_suffix(".json"), text + "\n")


def load_record(stem: Path, identity: dict) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """The (data, arrays) of the record at ``stem`` made with ``identity``; None when
    there is none. A record made with another identity raises ValueError."""
    stem = Path(stem)
    json_path, npz_path = stem.with_suffix(".json"), stem.with_suffix(".npz")
    if not json_path.is_file():
        return None
    record = json.loads(json_path.read_text())
    # compared as JSON, so tuples and lists of the same values agree
    if record["identity"] != json.loads(json.dumps(identity)):
        changed = sorted(
            k
            for k in set(record["identity"]) | set(identity)
            if record["identity"].get(k) != json.loads(json.dumps(identity.get(k)))
        )
        raise ValueError(
            f"{json_path} was scored for another run ({', '.join(changed)} differ); "
            "delete it (and its .npz) to train and score this one, or use another --out"
        )
    if not npz_path.is_file():
        raise ValueError(f"{json_path} has no {npz_path.name} beside it; delete the record")
    with np.load(npz_path) as stored:
        arrays = {k: torch.from_numpy(stored[k]) for k in stored.files}
    return record["data"], arrays
