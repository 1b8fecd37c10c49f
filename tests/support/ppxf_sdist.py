"""The ppxf 8.2.6 source archive (E-MILES SSPs, SDSS example spectra), downloaded once with pip."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path


def ppxf_sdist_archive() -> Path:
    """ppxf-8.2.6.tar.gz (25 MB) in the test-data cache, fetched with ``pip download`` if absent."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sfh-pipeline" / "test-data"
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / "ppxf-8.2.6.tar.gz"
    if not archive.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(cache),
                "ppxf==8.2.6",
            ],
            check=True,
            capture_output=True,
        )
    return archive


def extract_ppxf_folder(folder: str, out: Path) -> Path:
    """The regular files of ``ppxf-8.2.6/ppxf/<folder>/`` extracted under ``out``; returns that folder."""
    with tarfile.open(ppxf_sdist_archive()) as tar:
        members = [m for m in tar.getmembers() if f"/ppxf/{folder}/" in m.name and m.isfile()]
        tar.extractall(out, members=members, filter="data")
    return out / "ppxf-8.2.6" / "ppxf" / folder
