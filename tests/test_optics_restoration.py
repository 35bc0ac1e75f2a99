import pytest
import torch

from coordgate.optics import (
    PSFField,
    ShiftInvariantBlur,
    SpatiallyVaryingBlur,
    gaussian_psf,
    multi_wiener,
    poisson_gaussian,
    richardson_lucy,
    spatially_varying_wiener,
    wiener_deconvolution,
)
from coordgate.optics.restoration import (
    richardson_lucy_iterates,
    richardson_lucy_steps,
    total_variation_gradient,
)

SIZE = (67, 59)


def _psnr(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    return (10 * torch.log10(1 / ((estimate - truth) ** 2).mean())).item()


@pytest.fixture(scope="module")
def sharp() -> torch.Tensor:
    from skimage import data, transform

    image = transform.resize(data.camera() / 255.0, SIZE, anti_aliasing=True)
    return torch.tensor(image, dtype=torch.float64)[None, None]


@pytest.fixture(scope="module")
def lens() -> PSFField:
    # a mild lens whose corner PSFs fit in 15 px
    return PSFField.default(psf_size=15, max_defocus=0.25)


def _noisy(blurred: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return poisson_gaussian(blurred.clamp_min(0), photons=5000, read_noise=1, generator=generator)


def test_wiener_with_the_psf_raises_psnr(sharp):
    blur = ShiftInvariantBlur(gaussian_psf(15, 2.0), padding="reflect")
    blurred = _noisy(blur.A(sharp))
    restored = wiener_deconvolution(blurred, blur.psf, balance=1e-2)
    assert _psnr(restored, sharp) > _psnr(blurred, sharp) + 2


def test_wiener_variants_raise_psnr_on_the_lens(sharp, lens):
    blur = SpatiallyVaryingBlur(
        lens, SIZE, method="lowrank", padding="reflect", dtype=torch.float64
    )
    blurred = _noisy(blur.A(sharp))
    before = _psnr(blurred, sharp)
    centre = wiener_deconvolution(blurred, lens.psf_at(0, 0), balance=1e-2)
    varying = spatially_varying_wiener(blurred, lens, balance=3e-2)
    assert _psnr(centre, sharp) > before + 0.5
    assert _psnr(varying, sharp) > before + 0.5


def test_richardson_lucy_raises_psnr_with_any_operator(sharp, lens):
    for padding in ("zero", "reflect"):
        blur = SpatiallyVaryingBlur(lens, SIZE, method="lowrank", padding=padding, grid_size=9)
        blurred = _noisy(blur.A(sharp)).float()
        restored = richardson_lucy(blurred, blur, iterations=15)
        assert restored.dtype == torch.float32 and (restored >= 0).all()
        assert _psnr(restored.double(), sharp) > _psnr(blurred.double(), sharp) + 2
    assert torch.equal(richardson_lucy(blurred, blur, iterations=0), blurred.clamp_min(1e-12))


def test_total_variation_keeps_richardson_lucy_from_amplifying_noise(sharp, lens):
    blur = SpatiallyVaryingBlur(lens, SIZE, method="lowrank", padding="reflect", grid_size=9)
    generator = torch.Generator().manual_seed(2)
    blurred = poisson_gaussian(
        blur.A(sharp.float()), photons=300, read_noise=1, generator=generator
    )
    plain, regularised = (richardson_lucy_steps(blurred, blur, tv=tv) for tv in (0.0, 0.02))
    for _ in range(60):
        x, z = next(plain), next(regularised)
    assert _psnr(z.estimate.double(), sharp) > _psnr(x.estimate.double(), sharp) + 1
    # each step reports the previous estimate blurred: the data's prediction
    step = next(richardson_lucy_steps(blurred, blur, background=0.1))
    torch.testing.assert_close(step.predicted, blur.A(blurred.clamp_min(1e-12)) + 0.1)
    # with tv = 0 the steps are plain Richardson-Lucy's
    first = next(richardson_lucy_iterates(blurred, blur))
    torch.testing.assert_close(next(richardson_lucy_steps(blurred, blur)).estimate, first)


def test_total_variation_gradient_is_the_gradient_of_the_smoothed_total_variation():
    x = torch.rand(1, 1, 9, 8, dtype=torch.float64, requires_grad=True)
    smoothing = 0.05
    dy = torch.nn.functional.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    dx = torch.nn.functional.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    torch.sqrt(dy**2 + dx**2 + smoothing**2).sum().backward()
    torch.testing.assert_close(total_variation_gradient(x.detach(), smoothing), x.grad)


def test_multi_wiener_is_one_wiener_per_psf(sharp, lens):
    psfs = lens.grid(2)
    blurred = ShiftInvariantBlur(psfs[0, 1]).A(sharp.repeat(2, 3, 1, 1))
    balance = torch.tensor([1e-2, 2e-2, 3e-2, 4e-2], dtype=torch.float64)
    stack = multi_wiener(blurred, psfs, balance=balance)
    assert stack.shape == (2, 4, 3, *SIZE)
    single = wiener_deconvolution(blurred, psfs[0, 1], balance=2e-2)
    assert torch.allclose(stack[:, 1], single, atol=1e-12)


def test_spatially_varying_wiener_blends_with_grid_weights(sharp, lens):
    blurred = ShiftInvariantBlur(lens.psf_at(0, 0)).A(sharp)
    blended = spatially_varying_wiener(blurred, lens, balance=1e-2, grid_size=1)
    assert torch.allclose(blended, wiener_deconvolution(blurred, lens.psf_at(0, 0), balance=1e-2))


def test_wiener_keeps_the_input_dtype(sharp, lens):
    balance = torch.tensor([1e-2, 2e-2], dtype=torch.float64)
    for dtype in (torch.float32, torch.bfloat16):
        out = multi_wiener(sharp.to(dtype), lens.grid(2)[0], balance=balance)
        assert out.dtype == dtype and out.shape == (1, 2, 1, *SIZE)


def test_wiener_is_differentiable_in_balance(sharp, lens):
    balance = torch.tensor([1e-2], dtype=torch.float64, requires_grad=True)
    multi_wiener(sharp, lens.psf_at(0, 0)[None], balance=balance).sum().backward()
    assert balance.grad is not None and torch.isfinite(balance.grad).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda y, p: wiener_deconvolution(y, p, balance=0.0), "balance"),
        (lambda y, p: wiener_deconvolution(y, p, balance=-1.0), "balance"),
        (lambda y, p: wiener_deconvolution(y[0], p, balance=1e-2), "N, C, H, W"),
        (lambda y, p: wiener_deconvolution(y, -p, balance=1e-2), "non-negative"),
        (lambda y, p: wiener_deconvolution(y, p, balance=1e-2, padding="wrap"), "padding"),
        (lambda y, p: wiener_deconvolution(y[..., :9, :9], p, balance=1e-2), "do not fit"),
        (lambda y, p: multi_wiener(y, p[None], balance=torch.ones(3)), "one value per PSF"),
        (lambda y, p: richardson_lucy(y, p, iterations=3), "A and A_T"),
        (lambda y, p: richardson_lucy(y, ShiftInvariantBlur(p), iterations=-1), "iterations"),
        (
            lambda y, p: richardson_lucy(y, ShiftInvariantBlur(p), iterations=1, x0=y[..., :5]),
            "x0",
        ),
        (lambda y, p: spatially_varying_wiener(y, p, balance=1e-2), "PSFField"),
        (lambda y, p: next(richardson_lucy_steps(y, ShiftInvariantBlur(p), tv=-1)), "tv"),
        (
            lambda y, p: next(richardson_lucy_steps(y, ShiftInvariantBlur(p), background=-1)),
            "background",
        ),
    ],
)
def test_restoration_rejects_bad_input(sharp, lens, call, match):
    with pytest.raises(ValueError, match=match):
        call(sharp, lens.psf_at(0, 0))
