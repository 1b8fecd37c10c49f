"""How much noisier summed MUSE spaxels are than their STAT says, measured on a cube.

Usage:
    python bench/real_noise.py [--cube resources/real/A478/minicube.fits] [--save NAME]
        [--models M1.pt M2.pt ... --validation results/validation/A478]

MUSE cubes are resampled from the detectors onto the spaxel grid, so neighbouring spaxels share
noise; STAT holds each spaxel's variance but not their covariance, and the error of a binned
spectrum propagated from STAT is too small. Here square boxes of side 1, 2, 3, 4, 6 and 8
spaxels are summed all over the cube. In each summed spectrum the noise is measured from second
differences, f_i - (f_(i-1) + f_(i+1)) / 2, in 5000-9000 A away from the strongest sky lines:
they remove continua and lines several pixels wide (a stellar absorption line at sigma 250 km/s
is 4 pixels), which a running-median residual does not (on a mock cube without covariance that
estimator grows to 1.5 at 8 x 8 spaxels by the galaxy's own features). ``ratio`` is the robust
scatter of the differences (1.4826 x MAD, / sqrt(1.5)) over the propagated STAT error; the
wavelength correlation of MUSE pixels makes it below 1 for single spaxels, so the covariance
is ``ratio(N) / ratio(1)``, fitted as 1 + alpha log10 N (N spaxels summed). Reported over all
boxes and over bright ones (median S/N per pixel > 20), where residual features would show.

With ``--models`` and ``--validation`` (a validate stage's folder of this cube): how much each
network's answers on the validated bins move when their errors are multiplied by 1.45 and 2
(the covariance excess of bins of ~60 spaxels, and more), against the regularised reference.
"""

from __future__ import annotations

import argparse

import numpy as np
from provenance import report  # bench/provenance.py: this script's folder is on sys.path

from sfh_pipeline.covariance import box_ratios
from sfh_pipeline.phangs import MuseCube
from sfh_pipeline.validate import sky_mask

BOX_SIDES = (1, 2, 3, 4, 6, 8)
BRIGHT_SNR = 20.0


def error_sensitivity(args, model: str) -> dict:
    """Median and robust scatter of network - regularised reference (LW age, LW log Z, dex) over
    the validated bins, with the bins' errors x 1, x 1.45 and x 2."""
    from astropy.table import Table

    from sfh_pipeline.constants import C_KMS
    from sfh_pipeline.dust import galactic_transmission
    from sfh_pipeline.extract import bin_geometry, extract_bin_spectra, wavelength_planes
    from sfh_pipeline.predict import load_predictor
    from sfh_pipeline.products import read_bins

    table = Table.read(f"{args.validation}/bins.fits")
    cube = MuseCube.open(args.cube)
    bin_id, _, _ = read_bins(args.bins)
    ids = np.asarray(table["BIN_ID"])
    predictor = load_predictor(model)
    velocity = np.asarray(table["VELOCITY"], float)
    span = (float(velocity.min()) - 1000.0, float(velocity.max()) + 1000.0)
    planes = wavelength_planes(cube.wavelength_aa, tuple(predictor.wavelength_aa[[0, -1]]), span)
    wave = cube.wavelength_aa[planes]
    flux, var = extract_bin_spectra(cube, bin_id, ids, bin_geometry(bin_id, 32), planes)
    transmission = galactic_transmission(wave, args.ebv)
    out = {"n_bins": int(ids.size)}
    for factor in (1.0, 1.45, 2.0):
        result = predictor.predict(
            wave,
            flux / transmission,
            factor * np.sqrt(var) / transmission,
            z=np.exp(velocity / C_KMS) - 1,
            velocity_range_kms=0,
        )
        entry = {}
        for key in ("lw_age", "lw_logz"):
            delta = result[key] - np.asarray(table[f"REF_{key.upper()}"])
            entry[key] = {
                "median_delta_dex": round(float(np.median(delta)), 3),
                "scatter_dex": round(float(1.4826 * np.median(np.abs(delta - np.median(delta)))), 3),
                "median_err_dex": round(float(np.median(result[f"{key}_err"])), 3),
            }
        out[f"errors_x{factor:g}"] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cube", default="resources/real/A478/minicube.fits")
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    parser.add_argument("--models", nargs="*", default=[], help="model.pt files to test with scaled errors")
    parser.add_argument("--validation", default=None, help="the validate stage's folder of this cube")
    parser.add_argument("--bins", default="results/A478/observe/bins.fits", help="the bins of that validation")
    parser.add_argument("--ebv", type=float, default=0.445, help="Galactic E(B-V) of the field, mag")
    args = parser.parse_args()
    cube = MuseCube.open(args.cube)
    wave = cube.wavelength_aa
    ny, nx = cube.shape
    flux, var = cube.read_tile(slice(0, ny), slice(0, nx))
    usable = (wave > 5000) & (wave < 9000) & ~sky_mask(wave)
    usable &= np.all(np.isfinite(flux) & (var > 0), axis=(1, 2))
    good = usable[1:-1] & usable[:-2] & usable[2:]
    by_box = {}
    for side in BOX_SIDES:
        ratios, snr = box_ratios(flux, var, usable, side)
        bright = snr > BRIGHT_SNR
        by_box[side] = {
            "n_spaxels": side * side,
            "n_boxes": int(ratios.size),
            "ratio": round(float(np.median(ratios)), 3),
            "ratio_16_84": [round(float(q), 3) for q in np.percentile(ratios, [16, 84])],
            "n_bright_boxes": int(bright.sum()),
            "bright_ratio": round(float(np.median(ratios[bright])), 3) if bright.any() else None,
        }
    n = np.array([entry["n_spaxels"] for entry in by_box.values()], float)
    excess = np.array([entry["ratio"] for entry in by_box.values()]) / by_box[1]["ratio"]
    alpha = float(np.sum(np.log10(n) * (excess - 1)) / np.sum(np.log10(n) ** 2))
    sensitivity = {model: error_sensitivity(args, model) for model in args.models}
    report(
        {
            "cube": args.cube,
            "pixels_used": int(good.sum()),
            "by_box": {f"{side}x{side}": entry for side, entry in by_box.items()},
            "covariance_excess": {f"{int(k)}": round(float(v), 3) for k, v in zip(n, excess)},
            "alpha": round(alpha, 3),
            "note": "noise of a sum of N spaxels = STAT-propagated error x (1 + alpha log10 N), relative to one spaxel",
            "error_sensitivity": sensitivity,
        },
        args.save,
    )


if __name__ == "__main__":
    main()
