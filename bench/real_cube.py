"""The central galaxy of the real Abell 478 MUSE cube: the network against full-grid pPXF, and
what moves the network (docs/real_data.md, "What holds").

One aperture (radius 5 spaxels around the brightest continuum spaxel, as in the first real-data
diagnosis) is predicted by the network and fitted by pPXF (sfh_pipeline.validate.FullGridFit,
the training library). Then the network is asked again with one thing changed at a time: the
emission-line mask widened, the Galactic foreground correction off, the redshift given 300 km/s
off (with and without the predictor's velocity refinement), the error spectrum smoothed, and 200
A windows of the spectrum masked one by one (occlusion). Prints JSON; ``--save NAME`` also keeps
it in bench/results/NAME.json.

    python bench/real_cube.py --model results/models/demo/model.pt \\
        --cube resources/real/A478/minicube.fits --ssp resources/ssp/bc03_miles.zarr [--save NAME]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from provenance import report  # bench/provenance.py: this script's folder is on sys.path
from scipy.ndimage import median_filter

from sfh_pipeline import load_predictor
from sfh_pipeline.constants import C_KMS
from sfh_pipeline.dust import galactic_transmission
from sfh_pipeline.spectral import emission_line_mask
from sfh_pipeline.validate import FullGridFit, sky_mask

KEYS = ("lw_age", "mw_age", "lw_logz", "mw_logz")


def central_spectrum(cube_path: Path, radius: int = 5):
    """Summed spectrum (10^-20 erg/s/cm2/A) and error within ``radius`` spaxels of the brightest
    spaxel in 6000-6500 A, and the observed wavelengths."""
    with fits.open(cube_path) as hdul:
        data, stat, header = hdul["DATA"].data.astype(float), hdul["STAT"].data.astype(float), hdul["DATA"].header
    wave = header["CRVAL3"] + header.get("CD3_3", header.get("CDELT3")) * (
        np.arange(data.shape[0]) + 1 - header["CRPIX3"]
    )
    image = np.nanmedian(data[(wave > 6000) & (wave < 6500)], axis=0)
    y0, x0 = np.unravel_index(np.nanargmax(image), image.shape)
    yy, xx = np.indices(image.shape)
    inside = (yy - y0) ** 2 + (xx - x0) ** 2 <= radius**2
    return wave, np.nansum(data[:, inside], axis=1), np.sqrt(np.nansum(stat[:, inside], axis=1)), (int(y0), int(x0))


def summary(result) -> dict:
    out = {key: round(float(result[key]), 3) for key in KEYS}
    out.update({f"{key}_err": round(float(result[f"{key}_err"]), 3) for key in KEYS})
    for key in ("velocity_kms", "ood"):
        if key in result and np.isfinite(result[key]):
            out[key] = round(float(result[key]), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="results/models/demo/model.pt")
    parser.add_argument("--cube", default="resources/real/A478/minicube.fits")
    parser.add_argument("--ssp", default="resources/ssp/bc03_miles.zarr")
    parser.add_argument("--z", type=float, default=0.0857, help="stellar redshift of the central galaxy")
    parser.add_argument("--ebv", type=float, default=0.445, help="Galactic E(B-V) of the field, mag")
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()

    wave, flux, error, centre = central_spectrum(Path(args.cube))
    t = galactic_transmission(wave, args.ebv)
    flux_c, error_c = flux / t, error / t
    predictor = load_predictor(args.model, device="cpu")
    # models written before velocity templates were stored take z as given
    refine = 500.0 if predictor.can_refine_velocity else 0.0
    start = time.perf_counter()
    base = predictor.predict(wave, flux_c, error_c, z=args.z, velocity_range_kms=refine)
    z_used = float(np.expm1(base["velocity_kms"] / C_KMS))
    variants = {
        "as in the workflow (foreground corrected, velocity refined)": base,
        "emission mask 800 km/s": predictor.predict(
            wave,
            flux_c,
            error_c,
            z=args.z,
            mask=emission_line_mask(wave / (1 + z_used), 800),
            velocity_range_kms=refine,
        ),
        "no Galactic correction": predictor.predict(wave, flux, error, z=args.z, velocity_range_kms=refine),
        "z 300 km/s off, refined": predictor.predict(
            wave, flux_c, error_c, z=np.expm1(np.log1p(args.z) - 300 / C_KMS), velocity_range_kms=refine
        ),
        "z 300 km/s off, not refined": predictor.predict(
            wave, flux_c, error_c, z=np.expm1(np.log1p(args.z) - 300 / C_KMS), velocity_range_kms=0
        ),
        "error spectrum smoothed": predictor.predict(
            wave, flux_c, median_filter(error_c, 51), z=args.z, velocity_range_kms=refine
        ),
        "sky lines and telluric bands masked": predictor.predict(
            wave, flux_c, error_c, z=args.z, mask=sky_mask(wave), velocity_range_kms=refine
        ),
    }
    rest = wave / (1 + z_used)
    occlusion = {}
    for lo in range(4800, 7000, 200):
        r = predictor.predict(
            wave, flux_c, error_c, z=z_used, mask=(rest >= lo) & (rest < lo + 200), velocity_range_kms=0
        )
        occlusion[f"{lo}-{lo + 200}"] = {k: round(float(r[k] - base[k]), 3) for k in ("lw_age", "lw_logz")}
    network_s = time.perf_counter() - start

    fit = FullGridFit(args.ssp, redshift=z_used, settings={"age_stride": 1, "n_bootstrap": 8})
    start = time.perf_counter()
    reference = fit.fit(rest, flux_c, error_c, sky_mask(wave))
    ppxf_s = time.perf_counter() - start
    report(
        {
            "model": args.model,
            "aperture": {
                "centre_yx": centre,
                "radius_spaxels": 5,
                "median_snr": round(float(np.median(flux / error)), 1),
            },
            "z_given": args.z,
            "ebv": args.ebv,
            "velocity_refined": bool(refine),
            "network": {name: summary(r) for name, r in variants.items()},
            "occlusion_200aa": occlusion,
            "ppxf_full_grid": {
                "regularised": {k: round(float(reference[k]), 3) for k in KEYS},
                "unregularised": {k: round(float(reference[f"{k}_unreg"]), 3) for k in KEYS},
                "bootstrap_err": {k: round(float(reference[f"{k}_err"]), 3) for k in KEYS},
                "velocity_kms_rel": round(float(reference["velocity_kms"]), 1),
                "sigma_kms": round(float(reference["sigma_kms"]), 1),
                "chi2": round(float(reference["chi2"]), 2),
                "templates": int(fit.ages_yr.size * fit.logzsol.size),
            },
            "seconds": {
                "network_all_variants": round(network_s, 2),
                "ppxf_one_fit_with_bootstrap": round(ppxf_s, 1),
            },
        },
        args.save,
    )


if __name__ == "__main__":
    main()
