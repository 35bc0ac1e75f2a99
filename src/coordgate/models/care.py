"""``care-unet``: a U-Net configured as CAREamics' CARE defaults, the baseline users ask for.

Written from CAREamics' published configuration (version 0.3.5: ``UNetConfig`` defaults
and the CARE algorithm's default loss), trained by this project's engine so the studies
can set it beside ours on the same data and budget:

- depth 2 (two poolings), 32 channels at the first level, doubling per level;
- every convolution 3x3 with zero padding, followed by batch normalisation and ReLU; two
  per block; 2x2 max-pool down, bilinear 2x upsampling (no learned up-convolution) and
  concatenation of the skip;
- a bottleneck block whose first convolution doubles the channels and whose second
  brings them back; the decoder blocks widen likewise, all but the last;
- a 1x1 convolution to the output, no final activation, no residual connection by
  default; the training loss is the mean absolute error (``training_loss = "mae"``).

Shift-invariant: ``origin`` / ``full_size`` are accepted and ignored.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from coordgate.frames import FrameLike
from coordgate.models.registry import register_model
from coordgate.models.unet import check_image, check_residual, zero_head

__all__ = ["CAREUNet"]


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _block(c_in: int, c_out: int, widen: int = 1) -> nn.Sequential:
    """Two 3x3 convolutions, each with batch norm and ReLU; the first to ``widen * c_out``."""
    return nn.Sequential(*_conv_bn_relu(c_in, widen * c_out), *_conv_bn_relu(widen * c_out, c_out))


class CAREUNet(nn.Module):
    """CARE's U-Net (see the module docstring).

    x: (N, in_channels, H, W) -> (N, out_channels, H, W), H and W multiples of
    ``2**depth``. Implements :class:`~coordgate.models.DeblurringModel`.

    >>> model = CAREUNet()
    >>> model(torch.zeros(2, 1, 16, 20)).shape
    torch.Size([2, 1, 16, 20])
    """

    model_spec: dict[str, object] | None = None
    uses_coordinates = False
    #: The loss CARE trains with (``TrainConfig(loss="auto")`` takes it).
    training_loss = "mae"

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        depth: int = 2,
        base_channels: int = 32,
        residual: bool = False,
    ) -> None:
        super().__init__()
        check_residual(residual, in_channels, out_channels)
        self.in_channels, self.out_channels, self.depth = in_channels, out_channels, depth
        self.base_channels, self.residual = base_channels, bool(residual)
        widths = [base_channels * 2**level for level in range(depth)]
        self.encoder = nn.ModuleList(
            _block(c_in, c_out) for c_in, c_out in zip([in_channels, *widths[:-1]], widths)
        )
        self.bottleneck = _block(widths[-1], widths[-1], widen=2)
        # decoder block of level l (deepest first): the upsampled features and the skip of
        # width widths[l] in, widths[l - 1] out (the first level keeps its width)
        self.decoder = nn.ModuleList(
            _block(2 * widths[l], widths[max(l - 1, 0)], widen=2 if l else 1)
            for l in reversed(range(depth))
        )
        self.head = nn.Conv2d(base_channels, out_channels, 1)
        if self.residual:
            zero_head(self.head)

    @property
    def required_multiple(self) -> int:
        return 2**self.depth

    @property
    def receptive_field(self) -> int:
        """Upper bound (equal at depth 1 and 2): two 3x3 convolutions per block, each
        widening it by 2 * 2**l pixels at level l; each pool from level l by 2**l; each
        bilinear upsampling to level l (two coarse neighbours) by 3 * 2**l."""
        convs = sum(2 * 2 * 2**level for level in range(self.depth))  # encoder
        convs += 2 * 2 * 2**self.depth  # bottleneck
        convs += sum(2 * 2 * 2**level for level in range(self.depth))  # decoder
        return 1 + convs + sum(4 * 2**level for level in range(self.depth))

    @property
    def activation_channels(self) -> int:
        """Floats per input pixel at peak in inference: the first level's skip, its
        decoder's concatenation and convolutions, and the caller's buffers."""
        return 6 * self.base_channels + 16

    def extra_repr(self) -> str:
        return f"depth={self.depth}, base_channels={self.base_channels}, residual={self.residual}"

    def forward(
        self, x: torch.Tensor, origin: FrameLike = None, full_size: FrameLike = None
    ) -> torch.Tensor:
        """x: (N, in_channels, H, W) -> (N, out_channels, H, W)."""
        check_image(x, self.in_channels, self.required_multiple, "CAREUNet")
        image, skips = x, []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for block, skip in zip(self.decoder, reversed(skips)):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x) + image if self.residual else self.head(x)


care_unet = register_model(
    "care-unet",
    "CARE's U-Net as CAREamics configures it by default: depth 2, 32 first-level channels, "
    "batch norm, bilinear upsampling, trained with the MAE loss; in_channels, "
    "out_channels, residual (width and depth are CARE's)",
    ("in_channels", "out_channels", "residual"),
)(partial(CAREUNet))
