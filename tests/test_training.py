"""The training engine: metrics, fit, resume, NaN handling, early stopping, reuse."""

from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity
from torch import nn

from coordgate.devices import supports_bf16
from coordgate.models import build_model
from coordgate.training import (
    CheckpointConfig,
    NonFiniteLossError,
    TrainConfig,
    evaluate,
    fit,
    load_checkpoint,
    load_weights,
    psnr,
    ssim,
)
from tests.helpers import PairSet

SPEC = {"name": "cg-unet3", "options": {"base_channels": 2}}
PLAIN = {"name": "unet3", "options": {"base_channels": 2}}


def quiet(**options) -> TrainConfig:
    return TrainConfig(**{"batch_size": 4, "progress": False, "device": "cpu", **options})


def new_model(spec: dict = SPEC) -> nn.Module:
    torch.manual_seed(1)
    return build_model(spec["name"], **spec["options"])


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


# --- metrics -------------------------------------------------------------------------


def test_ssim_matches_scikit_image_on_one_image():
    g = torch.Generator().manual_seed(3)
    target = torch.rand(37, 31, generator=g)
    prediction = (target + 0.1 * torch.randn(37, 31, generator=g)).clamp(0, 1)
    expected = structural_similarity(prediction.numpy(), target.numpy(), data_range=1)
    assert abs(float(ssim(prediction, target)) - expected) < 1e-3
    assert float(ssim(target, target)) == pytest.approx(1.0)


def test_ssim_per_image_matches_scikit_image_with_channels():
    g = torch.Generator().manual_seed(4)
    target = torch.rand(3, 2, 37, 31, generator=g)
    prediction = target + 0.2 * torch.randn(3, 2, 37, 31, generator=g)
    per_image = ssim(prediction, target, reduce_dims=(1, 2, 3))
    expected = [
        structural_similarity(p.numpy(), t.numpy(), data_range=1, channel_axis=0)
        for p, t in zip(prediction, target)
    ]
    assert per_image.shape == (3,)
    np.testing.assert_allclose(per_image.numpy(), expected, atol=1e-3)
    assert per_image.std() > 1e-4  # distinct images give distinct scores


@pytest.mark.parametrize(("shape", "message"), [((5, 31), "at least 7x7"), ((31,), "(..., H, W)")])
def test_ssim_rejects_small_or_flat_inputs(shape, message):
    with pytest.raises(ValueError, match=message):
        ssim(torch.rand(shape), torch.rand(shape))


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        psnr(torch.rand(1, 1, 9, 9), torch.rand(1, 1, 9, 8))
    with pytest.raises(ValueError, match="one shape"):
        ssim(torch.rand(9, 9), torch.rand(9, 8))


def test_psnr_of_known_error():
    target = torch.zeros(2, 1, 7, 9)
    prediction = target + 0.1
    assert float(psnr(prediction, target)) == pytest.approx(20.0)


# --- fit ------------------------------------------------------------------------------


def test_fit_writes_checkpoints_metrics_and_improves(tmp_path):
    model = new_model()
    train, val = PairSet(8, seed=0), PairSet(4, seed=1)
    before = evaluate(model, val, device="cpu")
    result = fit(
        model,
        train,
        val,
        quiet(epochs=3, amp=False),  # float32, so that evaluate() repeats its val losses
        tmp_path,
        model_spec=SPEC,
        record=CheckpointConfig(SPEC, normalisation={"low": 0.1, "high": 0.9}),
    )
    for name in ("best.safetensors", "best.json", "last.safetensors", "last.json"):
        assert (tmp_path / name).is_file()
    for name in ("last.state.pt", "metrics.csv", "metrics.json", "finished.json"):
        assert (tmp_path / name).is_file()
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.stop_reason == "epochs" and not result.reused
    assert result.best["val_loss"] == min(result.series("val_loss"))
    assert result.best["val_loss"] < before["loss"]
    assert all(row["train_time_s"] > 0 and row["images_per_s"] > 0 for row in result.history)
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and "val_ssim" in csv_lines[0]
    assert json.loads((tmp_path / "metrics.json").read_text())["history"] == result.history

    # on return the model holds the best epoch's weights, which the checkpoint rebuilds
    loaded, config = load_checkpoint(tmp_path, expect_model="cg-unet3")
    assert config.epoch == result.best_epoch and config.kind == "best"
    assert config.normalisation == {"low": 0.1, "high": 0.9}
    assert config.model == SPEC and "versions" in config.environment
    after = evaluate(model, val, device="cpu")
    assert after["loss"] == pytest.approx(result.best["val_loss"], rel=1e-6)
    assert evaluate(loaded, val, device="cpu")["loss"] == pytest.approx(after["loss"], rel=1e-6)


def test_evaluate_reports_mean_and_spread():
    val = PairSet(5, seed=2)
    result = evaluate(Frozen(), val, batch_size=2, device="cpu")
    per_image = psnr(val.blurred, val.sharp, reduce_dims=(1, 2, 3))
    assert result["images"] == 5
    assert result["psnr"] == pytest.approx(float(per_image.mean()))
    assert result["psnr_std"] == pytest.approx(float(per_image.std(unbiased=False)))
    assert result["loss"] == pytest.approx(float(F.mse_loss(val.blurred, val.sharp)))
    assert 0 < result["ssim"] < 1


class Interrupting(PairSet):
    """Raises KeyboardInterrupt on the ``at``-th item fetched while armed."""

    def __init__(self, *args, at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.at, self.fetched = at, 0

    def __getitem__(self, i: int) -> dict:
        self.fetched += 1
        if self.fetched == self.at:
            raise KeyboardInterrupt
        return super().__getitem__(i)


def test_resume_after_interruption_is_bit_identical(tmp_path):
    train, val = PairSet(8, seed=0, augment=True), PairSet(4, seed=1)
    straight = new_model(PLAIN)
    fit(straight, train, val, quiet(epochs=3), tmp_path / "straight", model_spec=PLAIN)

    # the first fetch is fit's input check; then 8 per epoch: stop inside epoch 3
    interrupted = Interrupting(8, seed=0, augment=True, at=1 + 2 * 8 + 3)
    model = new_model(PLAIN)
    with pytest.raises(KeyboardInterrupt):
        fit(model, interrupted, val, quiet(epochs=3), tmp_path / "cut", model_spec=PLAIN)
    assert not (tmp_path / "cut" / "finished.json").exists()
    with pytest.raises(ValueError, match="resume"):
        fit(new_model(PLAIN), train, val, quiet(epochs=3), tmp_path / "cut", model_spec=PLAIN)

    resumed = new_model(PLAIN)
    result = fit(
        resumed, train, val, quiet(epochs=3), tmp_path / "cut", model_spec=PLAIN, resume=True
    )
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    for a, b in zip(weights(straight), weights(resumed)):
        assert torch.equal(a, b)
    straight_last, _ = load_checkpoint(tmp_path / "straight" / "last.safetensors")
    resumed_last, _ = load_checkpoint(tmp_path / "cut" / "last.safetensors")
    for a, b in zip(weights(straight_last), weights(resumed_last)):
        assert torch.equal(a, b)


def test_finished_run_is_reused_and_extended_only_on_resume(tmp_path):
    train, val = PairSet(8, seed=0), PairSet(4, seed=1)  # float32: evaluate() repeats
    first = fit(new_model(), train, val, quiet(epochs=2, amp=False), tmp_path, model_spec=SPEC)

    model = new_model()
    again = fit(model, train, val, quiet(epochs=2, amp=False), tmp_path, model_spec=SPEC)
    assert again.reused and again.history == first.history
    assert evaluate(model, val, device="cpu")["loss"] == pytest.approx(first.best["val_loss"])

    with pytest.raises(ValueError, match="epochs"):
        fit(new_model(), train, val, quiet(epochs=3, amp=False), tmp_path, model_spec=SPEC)
    other = {"name": "unet3", "options": {"base_channels": 2}}
    with pytest.raises(ValueError, match="another output directory"):
        fit(
            build_model("unet3", base_channels=2),
            train,
            val,
            quiet(epochs=2, amp=False),
            tmp_path,
            model_spec=other,
        )

    longer = fit(
        new_model(), train, val, quiet(epochs=3, amp=False), tmp_path, model_spec=SPEC, resume=True
    )
    assert not longer.reused
    assert longer.history[:2] == first.history and len(longer.history) == 3


class EpochAware(PairSet):
    """Records the epochs it is told about, as datasets drawing new crops per epoch do."""

    def set_epoch(self, epoch: int) -> None:
        self.epochs = [*getattr(self, "epochs", []), epoch]


def test_datasets_with_set_epoch_hear_each_epoch(tmp_path):
    train = EpochAware(4, seed=0)
    fit(Frozen(), train, PairSet(2, seed=1), quiet(epochs=2), tmp_path / "a")
    fit(Frozen(), train, PairSet(2, seed=1), quiet(epochs=3), tmp_path / "a", resume=True)
    assert train.epochs == [1, 2, 3]


class Poisoned(nn.Module):
    """A CG U-Net whose training forward returns NaN from the ``after``-th call on."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.net, self.after, self.calls = new_model(), after, 0

    def forward(self, x, origin=None, full_size=None):
        y = self.net(x, origin=origin, full_size=full_size)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                y = y * math.nan
        return y


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    train, val = PairSet(8, seed=0), PairSet(4, seed=1)
    model = Poisoned(after=2)  # two steps per epoch: epoch 2 goes bad at once
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 0") as caught:
        fit(model, train, val, quiet(epochs=4), tmp_path)
    assert caught.value.checkpoint == tmp_path / "last.safetensors"
    assert not (tmp_path / "finished.json").exists()
    good = Poisoned(after=0)
    config = load_weights(good, tmp_path / "last.safetensors")
    assert config.epoch == 1 and config.model == {"name": None, "options": {}}
    assert all(torch.isfinite(t).all() for t in good.state_dict().values())


def test_non_finite_loss_in_first_epoch_names_no_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match="no checkpoint"):
        fit(Poisoned(after=0), PairSet(4, seed=0), PairSet(2, seed=1), quiet(), tmp_path)


class Frozen(nn.Module):
    """Output independent of its parameter: the validation loss never improves."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x, origin=None, full_size=None):
        return x + 0 * self.scale


def test_plateau_halves_learning_rate_and_stops_early(tmp_path):
    config = quiet(epochs=10, lr_patience=0, early_stopping_patience=3)
    result = fit(Frozen(), PairSet(4, seed=0), PairSet(2, seed=1), config, tmp_path)
    assert result.stop_reason == "early_stopping" and result.best_epoch == 1
    assert result.series("lr") == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])


def test_warm_up_then_cosine_over_the_planned_epochs(tmp_path):
    # 4 items, batch 4: one step per epoch, so the warm-up epochs end at lr/2 and lr
    config = quiet(epochs=7, lr=1e-3, warmup_epochs=2, schedule="cosine", final_lr_fraction=0.1)
    result = fit(Frozen(), PairSet(4, seed=0), PairSet(2, seed=1), config, tmp_path)
    floor = 1e-4
    cosine = [floor + (1e-3 - floor) * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(5)]
    assert result.series("lr") == pytest.approx([5e-4, 1e-3] + cosine)
    assert result.series("lr")[-1] == pytest.approx(floor)
    assert result.stop_reason == "epochs" and result.plan == {
        "by": "epochs", "epochs": 7, "steps": 7, "steps_per_epoch": 1,
    }  # fmt: skip


def test_steps_plan_whole_epochs(tmp_path):
    # 8 items, batch 4: two steps per epoch; 5 steps round up to 3 epochs
    config = quiet(epochs=100, steps=5, warmup_epochs=1, schedule="cosine")
    result = fit(Frozen(), PairSet(8, seed=0), PairSet(2, seed=1), config, tmp_path)
    assert len(result.history) == 3 and result.plan["by"] == "steps"
    assert result.plan["steps"] == 6 and result.series("lr")[-1] == pytest.approx(1e-5)


def test_time_budget_plans_the_epochs_that_fit_and_anneals(tmp_path):
    class Slow(Frozen):
        """0.05 s per training step: epochs of a known duration."""

        def forward(self, x, origin=None, full_size=None):
            if self.training:
                time.sleep(0.05)
            return super().forward(x)

    # one step per epoch, ~0.05 s: a 1 s budget plans about 20 epochs
    config = quiet(epochs=1000, time_budget_s=1.0, warmup_epochs=1, schedule="cosine")
    result = fit(Slow(), PairSet(4, seed=0), PairSet(2, seed=1), config, tmp_path)
    plan = result.plan
    assert plan["by"] == "time_budget" and plan["planned_after_epoch"] == 2
    assert plan["epochs"] > 2 and len(result.history) == plan["epochs"]
    assert result.series("lr")[-1] == pytest.approx(1e-5)
    # the plan is the epochs that fit the rest of the budget at the measured pace
    done = plan["planned_after_epoch"]
    elapsed = result.history[done - 1]["elapsed_s"]
    assert plan["epochs"] == min(1000, done + int((1.0 - elapsed) // plan["epoch_s"]))


def test_early_stopping_needs_the_plateau_schedule():
    with pytest.raises(ValueError, match="plateau"):
        TrainConfig(schedule="cosine", early_stopping_patience=3)
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(steps=10, time_budget_s=60)


def test_loss_follows_the_model_or_the_config(tmp_path):
    class Offset(Frozen):
        training_loss = "mae"

    train, val = PairSet(4, seed=0), PairSet(2, seed=1)
    for model, loss, expected in ((Offset(), "auto", F.l1_loss), (Frozen(), "auto", F.mse_loss),
                                  (Offset(), "mse", F.mse_loss)):  # fmt: skip
        result = fit(
            model,
            train,
            val,
            quiet(epochs=1, loss=loss),
            tmp_path / f"{expected.__name__}{type(model).__name__}",
        )
        batch = next(iter(torch.utils.data.DataLoader(train, batch_size=4)))
        assert result.history[0]["train_loss"] == pytest.approx(
            expected(batch["blurred"], batch["sharp"]).item(), rel=1e-5
        )


def test_small_improvements_do_not_reset_patience(tmp_path):
    class Creeping(nn.Module):
        """Validation loss falls by ~0.1 % an epoch: an improvement below min_improvement."""

        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))
            self.calls = 0

        def forward(self, x, origin=None, full_size=None):
            if not self.training:
                self.calls += 1
            return x + 1 - 0.5 * 0.9995**self.calls + 0 * self.scale

    class Ones(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"blurred": torch.zeros(1, 16, 16), "sharp": torch.ones(1, 16, 16)}

    train, val = PairSet(4, seed=0), Ones()
    strict = quiet(epochs=10, lr=1e-9, early_stopping_patience=3, min_improvement=0.05)
    result = fit(Creeping(), train, val, strict, tmp_path / "strict")
    assert result.stop_reason == "early_stopping" and len(result.history) == 4
    # the best checkpoint still follows every drop of the loss
    assert result.best_epoch == 4
    lenient = quiet(epochs=6, lr=1e-9, early_stopping_patience=3, min_improvement=0.0)
    assert fit(Creeping(), train, val, lenient, tmp_path / "lenient").stop_reason == "epochs"


def test_resume_under_warm_up_and_cosine_is_bit_identical(tmp_path):
    train, val = PairSet(8, seed=0, augment=True), PairSet(4, seed=1)
    schedule = {"warmup_epochs": 1, "schedule": "cosine"}
    straight = new_model(PLAIN)
    fit(straight, train, val, quiet(epochs=3, **schedule), tmp_path / "a", model_spec=PLAIN)
    interrupted = Interrupting(8, seed=0, augment=True, at=1 + 8 + 5)
    with pytest.raises(KeyboardInterrupt):
        fit(new_model(PLAIN), interrupted, val, quiet(epochs=3, **schedule), tmp_path / "b",
            model_spec=PLAIN)  # fmt: skip
    resumed = new_model(PLAIN)
    fit(resumed, train, val, quiet(epochs=3, **schedule), tmp_path / "b", model_spec=PLAIN,
        resume=True)  # fmt: skip
    for a, b in zip(weights(straight), weights(resumed)):
        assert torch.equal(a, b)


def test_time_budget_under_the_plateau_rule_stops_by_the_clock(tmp_path):
    config = quiet(epochs=10, time_budget_s=1e-6)
    result = fit(Frozen(), PairSet(4, seed=0), PairSet(2, seed=1), config, tmp_path)
    assert result.stop_reason == "time_budget" and len(result.history) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"lr_factor": 1.0}, "lr_factor"),
        ({"early_stopping_patience": 0}, "early_stopping_patience"),
        ({"time_budget_s": 0}, "time_budget_s"),
        ({"schedule": "step"}, "schedule"),
        ({"steps": 0}, "steps"),
        ({"loss": "huber"}, "loss"),
        ({"min_improvement": 1.0}, "min_improvement"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
    ],
)
def test_train_config_rejects_bad_values(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**options)


def test_fit_rejects_bad_inputs(tmp_path):
    val = PairSet(2, seed=1)
    with pytest.raises(ValueError, match="empty"):
        fit(Frozen(), [], val, quiet(), tmp_path)
    with pytest.raises(ValueError, match="'blurred' and 'sharp'"):
        fit(Frozen(), [(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))], val, quiet(), tmp_path)
    with pytest.raises(ValueError, match="differ from the model"):
        fit(Frozen(), PairSet(2, seed=0), val, quiet(), tmp_path, model_spec=SPEC)
    with pytest.raises(ValueError, match="record must be a CheckpointConfig"):
        fit(Frozen(), PairSet(2, seed=0), val, quiet(), tmp_path, record={"model": 1})
    with pytest.raises(ValueError, match="device"):
        fit(Frozen(), PairSet(2, seed=0), val, quiet(device="tpu"), tmp_path)


@pytest.mark.parametrize(
    "fields",
    [
        dict(model=PLAIN),
        dict(full_size=(64, 64)),
        dict(seed=7),
        dict(training={"epochs": 99}),
        dict(epoch=3, metrics={"val_loss": 0.0}),
    ],
)
def test_fit_refuses_a_record_that_sets_what_the_run_writes(tmp_path, fields):
    record = CheckpointConfig(**{"model": SPEC, **fields})
    with pytest.raises(ValueError, match=re.escape(f"record sets {sorted(set(fields))}")):
        fit(
            new_model(),
            PairSet(2, seed=0),
            PairSet(2, seed=1),
            quiet(epochs=1),
            tmp_path,
            model_spec=SPEC,
            record=record,
        )
    assert not any(tmp_path.iterdir())


def test_a_record_may_repeat_what_the_run_writes(tmp_path):
    config = quiet(epochs=1)
    record = CheckpointConfig(
        SPEC, full_size=(48, 60), seed=0, training=config.to_dict(), dataset={"name": "tiny"}
    )
    fit(
        new_model(),
        PairSet(2, seed=0),
        PairSet(2, seed=1),
        config,
        tmp_path,
        model_spec=SPEC,
        record=record,
    )
    _, written = load_checkpoint(tmp_path)
    assert written.dataset == {"name": "tiny"} and written.full_size == (48, 60)
    assert written.epoch == 1 and written.kind == "best"


def test_precision_defaults_to_bf16_where_it_is_fast_and_is_recorded_as_run(tmp_path):
    train, val = PairSet(8, seed=0), PairSet(4, seed=1)
    result = fit(new_model(PLAIN), train, val, quiet(epochs=1), tmp_path, model_spec=PLAIN)
    _, written = load_checkpoint(result.best_checkpoint)
    fast = supports_bf16(torch.device("cpu"))
    assert written.training["amp"] is fast and written.training["channels_last"] is fast
    off = fit(new_model(PLAIN), train, val, quiet(epochs=1, amp=False), tmp_path / "fp32",
              model_spec=PLAIN)  # fmt: skip
    _, written = load_checkpoint(off.best_checkpoint)
    assert written.training["amp"] is False and written.training["channels_last"] is False


def test_bf16_channels_last_training_saves_plain_checkpoints(tmp_path):
    train, val = PairSet(8, seed=0), PairSet(4, seed=1)
    model = new_model(PLAIN)
    config = quiet(epochs=2, amp=True, channels_last=True)
    result = fit(model, train, val, config, tmp_path, model_spec=PLAIN)
    assert math.isfinite(result.best["val_loss"])
    # the returned model and its checkpoint are in plain (contiguous) memory
    assert all(p.is_contiguous() for p in model.parameters())
    loaded = new_model(PLAIN)
    load_weights(loaded, result.best_checkpoint)
    for a, b in zip(weights(model), weights(loaded)):
        assert torch.equal(a, b)
