import math

import pytest
import torch

from coordgate.optics import ABERRATIONS, diffraction_psf, gaussian_psf, psf_width, zernike
from coordgate.optics.psf import check_psf, diffraction_psfs


def _unit_disc(n: int = 201):
    r = torch.linspace(-1, 1, n, dtype=torch.float64)
    y, x = torch.meshgrid(r, r, indexing="ij")
    return torch.hypot(y, x), torch.atan2(y, x)


def test_zernike_terms_are_orthonormal_on_the_disc():
    rho, theta = _unit_disc()
    inside = rho <= 1
    basis = torch.stack([zernike(n, m, rho, theta)[inside] for n, m in ABERRATIONS.values()])
    gram = basis @ basis.T / inside.sum()
    assert torch.allclose(gram, torch.eye(len(ABERRATIONS), dtype=gram.dtype), atol=0.03)


def test_zernike_rejects_impossible_indices():
    rho, theta = _unit_disc(5)
    with pytest.raises(ValueError, match="n - \\|m\\| even"):
        zernike(3, 0, rho, theta)


def test_diffraction_psf_unit_sum_centred_and_symmetric():
    psf = diffraction_psf(15, aberrations={"defocus": 0.2})
    assert psf.shape == (15, 15)
    assert math.isclose(psf.sum().item(), 1.0, rel_tol=1e-12)
    assert (psf >= 0).all()
    assert torch.allclose(psf, psf.flip(0)) and torch.allclose(psf, psf.T)
    in_focus = diffraction_psf(15)
    assert in_focus.argmax() == 7 * 15 + 7


def test_defocus_and_small_pupil_widen_the_psf():
    sharp = psf_width(diffraction_psf(21))
    assert psf_width(diffraction_psf(21, aberrations={"defocus": 0.25})) > sharp + 1
    assert psf_width(diffraction_psf(21, pupil_scale=0.5)) > sharp


def test_coma_makes_the_psf_asymmetric():
    psf = diffraction_psf(15, aberrations={"coma_cos": 0.2})
    assert not torch.allclose(psf, psf.flip(1), atol=1e-4)
    assert torch.allclose(psf, psf.flip(0), atol=1e-12)  # coma along x keeps y symmetry


def test_batched_psfs_match_single_ones():
    coefficients = torch.zeros(3, len(ABERRATIONS), dtype=torch.float64)
    coefficients[1, 0], coefficients[2, 5] = 0.1, 0.15
    batch = diffraction_psfs(11, coefficients)
    single = diffraction_psf(11, aberrations={"spherical": 0.15})
    assert torch.allclose(batch[2], single)


def test_gaussian_psf_width():
    psf = gaussian_psf(41, 2.0)
    assert math.isclose(psf.sum().item(), 1.0, rel_tol=1e-12)
    assert math.isclose(psf_width(psf).item(), 2.0 * math.sqrt(2), rel_tol=1e-3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: diffraction_psf(14), "odd"),
        (lambda: diffraction_psf(15, pupil_scale=1.5), "pupil_scale"),
        (lambda: diffraction_psf(15, aberrations={"tilt": 0.1}), "unknown aberrations"),
        (lambda: gaussian_psf(9, -1.0), "sigma"),
    ],
)
def test_psf_models_reject_bad_parameters(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("psf", "match"),
    [
        (torch.ones(4, 4), "odd"),
        (torch.ones(3, 5), "square"),
        (torch.ones(5), "2-D"),
        (-torch.ones(5, 5), "non-negative"),
        (torch.full((5, 5), float("nan")), "finite"),
        (torch.zeros(5, 5), "positive sum"),
        (torch.ones(5, 5, dtype=torch.int64), "floating"),
    ],
)
def test_check_psf_names_the_problem(psf, match):
    with pytest.raises(ValueError, match=match):
        check_psf(psf)
