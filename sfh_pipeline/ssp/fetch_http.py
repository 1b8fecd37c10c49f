"""Downloads of URLs: resumable (HTTP Range), retried with backoff (Retry-After honoured), verified."""

from __future__ import annotations

import http.client
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..core.products import sha256_of
from .fetch_common import ChecksumError, FetchError, check_sha256, existing_ok, fsync, logger, unlink_quietly

#: Upper bound on a server-requested ``Retry-After`` delay that is honoured, in s.
_MAX_RETRY_AFTER_S = 120.0

#: Minimum interval between two progress log records of one download, in s.
_PROGRESS_INTERVAL_S = 5.0

_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_USER_AGENT = "sfh_pipeline-fetch/0.1 (python-urllib)"

#: Sleep function used between retries (a module attribute so tests can record delays).
_sleep = time.sleep


class _RetryableError(Exception):
    """Internal: a transient download failure worth retrying."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class _RangeNotSatisfiable(Exception):
    """Internal: the server answered 416 to a resume request."""


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
                unlink_quietly(part)
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
                    fsync(out)
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
            fsync(out)
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
    sha256 = check_sha256(sha256, url)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(
            f"cannot download {url!r}: only http:// and https:// URLs are supported; "
            "use a 'file' source for local files."
        )
    if existing_ok(dest, sha256):
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
                unlink_quietly(part)
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
        unlink_quietly(part)
        if resumed and not restarted_after_mismatch:
            # The stale prefix may come from an older version of the file.
            logger.warning("%s: sha256 mismatch after resuming a partial download; starting over", url)
            restarted_after_mismatch = True
            resumed = False
            continue
        raise ChecksumError(f"{url} (downloaded to {dest})", sha256, actual)
