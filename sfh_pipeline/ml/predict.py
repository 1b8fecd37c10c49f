"""The public predictor: SFHs and metallicities of observed spectra with a trained model file.

>>> from sfh_pipeline import load_predictor
>>> predictor = load_predictor("results/models/<name>/model.pt")
>>> result = predictor.predict(wave, flux, error, photometry={"wfc3-uvis_f555w": (f, e)}, z=0.0023)
>>> result["sfh"], result["lw_age"], result["lw_age_err"]

:meth:`Predictor.predict` repeats, on any input, exactly what the training set did to its
spectra (:mod:`sfh_pipeline.trainset`), then calls :meth:`Predictor.predict_normalised`,
the batch path on data already on the training grid and normalised (the stored training
set, or the tiled inference of cubes):

1. **Rest frame** — lambda_rest = lambda_obs / (1 + z).
2. **Resampling onto the training grid** (default 4800-7000 A at 1.25 A) by
   *flux-conserving rebinning*: each output pixel gets the overlap-weighted mean of
   f_lambda over the input pixels it overlaps (pixel edges at the midpoints between
   centres, as :func:`sfh_pipeline.spectral.pixel_edges`), and the error
   sigma_out = sqrt(sum (w_i sigma_i)^2) / sum w_i (input pixels independent).
   Why not linear interpolation: for input finer than the grid (e.g. 1.0 A, or MUSE's
   1.25 A observed = 1.244 A in the rest frame) interpolation would use only the two nearest
   pixels, discarding the rest of the signal, and its interpolated error would not be the
   noise of the value it returns; rebinning uses every input pixel once, keeps the mean flux
   (and hence the normalisation) unchanged, and propagates the noise consistently, giving
   the per-pixel S/N the network saw in training. On the training grid itself (z = 0)
   rebinning is the identity. For input coarser than the grid the result is piecewise
   constant, and neighbouring output pixels share one input pixel's error (correlated).
   A training pixel is masked when at least half of it (:data:`MAX_BAD_FRACTION`) lies on
   NaN, user-masked or zero-error input pixels; otherwise it is the mean over its good part
   (whose smaller coverage the error reflects). Masking on *any* overlap instead would widen
   every masked region (laser gap, bad columns) by up to a pixel on each side, a mask pattern
   the network never saw in training. The end pixels may be partly covered likewise.
3. **Emission lines** — the model file's :func:`sfh_pipeline.spectral.emission_line_mask`
   (same half-width as in training) is added to the mask.
4. **Normalisation** — flux, error and photometry are divided by ``norm``, the mean of the
   unmasked rebinned flux in the training set's normalisation window (rest frame).
5. **Encoding and network** — :func:`sfh_pipeline.model.encode_spectrum` /
   :func:`~sfh_pipeline.model.encode_photometry`, eval mode, no gradients, in batches.

Bad input raises :class:`ValueError` naming what is wrong and how to fix it.

An :class:`EnsemblePredictor` (an ensemble file, or a list of model files given to
:func:`load_predictor`) has the same calls: steps 1-4 once (its first member's), then every
member's network on the same prepared spectra, and one answer combined from theirs
(:mod:`sfh_pipeline.ensemble`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse

from ..core.constants import C_KMS
from ..core.spectral import pixel_edges, redshift_to_velocity, velocity_to_redshift

if TYPE_CHECKING:
    import torch

# torch, the network and the training-set code are imported when a predictor is made, not
# with the package (``sfh_pipeline/__init__`` exports load_predictor; the workflow's other
# jobs should not pay for importing torch).

#: Mask bit of pixels of the training grid without valid input (NaN, user mask, error <= 0).
MASK_BAD_INPUT = 4
#: A training-grid pixel is masked when at least this fraction of its (covered) width lies on bad
#: input pixels; below it, it is the mean over its good part (with the larger error that implies).
MAX_BAD_FRACTION = 0.5
#: Overlaps below this fraction of an output pixel are rounding noise, not coverage.
_OVERLAP_TOLERANCE = 1e-6
#: Half-width of the stellar-velocity search around the given redshift in :meth:`Predictor.predict`, km/s.
DEFAULT_VELOCITY_RANGE_KMS = 500.0
#: Spectra rebinned at a time (memory: ~10 arrays of 8 bytes x this x training pixels x the
#: input pixels one training pixel overlaps).
_REBIN_BLOCK = 256
_TRAINSET_KEYS = (
    "wavelength_aa",
    "filters",
    "age_bin_edges_yr",
    "bin_age_yr",
    "logzsol_range",
    "norm_window_aa",
    "emission_mask_halfwidth_kms",
)


#: The catalog of the models committed with the project (``models/catalog.yaml`` of this checkout).
CATALOG = Path(__file__).resolve().parents[2] / "models" / "catalog.yaml"


def load_predictor(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    device: str | torch.device | None = None,
    sha256: str | None = None,
    *,
    int8: bool = False,
    precision: str = "auto",
    catalog: str | os.PathLike | None = None,
) -> Predictor | EnsemblePredictor:
    """The predictor of a model file (``model.pt`` written by the train stage), of an ensemble
    file (written by ``sfh-pipeline combine-ensemble``), of a model of the catalog, or of several
    model files answering together.

    Parameters
    ----------
    path : path-like, str or sequence of path-like
        A model file: a :class:`Predictor`. An ensemble file: an :class:`EnsemblePredictor`
        with the calibration stored in it. The name of a model of the catalog (e.g.
        ``"reference"``; a name that is not also an existing path): its file, relative to the
        catalog, always checked against the catalog's sha256. A list of model files of one
        training set: an :class:`EnsemblePredictor` without calibration (the members'
        errors in quadrature with their spread, scale 1; :mod:`sfh_pipeline.ensemble`).
    device : str or torch.device, optional
        Where the networks run; default :func:`sfh_pipeline.model.pick_device` (CUDA,
        then Apple MPS, then CPU).
    sha256 : str, optional
        The file's expected SHA-256 (hex), e.g. from the model card of a committed model
        (``models/<name>/README.md``); the file is refused when it differs. Not for a list of
        files.
    int8 : bool
        Run the networks' dense (Linear) layers in int8 on the CPU (PyTorch dynamic
        quantisation through fbgemm): several times faster for a network with a linear front
        end, at a cost in accuracy measured in docs/pipeline.md.
    precision : {"auto", "float32", "bf16"}
        The arithmetic of the networks (:func:`resolve_precision`). ``"auto"``: bfloat16 under
        autocast on a CPU with bfloat16 instructions (1.6 times faster for the reference network,
        answers moved by 0.005 dex in median; bench/results/inference_speed_reference.json),
        else float32.
    catalog : path-like, optional
        The catalog that names models (default :data:`CATALOG`).

    Raises
    ------
    ValueError
        If the file is missing, differs from ``sha256`` (or the catalog's), is not a model file,
        its weights do not fit the architecture it records (e.g. written by another version of
        the code), or files of a list were trained on different training sets; the message
        names the file.
    """
    from .model import ENSEMBLE_FORMAT, read_model_payload

    if isinstance(path, (list, tuple)):
        if sha256 is not None:
            raise ValueError("sha256 checks one file; for a list of member files verify each with verify_model_file")
        return EnsemblePredictor.of_member_files(path, device=device, int8=int8, precision=precision)
    path = Path(path) if Path(path).exists() else catalog_model(path, catalog, sha256)[0]
    if sha256 is not None:
        verify_model_file(path, sha256)
    try:
        payload = read_model_payload(path)
    except ValueError as err:
        raise ValueError(f"model file {path}: {err}" if str(path) not in str(err) else str(err)) from err
    if payload.get("format") == ENSEMBLE_FORMAT:
        return EnsemblePredictor(path, payload, device=device, int8=int8, precision=precision)
    return Predictor(path, device=device, int8=int8, precision=precision, payload=payload)


def catalog_model(
    name: str | os.PathLike, catalog: str | os.PathLike | None = None, sha256: str | None = None
) -> tuple[Path, dict[str, Any]]:
    """The file of the model ``name`` of the catalog (default :data:`CATALOG`), its path
    relative to the catalog's folder, verified against the catalog's sha256 (and ``sha256`` if
    given: both must agree); and its catalog entry. ValueError for a name the catalog lacks,
    naming the catalog's models (or, for a name that looks like a path, that the file does not exist)."""
    import yaml

    catalog = Path(catalog) if catalog is not None else CATALOG
    entries = (yaml.safe_load(catalog.read_text()) if catalog.is_file() else None) or {}
    name = str(name)
    if name not in entries:
        if os.sep in name or Path(name).suffix:
            raise ValueError(f"model file {name} does not exist: run the train stage first")
        raise ValueError(f"{name!r} is neither a model file nor a model of {catalog}; it has {sorted(entries)}")
    entry = entries[name]
    if sha256 is not None and sha256.lower() != entry["sha256"].lower():
        raise ValueError(f"model {name!r} of {catalog} has sha256 {entry['sha256']}, not {sha256}")
    path = catalog.parent / entry["path"]
    verify_model_file(path, entry["sha256"])
    return path, entry


def verify_model_file(path: str | os.PathLike, sha256: str) -> None:
    """Raise ValueError unless the model file at ``path`` exists and has SHA-256 ``sha256`` (hex)."""
    from ..core.products import sha256_of

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file {path} does not exist")
    found = sha256_of(path)
    if found != sha256.lower():
        hint = ""
        if path.stat().st_size < 1024:
            hint = " (a file this small is likely a git-lfs pointer: run `git lfs pull`)"
        raise ValueError(
            f"model file {path} has sha256 {found}, expected {sha256}{hint}: it is not the model the "
            "configuration names (edited, truncated or replaced); restore it (git checkout) or correct the sha256"
        )


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the OS (process-wide).

    CPU inference allocates and frees activations of a few MB per batch; with glibc's defaults
    each comes from fresh pages (~6,600 page faults per 1,000 spectra with the fast network),
    which costs ~25 % of the throughput. PyTorch's CPU performance guide gets the same by
    preloading jemalloc or tcmalloc; this needs no install. Blocks above 64 MiB are still
    mapped and unmapped as usual, and up to 512 MiB of freed heap is kept. Returns whether it
    applied (False where ``mallopt`` is unavailable, e.g. macOS).
    """
    global _MEMORY_REUSE
    if _MEMORY_REUSE is None:
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            _MEMORY_REUSE = False
        else:
            m_trim_threshold, m_mmap_threshold = -1, -3  # glibc malloc.h
            _MEMORY_REUSE = bool(mallopt(m_mmap_threshold, 64 << 20)) and bool(mallopt(m_trim_threshold, 512 << 20))
    return _MEMORY_REUSE


_MEMORY_REUSE: bool | None = None


def rebin_matrix(edges_in: np.ndarray, edges_out: np.ndarray) -> scipy.sparse.csr_matrix:
    """Sparse (n_out, n_in) matrix of the overlaps (A) of output pixels with input pixels.

    Both edge arrays must increase. Overlaps smaller than ``_OVERLAP_TOLERANCE`` of the
    output pixel width are dropped.
    """
    n_out = edges_out.size - 1
    lo = np.clip(np.searchsorted(edges_in, edges_out[:-1], side="right") - 1, 0, edges_in.size - 2)
    hi = np.clip(np.searchsorted(edges_in, edges_out[1:], side="left"), lo + 1, edges_in.size - 1)
    counts = hi - lo
    rows = np.repeat(np.arange(n_out), counts)
    cols = lo[rows] + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    overlap = np.minimum(edges_out[rows + 1], edges_in[cols + 1]) - np.maximum(edges_out[rows], edges_in[cols])
    keep = overlap > _OVERLAP_TOLERANCE * (edges_out[rows + 1] - edges_out[rows])
    return scipy.sparse.csr_matrix((overlap[keep], (rows[keep], cols[keep])), shape=(n_out, edges_in.size - 1))


def rebin_overlaps(edges_in: np.ndarray, edges_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The entries of :func:`rebin_matrix` for m input grids at once, one per row of ``edges_in``
    (m, n_in + 1), each increasing, as dense arrays (m, n_out, k): ``cols``, the input pixels
    each output pixel overlaps, in increasing order, and ``overlap``, the overlaps (A; 0 for
    padding and for the overlaps rebin_matrix drops). Summing ``overlap[..., j] * x[cols[..., j]]``
    for j = 0, 1, ... onto zeros is, to the bit, ``rebin_matrix(edges_in[i], edges_out) @ x``
    (whose sparse product adds the same terms in the same order)."""
    m, n_in = edges_in.shape[0], edges_in.shape[1] - 1
    lo = np.empty((m, edges_out.size - 1), dtype=np.int64)
    hi = np.empty_like(lo)
    for i in range(m):
        lo[i] = np.searchsorted(edges_in[i], edges_out[:-1], side="right")
        hi[i] = np.searchsorted(edges_in[i], edges_out[1:], side="left")
    lo = np.clip(lo - 1, 0, n_in - 1)
    hi = np.clip(hi, lo + 1, n_in)
    cols = lo[..., None] + np.arange(int((hi - lo).max()))
    inside = cols < hi[..., None]
    cols = np.minimum(cols, n_in - 1)
    flat = cols.reshape(m, -1)
    left = np.take_along_axis(edges_in, flat, axis=1).reshape(cols.shape)
    right = np.take_along_axis(edges_in, flat + 1, axis=1).reshape(cols.shape)
    overlap = np.minimum(edges_out[1:, None], right) - np.maximum(edges_out[:-1, None], left)
    keep = inside & (overlap > _OVERLAP_TOLERANCE * (edges_out[1:] - edges_out[:-1])[:, None])
    return cols, np.where(keep, overlap, 0.0)


def _range(lo: float, hi: float) -> str:
    return f"{lo:.1f}-{hi:.1f} A"


PRECISIONS = ("auto", "float32", "bf16")


@functools.lru_cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (x86 AVX512-BF16 or AMX; read from
    /proc/cpuinfo, so False where that file is absent)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return False
    flags = set(cpuinfo.read_text().split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device: torch.device, int8: bool = False) -> str:
    """``"float32"`` or ``"bf16"``: what ``precision`` (one of :data:`PRECISIONS`) means for a
    network on ``device``. ``"auto"`` is bf16 on a CPU with bfloat16 instructions
    (:func:`cpu_has_bf16`) and float32 elsewhere, and always with ``int8`` (whose quantised
    layers take float32 inputs)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cpu" and not int8 and cpu_has_bf16() else "float32"
    if precision == "bf16" and int8:
        raise ValueError("int8 and bf16 do not combine: the quantised layers take float32 inputs")
    return precision


def _autocast(net: torch.nn.Module, dtype: torch.dtype, device_type: str) -> torch.nn.Module:
    """``net`` run under autocast to ``dtype`` on ``device_type``, its outputs in float32."""
    import torch

    class Autocast(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.config = getattr(net, "config", None)  # read through predictor.net like the network's

        def forward(self, spectrum: torch.Tensor, photometry: torch.Tensor) -> dict[str, torch.Tensor]:
            with torch.autocast(device_type, dtype=dtype):
                out = self.net(spectrum, photometry)
            return {k: v.float() for k, v in out.items()}

    return Autocast().eval()


def _int8_dense_layers(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``net`` with its Linear layers dynamically quantised to int8 (CPU only); those inside the
    transformer encoder stay float (its fused fast path reads their weights as tensors)."""
    import warnings

    import torch

    if device.type != "cpu":
        raise ValueError(f"int8 inference runs on the CPU only, not on {device}")
    with warnings.catch_warnings():  # torch.ao's deprecation notice: the API still works in 2.x
        warnings.simplefilter("ignore")
        dense = {
            name for name, m in net.named_modules() if type(m) is torch.nn.Linear and not name.startswith("encoder.")
        }
        return torch.ao.quantization.quantize_dynamic(net, dense, dtype=torch.qint8)


class _ObservedSpectra:
    """What every predictor does with observed spectra, given its own :meth:`prepare`,
    :meth:`refine_velocity` and :meth:`predict_normalised`: :meth:`predict` and
    :meth:`predict_prepared` (shared by :class:`Predictor` and :class:`EnsemblePredictor`)."""

    def predict(
        self,
        wave: np.ndarray,
        flux: np.ndarray,
        error: np.ndarray,
        photometry: dict[str, tuple[Any, Any]] | None = None,
        z: float | np.ndarray = 0.0,
        mask: np.ndarray | None = None,
        batch_size: int = 128,
        velocity_range_kms: float | None = DEFAULT_VELOCITY_RANGE_KMS,
    ) -> dict[str, Any]:
        """SFH, metallicity history and summary quantities of observed spectra.

        The redshift is not trusted blindly: the stellar velocity is first refined within
        ``velocity_range_kms`` of ``z`` (:meth:`refine_velocity`) and the spectrum is read in that
        rest frame; ``velocity_kms`` in the result is the velocity used. A spectrum whose
        velocity cannot be found in the range gets NaN results and ``velocity_ok`` False (widen
        the range or correct z). ``velocity_range_kms=0`` (or None) uses ``z`` as given.

        Parameters
        ----------
        wave : numpy.ndarray
            Observed-frame wavelengths (A) of the pixel centres, (n_wave_in,), strictly
            increasing; any sampling.
        flux, error : numpy.ndarray
            f_lambda and its 1-sigma error in any (common) units, (n_wave_in,) or
            (n, n_wave_in). NaN flux/error or error 0 marks a bad pixel.
        photometry : dict, optional
            ``{filter_key: (flux, error)}``: photon-weighted mean f_lambda in the band, in the
            units of ``flux`` (numbers, or arrays (n,) for a stack; NaN = band absent). Bands
            not given are absent (the model was trained with band dropout).
        z : float or numpy.ndarray
            Redshift (one, or one per spectrum).
        mask : numpy.ndarray, optional
            Non-zero = bad pixel; shape of ``flux`` or ``(n_wave_in,)``.

        Returns
        -------
        dict
            ``sfh`` (n, n_bins) mass fractions (sum 1), ``logzsol`` (n, n_bins), for each of
            ``lw_age, mw_age, lw_logz, mw_logz`` the value, ``<key>_err`` (calibrated
            1-sigma, widened by the OOD score) and ``<key>_epistemic`` (dex: the spread of an
            ensemble's members, 0 for a single model), ``sfh_err`` and ``logzsol_err`` (n, n_bins:
            calibrated 68 % half-widths of every bin's mass fraction and log Z), ``t50``, ``t90``
            (log10 lookback time, yr, by which 50 % / 90 % of the mass had formed) with
            ``t50_err``, ``t90_err`` (dex), ``ood`` (see :meth:`predict_normalised`),
            ``norm`` (n,) in the input units, ``velocity_kms`` and ``velocity_ok`` (the
            velocity used, see above), and ``age_bin_edges_yr``. For a 1-D input the leading
            axis is dropped (scalars and (n_bins,) arrays).
        """
        slack = float(velocity_range_kms or 0.0)
        # prepared once at the given z first: bad input is reported before any refinement
        prepared = self.prepare(wave, flux, error, photometry=photometry, z=z, mask=mask, coverage_slack_kms=slack)
        n = prepared["flux"].shape[0]
        z_given = np.broadcast_to(np.asarray(z, dtype=float), (n,))
        found = np.ones(n, dtype=bool)
        z_used = z_given
        if velocity_range_kms:
            velocity, _ = self.refine_velocity(wave, flux, error, z_given, velocity_range_kms, mask)
            found = np.isfinite(velocity)
            z_used = np.where(found, velocity_to_redshift(np.where(found, velocity, 0.0)), z_given)
            prepared = self.prepare(
                wave, flux, error, photometry=photometry, z=z_used, mask=mask, coverage_slack_kms=slack
            )
        result = self.predict_prepared(prepared, batch_size=batch_size)
        result["norm"] = prepared["norm"]
        result["velocity_kms"] = np.where(found, redshift_to_velocity(z_used), np.nan)
        result["velocity_ok"] = found
        if not found.all():
            for key, value in result.items():
                if key not in ("age_bin_edges_yr", "norm", "velocity_kms", "velocity_ok"):
                    value[~found] = np.nan
        if np.ndim(flux) == 1:
            result = {k: (v if k == "age_bin_edges_yr" else v[0]) for k, v in result.items()}
        return result

    def predict_prepared(self, prepared: dict[str, np.ndarray], batch_size: int = 128) -> dict[str, np.ndarray]:
        """:meth:`predict_normalised` of the output of :meth:`prepare`."""
        keys = ("flux", "error", "mask", "phot", "phot_error", "present")
        return self.predict_normalised(*(prepared[k] for k in keys), batch_size=batch_size)


class Predictor(_ObservedSpectra):
    """A trained model with the preprocessing of its training set (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike,
        device: str | torch.device | None = None,
        *,
        int8: bool = False,
        precision: str = "auto",
        payload: dict[str, Any] | None = None,
    ) -> None:
        """The model file at ``path``; or, with ``payload``, those contents (a member of an
        ensemble file, whose ``path`` then names the member in messages)."""
        import torch

        from ..core.spectral import EMISSION_LINES_AA, MASK_EMISSION, emission_line_mask
        from .model import SUMMARY_KEYS, load_model_file, network_of_payload, pick_device

        self.path = Path(path)
        try:
            if payload is None:
                net, payload = load_model_file(self.path, map_location="cpu")
            else:
                net = network_of_payload(payload, self.path)
        except ValueError as err:
            message = str(err)
            if str(self.path) not in message:
                message = f"model file {self.path}: {message}"
            if ("architecture" in message or "model setting" in message) and "retrain" not in message:
                message += (
                    "; the file was written by another version of the code (or edited): retrain the "
                    "model with this version, or predict with the version that wrote it"
                )
            raise ValueError(message) from err
        except RuntimeError as err:  # size mismatches of load_state_dict
            detail = " ".join(line.strip() for line in str(err).splitlines()[:2])
            raise ValueError(
                f"model file {self.path} holds weights of another architecture than the one recorded in it "
                f"(model_config); it was written by another version of the code or edited: retrain the model "
                f"with this version ({detail})"
            ) from err
        trainset = payload.get("trainset")
        missing = [k for k in _TRAINSET_KEYS if not isinstance(trainset, dict) or k not in trainset]
        if missing or not isinstance(payload.get("sigma_scale"), dict):
            raise ValueError(
                f"model file {self.path} lacks the training-set metadata needed for prediction "
                f"(missing trainset keys {missing} or sigma_scale); retrain it with this version of the code"
            )
        config = net.config
        self._wave = np.asarray(trainset["wavelength_aa"], dtype=float)
        self._filters = tuple(str(f) for f in trainset["filters"])
        self._edges = np.asarray(trainset["age_bin_edges_yr"], dtype=float)
        self._bin_age = np.asarray(trainset["bin_age_yr"], dtype=float)
        sizes = {
            "n_wave": (config.n_wave, self._wave.size),
            "n_filters": (config.n_filters, len(self._filters)),
            "n_bins": (config.n_bins, self._edges.size - 1),
        }
        bad = {k: v for k, v in sizes.items() if v[0] != v[1]}
        if bad:
            raise ValueError(
                f"model file {self.path}: network sizes {bad} (network, training set) do not match "
                "its training-set metadata; the file is corrupt: retrain the model"
            )
        for array in (self._wave, self._edges, self._bin_age):
            array.flags.writeable = False
        self.logzsol_range = tuple(float(v) for v in trainset["logzsol_range"])
        self.norm_window_aa = tuple(float(v) for v in trainset["norm_window_aa"])
        self.emission_mask_halfwidth_kms = float(trainset["emission_mask_halfwidth_kms"])
        self.sigma_scale = {k: float(payload["sigma_scale"].get(k, 1.0)) for k in SUMMARY_KEYS}
        self.name = payload.get("name", self.path.stem)
        #: The SSP library the training set was made with (name, sha256, source, ...).
        self.ssp = dict(trainset.get("ssp") or {})
        self.model_config = config
        self.device = torch.device(device) if device is not None else pick_device()
        self.net = net.to(self.device).eval()
        if int8:
            self.net = _int8_dense_layers(self.net, self.device)
        #: "float32" or "bf16": the arithmetic the network runs in (:func:`resolve_precision`).
        self.precision = resolve_precision(precision, self.device, int8)
        if self.precision == "bf16":
            self.net = _autocast(self.net, torch.bfloat16, self.device.type)
        if self.device.type == "cpu":
            reuse_freed_memory()
        self._edges_out = pixel_edges(self._wave)
        lines = trainset.get("emission_lines_aa", EMISSION_LINES_AA)
        if dict(lines) == EMISSION_LINES_AA:
            self._emission = emission_line_mask(self._wave, self.emission_mask_halfwidth_kms)
        else:  # a model trained with another line list: the same rule with the file's lines
            centres = np.array([float(v) for v in dict(lines).values()])[None, :]
            self._emission = np.any(
                np.abs(self._wave[:, None] / centres - 1) * C_KMS <= self.emission_mask_halfwidth_kms, axis=1
            )
        self._emission_bit = MASK_EMISSION
        ood = payload.get("ood_reference")
        self._ood = (
            None
            if ood is None
            else (np.asarray(ood["mean"]), np.asarray(ood["whitening"]), float(ood["distance_quantile"]))
        )
        calibration = payload.get("quantile_calibration")
        self._quantile_widening = (
            None
            if calibration is None
            else {level: np.asarray(calibration[level], dtype=float) for level in ("68", "95")}
        )
        template = payload.get("velocity_template")
        self._velocity_template = None if template is None else np.asarray(template, dtype=float)
        self._window = (self._wave >= self.norm_window_aa[0]) & (self._wave <= self.norm_window_aa[1])
        if not self._window.any():
            raise ValueError(
                f"model file {self.path}: normalisation window {self.norm_window_aa} lies outside "
                "the training grid; the file is corrupt: retrain the model"
            )

    # ------------------------------------------------------------------ metadata

    @property
    def wavelength_aa(self) -> np.ndarray:
        """Rest-frame training grid (pixel centres), A."""
        return self._wave

    @property
    def can_refine_velocity(self) -> bool:
        """Whether the model file carries the template :meth:`refine_velocity` needs."""
        return self._velocity_template is not None

    @property
    def filters(self) -> tuple[str, ...]:
        """Keys of the HST bands the model knows, in the network's order."""
        return self._filters

    @property
    def age_bin_edges_yr(self) -> np.ndarray:
        return self._edges

    @property
    def bin_age_yr(self) -> np.ndarray:
        return self._bin_age

    def __repr__(self) -> str:
        return (
            f"Predictor({self.name!r}, {self.path}, {self._wave[0]:.1f}-{self._wave[-1]:.1f} A rest, "
            f"{len(self._filters)} bands, device={self.device})"
        )

    # ------------------------------------------------------------------ observed -> training grid

    def prepare(
        self,
        wave: np.ndarray,
        flux: np.ndarray,
        error: np.ndarray,
        photometry: dict[str, tuple[Any, Any]] | None = None,
        z: float | np.ndarray = 0.0,
        mask: np.ndarray | None = None,
        coverage_slack_kms: float = 0.0,
    ) -> dict[str, np.ndarray]:
        """Observed spectra (and fluxes) -> normalised arrays on the training grid.

        Arguments as :meth:`predict`; the input may miss up to ``coverage_slack_kms`` of the
        window at either end (those pixels are masked), e.g. after a velocity refinement moved
        the rest frame. Returns 2-D arrays (leading axis n): ``flux``,
        ``error``, ``mask`` (uint8; bit 1 emission line, bit 4 no valid input), ``phot``,
        ``phot_error``, ``present`` (bool), and ``norm`` (n,) in the input units.
        """
        wave, flux2, error2, user_bad, z_arr = self._checked_inputs(wave, flux, error, mask, z)
        n = flux2.shape[0]
        phot, phot_err, present = self._photometry(photometry, n, np.ndim(flux) == 1)
        out_flux, out_var, out_bad = self._rebinned(wave, flux2, error2, user_bad, z_arr, coverage_slack_kms)
        mask_out, norm = self._mask_and_norm(out_flux, out_bad)
        out_flux = np.where(out_bad, np.nan, out_flux)
        out_err = np.where(out_bad, np.nan, np.sqrt(out_var))
        return {
            "flux": out_flux / norm[:, None],
            "error": out_err / norm[:, None],
            "mask": mask_out,
            "phot": phot / norm[:, None],
            "phot_error": phot_err / norm[:, None],
            "present": present,
            "norm": norm,
        }

    @staticmethod
    def _checked_inputs(
        wave: np.ndarray, flux: np.ndarray, error: np.ndarray, mask: np.ndarray | None, z: float | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The arguments of :meth:`prepare` checked and made 2-D: wave (A), flux, error, the
        user's bad pixels (bool) and one redshift per spectrum. ValueError names what is wrong."""
        wave = np.asarray(wave, dtype=float)
        if wave.ndim != 1 or wave.size < 2:
            raise ValueError(f"wave must be a 1-D array of at least 2 wavelengths (A), got shape {wave.shape}")
        if not np.all(np.isfinite(wave)):
            raise ValueError("wave contains NaN or infinite values; give the wavelength of every pixel (A)")
        if np.any(np.diff(wave) <= 0):
            raise ValueError(
                "wave must be strictly increasing (A); sort the pixels (and flux, error, mask) by wavelength"
            )
        flux = np.asarray(flux, dtype=float)
        error = np.asarray(error, dtype=float)
        if flux.ndim not in (1, 2):
            raise ValueError(f"flux must have shape (n_wave,) or (n_spectra, n_wave), got {flux.shape}")
        if flux.shape[-1] != wave.size:
            raise ValueError(
                f"flux has {flux.shape[-1]} wavelength pixels but wave has {wave.size}: "
                "give flux (and error, mask) on the wave grid, wavelength along the last axis"
            )
        if error.shape != flux.shape:
            raise ValueError(f"error has shape {error.shape} but flux has {flux.shape}; give one error per flux pixel")
        flux2, error2 = np.atleast_2d(flux), np.atleast_2d(error)
        n = flux2.shape[0]
        if n == 0:
            raise ValueError("no spectra given (flux has 0 rows)")
        if mask is None:
            user_bad = np.zeros(flux2.shape, dtype=bool)
        else:
            mask = np.asarray(mask)
            if mask.shape not in (flux.shape, (wave.size,)):
                raise ValueError(
                    f"mask has shape {mask.shape}; give it the shape of flux {flux.shape} "
                    f"or of wave ({wave.size},), non-zero = bad pixel"
                )
            user_bad = np.broadcast_to(mask != 0, flux2.shape)
        negative = np.isfinite(error2) & (error2 < 0)
        if negative.any():
            rows, cols = np.nonzero(negative)
            raise ValueError(
                f"error has {negative.sum()} negative value(s) (first: spectrum {rows[0]}, {wave[cols[0]]:.2f} A); "
                "errors must be 1-sigma uncertainties >= 0 (not variances or signed values); "
                "mark unusable pixels with NaN or the mask instead"
            )

        z_arr = np.asarray(z, dtype=float)
        if z_arr.ndim > 1 or (z_arr.ndim == 1 and z_arr.size != n):
            raise ValueError(f"z must be a number or one per spectrum ({n},), got shape {z_arr.shape}")
        z_arr = np.broadcast_to(z_arr, (n,))
        if not np.all(np.isfinite(z_arr)) or np.any(z_arr <= -1):
            raise ValueError(f"redshift z must be finite and > -1, got {z}")

        return wave, flux2, error2, user_bad, z_arr

    def _rebinned(
        self,
        wave: np.ndarray,
        flux2: np.ndarray,
        error2: np.ndarray,
        user_bad: np.ndarray,
        z_arr: np.ndarray,
        coverage_slack_kms: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flux, variance and bad-pixel flags on the training grid (rest frame), flux-conserving
        over the good input pixels; a training pixel is bad when more than
        ``MAX_BAD_FRACTION`` of its coverage is bad input."""
        n = flux2.shape[0]
        good_in = np.isfinite(flux2) & np.isfinite(error2) & (error2 > 0) & ~user_bad
        edges_in_obs = pixel_edges(wave)
        values, which = np.unique(z_arr, return_inverse=True)
        for j, zi in enumerate(values):
            self._check_coverage(edges_in_obs / (1.0 + zi), zi, np.flatnonzero(which == j), n, coverage_slack_kms)
        out_flux = np.empty((n, self._wave.size))
        out_var = np.empty((n, self._wave.size))
        out_bad = np.empty((n, self._wave.size), dtype=bool)
        # every spectrum at its own redshift, a block at a time: rebin_matrix's sparse products
        # (one per redshift: a tile's bins each have their own velocity) done term by term
        for start in range(0, n, _REBIN_BLOCK):  # bounded memory for large stacks
            block = slice(start, min(n, start + _REBIN_BLOCK))
            cols, overlap = rebin_overlaps(edges_in_obs[None, :] / (1.0 + z_arr[block, None]), self._edges_out)
            good = good_in[block]
            inputs = (good.astype(float), np.where(good, flux2[block], 0.0), np.where(good, error2[block], 0.0) ** 2)
            cover, good_cover, f, v = (np.zeros(cols.shape[:2]) for _ in range(4))
            for j in range(cols.shape[2]):
                w, at = overlap[..., j], cols[..., j]
                cover += w
                good_cover += w * np.take_along_axis(inputs[0], at, axis=1)
                f += w * np.take_along_axis(inputs[1], at, axis=1)
                v += (w * w) * np.take_along_axis(inputs[2], at, axis=1)
            bad = ~(good_cover > (1.0 - MAX_BAD_FRACTION) * cover)
            good_cover = np.where(bad, 1.0, good_cover)
            out_flux[block] = f / good_cover
            out_var[block] = v / good_cover**2
            out_bad[block] = bad

        return out_flux, out_var, out_bad

    def _mask_and_norm(self, out_flux: np.ndarray, out_bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The training-style mask (emission lines, bad input) and each spectrum's mean flux in
        the normalisation window; ValueError for spectra that cannot be normalised as in training."""
        n = out_flux.shape[0]
        mask_out = np.where(self._emission, self._emission_bit, 0)[None, :] | np.where(out_bad, MASK_BAD_INPUT, 0)
        mask_out = mask_out.astype(np.uint8)
        valid = mask_out == 0
        empty = ~valid.any(axis=1)
        if empty.any():
            raise ValueError(
                f"{self._which(empty, n)}: no valid pixel in the training window "
                f"{_range(self._wave[0], self._wave[-1])} (rest frame): all NaN, masked, zero-error or on emission "
                "lines; check flux, error and mask, or drop those spectra"
            )
        in_window = valid & self._window[None, :]
        no_norm = ~in_window.any(axis=1)
        if no_norm.any():
            raise ValueError(
                f"{self._which(no_norm, n)}: no valid pixel in the normalisation window "
                f"{_range(*self.norm_window_aa)} (rest frame), so it cannot be normalised as in training; "
                "unmask that range or drop those spectra"
            )
        norm = np.where(in_window, out_flux, 0.0).sum(1) / in_window.sum(1)
        if np.any(norm <= 0):
            raise ValueError(
                f"{self._which(norm <= 0, n)}: mean flux <= 0 in the normalisation window "
                f"{_range(*self.norm_window_aa)} (rest frame; norm = {norm[norm <= 0][:3].tolist()}); the model needs "
                "a positive continuum there: check sky/background subtraction, units and z, or bin to higher S/N"
            )
        return mask_out, norm

    @staticmethod
    def _which(flags: np.ndarray, n: int) -> str:
        """ "the spectrum", or "spectra [i, j, ...] (k of n)" of a stack."""
        idx = np.nonzero(flags)[0]
        if n == 1:
            return "the spectrum"
        shown = ", ".join(str(i) for i in idx[:10])
        return f"spectra [{shown}{', ...' if idx.size > 10 else ''}] ({idx.size} of {n})"

    def _check_coverage(self, edges_in: np.ndarray, z: float, rows: np.ndarray, n: int, slack_kms: float = 0.0) -> None:
        """The input (rest frame) must reach the centres of the first and last training pixels
        (to within ``slack_kms``: the end pixels it misses are then masked)."""
        need_lo, need_hi = float(self._wave[0]), float(self._wave[-1])
        have_lo, have_hi = float(edges_in[0]), float(edges_in[-1])
        missing = []
        if have_lo > need_lo * np.exp(slack_kms / C_KMS):
            missing.append(
                f"blue end {_range(need_lo, have_lo)} rest = {_range(need_lo * (1 + z), have_lo * (1 + z))} observed"
            )
        if have_hi < need_hi * np.exp(-slack_kms / C_KMS):
            missing.append(
                f"red end {_range(have_hi, need_hi)} rest = {_range(have_hi * (1 + z), need_hi * (1 + z))} observed"
            )
        if have_lo >= need_hi or have_hi <= need_lo:
            missing = [f"all of it: the input covers {_range(have_lo, have_hi)} rest"]
        if missing:
            which = self._which(np.isin(np.arange(n), rows), n)
            raise ValueError(
                f"wavelength coverage of {which} at z={z:g} does not reach the training window "
                f"{_range(need_lo, need_hi)} rest frame ({_range(need_lo * (1 + z), need_hi * (1 + z))} observed): "
                f"missing {'; '.join(missing)}. Give a spectrum covering the window, or check z and that wave is "
                "in Angstrom (observed frame)"
            )

    def _photometry(
        self, photometry: dict[str, tuple[Any, Any]] | None, n: int, single: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = len(self._filters)
        phot = np.zeros((n, k))
        err = np.zeros((n, k))
        present = np.zeros((n, k), dtype=bool)
        if photometry is None:
            return phot, err, present
        if not isinstance(photometry, dict):
            raise ValueError(
                "photometry must be a dict {filter_key: (flux, error)} in the spectrum's f_lambda units, or None"
            )
        for key, value in photometry.items():
            if key not in self._filters:
                raise ValueError(f"unknown filter key {key!r} in photometry; this model knows {list(self._filters)}")
            try:
                f, e = value
            except (TypeError, ValueError):
                raise ValueError(f"photometry[{key!r}] must be a pair (flux, error), got {value!r}") from None
            f = np.asarray(f, dtype=float)
            e = np.asarray(e, dtype=float)
            allowed = [(), (n,)]
            if f.shape not in allowed or e.shape not in allowed:
                want = "numbers" if single else f"numbers or arrays of shape ({n},), one per spectrum"
                raise ValueError(f"photometry[{key!r}] flux/error have shapes {f.shape}/{e.shape}; give {want}")
            if np.any(np.isfinite(e) & (e < 0)):
                raise ValueError(f"photometry[{key!r}] has a negative error; errors are 1-sigma uncertainties >= 0")
            j = self._filters.index(key)
            ok = np.broadcast_to(np.isfinite(f) & np.isfinite(e), (n,))
            phot[:, j] = np.where(ok, f, 0.0)
            err[:, j] = np.where(ok, e, 0.0)
            present[:, j] = ok
        return phot, err, present

    # ------------------------------------------------------------------ prediction

    def refine_velocity(
        self,
        wave: np.ndarray,
        flux: np.ndarray,
        error: np.ndarray,
        z: float | np.ndarray = 0.0,
        velocity_range_kms: float = DEFAULT_VELOCITY_RANGE_KMS,
        mask: np.ndarray | None = None,
        template: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stellar line-of-sight velocity (km/s, v = c ln(1 + z)) of each spectrum, searched within
        ``velocity_range_kms`` of the given redshift(s) by cross-correlation with the model's own
        rest-frame template (:func:`sfh_pipeline.kinematics.measure_velocities`; emission lines
        masked). Returns (velocity, error), NaN where no minimum lies inside the range (the true
        velocity is probably outside it) or the spectrum has no absorption-line signal.

        ``template``: (rest-frame wavelength A, flux) of another template to use instead. The
        model's is the median of training spectra that carry random residual velocities, so its
        rest frame is known to about their spread over sqrt(their number) (0.4 km/s for the
        shipped reference model, 3 km/s for the tests' tiny one); velocities that are a product
        (the infer stage's) are measured against one made from the SSP library, at rest exactly.

        Raises ValueError for a model file without a template (written before templates were
        stored) when no ``template`` is given: retrain it, or predict with
        ``velocity_range_kms=0`` to trust ``z`` as given.
        """
        from ..core.kinematics import measure_velocities

        if template is None and self._velocity_template is None:
            raise ValueError(
                f"model file {self.path} has no velocity template (written by an older version); "
                "retrain it, or pass velocity_range_kms=0 to use z as given"
            )
        wave = np.asarray(wave, dtype=float)
        flux2, error2 = np.atleast_2d(np.asarray(flux, dtype=float)), np.atleast_2d(np.asarray(error, dtype=float))
        n = flux2.shape[0]
        z_arr = np.broadcast_to(np.asarray(z, dtype=float), (n,))
        bad = np.zeros(flux2.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask) != 0, flux2.shape)
        steps = np.diff(wave)
        if not np.allclose(steps, steps[0], rtol=1e-6):  # cross-correlation works on a linear grid
            linear = np.linspace(wave[0], wave[-1], wave.size)
            flux2 = np.array([np.interp(linear, wave, f) for f in flux2])
            error2 = np.array([np.interp(linear, wave, e) for e in error2])
            bad = np.array([np.interp(linear, wave, b.astype(float)) > 0 for b in bad])
            wave = linear
        velocity = np.full(n, np.nan)
        velocity_err = np.full(n, np.nan)
        for zi in np.unique(z_arr):
            rows = np.flatnonzero(z_arr == zi)
            v, e = measure_velocities(
                wave,
                flux2[rows],
                error2[rows],
                *((self._wave, self._velocity_template) if template is None else template),
                redshift_to_velocity(zi),
                float(velocity_range_kms),
                bad[rows],
            )
            velocity[rows], velocity_err[rows] = v, e
        return velocity, velocity_err

    def predict_normalised(
        self,
        flux: np.ndarray,
        error: np.ndarray,
        mask: np.ndarray | None,
        phot: np.ndarray | None = None,
        phot_error: np.ndarray | None = None,
        present: np.ndarray | None = None,
        batch_size: int = 128,
    ) -> dict[str, np.ndarray]:
        """Predictions for spectra already on the training grid and normalised.

        ``flux``, ``error``, ``mask`` (n, n_wave) as stored in the training set (mask
        non-zero = ignore; the emission-line mask is added again, which changes nothing for
        data prepared as in training); ``phot``, ``phot_error`` (n, n_filters) divided by the
        same norm, or None (no bands); ``present`` (n, n_filters) bool, default: every band
        with finite flux and error. Returns the keys of :meth:`predict` except ``norm`` and
        the velocity, always with the leading axis n.

        ``ood`` is the out-of-distribution score of each spectrum: the Mahalanobis distance of
        its spectral embedding (the network's features of the spectrum, before the HST fluxes
        join) from those of held-out training-set spectra, divided by their 99th percentile
        (:func:`sfh_pipeline.training.ood_reference`). About 1 % of training-like spectra have
        ``ood`` > 1; a spectrum unlike anything in training has ``ood`` >> 1, and its ``_err``
        values are multiplied by ``max(1, ood)``: the calibration of the errors holds only
        where the spectrum resembles the training set. NaN for model files without the
        reference (errors then unchanged). ``<key>_epistemic`` is 0: one network has no spread
        of members (an :class:`EnsemblePredictor` gives it).
        """
        inputs = self.normalised_inputs(flux, error, mask, phot, phot_error, present, batch_size)
        (raw,) = network_outputs([self], *inputs, batch_size=batch_size)
        return published(self.answer(raw), self._edges)

    def normalised_inputs(
        self,
        flux: np.ndarray,
        error: np.ndarray,
        mask: np.ndarray | None,
        phot: np.ndarray | None = None,
        phot_error: np.ndarray | None = None,
        present: np.ndarray | None = None,
        batch_size: int = 128,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The arguments of :meth:`predict_normalised` checked: flux, error, the pixels to
        ignore (bool, the emission-line mask added) and the encoded photometry; ValueError
        names what is wrong."""
        from .model import encode_photometry

        n_wave, k = self._wave.size, len(self._filters)
        flux = np.asarray(flux)
        error = np.asarray(error)
        if flux.ndim != 2 or flux.shape[1] != n_wave:
            raise ValueError(
                f"flux must have shape (n, {n_wave}) on the training grid, got {flux.shape}; "
                "use predict() for spectra on other grids"
            )
        n = flux.shape[0]
        if error.shape != flux.shape:
            raise ValueError(f"error has shape {error.shape} but flux has {flux.shape}")
        mask = np.zeros(flux.shape, dtype=np.uint8) if mask is None else np.asarray(mask)
        if mask.shape != flux.shape:
            raise ValueError(f"mask has shape {mask.shape} but flux has {flux.shape}")
        mask = (mask != 0) | self._emission[None, :]
        if phot is None:
            if phot_error is not None or (present is not None and np.any(present)):
                raise ValueError("phot_error/present given without phot")
            phot = np.zeros((n, k), dtype=np.float32)
            phot_error = np.zeros((n, k), dtype=np.float32)
            present = np.zeros((n, k), dtype=bool)
        else:
            phot = np.asarray(phot)
            if phot_error is None:
                raise ValueError("phot given without phot_error; give both (normalised like the spectrum)")
            phot_error = np.asarray(phot_error)
            if phot.shape != (n, k) or phot_error.shape != (n, k):
                raise ValueError(
                    f"phot and phot_error must have shape ({n}, {k}) (bands {list(self._filters)}), "
                    f"got {phot.shape} and {phot_error.shape}"
                )
            present = (np.isfinite(phot) & np.isfinite(phot_error)) if present is None else np.asarray(present, bool)
            if present.shape != (n, k):
                raise ValueError(f"present must have shape ({n}, {k}), got {present.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return flux, error, mask, encode_photometry(phot, phot_error, present)

    def answer(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This model's calibrated answer from its network's outputs (:func:`network_outputs`),
        before the OOD widening: ``sfh``, ``logzsol`` (n, n_bins), ``ood`` (n,), the four
        summaries and their calibrated 1-sigma ``<key>_err`` (dex), and the posterior targets
        (SFH bins, log Z bins, T50, T90: n_targets = 2 n_bins + 2) as ``posterior_centre`` (the
        point estimates of the bins, the medians of T50/T90, log yr) with
        ``posterior_halfwidth_68`` and ``posterior_halfwidth_95`` (n, n_targets): the calibrated
        half-widths of the 68 % and 95 % intervals, NaN for a model without posterior heads
        (whose T50/T90 come from its SFH)."""
        from ..synth.priors import formation_times
        from .model import FORMATION_FRACTIONS, SUMMARY_KEYS

        n, n_bins = raw["sfh"].shape
        if self._ood is None:
            ood = np.full(n, np.nan)
        else:
            mean, whitening, scale = self._ood
            ood = np.linalg.norm((raw["features"] - mean) @ whitening.T, axis=1) / scale
        out: dict[str, np.ndarray] = {"sfh": raw["sfh"], "logzsol": raw["logz"], "ood": ood}
        for i, key in enumerate(SUMMARY_KEYS):
            out[key] = raw["summary"][:, i]
            out[f"{key}_err"] = raw["sigma"][:, i] * self.sigma_scale[key]
        if "quantiles" not in raw or self._quantile_widening is None:
            times = formation_times(raw["sfh"], self._edges, FORMATION_FRACTIONS) if n else np.zeros((0, 2))
            out["posterior_halfwidth_68"] = np.full((n, 2 * n_bins + 2), np.nan)
            out["posterior_halfwidth_95"] = np.full((n, 2 * n_bins + 2), np.nan)
        else:
            q = raw["quantiles"]
            times = q[:, 2 * n_bins :, 2]
            for level, (lo, hi) in (("68", (1, 3)), ("95", (0, 4))):
                half = 0.5 * (q[..., hi] - q[..., lo]) + self._quantile_widening[level]
                out[f"posterior_halfwidth_{level}"] = np.maximum(half, 0.0)
        out["posterior_centre"] = np.concatenate([raw["sfh"], raw["logz"], times], axis=1)
        return out

    def raw_outputs(self, spectrum: np.ndarray, photometry: np.ndarray) -> dict[str, np.ndarray]:
        """The network's outputs for one batch of encoded inputs, as float64 numpy arrays:
        ``sfh`` (mass fractions), ``logz``, ``summary``, ``sigma`` (uncalibrated), ``features``
        (the spectral embedding) and ``quantiles`` (models with posterior heads)."""
        import torch

        out = self.net(torch.from_numpy(spectrum).to(self.device), torch.from_numpy(photometry).to(self.device))
        raw = {
            "sfh": torch.softmax(out["sfh_logits"].float().cpu().double(), dim=1).numpy(),
            "logz": out["logz"].float().cpu().double().numpy(),
            "summary": out["summary"].float().cpu().double().numpy(),
            "sigma": torch.exp(out["summary_log_sigma"].float().cpu().double()).numpy(),
            "features": out["spectral_features"].float().cpu().double().numpy(),
        }
        if "quantiles" in out:
            raw["quantiles"] = out["quantiles"].float().cpu().double().numpy()
        return raw


def network_outputs(
    predictors: list[Predictor],
    flux: np.ndarray,
    error: np.ndarray,
    ignore: np.ndarray,
    photometry: np.ndarray,
    batch_size: int = 128,
) -> list[dict[str, np.ndarray]]:
    """The raw outputs of each predictor's network (:meth:`Predictor.raw_outputs`) for the same
    checked inputs (:meth:`Predictor.normalised_inputs`), one dict per predictor with the leading
    axis n. Each batch is encoded once for all networks, and stays in cache for them."""
    import torch

    from .model import SUMMARY_KEYS, encode_spectrum

    n = flux.shape[0]
    parts: list[dict[str, list[np.ndarray]]] = [{} for _ in predictors]
    empty = np.zeros(n, dtype=bool)
    for predictor in predictors:
        predictor.net.eval()
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            batch = slice(start, start + batch_size)
            spectrum = encode_spectrum(flux[batch], error[batch], ignore[batch])
            empty[batch] = ~spectrum[:, 2, :].any(1)
            for predictor, collected in zip(predictors, parts):
                for key, value in predictor.raw_outputs(spectrum, photometry[batch]).items():
                    collected.setdefault(key, []).append(value)
    if empty.any():
        raise ValueError(
            f"{Predictor._which(empty, n)}: no valid pixel (all masked, NaN or error <= 0); drop them before predicting"
        )
    if n == 0:
        n_bins = predictors[0].bin_age_yr.size
        empty_outputs = {
            "sfh": np.zeros((0, n_bins)),
            "logz": np.zeros((0, n_bins)),
            "summary": np.zeros((0, len(SUMMARY_KEYS))),
            "sigma": np.zeros((0, len(SUMMARY_KEYS))),
            "features": np.zeros((0, 1)),
        }
        return [dict(empty_outputs) for _ in predictors]
    return [{key: np.concatenate(value) for key, value in collected.items()} for collected in parts]


def published(answer: dict[str, np.ndarray], age_bin_edges_yr: np.ndarray) -> dict[str, np.ndarray]:
    """The result of :meth:`Predictor.predict_normalised` from an answer (:meth:`Predictor.answer`,
    or an ensemble's, :func:`sfh_pipeline.ensemble.combined_answer`): every error multiplied by
    max(1, ``ood``) (``ood`` NaN: unchanged), ``<key>_epistemic`` 0 where the answer has none,
    the posterior targets split into ``sfh_err``, ``logzsol_err``, ``t50``, ``t50_err``, ``t90``,
    ``t90_err``, and ``age_bin_edges_yr``."""
    from .model import SUMMARY_KEYS

    n, n_bins = answer["sfh"].shape
    ood = answer["ood"]
    widen = np.where(np.isfinite(ood), np.maximum(ood, 1.0), 1.0)
    result: dict[str, np.ndarray] = {"sfh": answer["sfh"], "logzsol": answer["logzsol"], "ood": ood}
    for key in SUMMARY_KEYS:
        result[key] = answer[key]
        result[f"{key}_err"] = answer[f"{key}_err"] * widen
        result[f"{key}_epistemic"] = answer.get(f"{key}_epistemic", np.zeros(n))
    half = answer["posterior_halfwidth_68"] * widen[:, None]
    centre = answer["posterior_centre"]
    result.update(
        sfh_err=half[:, :n_bins],
        logzsol_err=half[:, n_bins : 2 * n_bins],
        t50=centre[:, 2 * n_bins],
        t50_err=half[:, 2 * n_bins],
        t90=centre[:, 2 * n_bins + 1],
        t90_err=half[:, 2 * n_bins + 1],
        age_bin_edges_yr=np.array(age_bin_edges_yr, dtype=float),
    )
    return result


def _of_first_member(name: str) -> property:
    """A read-only property of an :class:`EnsemblePredictor`: its first member's ``name``."""
    return property(lambda self: getattr(self.members[0], name), doc=f"The first member's ``{name}``.")


class EnsemblePredictor(_ObservedSpectra):
    """Several networks of one training set answering together (:mod:`sfh_pipeline.ensemble`):
    the API of :class:`Predictor`, one answer combined from the members' answers.

    The preparation of the input and the velocity refinement are the first member's (all
    members share the training set's grid, bands, normalisation and line mask), done once;
    then every member reads the same prepared spectra.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        payload: dict[str, Any],
        device: str | torch.device | None = None,
        *,
        int8: bool = False,
        precision: str = "auto",
        member_paths: Sequence[str | os.PathLike] | None = None,
    ) -> None:
        """The ensemble file at ``path`` with its contents ``payload`` (format
        :data:`sfh_pipeline.model.ENSEMBLE_FORMAT`: ``name``, ``members``, each the ``payload``
        of a model file with that file's ``sha256``, and ``calibration``, None when uncalibrated).
        ``member_paths``: the members' own files (default: each is named by ``path``)."""
        from .ensemble import check_members_agree

        self.path = Path(path)
        self.name = payload.get("name", self.path.parent.name)
        members = payload["members"]
        if member_paths is not None:
            member_paths = [Path(p) for p in member_paths]
            names = [str(p) for p in member_paths]
        else:
            member_paths = [self.path] * len(members)
            names = [f"member {i} ({m['payload'].get('name', '?')}) of {self.path}" for i, m in enumerate(members)]
        check_members_agree([m["payload"].get("trainset") or {} for m in members], names)
        self.members = [
            Predictor(p, device=device, int8=int8, precision=precision, payload=m["payload"])
            for m, p in zip(members, member_paths)
        ]
        #: sha256 of each member's model file (as it was combined, for an ensemble file).
        self.member_sha256 = [m.get("sha256") for m in members]
        #: The calibration of the combination (:func:`sfh_pipeline.ensemble.fit_calibration`);
        #: None: uncalibrated (errors of the mixture, scale 1).
        self.calibration = payload.get("calibration")

    @classmethod
    def of_member_files(
        cls,
        paths: Sequence[str | os.PathLike],
        device: str | torch.device | None = None,
        *,
        int8: bool = False,
        precision: str = "auto",
    ) -> EnsemblePredictor:
        """The uncalibrated ensemble of model files (:func:`load_predictor` of a list)."""
        from ..core.products import sha256_of
        from .model import ENSEMBLE_FORMAT, read_model_payload

        members = []
        for path in paths:
            member = read_model_payload(path)
            if member.get("format") == ENSEMBLE_FORMAT:
                raise ValueError(f"{path} is an ensemble file; give model files of single networks as members")
            members.append({"payload": member, "sha256": sha256_of(path)})
        name = "+".join(str(m["payload"].get("name", Path(p).parent.name)) for m, p in zip(members, paths))
        payload = {"name": name, "members": members, "calibration": None}
        return cls(paths[0], payload, device=device, int8=int8, precision=precision, member_paths=paths)

    # ------------------------------------------------------------------ metadata: the first member's

    @property
    def calibrated(self) -> bool:
        """Whether the combination was calibrated on the validation split (an ensemble file)."""
        return self.calibration is not None

    wavelength_aa = _of_first_member("wavelength_aa")
    filters = _of_first_member("filters")
    age_bin_edges_yr = _of_first_member("age_bin_edges_yr")
    bin_age_yr = _of_first_member("bin_age_yr")
    can_refine_velocity = _of_first_member("can_refine_velocity")
    logzsol_range = _of_first_member("logzsol_range")
    norm_window_aa = _of_first_member("norm_window_aa")
    emission_mask_halfwidth_kms = _of_first_member("emission_mask_halfwidth_kms")
    ssp = _of_first_member("ssp")
    device = _of_first_member("device")
    model_config = _of_first_member("model_config")
    #: The first member's network (its input sizes are every member's).
    net = _of_first_member("net")

    def __repr__(self) -> str:
        wave = self.wavelength_aa
        how = (
            "calibrated on the validation split"
            if self.calibrated
            else "uncalibrated: members' errors in quadrature with their spread, scale 1"
        )
        return (
            f"EnsemblePredictor({self.name!r}, {self.path}, {len(self.members)} members, {how}, "
            f"{wave[0]:.1f}-{wave[-1]:.1f} A rest, {len(self.filters)} bands, device={self.device})"
        )

    # ------------------------------------------------------------------ prediction

    def prepare(self, *args, **kwargs) -> dict[str, np.ndarray]:
        """:meth:`Predictor.prepare` (the first member's; every member's is the same)."""
        return self.members[0].prepare(*args, **kwargs)

    def refine_velocity(self, *args, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`Predictor.refine_velocity` with the first member's template, once for all."""
        return self.members[0].refine_velocity(*args, **kwargs)

    def member_answers(
        self,
        flux: np.ndarray,
        error: np.ndarray,
        mask: np.ndarray | None,
        phot: np.ndarray | None = None,
        phot_error: np.ndarray | None = None,
        present: np.ndarray | None = None,
        batch_size: int = 128,
    ) -> list[dict[str, np.ndarray]]:
        """Every member's answer (:meth:`Predictor.answer`) to the same normalised spectra
        (arguments of :meth:`predict_normalised`)."""
        inputs = self.members[0].normalised_inputs(flux, error, mask, phot, phot_error, present, batch_size)
        raws = network_outputs(self.members, *inputs, batch_size=batch_size)
        return [member.answer(raw) for member, raw in zip(self.members, raws)]

    def answer(self, answers: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The ensemble's answer from its members' (:func:`sfh_pipeline.ensemble.combined_answer`)."""
        from .ensemble import combined_answer

        return combined_answer(answers, self.calibration, self.bin_age_yr)

    def predict_normalised(
        self,
        flux: np.ndarray,
        error: np.ndarray,
        mask: np.ndarray | None,
        phot: np.ndarray | None = None,
        phot_error: np.ndarray | None = None,
        present: np.ndarray | None = None,
        batch_size: int = 128,
    ) -> dict[str, np.ndarray]:
        """:meth:`Predictor.predict_normalised` of the ensemble: the keys of a single model's
        result, combined from the members' as :mod:`sfh_pipeline.ensemble` says; ``<key>_epistemic``
        is the spread of the members' values (dex), ``ood`` their mean score."""
        answers = self.member_answers(flux, error, mask, phot, phot_error, present, batch_size)
        return published(self.answer(answers), self.age_bin_edges_yr)
