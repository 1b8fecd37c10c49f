"""The synthetic training set: chunked, seeded generation into one zarr store.

Layout of ``resources/trainsets/<name>/trainset.zarr`` (n = ``n_spectra``, chunked along
the sample axis by ``chunk_size`` so that one job writes exactly one chunk of every array):

=========================  =================  ====================================================
array                      shape, dtype       meaning
=========================  =================  ====================================================
``wavelength_aa``          (n_wave,) f8       rest-frame grid, A
``flux``, ``error``        (n, n_wave) f4     noisy spectrum and its 1-sigma error / ``norm``
``mask``                   (n, n_wave) u1     bit 1: emission line, bit 2: AO laser-notch gap
``phot``,                  (n, n_filt) f4     photon-weighted mean f_lambda per band / ``norm``
``phot_error``                                (+ Gaussian noise), and its 1-sigma error
``sfh``                    (n, n_bins) f4     mass fraction formed per age bin (sum 1)
``logzsol``                (n, n_bins) f4     log10(Z/Z_sun) per bin
``av``                     (n,) f4            A_V, mag
``sigma_kms``              (n,) f4            line-of-sight velocity dispersion, km/s
``velocity_kms``           (n,) f4            residual velocity, km/s
``snr``                    (n,) f4            median S/N per pixel
``norm``                   (n,) f8            mean noisy flux in the normalisation window, L_sun/A
``birth_cloud_extra``      (n,) f4            extra A_V of the bins younger than
                                              ``dust.birth_cloud_age_yr``, in units of A_V
``emission_line_flux``     (n, n_lines) f4    integrated flux / ``norm`` (A) of each nebular line
                                              (``attrs["nebular_lines_aa"]``, in that order)
                                              added by ``realism``; 0 = none
``gas_velocity_kms``,      (n,) f4            velocity and dispersion of those lines, km/s
``gas_sigma_kms``                             (0 without emission)
``nebular_hbeta_flux``     (n,) f4            observed H beta flux / ``norm`` (A) that scales the
                                              nebular continuum added by ``realism``; 0 = none
``distortion_legendre``    (n, deg + 1) f4    Legendre coefficients of the continuum distortion
                                              (factor 1 + sum c_k P_k over the window); 0 = none
``sky_spike_aa``,          (n, 8) f4          centre (A) and peak height / ``norm`` of each
``sky_spike_height``                          sky-residual spike; height 0 = no spike
``log_mass_formed``        (n,) f4            log10 M_formed / M_sun (the spectrum's scale)
``log_stellar_mass``       (n,) f4            log10 mass in stars (+remnants per the library) now
``lw_age``, ``mw_age``     (n,) f4            light- / mass-weighted <log10 age/yr>
``lw_logz``,               (n,) f4            light- / mass-weighted <log10 Z/Z_sun>
``mw_logz``
``sfh_family``             (n,) i2            index into ``attrs["sfh_families"]``
``split``                  (n,) u1            0 train, 1 validation, 2 test (written by finalize)
=========================  =================  ====================================================

Light weights are the attenuated light of each bin in the normalisation window; mass
weights are the mass fractions formed. Bin ages are the bin midpoints (constant SFR).

The labels hold every parameter of the noise-free spectrum, so :func:`noise_free_flux`
rebuilds ``flux`` up to its noise (``error``). ``birth_cloud_extra`` and the realism arrays
were added later: stores made before them lack them, and readers other than
:func:`noise_free_flux` do not need them. The nebular continuum is light of the gas, not of
the stars: it is in ``flux`` and ``phot`` but not in the light weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..core.atomic import write_json_atomically
from ..core.constants import C_KMS
from ..core.instrument import linear_grid
from ..core.spectral import EMISSION_LINES_AA, MASK_EMISSION, MASK_LASER_GAP, emission_line_mask
from ..core.version import __version__
from ..ssp import load_ssp
from .forward import DEFAULT_AGE_BIN_EDGES_YR, ForwardModel
from .nebular import nebular_continuum
from .priors import SFH_FAMILIES, YOUNG_PART_MAX_YR, sample_metallicity, sample_sfh, two_phase_metallicity

#: Nebular lines added to spectra with emission (``realism.emission_fraction``): rest air
#: wavelength (A) and the ratio that sets its flux (see :func:`nebular_emission`). He I 6678
#: is not masked: the network has to live with weak unmasked lines and with the wings of
#: strong ones beyond the mask (broad or velocity-offset gas, as in cluster central galaxies).
NEBULAR_LINES_AA = {**EMISSION_LINES_AA, "HeI6678": 6678.15}
SPLIT_NAMES = ("train", "validation", "test")

#: Every setting of the trainset section and its default: the one place they are defined (the
#: schema, workflow/schemas/config.schema.yaml, documents them; config/config.yaml sets only
#: what the embedded default changes on purpose, tests/test_config_defaults.py checks both).
#: The numbers are written as config/config.yaml wrote them before it stopped repeating them
#: (4800, not 4800.0): the resolved settings' JSON, hence the generator digest of existing
#: training sets and the parameters of their jobs, did not change, so nothing is regenerated.
DEFAULTS: dict[str, Any] = {
    "n_spectra": 32000,
    "chunk_size": 2000,
    "seed": 20260513,
    "age_bin_edges_yr": [0, *DEFAULT_AGE_BIN_EDGES_YR[1:]],  # 0, not 0.0: see above
    "wavelength": {"start_aa": 4800, "stop_aa": 7000, "step_aa": 1.25},
    "sfh_family_weights": None,
    "old_plus_young_mass_fraction": [0.0001, 0.5],  # bounds of its young part, log-uniform
    "metallicity_scatter_dex": 0.1,
    "dust": {"law": "calzetti2000", "av_max": 2.0, "birth_cloud_age_yr": 1e7, "birth_cloud_extra_max": 1.0},
    "sigma_kms": [20, 250],
    "velocity_offset_kms": 50,
    "snr": [5, 150],
    "phot_error_frac": [0.02, 0.10],
    "log_mass_formed": [8.0, 11.0],
    "emission_mask_halfwidth_kms": 400.0,
    "laser_gap_aa": [5805.0, 5965.0],
    "laser_gap_fraction": 0.3,
    "redshift_max": 0.008,
    "norm_window_aa": [5400.0, 5600.0],
    "split_fractions": {"validation": 0.1, "test": 0.1},
    "velscale_kms": 15.0,
    # What real spectra have and our forward model does not (docs/real_data.md): off by default.
    "realism": {
        "emission_fraction": 0.0,  # share of spectra with nebular lines added before masking
        "halpha_ew_aa": [0.5, 100.0],  # H alpha equivalent width (emission), log-uniform, A
        "gas_velocity_sd_kms": 150.0,  # gas - stars velocity offset, Gaussian sd, km/s
        "gas_sigma_kms": [20.0, 400.0],  # gas dispersion, log-uniform, km/s
        "continuum_distortion_rms": 0.0,  # rms of a smooth multiplicative error (flux calibration)
        "continuum_distortion_degree": 4,  # Legendre degree of that error
        "sky_residuals_per_spectrum": 0.0,  # mean number of sky-subtraction residual spikes
        # H beta EW (emission, A, log-uniform) against the attenuated light of the stars younger
        # than dust.birth_cloud_age_yr in the normalisation window: the H II gas's nebular continuum
        # (sfh_pipeline.synth.nebular), in the spectrum and the bands; [0, 0] = none
        "young_hbeta_ew_aa": [0.0, 0.0],
    },
}


def resolve_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """The trainset section with defaults filled in (one level of nested dicts merged)."""
    merged = json.loads(json.dumps(DEFAULTS))
    for key, value in (config or {}).items():
        if key not in merged:
            raise ValueError(f"unknown key trainset.{key}; known keys: {', '.join(sorted(merged))}")
        if isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key].update(value)
        else:
            merged[key] = value
    low, high = merged["old_plus_young_mass_fraction"]
    if not 0 < low <= high < 1:
        raise ValueError(
            f"trainset.old_plus_young_mass_fraction must be [low, high] with 0 < low <= high < 1, "
            f"got {merged['old_plus_young_mass_fraction']}"
        )
    ew_low, ew_high = merged["realism"]["young_hbeta_ew_aa"]
    if not (ew_low == ew_high == 0 or 0 < ew_low <= ew_high):
        raise ValueError(
            "trainset.realism.young_hbeta_ew_aa must be [low, high] with 0 < low <= high (A), or [0, 0] for "
            f"no nebular continuum, got {merged['realism']['young_hbeta_ew_aa']}"
        )
    if merged["n_spectra"] % merged["chunk_size"]:
        raise ValueError(
            f"trainset.n_spectra ({merged['n_spectra']}) must be a multiple of trainset.chunk_size "
            f"({merged['chunk_size']}) so that every chunk job writes whole zarr chunks"
        )
    return merged


#: Settings added after training sets had been made: at their default they are left out of the
#: digest, so that those sets (and the models trained on them) keep their names.
_ADDED_SETTINGS = ("old_plus_young_mass_fraction", "realism.young_hbeta_ew_aa")


def generator_config(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that determine each spectrum (everything but the set's size)."""
    out = {k: v for k, v in config.items() if k != "n_spectra"}
    for dotted in _ADDED_SETTINGS:
        *parents, leaf = dotted.split(".")
        holder, default = out, DEFAULTS
        for parent in parents:
            holder[parent] = dict(holder[parent])
            holder, default = holder[parent], default[parent]
        if leaf in holder and holder[leaf] == default[leaf]:
            del holder[leaf]
    return out


def config_digest(config: dict[str, Any]) -> str:
    """sha256 of the generator settings, to tell whether a chunk belongs to this set."""
    return hashlib.sha256(json.dumps(generator_config(config), sort_keys=True).encode()).hexdigest()


def muse_noise_shape(wavelength_aa: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Relative error spectrum (median 1) rising to the blue: (lambda / 6000 A) ** slope.

    MUSE's throughput falls towards its blue end (Bacon et al. 2017), so at fixed
    continuum the error per pixel at 4800 A is ~1.3-1.6 times that at 6000 A; ``slope``
    (one per spectrum, negative) spans that range.
    """
    shape = (np.asarray(wavelength_aa)[None, :] / 6000.0) ** np.asarray(slope)[:, None]
    return shape / np.median(shape, axis=1, keepdims=True)


def population_averages(
    bin_age_yr: np.ndarray, mass_fractions: np.ndarray, logz: np.ndarray, bin_light: np.ndarray
) -> dict[str, np.ndarray]:
    """Light- and mass-weighted <log10 age/yr> and <log10 Z/Z_sun> of binned populations.

    Mass weights are the mass fractions formed per bin; light weights the (attenuated)
    light of each bin in the normalisation window; a bin's age is its midpoint.
    """
    light = bin_light / bin_light.sum(1, keepdims=True)
    log_age = np.log10(bin_age_yr)[None, :]
    return {
        "lw_age": (light * log_age).sum(1),
        "mw_age": (mass_fractions * log_age).sum(1),
        "lw_logz": (light * logz).sum(1),
        "mw_logz": (mass_fractions * logz).sum(1),
    }


def nebular_emission(
    wavelength_aa: np.ndarray,
    continuum: np.ndarray,
    rng: np.random.Generator,
    present: np.ndarray,
    settings: dict[str, Any],
    stellar_velocity_kms: np.ndarray,
) -> np.ndarray:
    """Emission-line spectra (n, n_wave) in the units of ``continuum`` (zero where not ``present``).

    :func:`nebular_lines` (the draw) followed by :func:`emission_spectrum` (the rendering).
    """
    line_flux, v_gas, sigma_gas = nebular_lines(wavelength_aa, continuum, rng, settings, stellar_velocity_kms)
    emission = emission_spectrum(wavelength_aa, line_flux, v_gas, sigma_gas)
    return np.where(np.asarray(present)[:, None], emission, 0.0)


def nebular_lines(
    wavelength_aa: np.ndarray,
    continuum: np.ndarray,
    rng: np.random.Generator,
    settings: dict[str, Any],
    stellar_velocity_kms: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integrated line fluxes (n, n_lines, in the units of ``continuum`` times A, lines in the
    order of :data:`NEBULAR_LINES_AA`), gas velocity and gas dispersion (n,) km/s.

    Line fluxes are tied to H alpha, whose equivalent width (A, against the noise-free
    continuum at 6540-6590 A) is drawn log-uniformly in ``halpha_ew_aa``; the ratios span
    star-forming, LINER and Seyfert gas (log-uniform): [N II]6583/Ha 0.1-3, Ha/Hb 2.86-8,
    [O III]5007/Hb 0.1-10, [S II]6716+6731/Ha 0.1-1.2 (6716/6731 0.45-1.45), [O I]6300/Ha
    0.01-0.5, He I 5876/Ha 0-0.05, He I 6678/Ha 0-0.02, [N I]/Hb 0-0.3; doublets at their
    atomic ratios ([O III] 2.98, [N II] 3.05, [O I] 3.05). The gas moves at the stellar
    velocity plus a Gaussian offset (``gas_velocity_sd_kms``) with its own dispersion
    (``gas_sigma_kms``, log-uniform), broadened by the MUSE LSF. Every draw happens for all
    n spectra, so the sequence of random numbers does not depend on which get emission.
    """
    lam = np.asarray(wavelength_aa, dtype=float)
    n = continuum.shape[0]

    def log_uniform(lo, hi):
        return np.exp(rng.uniform(np.log(lo), np.log(hi), n))

    ew = log_uniform(*settings["halpha_ew_aa"])
    v_gas = stellar_velocity_kms + rng.normal(0.0, settings["gas_velocity_sd_kms"], n)
    sigma_gas = log_uniform(*settings["gas_sigma_kms"])
    nii = log_uniform(0.1, 3.0)
    balmer = log_uniform(2.86, 8.0)
    oiii = log_uniform(0.1, 10.0)
    sii = log_uniform(0.1, 1.2)
    sii_ratio = rng.uniform(0.45, 1.45, n)
    oi = log_uniform(0.01, 0.5)
    hei5876 = rng.uniform(0.0, 0.05, n)
    hei6678 = rng.uniform(0.0, 0.02, n)
    ni = rng.uniform(0.0, 0.3, n)
    window = (lam >= 6540.0) & (lam <= 6590.0)
    halpha = ew * continuum[:, window].mean(1)
    hbeta = halpha / balmer
    sii_6731 = sii * halpha / (1 + sii_ratio)
    fluxes = {
        "Halpha": halpha,
        "Hbeta": hbeta,
        "[NII]6583": nii * halpha,
        "[NII]6548": nii * halpha / 3.05,
        "[OIII]5007": oiii * hbeta,
        "[OIII]4959": oiii * hbeta / 2.98,
        "[SII]6731": sii_6731,
        "[SII]6716": sii_6731 * sii_ratio,
        "[OI]6300": oi * halpha,
        "[OI]6364": oi * halpha / 3.05,
        "HeI5876": hei5876 * halpha,
        "HeI6678": hei6678 * halpha,
        "[NI]5198": 0.6 * ni * hbeta,
        "[NI]5200": 0.4 * ni * hbeta,
    }
    return np.stack([fluxes[name] for name in NEBULAR_LINES_AA], axis=1), v_gas, sigma_gas


def emission_spectrum(
    wavelength_aa: np.ndarray, line_flux: np.ndarray, gas_velocity_kms: np.ndarray, gas_sigma_kms: np.ndarray
) -> np.ndarray:
    """Gaussian lines (n, n_wave) of :data:`NEBULAR_LINES_AA` with integrated fluxes ``line_flux``
    (n, n_lines), at ``gas_velocity_kms``, with ``gas_sigma_kms`` added in quadrature to the MUSE LSF."""
    from ..core.instrument import FWHM_PER_SIGMA, muse_lsf_fwhm_aa

    lam = np.asarray(wavelength_aa, dtype=float)
    line_flux = np.asarray(line_flux, dtype=float)
    shift = np.exp(np.asarray(gas_velocity_kms, float) / C_KMS)[:, None]
    sigma_gas = np.asarray(gas_sigma_kms, float)
    emission = np.zeros((line_flux.shape[0], lam.size))
    for k, rest in enumerate(NEBULAR_LINES_AA.values()):
        centre = rest * shift
        width = np.hypot(rest * sigma_gas[:, None] / C_KMS, muse_lsf_fwhm_aa(rest) / FWHM_PER_SIGMA)
        emission += line_flux[:, k, None] / (np.sqrt(2 * np.pi) * width) * np.exp(-0.5 * ((lam - centre) / width) ** 2)
    return emission


def continuum_distortion(
    wavelength_aa: np.ndarray, rng: np.random.Generator, n: int, rms: float, degree: int
) -> np.ndarray:
    """Smooth multiplicative factors (n, n_wave) around 1: Legendre series of degree ``degree``
    (orders 1..degree, Gaussian coefficients) with ``rms`` fractional rms over the window,
    the size of MUSE's relative flux-calibration and sky-continuum errors (a few per cent)."""
    return distortion_factors(wavelength_aa, distortion_coefficients(rng, n, rms, degree))


def distortion_coefficients(rng: np.random.Generator, n: int, rms: float, degree: int) -> np.ndarray:
    """The Legendre coefficients (n, degree + 1) of :func:`continuum_distortion` (the 0th is 0)."""
    coeff = rng.standard_normal((n, degree + 1))
    coeff[:, 0] = 0.0
    # Legendre P_k has rms 1/sqrt(2k+1) over [-1, 1]: scale so every order carries equal power
    scale = np.sqrt(2 * np.arange(degree + 1) + 1) / np.sqrt(max(degree, 1))
    return rms * coeff * scale


def distortion_factors(wavelength_aa: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """1 + sum_k c_k P_k(x), x running linearly from -1 to 1 over the pixels of the window."""
    x = np.linspace(-1.0, 1.0, np.asarray(wavelength_aa).size)
    return 1.0 + np.polynomial.legendre.legval(x, np.asarray(coefficients, dtype=float).T)


def sky_residuals(error: np.ndarray, rng: np.random.Generator, rate: float, wavelength_aa: np.ndarray) -> np.ndarray:
    """Sky-subtraction residuals (n, n_wave): on average ``rate`` unresolved spikes per
    spectrum at random wavelengths, each of amplitude +-(3-30) times the local error, with the
    LSF's width (2.6 A FWHM); the error spectrum does not know about them, as in real cubes."""
    return sky_spectrum(wavelength_aa, *sky_spikes(error, rng, rate, wavelength_aa))


#: Most sky-residual spikes one spectrum can get (the Poisson count is cut here).
MAX_SKY_SPIKES = 8


def sky_spikes(
    error: np.ndarray, rng: np.random.Generator, rate: float, wavelength_aa: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Centres (A) and peak heights (units of ``error``) of the spikes of :func:`sky_residuals`,
    (n, :data:`MAX_SKY_SPIKES`) each; both 0 for the slots a spectrum does not use."""
    n, n_wave = error.shape
    counts = rng.poisson(rate, n)
    where = rng.integers(0, n_wave, (n, MAX_SKY_SPIKES))
    amplitude = rng.choice((-1.0, 1.0), (n, MAX_SKY_SPIKES)) * np.exp(
        rng.uniform(np.log(3.0), np.log(30.0), (n, MAX_SKY_SPIKES))
    )
    on = counts[:, None] > np.arange(MAX_SKY_SPIKES)[None, :]
    centre = np.where(on, np.asarray(wavelength_aa, dtype=float)[where], 0.0)
    height = np.where(on, amplitude * np.take_along_axis(error, where, axis=1), 0.0)
    return centre, height


def sky_spectrum(wavelength_aa: np.ndarray, centre_aa: np.ndarray, height: np.ndarray) -> np.ndarray:
    """Gaussian spikes (n, n_wave) of the LSF's width (2.6 A FWHM); slots with height 0 are empty."""
    lam = np.asarray(wavelength_aa, dtype=float)
    width = 2.6 / 2.3548
    centre_aa, height = np.asarray(centre_aa, float), np.asarray(height, float)
    out = np.zeros((height.shape[0], lam.size))
    for k in range(height.shape[1]):
        on = height[:, k] != 0
        if not on.any():
            continue
        out[on] += height[on, k, None] * np.exp(-0.5 * ((lam - centre_aa[on, k, None]) / width) ** 2)
    return out


def chunk_rng(seed: int, chunk_index: int) -> np.random.Generator:
    """The generator of one chunk: a function of (set seed, chunk index) only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(chunk_index)]))


def _draw_chunk(
    config: dict[str, Any], rng: np.random.Generator, edges_yr, logz_range, n_wave: int, n_filters: int
) -> dict[str, Any]:
    """The random draws of a chunk up to its noise, in the fixed order every store was made with."""
    n = int(config["chunk_size"])
    sfh = sample_sfh(
        rng,
        np.asarray(edges_yr, float),
        n,
        config["sfh_family_weights"],
        young_mass_fraction=config["old_plus_young_mass_fraction"],
    )
    logz = sample_metallicity(rng, sfh.mass_fractions, tuple(logz_range), scatter_dex=config["metallicity_scatter_dex"])
    two_phase = np.flatnonzero(sfh.family == SFH_FAMILIES.index("old_plus_young"))
    if two_phase.size:  # no draw otherwise: sets without the family are made as before
        young_bins = np.asarray(edges_yr, float)[1:] <= YOUNG_PART_MAX_YR
        logz[two_phase] = two_phase_metallicity(
            rng, two_phase.size, young_bins, tuple(logz_range), config["metallicity_scatter_dex"]
        )
    dust = config["dust"]
    draws: dict[str, Any] = {"sfh": sfh, "logz": logz}
    draws["av"] = rng.uniform(0.0, dust["av_max"], n)
    draws["bc_extra"] = rng.uniform(0.0, dust["birth_cloud_extra_max"], n)
    draws["sigma"] = rng.uniform(*config["sigma_kms"], n)
    draws["velocity"] = rng.uniform(-config["velocity_offset_kms"], config["velocity_offset_kms"], n)
    draws["snr"] = np.exp(rng.uniform(*np.log(config["snr"]), n))
    draws["slope"] = rng.uniform(-2.0, -1.0, n)
    draws["log_mass"] = rng.uniform(*config["log_mass_formed"], n)
    draws["phot_frac"] = rng.uniform(*config["phot_error_frac"], (n, n_filters))
    draws["has_gap"] = rng.uniform(size=n) < config["laser_gap_fraction"]
    draws["redshift"] = rng.uniform(0.0, config["redshift_max"], n)
    draws["noise"] = rng.standard_normal((n, n_wave))
    draws["phot_noise"] = rng.standard_normal((n, n_filters))
    return draws


def stored_noise(attrs: dict[str, Any], chunk_index: int) -> tuple[np.ndarray, np.ndarray]:
    """The unit-normal deviates (n, n_wave) and (n, n_filt) that made chunk ``chunk_index``'s noise.

    ``attrs`` are the store's attributes. Replaying the chunk's seeded draws (no forward
    model) gives them in a fraction of a second, so ``flux - error * noise`` is the stored
    spectrum before its noise: what :func:`renoised` draws new noise onto.
    """
    config = attrs["config"]
    n_wave = linear_grid(**config["wavelength"]).size
    draws = _draw_chunk(
        config,
        chunk_rng(config["seed"], chunk_index),
        attrs["age_bin_edges_yr"],
        attrs["logzsol_range"],
        n_wave,
        len(attrs["filters"]),
    )
    return draws["noise"], draws["phot_noise"]


def renoised(
    arrays: dict[str, np.ndarray],
    noise: np.ndarray,
    phot_noise: np.ndarray,
    rng: np.random.Generator,
    config: dict[str, Any],
    wavelength_aa: np.ndarray,
) -> dict[str, np.ndarray]:
    """The same spectra with a new S/N and new noise: a fresh realisation of each sample.

    ``arrays`` are rows of a store (``flux``, ``error``, ``mask``, ``phot``, ``phot_error``,
    ``snr``); ``noise``/``phot_noise`` the deviates they were made with (:func:`stored_noise`,
    same rows). Each S/N is drawn again from ``config['snr']`` (log-uniform, as the store was),
    the error spectrum is scaled to it (its shape kept), unit-normal noise is drawn, and
    everything is normalised again by the mean unmasked flux in ``norm_window_aa``, as
    :func:`generate_chunk` does. Returns a new dict; the labels are shared.
    """
    n = len(arrays["flux"])
    clean = arrays["flux"] - arrays["error"] * noise
    clean_phot = arrays["phot"] - arrays["phot_error"] * phot_noise
    snr = np.exp(rng.uniform(*np.log(config["snr"]), n))
    error = arrays["error"] * (arrays["snr"] / snr)[:, None]
    flux = clean + error * rng.standard_normal(clean.shape)
    phot = clean_phot + arrays["phot_error"] * rng.standard_normal(clean_phot.shape)
    lo, hi = config["norm_window_aa"]
    window = (wavelength_aa >= lo) & (wavelength_aa <= hi)
    norm = np.nanmean(np.where(arrays["mask"][:, window] == 0, flux[:, window], np.nan), axis=1)[:, None]
    out = dict(arrays)
    out.update(
        flux=(flux / norm).astype(np.float32),
        error=(error / norm).astype(np.float32),
        phot=(phot / norm).astype(np.float32),
        phot_error=(arrays["phot_error"] / norm).astype(np.float32),
        snr=snr.astype(np.float32),
    )
    return out


def generate_chunk(config: dict[str, Any], model: ForwardModel, chunk_index: int) -> dict[str, np.ndarray]:
    """All arrays of one chunk (``config['chunk_size']`` spectra), bit-reproducible.

    Every random number is drawn up front from :func:`chunk_rng`, in a fixed order.
    """
    n = int(config["chunk_size"])
    rng = chunk_rng(config["seed"], chunk_index)
    logz_range = (model.logzsol[0], model.logzsol[-1])
    draws = _draw_chunk(config, rng, model.edges_yr, logz_range, model.wavelength_aa.size, len(model.filters))
    sfh, logz, av, bc_extra = draws["sfh"], draws["logz"], draws["av"], draws["bc_extra"]
    sigma, velocity, snr, slope = draws["sigma"], draws["velocity"], draws["snr"], draws["slope"]
    log_mass, phot_frac, has_gap, redshift = draws["log_mass"], draws["phot_frac"], draws["has_gap"], draws["redshift"]
    noise, phot_noise = draws["noise"], draws["phot_noise"]

    # Drawn after everything above, so a set without realism keeps its spectra bit for bit.
    real = config["realism"]
    has_emission = rng.uniform(size=n) < real["emission_fraction"]
    emission_rng = np.random.default_rng(rng.integers(2**63))
    distortion_rng = np.random.default_rng(rng.integers(2**63))
    sky_rng = np.random.default_rng(rng.integers(2**63))
    ew_low, ew_high = real.get("young_hbeta_ew_aa", (0.0, 0.0))
    nebular_rng = np.random.default_rng(rng.integers(2**63)) if ew_high > 0 else None

    out = model.model(sfh.mass_fractions, logz, av, sigma, velocity, bc_extra)
    mass = 10.0**log_mass
    flux = out.flux * mass[:, None]
    phot = out.photometry * mass[:, None]
    error = np.median(flux, axis=1, keepdims=True) / snr[:, None] * muse_noise_shape(model.wavelength_aa, slope)
    # The realism terms are kept (as labels) so that the stored flux can be rebuilt: noise_free_flux.
    line_flux = np.zeros((n, len(NEBULAR_LINES_AA)))
    gas_velocity, gas_sigma = np.zeros(n), np.zeros(n)
    legendre = np.zeros((n, int(real["continuum_distortion_degree"]) + 1))
    spike_aa, spike_height = np.zeros((n, MAX_SKY_SPIKES)), np.zeros((n, MAX_SKY_SPIKES))
    observed = flux
    if real["emission_fraction"] > 0:
        drawn, v_gas, sigma_gas = nebular_lines(model.wavelength_aa, flux, emission_rng, real, velocity)
        line_flux = np.where(has_emission[:, None], drawn, 0.0)
        gas_velocity, gas_sigma = np.where(has_emission, v_gas, 0.0), np.where(has_emission, sigma_gas, 0.0)
        observed = observed + emission_spectrum(model.wavelength_aa, line_flux, gas_velocity, gas_sigma)
    nebular_hbeta = np.zeros(n)
    if nebular_rng is not None:
        ew = np.exp(nebular_rng.uniform(np.log(ew_low), np.log(ew_high), n))
        nebular_hbeta = ew * out.bin_light[:, model.young].sum(1) * mass
        av_gas = av * (1 + bc_extra)
        observed = observed + nebular_continuum(model.wavelength_aa, nebular_hbeta, av_gas, model.dust_law)
        if model.filters:
            phot = phot + model.band_means(
                nebular_continuum(model.photometry_wavelength_aa, nebular_hbeta, av_gas, model.dust_law)
            )
    if real["continuum_distortion_rms"] > 0:
        legendre = distortion_coefficients(
            distortion_rng, n, real["continuum_distortion_rms"], int(real["continuum_distortion_degree"])
        )
        observed = observed * distortion_factors(model.wavelength_aa, legendre)
    if real["sky_residuals_per_spectrum"] > 0:
        spike_aa, spike_height = sky_spikes(error, sky_rng, real["sky_residuals_per_spectrum"], model.wavelength_aa)
        observed = observed + sky_spectrum(model.wavelength_aa, spike_aa, spike_height)
    noisy = observed + error * noise
    phot_error = phot * phot_frac
    noisy_phot = phot + phot_error * phot_noise

    lam = model.wavelength_aa
    mask = np.where(emission_line_mask(lam, config["emission_mask_halfwidth_kms"]), MASK_EMISSION, 0)
    mask = np.broadcast_to(mask.astype(np.uint8), noisy.shape).copy()
    gap_lo, gap_hi = config["laser_gap_aa"]
    in_gap = (lam[None, :] * (1 + redshift[:, None]) >= gap_lo) & (lam[None, :] * (1 + redshift[:, None]) <= gap_hi)
    mask[in_gap & has_gap[:, None]] |= MASK_LASER_GAP

    window = (lam >= config["norm_window_aa"][0]) & (lam <= config["norm_window_aa"][1])
    norm = np.where(mask[:, window] == 0, noisy[:, window], np.nan)
    norm = np.nanmean(norm, axis=1)

    x = sfh.mass_fractions
    ages = population_averages(model.bin_age_yr, x, logz, out.bin_light)
    return {
        "flux": (noisy / norm[:, None]).astype(np.float32),
        "error": (error / norm[:, None]).astype(np.float32),
        "mask": mask,
        "phot": (noisy_phot / norm[:, None]).astype(np.float32),
        "phot_error": (phot_error / norm[:, None]).astype(np.float32),
        "sfh": x.astype(np.float32),
        "logzsol": logz.astype(np.float32),
        "av": av.astype(np.float32),
        "sigma_kms": sigma.astype(np.float32),
        "velocity_kms": velocity.astype(np.float32),
        "snr": snr.astype(np.float32),
        "norm": norm,
        "birth_cloud_extra": bc_extra.astype(np.float32),
        "emission_line_flux": (line_flux / norm[:, None]).astype(np.float32),
        "gas_velocity_kms": gas_velocity.astype(np.float32),
        "gas_sigma_kms": gas_sigma.astype(np.float32),
        "nebular_hbeta_flux": (nebular_hbeta / norm).astype(np.float32),
        "distortion_legendre": legendre.astype(np.float32),
        "sky_spike_aa": spike_aa.astype(np.float32),
        "sky_spike_height": (spike_height / norm[:, None]).astype(np.float32),
        "log_mass_formed": log_mass.astype(np.float32),
        "log_stellar_mass": (log_mass + np.log10(out.surviving_fraction)).astype(np.float32),
        **{name: values.astype(np.float32) for name, values in ages.items()},
        "sfh_family": sfh.family.astype(np.int16),
    }


def noise_free_flux(model: ForwardModel, labels: dict[str, np.ndarray]) -> np.ndarray:
    """The normalised spectrum (n, n_wave) before noise, rebuilt from stored labels.

    ``labels`` holds rows of the store's arrays (``sfh``, ``logzsol``, ``av``,
    ``birth_cloud_extra``, ``sigma_kms``, ``velocity_kms``, ``log_mass_formed``, ``norm`` and
    the realism arrays); ``model`` is :func:`build_model` of the store's config. The steps are
    those of :func:`generate_chunk`: forward model x mass formed, + nebular lines and continuum,
    x continuum distortion, + sky spikes, all / ``norm``.
    """
    missing = [
        name
        for name in ("birth_cloud_extra", "emission_line_flux", "distortion_legendre", "sky_spike_aa")
        if name not in labels
    ]
    if missing:
        raise KeyError(
            f"labels lack {', '.join(missing)}: the store predates them; regenerate it to rebuild its spectra"
        )
    out = model.model(
        labels["sfh"],
        labels["logzsol"],
        labels["av"],
        labels["sigma_kms"],
        labels["velocity_kms"],
        labels["birth_cloud_extra"],
    )
    scale = 10.0 ** np.asarray(labels["log_mass_formed"], float) / np.asarray(labels["norm"], float)
    lam = model.wavelength_aa
    flux = out.flux * scale[:, None]
    flux = flux + emission_spectrum(
        lam, labels["emission_line_flux"], labels["gas_velocity_kms"], labels["gas_sigma_kms"]
    )
    if "nebular_hbeta_flux" in labels:  # a store made before the nebular continuum has none
        av_gas = np.asarray(labels["av"], float) * (1 + np.asarray(labels["birth_cloud_extra"], float))
        flux = flux + nebular_continuum(lam, labels["nebular_hbeta_flux"], av_gas, model.dust_law)
    flux = flux * distortion_factors(lam, labels["distortion_legendre"])
    return flux + sky_spectrum(lam, labels["sky_spike_aa"], labels["sky_spike_height"])


def build_model(config: dict[str, Any], ssp_store: str | os.PathLike, filters) -> ForwardModel:
    """The forward model of a training set, from its config and the SSP store."""
    wave = config["wavelength"]
    ssp = load_ssp(ssp_store)
    return ForwardModel(
        ssp,
        age_bin_edges_yr=config["age_bin_edges_yr"],
        wavelength_aa=linear_grid(wave["start_aa"], wave["stop_aa"], wave["step_aa"]),
        filters=filters,
        dust_law=config["dust"]["law"],
        birth_cloud_age_yr=config["dust"]["birth_cloud_age_yr"],
        velscale_kms=config["velscale_kms"],
        max_velocity_kms=config["velocity_offset_kms"] + 5 * config["sigma_kms"][1] + C_KMS * config["redshift_max"],
        norm_window_aa=tuple(config["norm_window_aa"]),
    )


#: Per-sample arrays written by the chunk jobs: name -> (second axis, dtype).
CHUNK_ARRAYS = {
    "flux": ("wave", "float32"),
    "error": ("wave", "float32"),
    "mask": ("wave", "uint8"),
    "phot": ("filter", "float32"),
    "phot_error": ("filter", "float32"),
    "sfh": ("bin", "float32"),
    "logzsol": ("bin", "float32"),
    **{
        name: (None, "float32")
        for name in (
            "av",
            "sigma_kms",
            "velocity_kms",
            "snr",
            "log_mass_formed",
            "log_stellar_mass",
            "lw_age",
            "mw_age",
            "lw_logz",
            "mw_logz",
        )
    },
    "norm": (None, "float64"),
    "sfh_family": (None, "int16"),
    # Added after the first stores: readers must not need them (an older store lacks them).
    "birth_cloud_extra": (None, "float32"),
    "emission_line_flux": ("line", "float32"),
    "gas_velocity_kms": (None, "float32"),
    "gas_sigma_kms": (None, "float32"),
    "nebular_hbeta_flux": (None, "float32"),
    "distortion_legendre": ("legendre", "float32"),
    "sky_spike_aa": ("spike", "float32"),
    "sky_spike_height": ("spike", "float32"),
}


def _array_specs(config: dict[str, Any], n_wave: int, n_filters: int) -> dict[str, tuple[tuple, str]]:
    """Shape and dtype of every per-sample array, plus the split written by finalize."""
    sizes = {
        "wave": n_wave,
        "filter": n_filters,
        "bin": len(config["age_bin_edges_yr"]) - 1,
        "line": len(NEBULAR_LINES_AA),
        "legendre": int(config["realism"]["continuum_distortion_degree"]) + 1,
        "spike": MAX_SKY_SPIKES,
    }
    n = config["n_spectra"]
    specs = {name: ((n, sizes[axis]) if axis else (n,), dtype) for name, (axis, dtype) in CHUNK_ARRAYS.items()}
    specs["split"] = ((n,), "uint8")
    return specs


def init_store(store: str | os.PathLike, config: dict[str, Any], ssp_store: str | os.PathLike, filters) -> dict:
    """Create the empty store, or resize an existing one made with the same generator settings.

    Growing ``n_spectra`` keeps every chunk already written (their seeds do not change);
    any other change of settings starts a new store.
    """
    store = Path(store)
    model = build_model(config, ssp_store, filters)
    digest = config_digest(config)
    specs = _array_specs(config, model.wavelength_aa.size, len(model.filters))
    if store.exists():
        try:
            group = zarr.open_group(store, mode="r+")
            # a store from before an array was added cannot be grown: its chunks would lack it
            same = group.attrs.get("generator_digest") == digest and all(name in group for name in specs)
        except Exception:  # noqa: BLE001 - an unreadable store is rebuilt
            same = False
        if same:
            for name, (shape, _) in specs.items():
                group[name].resize(shape)
            group.attrs["n_spectra"] = config["n_spectra"]
            return dict(group.attrs)
        shutil.rmtree(store)
    group = zarr.open_group(store, mode="w", zarr_format=3)
    chunk = config["chunk_size"]
    for name, (shape, dtype) in specs.items():
        fill = np.nan if dtype.startswith("float") else 0
        group.create_array(name, shape=shape, dtype=dtype, chunks=(chunk, *shape[1:]), fill_value=fill)
    group.create_array("wavelength_aa", shape=model.wavelength_aa.shape, dtype="float64")[...] = model.wavelength_aa
    group.attrs.update(
        {
            "config": config,
            "generator_digest": digest,
            "n_spectra": config["n_spectra"],
            "chunk_size": chunk,
            "filters": list(model.filters),
            "age_bin_edges_yr": model.edges_yr.tolist(),
            "bin_age_yr": model.bin_age_yr.tolist(),
            "logzsol_range": [float(model.logzsol[0]), float(model.logzsol[-1])],
            "sfh_families": list(SFH_FAMILIES),
            "mask_bits": {"emission_line": MASK_EMISSION, "laser_gap": MASK_LASER_GAP},
            "emission_lines_aa": EMISSION_LINES_AA,
            "nebular_lines_aa": NEBULAR_LINES_AA,
            "split_names": list(SPLIT_NAMES),
            "ssp": {k: model.ssp_attrs.get(k) for k in ("name", "sha256", "source", "library", "imf")},
            "code_version": __version__,
            "flux_units": "f_lambda / norm (dimensionless); norm in L_sun/A",
        }
    )
    return dict(group.attrs)


def chunk_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the bytes of a chunk's arrays (sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def write_chunk(store: str | os.PathLike, chunk_index: int, ssp_store, marker: str | os.PathLike) -> dict:
    """Generate chunk ``chunk_index`` into the store, then write its marker JSON atomically.

    The marker (written last) records the chunk digest; a job killed before it leaves a
    chunk that :func:`check_complete` rejects.
    """
    group = zarr.open_group(store, mode="r+")
    config = group.attrs["config"]
    n_chunks = group.attrs["n_spectra"] // config["chunk_size"]
    if not 0 <= chunk_index < n_chunks:
        raise ValueError(f"chunk index {chunk_index} outside 0..{n_chunks - 1} of {store}")
    from threadpoolctl import threadpool_limits

    # One BLAS thread: sums in a fixed order, so a chunk regenerated anywhere is bit-identical.
    with threadpool_limits(limits=1, user_api="blas"):
        model = build_model(config, ssp_store, group.attrs["filters"])
        arrays = generate_chunk(config, model, chunk_index)
    # a lost chunk of a store from before an array was added is regenerated in that store's layout
    arrays = {name: values for name, values in arrays.items() if name in group}
    sl = slice(chunk_index * config["chunk_size"], (chunk_index + 1) * config["chunk_size"])
    for name, values in arrays.items():
        group[name][sl] = values
    info = {
        "chunk": chunk_index,
        "start": sl.start,
        "stop": sl.stop,
        "digest": chunk_digest(arrays),
        "generator_digest": group.attrs["generator_digest"],
        "code_version": __version__,
    }
    write_json_atomically(marker, info)
    return info


def _read_chunk(group: zarr.Group, sl: slice) -> dict[str, np.ndarray]:
    # a store from before an array was added lacks it, and so did its markers' digests
    return {name: np.asarray(group[name][sl]) for name in CHUNK_ARRAYS if name in group}


def check_complete(store: str | os.PathLike, markers: list[str | os.PathLike]) -> list[str]:
    """Problems that make the set incomplete (empty list = complete).

    Every chunk must have a marker of this generator, data whose digest equals the
    marker's, finite values and the right shapes.
    """
    group = zarr.open_group(store, mode="r")
    config = group.attrs["config"]
    n_chunks = group.attrs["n_spectra"] // config["chunk_size"]
    by_index = {}
    for path in markers:
        if not Path(path).exists():
            continue
        info = json.loads(Path(path).read_text())
        by_index[info["chunk"]] = info
    problems = []
    for i in range(n_chunks):
        info = by_index.get(i)
        if info is None:
            problems.append(f"chunk {i}: no marker (job never finished)")
            continue
        if info["generator_digest"] != group.attrs["generator_digest"]:
            problems.append(f"chunk {i}: made with other generator settings")
            continue
        arrays = _read_chunk(group, slice(info["start"], info["stop"]))
        if chunk_digest(arrays) != info["digest"]:
            problems.append(f"chunk {i}: data differ from its marker (interrupted or overwritten)")
            continue
        for name, values in arrays.items():
            if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
                problems.append(f"chunk {i}: non-finite values in {name}")
    return problems


def split_assignment(seed: int, indices: np.ndarray, fractions: dict[str, float]) -> np.ndarray:
    """0/1/2 (train/validation/test) per global sample index, from a hash of (seed, index).

    A sample's split depends only on its index and the seed, so adding chunks never moves
    an existing sample to another split.
    """
    indices = np.asarray(indices, dtype=np.uint64)
    mixed = indices * np.uint64(0x9E3779B97F4A7C15) + np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)
    mixed ^= mixed >> np.uint64(33)
    mixed *= np.uint64(0xFF51AFD7ED558CCD)
    mixed ^= mixed >> np.uint64(33)
    u = (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    val, test = fractions.get("validation", 0.1), fractions.get("test", 0.1)
    return np.where(u < test, 2, np.where(u < test + val, 1, 0)).astype(np.uint8)


def finalize(store: str | os.PathLike, markers: list[str | os.PathLike], report: str | os.PathLike) -> dict:
    """Check completeness, write the split array and a JSON report; fail if incomplete."""
    problems = check_complete(store, markers)
    if problems:
        raise ValueError(f"training set {store} is incomplete; rerun the workflow:\n  " + "\n  ".join(problems))
    group = zarr.open_group(store, mode="r+")
    config = group.attrs["config"]
    n = group.attrs["n_spectra"]
    split = split_assignment(config["seed"], np.arange(n), config["split_fractions"])
    group["split"][:] = split
    summary = {
        "store": str(store),
        "n_spectra": n,
        "n_chunks": n // config["chunk_size"],
        "split_counts": {name: int((split == k).sum()) for k, name in enumerate(SPLIT_NAMES)},
        "generator_digest": group.attrs["generator_digest"],
        "ssp": group.attrs["ssp"],
        "ranges": {
            name: [float(np.min(group[name][:])), float(np.max(group[name][:]))]
            for name in ("av", "sigma_kms", "snr", "lw_age", "mw_age", "lw_logz", "mw_logz")
        },
    }
    write_json_atomically(report, summary)
    return summary
