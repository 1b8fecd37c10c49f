"""What a hostile model or checkpoint file could hold."""

from __future__ import annotations

from pathlib import Path


class TouchesAFile:
    """Unpickling it creates the file ``marker`` (any other code would run alike)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))
