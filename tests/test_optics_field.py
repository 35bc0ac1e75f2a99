import json

import numpy as np
import pytest
import torch

from coordgate.optics import (
    BUILT_IN_FIELDS,
    GaussianField,
    LensField,
    MeasuredField,
    PSFField,
    psf_width,
)


@pytest.fixture(scope="module")
def lens() -> LensField:
    # a mild lens whose corner PSFs fit in 15 px
    return PSFField.default(psf_size=15, max_defocus=0.25)


def test_default_lens_widens_monotonically_from_the_centre(lens):
    r = torch.linspace(0, 1, 9, dtype=torch.float64)
    for direction in ((1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (-1.0, 0.5)):
        widths = psf_width(lens.psfs_at(r * direction[0], r * direction[1]))
        assert (widths.diff() > 0).all(), widths
    grid_widths = psf_width(lens.grid(5)).flatten()
    assert grid_widths.argmin() == 12  # the centre of the 5 x 5 grid
    assert grid_widths.max() > 1.5 * grid_widths.min()


def test_default_lens_is_sharp_at_the_centre_and_blurred_in_the_corners():
    lens = PSFField.default()
    assert lens.psf_size == 21
    assert psf_width(lens.psf_at(0, 0)) < 2.5
    assert psf_width(lens.psf_at(1, 1)) > 4.0


def test_grid_positions_span_the_frame(lens):
    y, x = lens.grid_positions(5)
    assert torch.equal(y, torch.linspace(-1, 1, 5, dtype=torch.float64)) and torch.equal(x, y)
    assert lens.grid_positions(1)[0].tolist() == [0.0]
    grid = lens.grid(3)
    assert grid.shape == (3, 3, 15, 15)
    assert torch.allclose(grid.sum(dim=(-2, -1)), torch.ones(3, 3, dtype=torch.float64))
    assert torch.allclose(grid[0, 2], lens.psf_at(-1, 1))


def test_field_orientation_follows_y_then_x():
    lens = PSFField.default(psf_size=15, max_defocus=0.0, coma=0.3)
    along_x, along_y = lens.psf_at(0, 1), lens.psf_at(1, 0)
    assert torch.allclose(along_x, along_y.T, atol=1e-10)  # coma turns with the field
    assert not torch.allclose(along_x, along_y, atol=1e-4)


def test_config_is_json_and_rebuilds_the_field(lens):
    config = json.loads(json.dumps(lens.config()))
    assert config["kind"] == "lens" and config["psf_size"] == 15
    rebuilt = PSFField.from_config(config)
    assert torch.equal(rebuilt.psf_at(0.3, -0.7), lens.psf_at(0.3, -0.7))
    gaussian = PSFField.gaussian(9, 0.5, 2.0)
    assert isinstance(PSFField.from_config(gaussian.config()), GaussianField)


def test_save_and_load_roundtrip(lens, tmp_path):
    path = lens.save(tmp_path / "lens.npz", grid_size=3)
    loaded = PSFField.load(path)
    assert isinstance(loaded, LensField) and loaded.config() == lens.config()
    with np.load(path) as data:
        assert data["psfs"].shape == (3, 3, 15, 15)
    measured = PSFField.from_grid(lens.grid(3))
    loaded = PSFField.load(measured.save(tmp_path / "measured.npz"))
    assert isinstance(loaded, MeasuredField)
    assert torch.allclose(loaded.psf_at(0.2, 0.4), measured.psf_at(0.2, 0.4))


def test_a_measured_field_keeps_its_sensor_size(lens, tmp_path):
    assert lens.sensor_size is None and PSFField.from_grid(lens.grid(3)).sensor_size is None
    measured = PSFField.from_grid(lens.grid(3))
    measured = MeasuredField(measured.psfs, sensor_size=(512, 640))
    loaded = PSFField.load(measured.save(tmp_path / "measured.npz"))
    assert loaded.sensor_size == (512, 640) and loaded.config()["sensor_size"] == [512, 640]
    with pytest.raises(ValueError, match="sensor_size"):
        MeasuredField(measured.psfs, sensor_size=(512, 0.5))


def test_user_grid_file_with_psfs_only(tmp_path):
    psfs = np.random.default_rng(0).random((2, 3, 7, 7))
    np.savez(tmp_path / "beads.npz", psfs=psfs)
    field = PSFField.load(tmp_path / "beads.npz")
    assert field.grid().shape == (2, 3, 7, 7)
    assert field.grid_positions()[1].tolist() == [-1.0, 0.0, 1.0]
    expected = psfs[1, 2] / psfs[1, 2].sum()
    assert np.allclose(field.psf_at(1, 1).numpy(), expected)


def test_measured_field_interpolates_bilinearly_and_clamps():
    psfs = torch.rand(2, 2, 5, 5, dtype=torch.float64)
    psfs /= psfs.sum(dim=(-2, -1), keepdim=True)
    field = MeasuredField(psfs, y=[-0.5, 0.5], x=[-0.5, 0.5])
    assert torch.allclose(field.psf_at(0, 0), psfs.mean(dim=(0, 1)))
    assert torch.allclose(field.psf_at(-0.5, 0.5), psfs[0, 1])
    assert torch.allclose(field.psf_at(-1, 1), psfs[0, 1])  # outside: nearest grid edge
    assert torch.allclose(field.psf_at(0, -0.5), psfs[:, 0].mean(0))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: MeasuredField(-torch.ones(2, 2, 5, 5)), "non-negative"),
        (lambda: MeasuredField(torch.full((2, 2, 5, 5), float("nan"))), "finite"),
        (lambda: MeasuredField(torch.ones(4, 5, 5)), "4-D"),
        (lambda: MeasuredField(torch.ones(2, 2, 4, 4)), "odd"),
        (lambda: MeasuredField(torch.ones(2, 2, 5, 5), y=[-2.0, 0.0]), "inside the frame"),
        (lambda: MeasuredField(torch.ones(2, 2, 5, 5), y=[0.5, -0.5]), "increasing"),
        (lambda: MeasuredField(torch.ones(2, 2, 5, 5), x=[0.0]), "one position per"),
        (lambda: PSFField.default(psf_size=20), "odd"),
        (lambda: PSFField.default(pupil_scale=0.0), "pupil_scale"),
        (lambda: PSFField.gaussian(9, sigma_centre=-1.0), "sigma_centre"),
        (lambda: PSFField.from_config({"kind": "measured"}), "kind"),
        (lambda: PSFField.from_config({"kind": "lens", "focal_length": 3}), "bad parameters"),
        (lambda: PSFField.default(9).grid(0), "grid size"),
    ],
)
def test_fields_reject_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        PSFField.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "empty.npz", other=np.zeros(3))
    with pytest.raises(ValueError, match="no 'psfs'"):
        PSFField.load(tmp_path / "empty.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="cannot read"):
        PSFField.load(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match=".npz"):
        PSFField.default(9).save(tmp_path / "field.txt")


def test_tilted_focal_plane_is_in_focus_on_the_centre_line_and_symmetric_in_width():
    lens = PSFField.default(max_defocus=0.0, tilt=0.6)
    defocus = lens.zernike_coefficients(torch.tensor([0.3, 0.3, 0.3]), torch.tensor([-1.0, 0, 1]))
    assert defocus[:, 0].tolist() == pytest.approx([-0.6, 0.0, 0.6])
    # without spherical aberration, equal defocus either side of focus blurs alike
    left, right = lens.psf_at(0.0, -0.8), lens.psf_at(0.0, 0.8)
    assert torch.allclose(left, right, atol=1e-10)
    assert psf_width(left) > 2 * psf_width(lens.psf_at(0.0, 0.0))


def test_spherical_aberration_makes_the_two_sides_of_a_tilted_focus_differ():
    lens = PSFField.default(max_defocus=0.0, tilt=0.6, spherical=0.2)
    left, right = lens.psf_at(0.0, -0.8), lens.psf_at(0.0, 0.8)
    assert (left - right).norm() > 0.3 * right.norm()
    assert PSFField.from_config(lens.config()).config()["tilt"] == 0.6


def test_fields_a_user_names(tmp_path):
    assert list(BUILT_IN_FIELDS) == ["default", "gaussian"]
    assert PSFField.from_spec("default").config() == PSFField.default().config()
    assert PSFField.from_spec("gaussian").config() == PSFField.gaussian().config()
    path = PSFField.gaussian(psf_size=9).save(tmp_path / "field.npz")
    assert PSFField.from_spec(path).psf_size == PSFField.from_spec(str(path)).psf_size == 9
    expected = "--field must be 'default', 'gaussian' or a .npz file, got 'lens.json'"
    with pytest.raises(ValueError, match=expected):
        PSFField.from_spec("lens.json", "--field")
    with pytest.raises(FileNotFoundError):
        PSFField.from_spec(tmp_path / "absent.npz")
