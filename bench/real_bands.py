"""Does the network read real spectra better when given the HST bands the spectrum itself covers?

PHANGS bins come with five HST bands; the SDSS fibres and MaNGA spaxels of the validate stage
come with none, so the network reads their 4800-7000 A alone. Their spectra reach further
(SDSS 3800-9200 A, MaNGA 3600-10300 A observed): each UVIS band whose throughput lies wholly
inside a spectrum's good rest-frame pixels (F438W and F555W for the SDSS fibres, F814W too for
most MaNGA spaxels) is measured on it, as the training measures its bands on the rest-frame
model (photon-weighted mean f_lambda; masked pixels inside a band interpolated over), with a
fractional error ``--band-error`` (the middle of the training's 2-10 %). The network's answers
with and without those bands are compared with the references of a validate stage's output
(``<set>.json`` of the model's ``real_data`` folder: the BC03 regularised full-grid pPXF fits
on 4800-7000 A, which the bands do not change) by :func:`sfh_pipeline.validate.agreement`.
``bench/young_regime.py --bands F438W,F555W,F814W`` is the synthetic side of the same question.

    nice -n 5 python bench/real_bands.py [--model models/reference/model.pt] [--save NAME]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml
from provenance import report  # bench/provenance.py: this script's folder is on sys.path

from sfh_pipeline import load_predictor
from sfh_pipeline.filters import PhotometryOperator, load_throughputs
from sfh_pipeline.spectra_validation import corrected_spectrum
from sfh_pipeline.validate import QUANTITIES, agreement, resolve_settings

ROOT = Path(__file__).resolve().parent.parent
#: PHANGS's UVIS bands.
UVIS_BANDS = tuple(f"wfc3-uvis_{b}" for b in ("f275w", "f336w", "f438w", "f555w", "f814w"))


def covered_bands(
    rest_wave_aa: np.ndarray, flux: np.ndarray, bad: np.ndarray, band_error: float, keys=UVIS_BANDS
) -> dict[str, tuple[float, float]]:
    """``{key: (flux, error)}`` of the bands whose throughput lies wholly between the first and
    last good pixel of a rest-frame spectrum (``rest_wave_aa``, A): photon-weighted mean f_lambda
    in the units of ``flux``, bad pixels inside the band interpolated over, error ``band_error``
    times the flux."""
    good = ~np.asarray(bad, bool) & np.isfinite(flux)
    lam, f = rest_wave_aa[good], flux[good]
    out = {}
    for key, curve in load_throughputs(list(keys)).items():
        lo, hi = curve.support_aa()
        if lo <= lam[0] or hi >= lam[-1]:
            continue
        # the band and one good pixel either side of it, so that the grid holds the whole curve
        grid = lam[max(np.searchsorted(lam, lo) - 1, 0) : np.searchsorted(lam, hi, side="right") + 1]
        value = float(PhotometryOperator(grid, [curve]).mean_flambda(np.interp(grid, lam, f))[0])
        out[key] = (value, band_error * abs(value))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models/reference/model.pt")
    parser.add_argument("--config", default="config/config.yaml", help="its real_spectra: the spectra and spaxels")
    parser.add_argument(
        "--references", default="models/reference/real_data", help="folder of spectra.json and manga.json"
    )
    parser.add_argument("--band-error", type=float, default=0.05, help="fractional 1-sigma error of each band")
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()

    real = yaml.safe_load((ROOT / args.config).read_text())["real_spectra"]
    predictor = load_predictor(ROOT / args.model, device="cpu")
    velocity_range = float(resolve_settings(None)["velocity_bounds_kms"])
    rows, answers = {}, {"without": {}, "with": {}}
    reference = {}
    for group, file in (("spectra", "spectra.json"), ("manga", "manga.json")):
        stored = json.loads((ROOT / args.references / file).read_text())["spectra"]
        for name, entry in real[group].items():
            entry = {**entry, "file": str(ROOT / entry["file"])}
            spectrum, flux, error, bad = corrected_spectrum(entry, name)
            bands = covered_bands(spectrum.wave_aa / (1 + spectrum.redshift), flux, bad, args.band_error)
            row = {"bands": sorted(bands)}
            for label, photometry in (("without", None), ("with", bands)):
                net = predictor.predict(
                    spectrum.wave_aa,
                    flux,
                    error,
                    photometry=photometry,
                    z=spectrum.redshift,
                    mask=bad,
                    velocity_range_kms=velocity_range,
                )
                answers[label][name] = {k: float(net[k]) for k in (*QUANTITIES, *(f"{q}_err" for q in QUANTITIES))}
                row[label] = {k: round(answers[label][name][k], 3) for k in QUANTITIES}
            reference[name] = stored[name]["reference"]
            row["reference"] = {k: round(float(reference[name][k]), 3) for k in QUANTITIES}
            row["delta_lw_age"] = {m: round(row[m]["lw_age"] - row["reference"]["lw_age"], 3) for m in answers}
            rows[name] = row
    names = list(rows)

    def columns(table):
        return {k: np.array([table[n][k] for n in names]) for k in table[names[0]]}

    figures = {
        "model": args.model,
        "references": args.references,
        "band_error": args.band_error,
        "spectra": rows,
        **{
            f"agreement_{label}_bands": agreement(columns(answers[label]), columns(reference))
            for label in ("without", "with")
        },
    }
    report(figures, args.save)


if __name__ == "__main__":
    main()
