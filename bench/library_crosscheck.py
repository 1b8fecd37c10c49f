"""Library systematics on known answers: single BC03 populations, observed like the bins of the
real Abell 478 cube (sigma 270 km/s, S/N 25 per 1.25 A, 4800-7000 A rest), fitted by the validate
stage's full-grid pPXF with the training library itself (BC03) and with the second reference
library (E-MILES), both with the settings of config/config.yaml. What the second library returns
for the first library's own spectra is the part of the real-data library difference
(docs/real_data.md) that comes from the libraries alone. Prints JSON; ``--save NAME`` also keeps it
in bench/results/NAME.json.

    python bench/library_crosscheck.py --ssp resources/ssp/bc03_miles.zarr \\
        --second-ssp resources/ssp/emiles_padova00.zarr [--save NAME]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml
from provenance import report  # bench/provenance.py: this script's folder is on sys.path
from scipy.ndimage import gaussian_filter1d
from threadpoolctl import threadpool_limits

from sfh_pipeline.constants import C_KMS
from sfh_pipeline.ssp import load_ssp
from sfh_pipeline.validate import FullGridFit, logz_shift_dex

KEYS = ("lw_age", "mw_age", "lw_logz", "mw_logz")


def observed(library, iz: int, ia: int, sigma_kms: float, snr: float, seed: int):
    """One SSP of ``library`` broadened by ``sigma_kms`` (and to 2.7 A FWHM, MUSE at 6300 A
    observed), on a 1.25 A rest grid with Gaussian noise of S/N ``snr``."""
    lam = library.wavelength_aa
    step = float(np.median(np.diff(lam)))
    sigma_aa = np.hypot(5800.0 * sigma_kms / C_KMS, np.sqrt(max(2.7**2 - 2.5**2, 0.0)) / 2.3548)
    spectrum = gaussian_filter1d(library.flux[iz, ia].astype(float), sigma_aa / step)
    wave = np.arange(4800.0, 7000.0, 1.25)
    flux = np.interp(wave, lam, spectrum)
    error = np.full(wave.size, np.median(flux) / snr)
    return wave, flux + error * np.random.default_rng(seed).standard_normal(wave.size), error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ssp", required=True, help="store of the training library")
    parser.add_argument("--second-ssp", required=True, help="store of the second reference library")
    parser.add_argument("--config", default="config/config.yaml", help="validate settings are taken from here")
    parser.add_argument("--ages-gyr", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    parser.add_argument("--logz", type=float, nargs="+", default=[0.0, 0.4], help="log Z/Z_sun of the first library")
    parser.add_argument("--sigma-kms", type=float, default=270.0)
    parser.add_argument("--snr", type=float, default=25.0)
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()

    config = yaml.safe_load(Path(args.config).read_text())["validate"]
    second_settings = (config.get("second_ssp") or {}).get("settings", {})
    settings = {
        k: v
        for k, v in config.items()
        if k in ("age_min_yr", "age_stride", "mdegree", "regul", "gas_components", "emission_mask_kms")
    }
    fits = {
        "first": FullGridFit(args.ssp, settings={**settings, "n_bootstrap": 0}),
        "second": FullGridFit(args.second_ssp, settings={**settings, **second_settings, "n_bootstrap": 0}),
    }
    shift = logz_shift_dex(fits["second"].zsun, fits["first"].zsun)
    library = load_ssp(args.ssp, wavelength_range_aa=(4600.0, 7200.0))
    rows = []
    for logz in args.logz:
        iz = int(np.argmin(np.abs(library.logzsol - logz)))
        for age in args.ages_gyr:
            ia = int(np.argmin(np.abs(library.ages_yr - age * 1e9)))
            wave, flux, error = observed(library, iz, ia, args.sigma_kms, args.snr, seed=100 * iz + ia)
            row = {"true": {"log_age": float(np.log10(library.ages_yr[ia])), "logz": float(library.logzsol[iz])}}
            with threadpool_limits(1):
                for name, fit in fits.items():
                    result = fit.fit(wave, flux, error)
                    dz = shift if name == "second" else 0.0
                    row[name] = {k: result[k] + (dz if "logz" in k else 0.0) for k in KEYS}
                    row[f"{name}_unregularised"] = {
                        k: result[f"{k}_unreg"] + (dz if "logz" in k else 0.0) for k in KEYS
                    }
            row["difference"] = {k: row["first"][k] - row["second"][k] for k in KEYS}
            rows.append(row)
    differences = {k: [r["difference"][k] for r in rows] for k in KEYS}
    report(
        {
            "first": fits["first"].library_name,
            "second": fits["second"].library_name,
            "logz_shift_dex": shift,
            "sigma_kms": args.sigma_kms,
            "snr": args.snr,
            "settings": settings,
            "second_settings": second_settings,
            "median_difference_first_minus_second": {k: float(np.median(v)) for k, v in differences.items()},
            "spectra": rows,
        },
        args.save,
    )


if __name__ == "__main__":
    main()
