import pytest
import torch
import torch.nn.functional as F

from coordgate.frames import coordinate_grid
from coordgate.optics import (
    METHODS,
    PADDINGS,
    ExactBlur,
    FieldBlur,
    LowRankBlur,
    MeasuredField,
    PSFField,
    ShiftInvariantBlur,
    SpatiallyVaryingBlur,
    TiledBlur,
    fourier,
    gaussian_psf,
)

SIZE = (37, 31)


@pytest.fixture(scope="module")
def lens() -> PSFField:
    return PSFField.default(psf_size=9)


def _operators(lens, padding, **frame):
    frame = {"padding": padding, "grid_size": 5, "dtype": torch.float64, **frame}
    # circular padding wraps around the whole frame: one window
    tile = None if padding == "circular" else 20
    return {
        "exact": SpatiallyVaryingBlur(lens, SIZE, **frame),
        "lowrank": SpatiallyVaryingBlur(lens, SIZE, method="lowrank", rank=3, **frame),
        "tiled": TiledBlur(lens, SIZE, tile=tile, rank=3, **frame),
        "shift-invariant": ShiftInvariantBlur(lens.psf_at(0.4, -0.6), padding=padding),
    }


def _camera(size: tuple[int, int]) -> torch.Tensor:
    from skimage import data, transform

    image = transform.resize(data.camera() / 255.0, size, anti_aliasing=True)
    return torch.tensor(image, dtype=torch.float64)[None, None]


@pytest.mark.parametrize("padding", PADDINGS)
def test_adjointness_of_every_operator(lens, padding):
    x = torch.randn(2, 2, *SIZE, dtype=torch.float64)
    y = torch.randn(2, 2, *SIZE, dtype=torch.float64)
    for name, op in _operators(lens, padding).items():
        lhs, rhs = (op.A(x) * y).sum(), (x * op.A_T(y)).sum()
        assert abs(lhs - rhs) <= 1e-6 * abs(lhs), (name, lhs.item(), rhs.item())


def test_adjointness_on_a_crop_of_the_sensor(lens):
    x, y = torch.randn(2, 1, 1, *SIZE, dtype=torch.float64)
    frame = {"origin": (20, 3), "full_size": (101, 64)}
    for name, op in _operators(lens, "reflect", **frame).items():
        lhs, rhs = (op.A(x) * y).sum(), (x * op.A_T(y)).sum()
        assert abs(lhs - rhs) <= 1e-6 * abs(lhs), name


def test_exact_operator_is_the_superposition_of_per_pixel_psfs():
    psfs = torch.rand(3, 4, 5, 5, dtype=torch.float64)
    field = MeasuredField(psfs, y=[-0.8, 0.1, 0.9], x=[-1.0, -0.3, 0.2, 0.7])
    size = (13, 11)
    op = SpatiallyVaryingBlur(field, size, chunk_bytes=1, dtype=torch.float64)
    x = torch.rand(1, 1, *size, dtype=torch.float64)
    coords = coordinate_grid(size, dtype=torch.float64)
    expected = torch.zeros(size[0] + 4, size[1] + 4, dtype=torch.float64)
    for i in range(size[0]):
        for j in range(size[1]):
            psf = field.psf_at(coords[0, i, j], coords[1, i, j])
            expected[i : i + 5, j : j + 5] += x[0, 0, i, j] * psf
    assert torch.allclose(op.A(x)[0, 0], expected[2:-2, 2:-2], atol=1e-12)


@pytest.mark.parametrize("method", ["exact", "lowrank"])
@pytest.mark.parametrize("pixel", [(0, 0), (18, 15), (36, 30), (5, 27)])
def test_unit_impulse_maps_to_the_pixels_psf(lens, method, pixel):
    rank = {"rank": 4} if method == "lowrank" else {}
    op = SpatiallyVaryingBlur(lens, SIZE, method=method, **rank, dtype=torch.float64)
    impulse = torch.zeros(1, 1, *SIZE, dtype=torch.float64)
    impulse[0, 0, pixel[0], pixel[1]] = 1
    response = F.pad(op.A(impulse)[0, 0], (4, 4, 4, 4))
    inside = F.pad(torch.ones(SIZE, dtype=torch.float64), (4, 4, 4, 4))  # the rest is lost
    i, j = pixel
    psf = op.pixel_psf(i, j) * inside[i : i + 9, j : j + 9]
    assert torch.allclose(response[i : i + 9, j : j + 9], psf, atol=1e-10)
    assert torch.allclose(response.sum(), psf.sum())


def test_centre_pixel_psf_is_the_fields_centre_psf(lens):
    op = SpatiallyVaryingBlur(lens, SIZE, dtype=torch.float64)
    assert torch.allclose(op.pixel_psf(18, 15), lens.psf_at(0, 0), atol=1e-12)
    corner = SpatiallyVaryingBlur(lens, SIZE, grid_size=2, dtype=torch.float64).pixel_psf(0, 0)
    assert torch.allclose(corner, lens.psf_at(-1, -1), atol=1e-12)  # clamped to the grid edge


@pytest.mark.parametrize("padding", ["zero", "reflect"])
def test_flux_is_preserved_away_from_the_borders(lens, padding):
    x = torch.zeros(1, 1, *SIZE, dtype=torch.float64)  # zero within 5 px of the border
    x[..., 5:-5, 5:-5] = torch.rand(SIZE[0] - 10, SIZE[1] - 10, dtype=torch.float64)
    options = {"padding": padding, "dtype": torch.float64}
    full_rank = {"method": "lowrank", "rank": 25, "grid_size": 5}
    ops = [
        SpatiallyVaryingBlur(lens, SIZE, **options),
        SpatiallyVaryingBlur(lens, SIZE, **options, **full_rank),
        ShiftInvariantBlur(lens.psf_at(0.5, 0.5), padding=padding),
    ]
    for op in ops:
        assert torch.allclose(op.A(x).sum(), x.sum(), rtol=1e-10)
    border = torch.zeros_like(x)
    border[..., 0, 0] = 1
    assert ops[0].A(border).sum() < 0.9  # zero padding: light blurred out of the frame is lost


def test_full_rank_lowrank_equals_exact(lens):
    x = torch.randn(1, 3, *SIZE, dtype=torch.float64)
    for padding in ("zero", "circular"):
        exact = SpatiallyVaryingBlur(lens, SIZE, grid_size=5, padding=padding, dtype=torch.float64)
        lowrank = SpatiallyVaryingBlur(
            lens, SIZE, method="lowrank", rank=25, grid_size=5, padding=padding, dtype=torch.float64
        )
        assert torch.allclose(lowrank.A(x), exact.A(x), atol=1e-12)
        assert torch.allclose(lowrank.A_T(x), exact.A_T(x), atol=1e-12)


def test_lowrank_matches_exact_on_a_natural_image():
    field = PSFField.default()
    size = (97, 89)
    x = _camera(size)
    exact = SpatiallyVaryingBlur(field, size, dtype=torch.float64).A(x)
    default = SpatiallyVaryingBlur(field, size, method="lowrank", dtype=torch.float64)
    assert (default.A(x) - exact).norm() / exact.norm() <= 0.01
    errors = [
        (
            (
                SpatiallyVaryingBlur(field, size, method="lowrank", rank=r, dtype=torch.float64).A(
                    x
                )
                - exact
            ).norm()
            / exact.norm()
        ).item()
        for r in (1, 2, 3, 4)
    ]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.01  # the field does vary: one PSF is not enough


def test_chunking_does_not_change_the_result(lens):
    x = torch.randn(2, 1, *SIZE, dtype=torch.float64)
    whole = SpatiallyVaryingBlur(lens, SIZE, padding="replicate", dtype=torch.float64)
    rows = SpatiallyVaryingBlur(lens, SIZE, padding="replicate", chunk_bytes=1, dtype=torch.float64)
    assert torch.allclose(whole.A(x), rows.A(x), atol=1e-12)
    assert torch.allclose(whole.A_T(x), rows.A_T(x), atol=1e-12)


@pytest.mark.parametrize("method", ["exact", "lowrank"])
def test_crop_matches_the_full_frame_inside(lens, method):
    x = torch.rand(1, 1, *SIZE, dtype=torch.float64)
    full = SpatiallyVaryingBlur(lens, SIZE, method=method, dtype=torch.float64).A(x)
    origin, crop = (10, 8), (17, 15)
    op = SpatiallyVaryingBlur(
        lens, crop, method=method, origin=origin, full_size=SIZE, dtype=torch.float64
    )
    part = op.A(x[..., 10:27, 8:23])
    assert torch.allclose(part[..., 4:-4, 4:-4], full[..., 14:23, 12:19], atol=1e-12)


def test_shift_invariant_blur_is_a_centred_convolution():
    psf = torch.rand(7, 7, dtype=torch.float64)
    x = torch.randn(1, 1, *SIZE, dtype=torch.float64)
    op = ShiftInvariantBlur(psf)
    expected = F.conv2d(x, psf.flip(0, 1)[None, None], padding=3)
    assert torch.allclose(op.A(x), expected, atol=1e-12)
    constant = PSFField.gaussian(7, sigma_centre=1.5, sigma_edge=1.5)
    varying = SpatiallyVaryingBlur(constant, SIZE, padding="reflect", dtype=torch.float64)
    uniform = ShiftInvariantBlur(gaussian_psf(7, 1.5), padding="reflect")
    assert torch.allclose(varying.A(x), uniform.A(x), atol=1e-12)


@pytest.mark.parametrize("method", ["exact", "lowrank"])
def test_gradient_is_the_adjoint(lens, method):
    op = SpatiallyVaryingBlur(lens, SIZE, method=method, padding="reflect", dtype=torch.float64)
    x = torch.randn(1, 2, *SIZE, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 2, *SIZE, dtype=torch.float64)
    (op(x) * y).sum().backward()
    assert torch.allclose(x.grad, op.A_T(y), atol=1e-12)


def test_dtype_and_device_follow_the_input(lens, device):
    op = SpatiallyVaryingBlur(lens, SIZE, method="lowrank")
    reference = op.double().A(torch.ones(1, 1, *SIZE, dtype=torch.float64))
    op = op.to(device)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.ones(1, 1, *SIZE, dtype=dtype, device=device)
        out = op.A(x)
        assert out.dtype == dtype and out.device.type == device.type
        assert torch.allclose(out.double().cpu(), reference, atol=2e-2)
    exact = SpatiallyVaryingBlur(lens, SIZE).to(device)
    out = exact.A_T(torch.ones(1, 1, *SIZE, device=device))
    assert out.device.type == device.type and out.dtype == torch.float32


def test_the_factory_builds_one_operator_class_per_method(lens):
    exact = SpatiallyVaryingBlur(lens, SIZE, grid_size=3, padding="reflect")
    lowrank = SpatiallyVaryingBlur(lens, SIZE, method="lowrank", rank=2, grid_size=3)
    assert type(exact) is ExactBlur and (exact.method, exact.rank) == ("exact", None)
    assert type(lowrank) is LowRankBlur and (lowrank.method, lowrank.rank) == ("lowrank", 2)
    assert isinstance(exact, FieldBlur) and exact.padding == "reflect"
    assert {cls.method for cls in (ExactBlur, LowRankBlur)} == set(METHODS)
    x = torch.rand(1, 1, *SIZE)
    direct = LowRankBlur(lens, SIZE, rank=2, grid_size=3)
    torch.testing.assert_close(direct.A(x), lowrank.A(x), atol=0, rtol=0)
    with pytest.raises(TypeError, match="chunk_bytes"):  # the low-rank operator has no chunks
        SpatiallyVaryingBlur(lens, SIZE, method="lowrank", chunk_bytes=1)


def test_repr_tells_the_configuration(lens):
    text = repr(SpatiallyVaryingBlur(lens, SIZE, method="lowrank", rank=2, grid_size=5))
    assert "method='lowrank'" in text and "rank=2" in text and "(5, 5)" in text


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda f: SpatiallyVaryingBlur(f, (7, 20)), "do not fit a 7x20 image"),
        (lambda f: SpatiallyVaryingBlur(f, (37,)), "image_size"),
        (lambda f: SpatiallyVaryingBlur(f, SIZE, method="fft"), "method"),
        (lambda f: SpatiallyVaryingBlur(f, SIZE, padding="mirror"), "padding"),
        (lambda f: SpatiallyVaryingBlur(f, SIZE, method="lowrank", rank=0, grid_size=3), "rank"),
        (lambda f: SpatiallyVaryingBlur(f, SIZE, method="lowrank", rank=10, grid_size=3), "rank"),
        (lambda f: SpatiallyVaryingBlur(f, SIZE, rank=3), "lowrank"),
        (lambda f: SpatiallyVaryingBlur(f.psf_at(0, 0), SIZE), "PSFField"),
        (lambda f: SpatiallyVaryingBlur(f, SIZE, origin=(30, 0)), "does not fit"),
        (lambda f: SpatiallyVaryingBlur(f, SIZE, grid_size=3).pixel_psf(37, 0), "outside"),
        (lambda f: ShiftInvariantBlur(-f.psf_at(0, 0)), "non-negative"),
        (lambda f: ShiftInvariantBlur(torch.full((5, 5), float("nan"))), "finite"),
    ],
)
def test_operators_reject_bad_construction(lens, make, match):
    with pytest.raises(ValueError, match=match):
        make(lens)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(*SIZE), "4-D"),
        (torch.zeros(1, 1, 31, 37), "built for 37x31"),
        (torch.zeros(1, 1, *SIZE, dtype=torch.int64), "floating"),
        ([[0.0]], "shape"),
    ],
)
def test_operators_reject_bad_images(lens, x, match):
    op = SpatiallyVaryingBlur(lens, SIZE, grid_size=3)
    with pytest.raises(ValueError, match=match):
        op.A(x)
    with pytest.raises(ValueError, match=match):
        op.A_T(x)


def test_shift_invariant_blur_rejects_images_smaller_than_the_psf(lens):
    with pytest.raises(ValueError, match="does not fit"):
        ShiftInvariantBlur(lens.psf_at(0, 0)).A(torch.zeros(1, 1, 5, 40))


@pytest.mark.parametrize("method", ["exact", "lowrank"])
def test_circular_padding_is_periodic_light_and_psfs(lens, method):
    """Light leaving an edge re-enters at the other with the PSF of the pixel it left."""
    rank = {"rank": 25, "grid_size": 5} if method == "lowrank" else {"grid_size": 5}
    op = SpatiallyVaryingBlur(
        lens, SIZE, method=method, padding="circular", dtype=torch.float64, **rank
    )
    impulse = torch.zeros(1, 1, *SIZE, dtype=torch.float64)
    impulse[0, 0, 1, 29] = 1
    response = op.A(impulse)[0, 0]
    expected = torch.zeros(SIZE, dtype=torch.float64)
    rows, cols = torch.arange(-3, 6) % SIZE[0], torch.arange(25, 34) % SIZE[1]
    expected[rows[:, None], cols[None, :]] = op.pixel_psf(1, 29)
    torch.testing.assert_close(response, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(response.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_circular_fft_operators_use_the_frames_own_grid(lens):
    psf = torch.rand(7, 7, dtype=torch.float64)
    x = torch.randn(2, 1, *SIZE, dtype=torch.float64)
    op = ShiftInvariantBlur(psf, padding="circular")
    expected = F.conv2d(F.pad(x, (3, 3, 3, 3), mode="circular"), psf.flip(0, 1)[None, None])
    torch.testing.assert_close(op.A(x), expected, atol=1e-12, rtol=0)
    lowrank = SpatiallyVaryingBlur(lens, SIZE, method="lowrank", padding="circular")
    assert lowrank.fft_margin == 0 and lowrank._lowrank(x.float())[0] == SIZE
    assert lowrank.weights.shape[-2:] == SIZE


@pytest.mark.parametrize("padding", ["zero", "circular"])
@pytest.mark.parametrize("rank", [1, 2, 5])
def test_paired_adjoint_for_odd_and_even_ranks(lens, rank, padding):
    op = SpatiallyVaryingBlur(
        lens, SIZE, method="lowrank", rank=rank, padding=padding, dtype=torch.float64
    )
    x, y = torch.randn(2, 3, 1, *SIZE, dtype=torch.float64)
    torch.testing.assert_close((op.A(x) * y).sum(), (x * op.A_T(y)).sum(), atol=1e-10, rtol=0)


@pytest.mark.parametrize("shape", [(1, 1, 8, 8), (2, 1, 7, 9), (1, 3, 6, 5)])
def test_the_adjoints_spectrum_is_the_complex_fft_from_a_real_one(shape):
    """The Hermitian completion of the real FFT equals torch.fft.fft2 (odd and even sizes)."""
    z = torch.rand(*shape, dtype=torch.float64)
    torch.testing.assert_close(fourier._spectrum(z), torch.fft.fft2(z), atol=1e-12, rtol=0)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("frame", [{}, {"origin": (20, 3), "full_size": (101, 64)}])
def test_tiled_blur_is_the_lowrank_blur_to_rounding(lens, padding, frame):
    options = {"padding": padding, "grid_size": 5, "dtype": torch.float64, **frame}
    lowrank = SpatiallyVaryingBlur(lens, SIZE, method="lowrank", rank=4, **options)
    tiles = [None] if padding == "circular" else [None, 18, (20, 31)]
    x = torch.randn(2, 1, *SIZE, dtype=torch.float64)
    for tile in tiles:
        tiled = TiledBlur(lens, SIZE, tile=tile, rank=4, **options)
        torch.testing.assert_close(tiled.A(x), lowrank.A(x), atol=1e-12, rtol=0)
        torch.testing.assert_close(tiled.A_T(x), lowrank.A_T(x), atol=1e-12, rtol=0)


def test_tiled_blur_shares_spectra_and_keeps_weights_within_its_budget(lens):
    tiled = TiledBlur(lens, SIZE, tile=18, grid_size=5, padding="reflect")
    assert tiled.windows == 4 * 3 and "windows=12" in repr(tiled) and "tile=(17, 17)" in repr(tiled)
    x = torch.rand(1, 1, *SIZE)
    expected = tiled.A(x)
    spectra = [k for k in tiled._cache if k[0] == "spectra"]
    assert len(spectra) == 1 and len(tiled._cache) == 1 + tiled.windows
    frugal = TiledBlur(lens, SIZE, tile=18, grid_size=5, padding="reflect", cache_bytes=0)
    torch.testing.assert_close(frugal.A(x), expected, atol=0, rtol=0)
    assert list(frugal._cache) == spectra  # the weights are recomputed at each call
    tiled.double()
    assert not tiled._cache  # cached spectra belong to the old dtype


def test_tiled_blur_follows_the_device(lens, device):
    tiled = TiledBlur(lens, SIZE, tile=18, grid_size=5, padding="reflect")
    x = torch.rand(1, 1, *SIZE)
    expected = tiled.A(x), tiled.A_T(x)
    tiled.to(device)
    for got, want in zip((tiled.A(x.to(device)), tiled.A_T(x.to(device))), expected):
        assert got.device.type == device.type
        torch.testing.assert_close(got.cpu(), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"tile": 17}, "at least twice the PSF size"),
        ({"tile": None, "padding": "mirror"}, "padding"),
        ({"tile": 18, "padding": "circular"}, "circular padding wraps"),
        ({"tile": None, "rank": 100}, "rank"),
    ],
)
def test_tiled_blur_rejects_bad_construction(lens, options, match):
    with pytest.raises(ValueError, match=match):
        TiledBlur(lens, SIZE, grid_size=5, **options)
    small = TiledBlur(lens, (12, 10), grid_size=5)  # whole frames need only hold a PSF
    assert small.windows == 1
    with pytest.raises(ValueError, match="do not fit"):
        TiledBlur(lens, (12, 8), grid_size=5)
