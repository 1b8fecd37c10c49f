"""The network against full-spectrum fitting on sets of single real spectra (``validate_spectra``).

The one real cube of the embedded default is one galaxy at z = 0.086 seen by MUSE. Single
spectra of other real galaxies test the network on other populations, other instruments and
other flux calibrations: SDSS fibres (the three of pPXF's examples: NGC 3073, a young
star-forming dwarf; NGC 3522 and NGC 4636, old early types; z ≈ 0.003–0.004, as PHANGS
galaxies) and MaNGA spaxels (those of the MaNGA DAP's tests: bulges, discs and star-forming
regions at z = 0.02–0.13). Each spectrum is read in the network's own way
(:meth:`Predictor.predict`, its velocity refined around the survey's z) and fitted by
:class:`sfh_pipeline.validate.FullGridFit` with the instrument's own LSF, exactly as the bins of
a real cube are (same settings, same masks), again with each variant of the reference envelope,
and optionally with a second library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ..core.atomic import atomic_path, write_json_atomically
from ..core.dust import correct_galactic_extinction
from ..core.spectral import sky_mask, velocity_to_redshift
from .forward_check import ForwardCheck
from .sdss import read_spectrum
from .validate import (
    QUANTITIES,
    FullGridFit,
    agreement,
    compare_references,
    envelope_agreement,
    envelope_bounds,
    envelope_members,
    envelope_settings,
    logz_shift_dex,
    plot_residuals,
    resolve_settings,
)

#: Each quantity and its 1-sigma error (dex), and the unregularised reference's values.
WITH_ERRORS = (*QUANTITIES, *(f"{q}_err" for q in QUANTITIES))
UNREGULARISED = tuple(f"{q}_unreg" for q in QUANTITIES)


def validate_spectra(
    spectra: dict[str, dict[str, Any]],
    ssp_store,
    model_path,
    settings: dict[str, Any] | None,
    out_dir,
    second_reference: dict[str, Any] | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """Network and full-grid pPXF fits of single real spectra, and their agreement.

    Parameters
    ----------
    spectra : ``{name: {"file": path of a real spectrum, "row": spaxel of a file of MaNGA
        spaxels (:func:`sfh_pipeline.sdss.read_spectrum`), "ebv_galactic": Milky-Way E(B-V), mag}}``.
    ssp_store : SSP store the network was trained with (the reference's library).
    model_path : the network's model file.
    settings : keys of :data:`sfh_pipeline.validate.DEFAULT_SETTINGS` (``velocity_bounds_kms``
        is also the network's velocity search range, km/s).
    out_dir : written: ``agreement.json`` (per spectrum: S/N, redshift, the network's values
        and errors, velocity and forward-model chi2, the reference's regularised and
        unregularised values, errors and kinematics, the envelope's fits and bounds; over all
        spectra the :func:`~sfh_pipeline.validate.agreement` keys, ``unregularised``,
        ``envelope`` (:func:`~sfh_pipeline.validate.envelope_agreement`) and, with a second
        library, ``second_reference``), ``spectra.fits`` (table ``SPECTRA``, the same per
        spectrum) and ``residuals_<name>.png``.
    second_reference : ``{"ssp_store": path, "label": str, "settings": {...}}`` (optional).
    processes : the spectra's pPXF fits run in this many processes, a spectrum each.

    Returns the content of ``agreement.json``.
    """
    from ..ml.predict import load_predictor

    s = resolve_settings(settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = load_predictor(model_path, device="cpu")
    rest_range = (float(predictor.wavelength_aa[0]), float(predictor.wavelength_aa[-1]))
    check = ForwardCheck(ssp_store, predictor.age_bin_edges_yr, predictor.wavelength_aa)
    second = None
    if second_reference:
        second = (second_reference["ssp_store"], resolve_settings({**s, **(second_reference.get("settings") or {})}))
    names = sorted(spectra)
    tasks = [(spectra[name], name, ssp_store, rest_range, s, predictor.norm_window_aa, second) for name in names]
    if processes > 1 and len(tasks) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(min(processes, len(tasks))) as pool:
            fitted = pool.map(reference_fits, tasks, chunksize=1)
    else:
        fitted = [reference_fits(task) for task in tasks]
    rows: dict[str, dict[str, Any]] = {}
    for name, (reference, variants, other) in zip(names, fitted, strict=True):
        entry = spectra[name]
        spectrum, flux, error, bad = corrected_spectrum(entry, name)
        z = spectrum.redshift
        net = network_answer(predictor, spectrum, flux, error, bad, s)
        z_net = float(velocity_to_redshift(net["velocity_kms"])) if net["velocity_ok"] else z
        prepared = predictor.prepare(spectrum.wave_aa, flux, error, z=z_net, mask=bad)
        forward = check.fit(
            prepared["flux"], prepared["error"], prepared["mask"], net["sfh"][None], net["logzsol"][None]
        )
        row: dict[str, Any] = {
            "file": Path(entry["file"]).name,
            **({"row": int(entry["row"])} if entry.get("row") is not None else {}),
            "ebv_galactic": float(entry["ebv_galactic"]),
            "median_snr": spectrum.median_snr(),
            "redshift": z,
            "network": {k: float(net[k]) for k in WITH_ERRORS},
            "network_velocity_kms": float(net["velocity_kms"]),
            "network_ood": float(net["ood"]),
            "forward_check": {k: float(forward[k][0]) for k in ("chi2", "av", "sigma_kms")},
            "reference": {k: float(reference[k]) for k in WITH_ERRORS},
            "reference_unregularised": {k: float(reference[f"{k}_unreg"]) for k in QUANTITIES},
            "reference_kinematics": {
                **{k: float(reference[k]) for k in ("velocity_kms", "sigma_kms", "chi2")},
                **({"gas_kms": reference["gas_kinematics_kms"]} if "gas_kinematics_kms" in reference else {}),
            },
            "reference_variants": {v: {k: float(fit[k]) for k in QUANTITIES} for v, fit in variants.items()},
        }
        if other is not None:
            row["second_reference"] = other
        rows[name] = row
        population = {"SFH": net["sfh"], "ZH": net["logzsol"], "AV": forward["av"][0], "SIGMA": forward["sigma_kms"][0]}
        plot_residuals(
            reference,
            population,
            ssp_store,
            predictor.age_bin_edges_yr,
            out_dir / f"residuals_{name}.png",
            title=f"{name} (S/N {row['median_snr']:.0f} per pixel)",
        )
    result = _summarise(rows, names, model_path, ssp_store, s, second_reference)
    _write_table(out_dir / "spectra.fits", rows, names)
    write_json_atomically(out_dir / "agreement.json", result)
    return result


def corrected_spectrum(entry: dict[str, Any], name: str):
    """The spectrum of a ``spectra`` entry (:func:`validate_spectra`) corrected for Galactic
    extinction: (the spectrum as read, flux, error, pixels to ignore: its own and sky lines)."""
    spectrum = read_spectrum(entry["file"], entry.get("row"), name=name)
    flux, error = correct_galactic_extinction(
        spectrum.wave_aa, float(entry["ebv_galactic"]), spectrum.flux, spectrum.error
    )
    return spectrum, flux, error, spectrum.bad | sky_mask(spectrum.wave_aa)


def reference_fits(task: tuple) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, float] | None]:
    """The full-grid pPXF fits of one spectrum of :func:`validate_spectra`, in its survey's rest
    frame and with its instrument's LSF: the reference (with its spectra on pPXF's grid), each
    envelope variant's and the second library's (its log Z/Z_sun on the first library's Z_sun,
    ``logz_shift_dex`` added; None without one).

    ``task``: (entry, name, ssp_store, rest_range_aa, settings, norm_window_aa, second), ``second``
    None or (the second library's store, its resolved settings).
    """
    from threadpoolctl import threadpool_limits

    entry, name, ssp_store, rest_range, s, norm_window, second = task
    spectrum, flux, error, bad = corrected_spectrum(entry, name)
    z = spectrum.redshift
    rest = spectrum.wave_aa / (1 + z)

    def full_grid(store, settings) -> FullGridFit:
        return FullGridFit(store, rest_range, z, settings, norm_window, lsf_fwhm_aa=spectrum.lsf_fwhm_aa)

    # one BLAS thread each: the spectra are the parallel work
    with threadpool_limits(1):
        first = full_grid(ssp_store, s)
        reference = first.fit(rest, flux, error, bad, return_spectra=True)
        variants = {v: full_grid(ssp_store, vs).fit(rest, flux, error, bad) for v, vs in envelope_settings(s).items()}
        if second is None:
            return reference, variants, None
        second_fit = full_grid(*second)
        other = second_fit.fit(rest, flux, error, bad)
    shift = logz_shift_dex(second_fit.zsun, first.zsun)
    for k in ("lw_logz", "mw_logz"):
        other[k] += shift
        other[f"{k}_unreg"] += shift
    second_values = {k: float(other[k]) for k in (*WITH_ERRORS, *UNREGULARISED)}
    return reference, variants, {**second_values, "logz_shift_dex": shift}


def network_answer(predictor, spectrum, flux, error, bad, settings: dict[str, Any]) -> dict[str, Any]:
    """The network's reading of one corrected spectrum, its velocity refined within the validate
    settings' ``velocity_bounds_kms`` (km/s) of the survey's redshift."""
    velocity_range = float(resolve_settings(settings)["velocity_bounds_kms"])
    return predictor.predict(
        spectrum.wave_aa, flux, error, z=spectrum.redshift, mask=bad, velocity_range_kms=velocity_range
    )


def _columns(rows: dict, names: list[str], part: str, keys) -> dict[str, np.ndarray]:
    return {k: np.array([rows[n][part][k] for n in names], float) for k in keys}


def _summarise(rows, names, model_path, ssp_store, s, second_reference) -> dict[str, Any]:
    """agreement.json: the per-spectrum rows and the agreement over all spectra."""
    network = _columns(rows, names, "network", WITH_ERRORS)
    reference = _columns(rows, names, "reference", WITH_ERRORS)
    reference.update(
        {f"{k}_unreg": np.array([rows[n]["reference_unregularised"][k] for n in names]) for k in QUANTITIES}
    )
    unregularised = {k: reference[f"{k}_unreg"] for k in QUANTITIES}
    unregularised.update({f"{k}_err": reference[f"{k}_err"] for k in QUANTITIES})
    result: dict[str, Any] = {
        "model": str(model_path),
        "reference": {
            "method": "pPXF, full SSP grid, regularised (regul) after chi2 rescaling; "
            "unregularised below; multiplicative polynomial, gas and sky masked; the instrument's LSF",
            "library": Path(ssp_store).stem,
            "settings": s,
        },
        "n_spectra": len(names),
        "spectra": rows,
        **agreement(network, reference),
        "unregularised": agreement(network, unregularised),
    }
    second, label = None, ""
    if second_reference:
        second = _columns(rows, names, "second_reference", (*WITH_ERRORS, *UNREGULARISED))
        label = str(second_reference.get("label") or Path(second_reference["ssp_store"]).stem)
        result["second_reference"] = {
            "library": label,
            "store": Path(second_reference["ssp_store"]).stem,
            "note": "log Z/Z_sun on the first library's Z_sun; library_difference = first reference - this one",
            **compare_references(network, reference, second),
        }
    variants = {
        v: {k: np.array([rows[n]["reference_variants"][v][k] for n in names]) for k in QUANTITIES}
        for v in envelope_settings(s)
    }
    members = envelope_members(reference, variants, second, label)
    result["envelope"] = envelope_agreement(network, members, s)
    for k, (lo, hi) in envelope_bounds(members).items():
        for i, n in enumerate(names):
            rows[n].setdefault("reference_envelope", {})[k] = [float(lo[i]), float(hi[i])]
    return result


def _write_table(path, rows: dict, names: list[str]) -> None:
    """spectra.fits, table SPECTRA: one row per spectrum, NET_ / REF_ / REF2_ columns as bins.fits."""
    columns = [
        fits.Column("NAME", "20A", array=np.array(names)),
        fits.Column("SNR", "E", array=[rows[n]["median_snr"] for n in names]),
        fits.Column("REDSHIFT", "D", array=[rows[n]["redshift"] for n in names]),
        fits.Column("NET_VELOCITY", "D", array=[rows[n]["network_velocity_kms"] for n in names]),
        fits.Column("NET_OOD", "D", array=[rows[n]["network_ood"] for n in names]),
        fits.Column("NET_CHI2", "D", array=[rows[n]["forward_check"]["chi2"] for n in names]),
    ]
    for k in QUANTITIES:
        for prefix, part, key in (
            ("NET", "network", k),
            ("NET", "network", f"{k}_err"),
            ("REF", "reference", k),
            ("REF", "reference", f"{k}_err"),
            ("REF", "reference_unregularised", k),
        ):
            suffix = "_UNREG" if part.endswith("unregularised") else ""
            values = [rows[n][part][key] for n in names]
            columns.append(fits.Column(f"{prefix}_{key.upper()}{suffix}", "D", array=values))
        if "second_reference" in rows[names[0]]:
            for key in (k, f"{k}_err", f"{k}_unreg"):
                columns.append(
                    fits.Column(f"REF2_{key.upper()}", "D", array=[rows[n]["second_reference"][key] for n in names])
                )
    for key in ("velocity_kms", "sigma_kms", "chi2"):
        columns.append(
            fits.Column(f"REF_{key.upper()}", "D", array=[rows[n]["reference_kinematics"][key] for n in names])
        )
    for k in QUANTITIES:
        for i, end in enumerate(("MIN", "MAX")):
            values = [rows[n]["reference_envelope"][k][i] for n in names]
            columns.append(fits.Column(f"ENV_{k.upper()}_{end}", "D", array=values))
    with atomic_path(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns, name="SPECTRA")]).writeto(tmp)
