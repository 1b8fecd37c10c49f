"""infer_tile on a cube of a known population: masses, extinction, HST sums, velocities.

The cube is written here, in the PHANGS-MUSE layout, from the forward model of one stellar
population (known SFH and metallicities) times known masses per spaxel, at a known distance,
Doppler-shifted to a known velocity per bin and dimmed by a known Galactic foreground
(F99, R_V = 3.1, computed here with dust_extinction). The HST image has known values per
spaxel. Everything ``infer_tile`` does is real (FITS reading, bin sums, extinction
correction, velocity measurement, rebinning, the forward-model check that fits the mass);
only the network's answer is replaced by the true population (:class:`KnownPopulation`), so
that the mass the check finds has a right answer: the mass put into the cube.

Cases differ from a reference run by one input each, so each conversion is checked on its
own: distance x 2 -> mass x 4; BUNIT x 10 -> mass x 10; no E(B-V) correction -> the spectra
given to the network are the dimmed ones, by exactly the foreground transmission.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from sfh_pipeline import predict as predict_module
from sfh_pipeline.constants import C_KMS, L_SUN_ERG_S, MPC_CM
from sfh_pipeline.predict import Predictor
from sfh_pipeline.products import PRODUCTS, TILE_COLUMNS, map_planes

DISTANCE_MPC = 10.0
EBV = 0.08
V_SYS = 1000.0
SETTINGS = {"tile_spaxels": 8, "velocity_range_kms": 300, "batch_size": 64}
TILE = "y000x000"
#: Voronoi bins of the 3 x 4 field: bin 0 one spaxel, bin 1 two, bin 2 seven; two spaxels are
#: not binned (NaN in the cube: a bin sum that touched them would be NaN).
BIN_ID = np.array([[0, 1, 1, -1], [2, 2, 2, -1], [2, 2, 2, 2]], dtype=np.int32)
#: Mass formed per spaxel, M_sun: 1e6 x (1 + row-major index).
SPAXEL_MASS = 1e6 * (1.0 + np.arange(12.0).reshape(3, 4))
#: Line-of-sight velocity of each bin's stars, km/s (v = c ln(1 + z)).
BIN_VELOCITY = V_SYS + np.array([60.0, -40.0, 0.0])
SIGMA_KMS = 60.0
#: HST bands of the field (both known to the model) and their per-spaxel fluxes before the
#: foreground, erg s^-1 cm^-2 A^-1; pivot wavelengths as the observe stage writes them.
HST = {"wfc3-uvis_f555w": (5308.4, 1e-17), "wfc3-uvis_f814w": (8039.1, 3e-17)}
ROW = {"galaxy": "KNOWN", "systemic_velocity_kms": V_SYS, "ebv_galactic": EBV, "distance_mpc": DISTANCE_MPC}


def foreground(wave_aa: np.ndarray, ebv: float) -> np.ndarray:
    """Milky-Way transmission, F99 with R_V = 3.1, straight from dust_extinction."""
    from dust_extinction.parameter_averages import F99

    return 10 ** (-0.4 * 3.1 * ebv * F99(Rv=3.1)(1e4 / np.asarray(wave_aa) / u.micron))


def hst_pixel(band: str) -> np.ndarray:
    """(3, 4) flux per spaxel of a band before the foreground: distinct values, so a bin sum
    over the wrong spaxels is a wrong number."""
    return HST[band][1] * (1.0 + 0.5 * np.arange(12.0).reshape(3, 4) ** 1.3)


class KnownPopulation(Predictor):
    """The model file's predictor (its grids, filters, preparation of the input) whose
    network answer is the population the cube was made of; it records what infer gives it."""

    sfh: np.ndarray
    logz: np.ndarray
    #: keys the result gains beyond those of an older predictor (``sfh_err``, ``t50``, ...),
    #: (n, ...) arrays for the n spectra of a call; None: an older predictor without them
    extra: dict | None = None

    def prepare(self, wave, flux, error, photometry=None, z=0.0, **kwargs):
        self.seen = {
            "wave": np.array(wave),
            "flux": np.array(flux),
            "error": np.array(error),
            "z": np.array(z),
            "photometry": {k: (np.array(f), np.array(e)) for k, (f, e) in (photometry or {}).items()},
        }
        return super().prepare(wave, flux, error, photometry=photometry, z=z, **kwargs)

    def predict_normalised(self, flux, error, mask, phot=None, phot_error=None, present=None, batch_size=128):
        from sfh_pipeline.model import SUMMARY_KEYS

        n = np.shape(flux)[0]
        out = {
            "sfh": np.repeat(self.sfh[None], n, 0),
            "logzsol": np.repeat(self.logz[None], n, 0),
            "ood": np.zeros(n),
            "age_bin_edges_yr": self.age_bin_edges_yr.copy(),
        }
        for key in SUMMARY_KEYS:
            out[key], out[f"{key}_err"] = np.zeros(n), np.full(n, 0.1)
        for key, value in (self.extra or {}).items():
            assert value.shape[0] == n
            out[key] = value.copy()
        return out


def population(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An old-ish population with some young stars: mass fractions per bin and log Z/Z_sun."""
    n = edges.size - 1
    sfh = np.linspace(0.2, 1.0, n) ** 2
    sfh /= sfh.sum()
    return sfh, np.linspace(0.1, -0.4, n)


def write_cube(path, data: np.ndarray, var: np.ndarray, bunit: str) -> WCS:
    """DATA and STAT in the PHANGS-MUSE DR1 layout (linear wavelength axis from 4749.75 A);
    returns the celestial WCS."""
    celestial = WCS(naxis=2)
    celestial.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    celestial.wcs.crval = [150.0, 2.0]
    celestial.wcs.crpix = [2.0, 2.0]
    celestial.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    header = celestial.to_header()
    # a CD matrix for every axis, as in DR1 (CD3_3 beside CDELT1/2 would make the celestial
    # scale 1 degree per spaxel: wcslib's cdfix, with a FITSFixedWarning)
    for i in (1, 2):
        header[f"CD{i}_{i}"] = header.pop(f"CDELT{i}")
    header.update(
        {"CTYPE3": "AWAV", "CUNIT3": "Angstrom", "CRVAL3": 4749.75, "CRPIX3": 1.0, "CD3_3": 1.25, "BUNIT": bunit}
    )
    hdus = [fits.PrimaryHDU()] + [
        fits.ImageHDU(v.astype(np.float32), header=header, name=n) for n, v in (("DATA", data), ("STAT", var))
    ]
    fits.HDUList(hdus).writeto(path)
    return celestial


@pytest.fixture(scope="module")
def known(tmp_path_factory, tiny_model, analytic_ssp_store):
    """Write the cube (two flux units), bins and HST files, run infer_tile for every case.

    Returns the tables and what the predictor saw, by case, and the expected numbers with
    ``run(case, cube, row)`` for a test's own case (each run of infer_tile takes seconds:
    its forward-model fits)."""
    from sfh_pipeline.forward import ForwardModel
    from sfh_pipeline.infer import infer_tile
    from sfh_pipeline.products import read_tile_tables
    from sfh_pipeline.ssp import load_ssp

    root = tmp_path_factory.mktemp("infer")
    predictor = KnownPopulation(tiny_model)
    sfh, logz = population(predictor.age_bin_edges_yr)
    predictor.sfh, predictor.logz = sfh, logz

    wave = 4749.75 + 1.25 * np.arange(2000)  # observed, to 7248.5 A
    model = ForwardModel(
        load_ssp(analytic_ssp_store), predictor.age_bin_edges_yr, wavelength_aa=wave, max_velocity_kms=1500.0
    )
    out = model.model(
        np.repeat(sfh[None], 3, 0), np.repeat(logz[None], 3, 0), np.zeros(3), np.full(3, SIGMA_KMS), BIN_VELOCITY
    )
    per_msun_cgs = out.flux * L_SUN_ERG_S / (4 * np.pi * (DISTANCE_MPC * MPC_CM) ** 2)  # (3 bins, n_wave)
    intrinsic = np.full((wave.size, 3, 4), np.nan)
    for y, x in zip(*np.nonzero(BIN_ID >= 0)):
        intrinsic[:, y, x] = per_msun_cgs[BIN_ID[y, x]] * SPAXEL_MASS[y, x]
    observed = intrinsic * foreground(wave, EBV)[:, None, None]
    level = np.full(BIN_ID.shape, np.nan)  # spaxels in no bin hold no light: NaN
    level[BIN_ID >= 0] = np.nanmedian(observed[:, BIN_ID >= 0], axis=0)
    var = (0.02 * level) ** 2 * np.ones((wave.size, 1, 1))  # S/N ~ 50 per pixel
    cubes = {}
    for name, unit, scale in (
        ("cube", "10**(-20)*erg/s/cm**2/Angstrom", 1e-20),
        ("cube_e19", "10**(-19)*erg/s/cm**2/Angstrom", 1e-20),
    ):
        # cube_e19 holds the same numbers in a unit ten times larger: ten times the light
        celestial = write_cube(root / f"{name}.fits", observed / scale, var / scale**2, unit)
        cubes[name] = root / f"{name}.fits"

    header = celestial.to_header()
    bins = root / "bins.fits"
    snr = np.array([20.0, 25.0, 40.0])
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(BIN_ID, header=header, name="BIN_ID"),
            fits.BinTableHDU.from_columns(
                [fits.Column("BIN_ID", "J", array=np.arange(3)), fits.Column("SNR", "E", array=snr)], name="BINS"
            ),
        ]
    ).writeto(bins)
    hst = root / "hst_on_muse.fits"
    hdus = [fits.PrimaryHDU()]
    for band, (pivot, _) in HST.items():
        image = hst_pixel(band) * foreground(np.array([pivot]), EBV)[0]
        image[BIN_ID < 0] = np.nan  # as off the edge of an HST image; those spaxels are in no bin
        for name, values in ((band.upper(), image), (f"{band.upper()}_VAR", (0.1 * image) ** 2)):
            hdu = fits.ImageHDU(values, header=header, name=name)
            hdu.header["PIVOT"] = pivot
            hdus.append(hdu)
    fits.HDUList(hdus).writeto(hst)

    cases = {
        "reference": ("cube", ROW),
        "twice_as_far": ("cube", {**ROW, "distance_mpc": 2 * DISTANCE_MPC}),
        "unit_x10": ("cube_e19", ROW),
        "uncorrected": ("cube", {**ROW, "ebv_galactic": 0.0}),
    }

    def run(case, cube, row):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(predict_module, "load_predictor", lambda path, device=None: predictor)
            infer_tile(
                cubes[cube], bins, hst, tiny_model, analytic_ssp_store, TILE, row, SETTINGS, root / f"{case}.fits"
            )
        return read_tile_tables([root / f"{case}.fits"]), predictor.seen

    tables, seen = {}, {}
    for case, (cube, row) in cases.items():
        tables[case], seen[case] = run(case, cube, row)
    bin_mass = np.array([SPAXEL_MASS[BIN_ID == b].sum() for b in range(3)])
    expected = {
        "mass_formed": bin_mass,
        "surviving_fraction": out.surviving_fraction,
        "intrinsic_sum": np.stack([np.nansum(intrinsic[:, BIN_ID == b], axis=1) for b in range(3)]),
        "wave": wave,
        "run": run,
        "predictor": predictor,
    }
    return tables, seen, expected


def test_stellar_mass_is_the_mass_put_into_the_cube(known):
    """log M* = log10(mass formed x surviving fraction) of each bin, from flux at 10 Mpc:
    catches a wrong 4 pi d^2, L_sun, Mpc, flux unit or a missing surviving fraction."""
    tables, _, expected = known
    table = tables["reference"]
    np.testing.assert_array_equal(table["BIN_ID"], [0, 1, 2])
    np.testing.assert_array_equal(table["N_SPAXELS"], [1, 2, 7])
    np.testing.assert_array_equal(table["FLAG"], 0)
    true = np.log10(expected["mass_formed"] * expected["surviving_fraction"])
    # the forward check refits velocity, dispersion and a dust A_V (found ~0): it recovers the
    # mass to 2e-4 dex here; 0.002 dex leaves room and is far below any conversion error
    np.testing.assert_allclose(table["LOG_MSTAR"], true, atol=0.002)
    # 14 % of the mass formed has died (the fixture library), 0.065 dex: forgetting it fails
    assert np.all(expected["surviving_fraction"] < 0.9)


def test_twice_the_distance_is_four_times_the_mass(known):
    tables, _, _ = known
    np.testing.assert_allclose(
        tables["twice_as_far"]["LOG_MSTAR"] - tables["reference"]["LOG_MSTAR"], np.log10(4.0), atol=1e-9
    )
    # the spectrum is the same: the prediction and its check did not change
    np.testing.assert_array_equal(tables["twice_as_far"]["CHI2"], tables["reference"]["CHI2"])


def test_a_ten_times_larger_flux_unit_is_ten_times_the_mass(known):
    """Same numbers in the cube, BUNIT 1e-19 instead of 1e-20: the cube's unit is read, not assumed."""
    tables, _, _ = known
    np.testing.assert_allclose(tables["unit_x10"]["LOG_MSTAR"] - tables["reference"]["LOG_MSTAR"], 1.0, atol=1e-6)
    np.testing.assert_allclose(tables["unit_x10"]["NORM"] / tables["reference"]["NORM"], 10.0, rtol=1e-6)


def test_spectra_are_corrected_for_the_galactic_foreground_exactly(known):
    """What reaches the network is the bins' summed spectrum before the foreground (the cube
    was dimmed by F99 E(B-V) = 0.08); without the correction it is dimmer by exactly the
    transmission at each wavelength, bluer pixels more."""
    _, seen, expected = known
    ref, raw = seen["reference"], seen["uncorrected"]
    planes = np.searchsorted(expected["wave"], ref["wave"])
    np.testing.assert_array_equal(expected["wave"][planes], ref["wave"])
    np.testing.assert_allclose(ref["flux"], expected["intrinsic_sum"][:, planes], rtol=1e-5)
    np.testing.assert_allclose(
        raw["flux"] / ref["flux"], np.broadcast_to(foreground(ref["wave"], EBV), raw["flux"].shape), rtol=1e-9
    )
    assert foreground(ref["wave"][:1], EBV)[0] < 0.79  # a 20 % effect in the blue: worth the test


def test_hst_fluxes_are_bin_sums_corrected_at_the_pivot(known):
    """Each band's flux is the sum over the bin's spaxels (1, 2 and 7 of them, distinct
    values), divided by the foreground transmission at the band's pivot; the error is the
    square root of the summed variance, corrected alike."""
    _, seen, _ = known
    for band, (pivot, _) in HST.items():
        pixels = hst_pixel(band)
        sums = np.array([sum(pixels[y, x] for y, x in zip(*np.nonzero(BIN_ID == b))) for b in range(3)])
        t = foreground(np.array([pivot]), EBV)[0]
        errors = (
            np.array(
                [
                    np.sqrt(sum((0.1 * pixels[y, x] * t) ** 2 for y, x in zip(*np.nonzero(BIN_ID == b))))
                    for b in range(3)
                ]
            )
            / t
        )
        flux, error = seen["reference"]["photometry"][band]
        np.testing.assert_allclose(flux, sums, rtol=1e-9)
        np.testing.assert_allclose(error, errors, rtol=1e-9)
        raw, _ = seen["uncorrected"]["photometry"][band]
        np.testing.assert_allclose(raw, sums * t, rtol=1e-9)


def test_the_table_has_the_declared_columns_in_order(known):
    """products.TILE_COLUMNS, in order: integers int32, per-bin vectors float32, the other
    columns float64."""
    tables, _, _ = known
    table = tables["reference"]
    assert list(table) == [column.name for column in TILE_COLUMNS]
    for column in TILE_COLUMNS:
        values = table[column.name]
        kind = "int32" if column.integer else "float32" if values.ndim == 2 else "float64"
        assert values.dtype.name == kind, column.name


def test_measured_velocities_are_the_bins_own(known):
    """Bins at v_sys + 60, - 40 and + 0 km/s come back at those velocities, and each bin is
    predicted in its own rest frame (z = exp(v/c) - 1 with its measured v)."""
    tables, seen, _ = known
    table = tables["reference"]
    np.testing.assert_allclose(table["VELOCITY"], BIN_VELOCITY, atol=1.0)  # noise-free: found to 0.1 km/s
    np.testing.assert_allclose(seen["reference"]["z"], np.exp(table["VELOCITY"] / C_KMS) - 1, rtol=1e-12)


def test_bins_without_a_velocity_fall_back_to_the_systemic_one_and_are_flagged(known):
    """A systemic velocity 1000 km/s off (search +-300 km/s): no bin finds its stars; the
    spectra are still brought to the rest frame of the given systemic velocity (so the batch
    goes through), and every result is NaN with FLAG 1."""
    from sfh_pipeline.products import FLAG_NO_VELOCITY

    _, _, expected = known
    table, seen = expected["run"]("systemic_off", "cube", {**ROW, "systemic_velocity_kms": V_SYS + 1000.0})
    np.testing.assert_array_equal(table["FLAG"], FLAG_NO_VELOCITY)
    np.testing.assert_allclose(seen["z"], np.exp((V_SYS + 1000.0) / C_KMS) - 1, rtol=1e-12)
    for column in ("VELOCITY", "LOG_MSTAR", "NORM", "CHI2", "LW_AGE"):
        assert np.all(np.isnan(table[column])), column
    np.testing.assert_array_equal(table["N_SPAXELS"], [1, 2, 7])


#: The maps quantities added later that come straight from the network's result and that the
#: fixture's predictor (an older one) does not give: the uncertainties and formation times
#: (it gives ``ood``; the members' spread has its own test below).
NEWER = [q for q in PRODUCTS if q.later and q.result_key and q.planes != "summaries" and q.result_key != "ood"]


def newer_values(n_age_bins: int) -> dict:
    """What a newer predictor gives for NEWER, by result key: distinct per quantity, per bin
    (row i of the call = the table's row i, bin i here) and per age-bin plane."""
    out = {}
    for i, quantity in enumerate(NEWER):
        values = 0.1 * (i + 1) + 0.01 * np.arange(3.0)
        planes = map_planes(quantity.name, n_age_bins)
        out[quantity.result_key] = values[:, None] + 0.0005 * np.arange(planes[0]) if planes else values
    return out


def test_uncertainties_and_formation_times_land_in_the_table_bin_by_bin(known):
    """A predictor that gives sfh_err, logzsol_err, t50, t90 and their _err: each lands in its
    column, in its bin's row (16 values for the two per-plane ones). An older predictor without
    them (the reference run) gives NaN columns of the same shapes. Bins without a velocity
    (FLAG 1) get NaN like every other result."""
    from sfh_pipeline.products import FLAG_NO_VELOCITY

    tables, _, expected = known
    predictor = expected["predictor"]
    given = newer_values(predictor.age_bin_edges_yr.size - 1)
    assert NEWER
    old = tables["reference"]
    for quantity in NEWER:
        column = old[quantity.column]
        assert column.shape == given[quantity.result_key].shape and np.all(np.isnan(column)), quantity.name
    predictor.extra = given
    try:
        table, _ = expected["run"]("uncertainties", "cube", ROW)
        lost, _ = expected["run"]("uncertainties_off", "cube", {**ROW, "systemic_velocity_kms": V_SYS + 1000.0})
    finally:
        predictor.extra = None
    np.testing.assert_array_equal(table["BIN_ID"], [0, 1, 2])
    np.testing.assert_array_equal(table["FLAG"], 0)
    for quantity in NEWER:
        # float32 for the per-plane columns (as SFH and ZH), float64 for the others
        np.testing.assert_allclose(table[quantity.column], given[quantity.result_key], rtol=1e-6, err_msg=quantity.name)
    np.testing.assert_array_equal(lost["FLAG"], FLAG_NO_VELOCITY)
    for quantity in NEWER:
        assert np.all(np.isnan(lost[quantity.column])), quantity.name


def test_the_members_spread_lands_in_the_table_bin_by_bin_in_the_order_of_the_summaries(known):
    """An ensemble's predictor gives <key>_epistemic: EPISTEMIC holds the four per bin, in the
    order LW_AGE, MW_AGE, LW_LOGZ, MW_LOGZ; a predictor without them (the reference run) NaN."""
    from sfh_pipeline.model import SUMMARY_KEYS
    from sfh_pipeline.products import SUMMARY_HDUS

    tables, _, expected = known
    assert tables["reference"]["EPISTEMIC"].shape == (3, 4) and np.all(np.isnan(tables["reference"]["EPISTEMIC"]))
    spread = 0.01 * (1 + np.arange(3.0))[:, None] + 0.001 * np.arange(4.0)[None, :]  # bin i, summary j
    predictor = expected["predictor"]
    predictor.extra = {f"{key}_epistemic": spread[:, j] for j, key in enumerate(SUMMARY_KEYS)}
    try:
        table, _ = expected["run"]("epistemic", "cube", ROW)
    finally:
        predictor.extra = None
    assert [key.upper() for key in SUMMARY_KEYS] == list(SUMMARY_HDUS)
    np.testing.assert_allclose(table["EPISTEMIC"], spread, rtol=1e-6)


def test_a_model_is_refused_with_another_ssp_library_than_its_own(tiny_model, analytic_ssp_store, tmp_path):
    """The masses and the forward check rebuild the SFH with the workflow's library: it must be the
    one the model was trained with (a pretrained model run with another ssp section)."""
    import shutil

    import zarr

    from sfh_pipeline.infer import require_training_library

    predictor = Predictor(tiny_model)
    require_training_library(predictor, analytic_ssp_store)
    other = tmp_path / "other.zarr"
    shutil.copytree(analytic_ssp_store, other)
    zarr.open_group(other, mode="r+").attrs["name"] = "bc03_miles"
    with pytest.raises(ValueError, match="was trained on SSP library 'analytic'.* configure the model's library"):
        require_training_library(predictor, other)
    predictor.ssp["sha256"] = "e" * 64  # where both carry the checksum of the fetched file, it decides
    zarr.open_group(other, mode="r+").attrs.update({"name": "analytic", "sha256": "f" * 64})
    with pytest.raises(ValueError, match="was trained on SSP library"):
        require_training_library(predictor, other)
    zarr.open_group(other, mode="r+").attrs.update({"name": "renamed", "sha256": "e" * 64})
    require_training_library(predictor, other)


def test_bin_errors_are_widened_for_the_covariance_measured_on_the_tile(known, monkeypatch):
    """The error of a bin of N spaxels is STAT's propagated error x (1 + alpha log10 N), alpha
    measured on the tile's own spaxels (sfh_pipeline.covariance, tested against known
    covariances in test_covariance.py). This noise-free 3 x 4 field gives no measurement
    (alpha 0, factors 1); with alpha 0.3 the bins of 1, 2 and 7 spaxels get 1, 1.090 and 1.254."""
    from sfh_pipeline import infer

    tables, seen, expected = known
    np.testing.assert_array_equal(tables["reference"]["ERR_FACTOR"], 1.0)
    measured = []
    monkeypatch.setattr(infer, "covariance_alpha", lambda *a: measured.append(a[0].shape) or {"alpha": 0.3})
    table, widened = expected["run"]("covariance", "cube", ROW)
    assert len(measured) == 1 and measured[0][1:] == (3, 4)  # once, on the tile's spaxels
    factors = 1 + 0.3 * np.log10([1, 2, 7])
    np.testing.assert_allclose(table["ERR_FACTOR"], factors)
    np.testing.assert_allclose(widened["error"], seen["reference"]["error"] * factors[:, None], rtol=1e-6)
    np.testing.assert_allclose(widened["flux"], seen["reference"]["flux"])
