"""What the training engine costs over a bare loop of Adam steps.

One CG U-Net(3) epoch on random crops, timed in turns in the same run: a bare loop
(forward, MSE, backward, Adam step), the training part of a one-epoch
:func:`coordgate.training.fit` (sampler, DataLoader, per-step NaN check), and the whole
``fit`` call (plus validation with PSNR + SSIM, checkpoints, metrics files, set-up).
Reported as ratios to the bare loop.
"""

from __future__ import annotations

import statistics
import tempfile

import torch
import torch.nn.functional as F

from benchmarks.timing import time_interleaved
from coordgate.models import build_model
from coordgate.training import TrainConfig, fit


class _Crops(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int, frame: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 1, size, size, generator=g)
        self.origins = torch.randint(0, frame - size + 1, (n, 2), generator=g)
        self.frame = torch.tensor([frame, frame])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        image = self.images[i]
        return {
            "blurred": image,
            "sharp": image,
            "origin": self.origins[i],
            "full_size": self.frame,
        }


def _bare_epoch(model, optimizer, data: _Crops, batch: int) -> None:
    full_size = tuple(data.frame.tolist())
    for i in range(0, len(data), batch):
        x, origin = data.images[i : i + batch], data.origins[i : i + batch]
        loss = F.mse_loss(model(x, origin=origin, full_size=full_size), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def run(quick: bool) -> dict:
    size, n, batch, repeats = (32, 16, 4, 3) if quick else (64, 64, 8, 5)
    spec = {"name": "cg-unet3", "options": {"base_channels": 8}}
    train, val = _Crops(n, size, 4 * size), _Crops(max(n // 4, 2), size, 4 * size)
    torch.manual_seed(0)
    bare_model = build_model(spec["name"], **spec["options"])
    optimizer = torch.optim.Adam(bare_model.parameters(), lr=1e-3)
    fit_model = build_model(spec["name"], **spec["options"])
    config = TrainConfig(epochs=1, batch_size=batch, progress=False, device="cpu")
    rows: list[dict] = []

    def one_fit_epoch() -> None:
        with tempfile.TemporaryDirectory() as out_dir:
            rows.append(fit(fit_model, train, val, config, out_dir, model_spec=spec).history[0])

    medians = time_interleaved(
        {"bare": lambda: _bare_epoch(bare_model, optimizer, train, batch), "fit": one_fit_epoch},
        repeats=repeats,
        warmup=1,
    )
    fit_train = statistics.median(row["train_time_s"] for row in rows)
    fit_epoch = statistics.median(row["epoch_time_s"] for row in rows)
    return {
        "model": spec,
        "crop": size,
        "train_images": n,
        "val_images": len(val),
        "batch_size": batch,
        "bare_epoch_s": medians["bare"],
        "fit_call_s": medians["fit"],
        "fit_train_s": fit_train,
        "fit_epoch_s": fit_epoch,
        "fit_train_over_bare": fit_train / medians["bare"],
        "fit_call_over_bare": medians["fit"] / medians["bare"],
        "epoch_extras_over_train": (fit_epoch - fit_train) / fit_train,
        "fit_images_per_s": n / fit_train,
    }
